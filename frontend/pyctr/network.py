"""Bridge networking through pyctr-helper: the frontend's half of `--network bridge -p ...`.

The launcher calls `default_mode()` when --network is not given, `attach()` from the host
user namespace once the container's namespaces exist (before CMD starts), and `detach()`
when the container is gone, on every exit path. attach() returns what the container
applies to itself (eth0's address and route, /etc/hosts, /etc/hostname, /etc/resolv.conf).

Nothing here imports dbus-next or asyncio at module level: `--network none` and `host`
never pay for them. The D-Bus conversation itself is in helper_client.py, the password
prompt in polkit_agent.py; this module decides what to ask for and what to tell the user.

Why the helper hands back the address instead of configuring eth0 itself: the helper
already moves the peer into the container's netns, but entering that netns (setns) as root
would run privileged code inside a namespace the user controls. The container's own root,
which holds CAP_NET_ADMIN over its netns anyway, sets the address and route; the helper's
anti-spoofing rules make any other address useless to it.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyctr_bus

from .errors import HelperError, PyctrError
from .spec import ContainerSpec, NetworkConfig, PortMapping

if TYPE_CHECKING:
    from .helper_client import HelperClient

# D-Bus activation starts the helper on demand; its activation file is what "installed"
# means (scripts/install-host.sh puts it there). Checking it costs one stat, no bus call.
ACTIVATION_FILE = Path("/usr/share/dbus-1/system-services") / f"{pyctr_bus.BUS_NAME}.service"

# dbus-daemon's own errors when the helper cannot be reached or started.
_UNREACHABLE = {
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.freedesktop.DBus.Error.UnknownObject",
    "org.freedesktop.DBus.Error.UnknownMethod",
    "org.freedesktop.DBus.Error.UnknownInterface",
}
_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
_REFUSALS = {pyctr_bus.NOT_AUTHORIZED, pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED}
# The actions the example group rule (polkit/50-pyctr-group.rules) grants.
_GROUP_ACTIONS = {pyctr_bus.ACTION_ATTACH, pyctr_bus.ACTION_PUBLISH_PORT}
# The group that rule grants (scripts/lib.sh PYCTR_GROUP).
PYCTR_GROUP = "pyctr"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_REASON_MAX = 300


@dataclass(frozen=True)
class NetworkSetup:
    """What the helper gave the container: applied inside by the launcher, kept for detach."""

    lease: str
    ifname: str
    address: str          # CIDR, e.g. "10.88.0.5/24"
    gateway: str
    mac: str
    dns: tuple[str, ...]
    ports: tuple[PortMapping, ...]


# Bus connections of live leases, kept open from attach to detach: the helper may be
# configured to end a lease when its owner's connection drops. Plain data stays in
# NetworkSetup so that it can cross a fork or a pipe.
_clients: dict[str, "HelperClient"] = {}
_detached: set[str] = set()


def helper_installed() -> bool:
    return ACTIVATION_FILE.exists()


def default_mode() -> str:
    """"bridge" when pyctr-helper is installed, else "none" (saying so on stderr)."""
    if helper_installed():
        return "bridge"
    _note("pyctr-helper is not installed; the container gets --network none "
          "(loopback only)")
    return "none"


def attach(spec: ContainerSpec, netns_fd: int, pidfd: int) -> NetworkSetup:
    """Connect the container's netns to its bridge network through the helper.

    Called from the host user namespace (a process inside the container's user namespace
    cannot authenticate to the system bus). The fds are lent to the helper, not given:
    the caller still closes them. Raises HelperError (exit 125) with the helper's reason.
    """
    from . import helper_client

    config = spec.network
    values: dict[str, Any] = {
        "network": config.name,
        "ifname": config.ifname,
        "ports": [helper_client.port_wire(p.host_ip, p.host_port, p.container_port, p.protocol)
                  for p in config.ports],
    }
    if config.address:
        values["address"] = config.address
    options = helper_client.attach_options(**values)

    client = helper_client.HelperClient()
    try:
        result = _attach_authorized(client, netns_fd, pidfd, options, config)
        setup = _setup_from_reply(result, config, client)
    except BaseException:
        client.close()
        raise
    _clients[setup.lease] = client
    _announce_chosen_ports(config.ports, setup.ports)
    return setup


def detach(setup: NetworkSetup) -> None:
    """End the lease. Never raises a PyctrError: it runs on exit paths, and the helper also
    ends the lease by itself when the container's process is gone (its pidfd watch), so a
    Detach that finds nothing, or cannot reach the helper, leaves nothing behind."""
    if setup.lease in _detached:
        return
    _detached.add(setup.lease)
    client = _clients.pop(setup.lease, None)
    try:
        if client is None:
            from . import helper_client
            client = helper_client.HelperClient()
        # Sent, not waited for: the container is gone, so the helper's pidfd watch is ending
        # the lease already, and the Detach (which may find nothing) only makes that explicit.
        # Waiting for it would add the helper's teardown time to every pyctr run.
        client.send_detach(setup.lease)
    except HelperError as e:
        # NoSuchLease: the pidfd watch was first. A refusal (polkit may want a password
        # again for Detach): the container is gone by now, so the pidfd watch ends the
        # lease all the same, and prompting on the way out would help nobody.
        if e.name != pyctr_bus.NO_SUCH_LEASE and e.name not in _REFUSALS:
            _note(f"could not release network lease {setup.lease}: {_reason(e)} "
                  "(pyctr-helper releases it once the container is gone)")
    except Exception as e:  # the exit path must go on whatever the bus did
        _note(f"could not release network lease {setup.lease}: {e}")
    finally:
        if client is not None:
            client.close()


def _attach_authorized(client: "HelperClient", netns_fd: int, pidfd: int,
                       options: dict[str, Any], config: NetworkConfig) -> dict[str, Any]:
    """Attach, asking for a password on the terminal only when polkit wants one.

    The first call does not allow interactive authorization: a user the admin's rules
    already grant (the `pyctr` group) never waits for an agent to start. On a refusal the
    helper has changed nothing, so the retry after the prompt starts from a clean slate.
    """
    from . import polkit_agent

    try:
        return client.attach(netns_fd, pidfd, options)
    except HelperError as e:
        if e.name != pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED or not polkit_agent.can_prompt():
            raise _user_error(e, config) from None
    with polkit_agent.TtyAgent(client.pid):
        try:
            return client.attach(netns_fd, pidfd, options, interactive=True)
        except HelperError as e:
            raise _user_error(e, config, prompted=True) from None


def _setup_from_reply(result: dict[str, Any], config: NetworkConfig,
                      client: "HelperClient") -> NetworkSetup:
    """Check the helper's answer before any of it is written into the container."""
    import ipaddress

    try:
        lease = result["lease"]
        if not isinstance(lease, str) or not lease:
            raise ValueError("empty lease")
        address = ipaddress.ip_interface(result["address"])
        gateway = ipaddress.ip_address(result["gateway"])
        mac = str(result["mac"]).lower()
        if not _MAC.match(mac):
            raise ValueError(f"bad MAC {mac!r}")
        dns = tuple(str(ipaddress.ip_address(s)) for s in result.get("dns", []))
        ports = tuple(PortMapping(container_port=int(c), host_port=int(h), host_ip=str(ip),
                                  protocol=str(proto))
                      for ip, h, c, proto in result.get("ports", []))
        if len(ports) != len(config.ports) or any(p.host_port == 0 for p in ports):
            raise ValueError("the published ports do not match the request")
    except (KeyError, ValueError, TypeError, PyctrError) as e:
        lease = result.get("lease")
        if isinstance(lease, str) and lease:
            try:
                client.detach(lease)
            except HelperError:
                pass  # the pidfd watch ends it with the container
        raise HelperError(pyctr_bus.FAILED,
                          f"pyctr-helper sent an Attach reply pyctr cannot use ({e})") from None
    return NetworkSetup(lease=lease, ifname=config.ifname, address=str(address),
                        gateway=str(gateway), mac=mac, dns=dns, ports=ports)


def _announce_chosen_ports(requested: tuple[PortMapping, ...],
                           granted: tuple[PortMapping, ...]) -> None:
    """Tell the user where a port went when the helper picked the host port."""
    for asked, got in zip(requested, granted):
        if asked.host_port == 0:
            _note(f"published {got.host_ip or '0.0.0.0'}:{got.host_port}"
                  f" -> {got.container_port}/{got.protocol}")


def _user_error(e: HelperError, config: NetworkConfig, prompted: bool = False) -> HelperError:
    """One line for the terminal, saying what was refused and what would fix it."""
    reason = _reason(e)
    if e.name in _REFUSALS:
        action = _refused_action(reason, config)
        if action in _GROUP_ACTIONS:
            grant = (f"an administrator can grant it by adding you to the '{PYCTR_GROUP}' "
                     "group (polkit rule installed by install-host.sh)")
        else:
            grant = f"an administrator must grant {action} with a polkit rule"
        # The helper's text usually repeats "not authorized for ACTION": keep what it adds.
        detail = reason
        if detail.startswith(f"not authorized for {action}"):
            detail = detail[len(f"not authorized for {action}"):].lstrip(" :;,.")
        if e.name == pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED and prompted:
            how = "no polkit agent could ask for the password"
        elif e.name == pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED:
            how = "it needs a password, and pyctr asks for one only on a terminal"
        elif prompted:
            how = "authentication failed"
        else:
            how = detail or "polkit said no"
        message = f"not authorized for {action} (network '{config.name}'): {how}; {grant}"
    elif e.name in _UNREACHABLE or e.name.startswith("org.freedesktop.DBus.Error.Spawn"):
        message = f"pyctr-helper is not reachable on the system bus: {reason}"
    elif e.name == _ACCESS_DENIED:
        message = f"the system bus refused the call to pyctr-helper: {reason}"
    elif e.name.startswith(pyctr_bus.ERROR_PREFIX):
        message = f"cannot attach to network '{config.name}': {reason}"
    else:
        message = reason
    return HelperError(e.name, message)


def _refused_action(reason: str, config: NetworkConfig) -> str:
    """The polkit action the helper named, else the one this request needed most."""
    for action in (pyctr_bus.ACTION_PUBLISH_PRIVILEGED_PORT, pyctr_bus.ACTION_PUBLISH_PORT,
                   pyctr_bus.ACTION_MANAGE_ALL, pyctr_bus.ACTION_ATTACH):
        if action in reason:
            return action
    return pyctr_bus.ACTION_ATTACH


def _reason(e: HelperError) -> str:
    """The helper's text as one printable line of reasonable length."""
    text = "".join(c if c.isprintable() else " " for c in str(e))
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[:_REASON_MAX - 3] + "..."


def _note(text: str) -> None:
    print(f"pyctr: {text}", file=sys.stderr, flush=True)
