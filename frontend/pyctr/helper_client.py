"""The frontend's side of the D-Bus contract: Attach, Detach, List and Limit on pyctr-helper.

Only network.py and cgroup_helper.py import this module, and only when a container uses a
bridge network or resource limits: dbus-next and asyncio cost tens of milliseconds to import,
which a plain `--network none` run never pays.

The client is synchronous to its callers. Each HelperClient owns one system-bus connection
and a private event loop; every call runs on that loop under asyncio.wait_for, because
dbus-next calls have no timeout of their own. Names (bus name, object path, interface,
errors, option signatures) come from pyctr_bus and nowhere else.

The connection is kept open from Attach until Detach: the helper can be configured to end a
lease when its owner's bus connection drops, and the pid that holds the connection is the
one a polkit agent was registered for.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Sequence

from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus

import pyctr_bus

from .errors import HelperError

# Connecting includes authentication to dbus-daemon; calls include D-Bus activation of the
# helper on first use (a Python process importing pyroute2 and python-iptables).
CONNECT_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0
# An interactive Attach waits for a human to type a password into pkttyagent.
PROMPT_TIMEOUT = 300.0
# Detach runs on the exit path: it must never hold up pyctr's exit for long.
DETACH_TIMEOUT = 5.0

# Failures of the bus itself, named like D-Bus errors so callers handle one kind of error.
NO_BUS = "org.freedesktop.DBus.Error.NoServer"
TIMEOUT = "org.freedesktop.DBus.Error.Timeout"
DISCONNECTED = "org.freedesktop.DBus.Error.Disconnected"


def port_wire(host_ip: str, host_port: int, container_port: int, protocol: str) -> list[Any]:
    """One port mapping in the wire form pyctr_bus.PORT_SIGNATURE describes."""
    return [host_ip, host_port, container_port, protocol]


def attach_options(**values: Any) -> dict[str, Variant]:
    """Wrap Attach options in Variants typed by pyctr_bus.ATTACH_OPTIONS (unknown keys fail)."""
    return {key: Variant(pyctr_bus.ATTACH_OPTIONS[key], value) for key, value in values.items()}


def _unwrap(value: Any) -> Any:
    """A D-Bus value with its Variants peeled off, recursively."""
    if isinstance(value, Variant):
        return _unwrap(value.value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


class HelperClient:
    """A connection to pyctr-helper over the system bus. Close it (or use `with`)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._bus: MessageBus | None = None

    def __enter__(self) -> "HelperClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        """The process that owns the connection, i.e. polkit's subject for our calls."""
        return os.getpid()

    def connect(self) -> None:
        if self._bus is not None:
            return
        try:
            self._bus = self._run(self._connect(), CONNECT_TIMEOUT, "connecting to the system bus")
        except OSError as e:
            raise HelperError(NO_BUS, f"cannot connect to the system bus: {e.strerror or e}") from None

    async def _connect(self) -> MessageBus:
        # Built inside the loop: dbus-next binds to the running loop at construction.
        return await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()

    def attach(self, netns_fd: int, pidfd: int, options: dict[str, Variant],
               interactive: bool = False) -> dict[str, Any]:
        """Call Attach; the fds are only lent (we still own and close them)."""
        flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE
        reply = self._call("Attach", "hha{sv}", [0, 1, options], fds=[netns_fd, pidfd],
                           flags=flags, timeout=PROMPT_TIMEOUT if interactive else CALL_TIMEOUT)
        return _unwrap(reply[0])

    def detach(self, lease: str, timeout: float = DETACH_TIMEOUT) -> None:
        self._call("Detach", "s", [lease], timeout=timeout)

    def send_detach(self, lease: str, timeout: float = DETACH_TIMEOUT) -> None:
        """Send Detach without waiting for the helper to finish it: returns once the message
        is on the socket. For exit paths, where the helper ends the lease anyway when the
        container's pidfd reports its exit, and waiting would only delay pyctr's exit."""
        self.connect()
        assert self._bus is not None
        message = Message(destination=pyctr_bus.BUS_NAME, path=pyctr_bus.OBJECT_PATH,
                          interface=pyctr_bus.NETWORK_INTERFACE, member="Detach", signature="s",
                          body=[lease], flags=MessageFlag.NO_REPLY_EXPECTED)
        try:
            self._run(self._bus.send(message), timeout, "sending Detach")
        except (OSError, EOFError) as e:
            raise HelperError(DISCONNECTED, f"lost the system bus during Detach: {e}") from None

    def list(self) -> list[dict[str, Any]]:
        """The caller's own leases, as plain dicts keyed like pyctr_bus.LEASE_FIELDS."""
        return _unwrap(self._call("List", "", [])[0])

    def limit(self, pidfd: int, values: dict[str, Any], interactive: bool = False) -> dict[str, Any]:
        """Call Resources.Limit with limits typed by pyctr_bus.LIMIT_OPTIONS; the pidfd is only lent."""
        limits = {k: Variant(pyctr_bus.LIMIT_OPTIONS[k], v) for k, v in values.items()}
        flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if interactive else MessageFlag.NONE
        reply = self._call("Limit", "ha{sv}", [0, limits], fds=[pidfd], flags=flags,
                           timeout=PROMPT_TIMEOUT if interactive else CALL_TIMEOUT,
                           interface=pyctr_bus.RESOURCES_INTERFACE)
        return _unwrap(reply[0])

    def version(self) -> str:
        reply = self._call("Get", "ss", [pyctr_bus.NETWORK_INTERFACE, "Version"],
                           interface="org.freedesktop.DBus.Properties")
        return _unwrap(reply[0])

    def _call(self, member: str, signature: str, body: list[Any], *, fds: Sequence[int] = (),
              flags: MessageFlag = MessageFlag.NONE, timeout: float = CALL_TIMEOUT,
              interface: str = pyctr_bus.NETWORK_INTERFACE) -> list[Any]:
        self.connect()
        assert self._bus is not None
        message = Message(destination=pyctr_bus.BUS_NAME, path=pyctr_bus.OBJECT_PATH,
                          interface=interface, member=member, signature=signature, body=body,
                          unix_fds=list(fds), flags=flags)
        try:
            reply = self._run(self._bus.call(message), timeout, f"pyctr-helper's {member}")
        except (OSError, EOFError) as e:
            raise HelperError(DISCONNECTED, f"lost the system bus during {member}: {e}") from None
        if reply is None:
            raise HelperError(DISCONNECTED, f"lost the system bus during {member}")
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise HelperError(reply.error_name or pyctr_bus.FAILED, " ".join(text.split()))
        return reply.body

    def _run(self, coro: Any, timeout: float, what: str) -> Any:
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))
        except asyncio.TimeoutError:
            raise HelperError(TIMEOUT, f"{what} did not answer within {timeout:g} s") from None

    def close(self) -> None:
        """Drop the connection and release its socket; safe to call more than once."""
        bus, self._bus = self._bus, None
        if bus is not None:
            try:
                bus.disconnect()
                self._loop.run_until_complete(asyncio.wait_for(bus.wait_for_disconnect(), 1.0))
            except Exception:
                pass  # the socket goes away below either way
            # dbus-next shuts its socket down but never closes it: do it, or the fd leaks.
            for closable in (getattr(bus, "_stream", None), getattr(bus, "_sock", None)):
                try:
                    if closable is not None:
                        closable.close()
                except OSError:
                    pass
        if not self._loop.is_closed():
            self._loop.close()
