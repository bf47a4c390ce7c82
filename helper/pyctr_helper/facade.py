"""The D-Bus facade: the only module that knows D-Bus.

Every method call that reaches the helper goes through serve(): identify the caller from the
bus, authorize with polkit, validate, act, record. What may be called is one table, METHODS, of
(interface, member) -> Method; anything else gets UnknownMethod before any work is done, so a
new method cannot forget its authorization. Received fds are closed when the call ends, on
every path. A HelperError reaches the caller with its D-Bus name; any other exception is logged
and the caller gets a generic Failed, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import pyctr_bus
from dbus_next import Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus

from . import fdcheck, polkit, requests, resources
from .audit import Caller
from .errors import Failed, HelperError, InvalidArgument, NotAuthorized, QuotaExceeded
from .network import NetworkService, lease_wire
from .services import Services

log = logging.getLogger(__name__)

INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PROPERTIES = "org.freedesktop.DBus.Properties"
PEER = "org.freedesktop.DBus.Peer"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
# Calls in progress (most waiting on polkit, up to 300 s for a password) each hold a task and
# the fds they brought: a caller may have only so many at once.
MAX_IN_FLIGHT_PER_NAME = 8
MAX_IN_FLIGHT_PER_UID = 32


@dataclass
class Call:
    """One method call in progress."""

    msg: Message
    caller: Caller
    fds: list[int]
    request: Any
    helper: "Facade"

    async def may(self, action: str) -> bool:
        """A further, optional authorization (e.g. manage-all); False instead of raising."""
        try:
            await polkit.check(self.helper.bus, self.caller, action, self.interactive)
            return True
        except HelperError:
            return False

    @property
    def interactive(self) -> bool:
        return bool(self.msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)


Reply = tuple[str, list]  # (signature, body)


@dataclass(frozen=True)
class Method:
    signature: str  # the only accepted input signature
    parse: Callable[[list], Any]  # pure: raises InvalidArgument
    actions: Callable[[Any], list[str]]  # polkit actions the parsed request needs
    handle: Callable[["Facade", Call], Awaitable[Reply]]
    audit_name: str
    fds: int = 0  # exactly this many fds, named by the first `fds` arguments (handles)


def _a_sv(fields: dict[str, tuple[str, object]]) -> dict[str, Variant]:
    return {k: Variant(sig, v) for k, (sig, v) in fields.items()}


# --- the methods -----------------------------------------------------------------------

def _attach_actions(req: requests.AttachRequest) -> list[str]:
    from .ports import is_privileged
    actions = [pyctr_bus.ACTION_ATTACH]
    if req.ports:
        actions.append(pyctr_bus.ACTION_PUBLISH_PORT)
    if any(is_privileged(p.host_port) for p in req.ports):
        actions.append(pyctr_bus.ACTION_PUBLISH_PRIVILEGED_PORT)
    return actions


async def _attach(self: "Facade", call: Call) -> Reply:
    netns, pidfd = fdcheck.fds_by_handle(call.msg.body[:2], call.fds, 2)
    fdcheck.check_netns(netns, call.caller.uid, self.forbidden)
    process = fdcheck.check_pidfd(pidfd, call.caller.uid)
    lease = await self.services.act(self.network.attach, call.caller, call.request, netns, pidfd, process)
    self.services.audit.record(call.caller, "attach", "ok", lease=lease.id, network=lease.network,
                               veth=lease.host_ifname, address=lease.address, pid=None,
                               container_pid=process.pid,
                               ports=",".join(f"{p.host_ip or '*'}:{p.host_port}->{p.container_port}/{p.protocol}"
                                              for p in lease.ports) or None)
    return "a{sv}", [_a_sv(lease_wire(lease))]


async def _detach(self: "Facade", call: Call) -> Reply:
    lease_id = call.request
    owner = await self.services.act(self.network.owner_of, lease_id)
    manage_all = (owner is not None and owner != call.caller.uid
                  and await call.may(pyctr_bus.ACTION_MANAGE_ALL))
    await self.services.act(self.network.detach, call.caller, lease_id, manage_all)
    return "", []


async def _list(self: "Facade", call: Call) -> Reply:
    leases = await self.services.act(self.network.list, call.caller)
    return "aa{sv}", [[_a_sv(lease_wire(l)) for l in leases]]


def _parse_limit(body: list) -> dict:
    return requests.options(body[1], pyctr_bus.LIMIT_OPTIONS, "limit")


async def _limit(self: "Facade", call: Call) -> Reply:
    (pidfd,) = fdcheck.fds_by_handle(call.msg.body[:1], call.fds, 1)
    process = fdcheck.check_pidfd(pidfd, call.caller.uid)
    result = await self.services.act(resources.limit, call.caller, pidfd, process, call.request,
                                     self.services)
    return "a{sv}", [_a_sv(result)]


async def _introspect(self: "Facade", call: Call) -> Reply:
    return "s", [pyctr_bus.interface_xml()]


_PROPERTIES = {pyctr_bus.NETWORK_INTERFACE: {"Version": ("s", pyctr_bus.VERSION)},
               pyctr_bus.RESOURCES_INTERFACE: {}}


async def _get(self: "Facade", call: Call) -> Reply:
    iface, name = call.msg.body
    props = _PROPERTIES.get(iface)
    if props is None or name not in props:
        raise _DBusError(UNKNOWN_PROPERTY, f"no readable property {iface}.{name}")
    sig, value = props[name]
    return "v", [Variant(sig, value)]


async def _get_all(self: "Facade", call: Call) -> Reply:
    (iface,) = call.msg.body
    if iface not in _PROPERTIES:
        raise _DBusError(INVALID_ARGS, f"no interface {iface}")
    return "a{sv}", [_a_sv(_PROPERTIES[iface])]


async def _ping(self: "Facade", call: Call) -> Reply:
    return "", []


async def _machine_id(self: "Facade", call: Call) -> Reply:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                return "s", [f.read().strip()]
        except OSError:
            continue
    raise Failed("no machine id")


def _no_args(body: list) -> None:
    return None


def _public(_: Any) -> list[str]:
    """Read-only, public information: the interface description and the version."""
    return []


def _own_leases(_: Any) -> list[str]:
    """Detach and List act on the caller's own leases, found by the uid the bus reports: the
    grant was checked when the lease was made, and giving up or reading what you hold must
    not need a new one (with a one-time password grant it could not be had again). Another
    user's lease needs manage-all, which _detach asks for; List never shows others' leases."""
    return []


# The one table: nothing outside it is callable. (interface, member) -> Method
METHODS: dict[tuple[str, str], Method] = {
    (pyctr_bus.NETWORK_INTERFACE, "Attach"): Method(
        "hha{sv}", lambda b: requests.attach_request(b[2]), _attach_actions, _attach, "attach", 2),
    (pyctr_bus.NETWORK_INTERFACE, "Detach"): Method(
        "s", lambda b: requests.parse_lease_id(b[0]), _own_leases, _detach, "detach"),
    (pyctr_bus.NETWORK_INTERFACE, "List"): Method("", _no_args, _own_leases, _list, "list"),
    (pyctr_bus.RESOURCES_INTERFACE, "Limit"): Method(
        "ha{sv}", _parse_limit, lambda _: [pyctr_bus.ACTION_LIMIT_RESOURCES], _limit, "limit", 1),
    (INTROSPECTABLE, "Introspect"): Method("", _no_args, _public, _introspect, "introspect"),
    (PROPERTIES, "Get"): Method("ss", _no_args, _public, _get, "get-property"),
    (PROPERTIES, "GetAll"): Method("s", _no_args, _public, _get_all, "get-properties"),
    (PEER, "Ping"): Method("", _no_args, _public, _ping, "ping"),
    (PEER, "GetMachineId"): Method("", _no_args, _public, _machine_id, "machine-id"),
}


class _DBusError(Exception):
    """A standard org.freedesktop.DBus.Error.* reply."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name, self.message = name, message


class Facade:
    def __init__(self, bus: MessageBus, services: Services, network: NetworkService,
                 forbidden: fdcheck.ForbiddenNamespaces) -> None:
        self.bus, self.services, self.network, self.forbidden = bus, services, network, forbidden
        self.tasks: set[asyncio.Task] = set()
        self.in_flight_by_name: Counter[str] = Counter()
        self.in_flight_by_uid: Counter[int] = Counter()
        self.ready = asyncio.Event()  # set once the store is reconciled
        bus.add_message_handler(self.on_message)

    def on_message(self, msg: Message) -> bool | None:
        if msg.message_type == MessageType.SIGNAL:
            self._close(msg.unix_fds)
            if (msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus"
                    and msg.signature == "sss"):
                name, _old, new = msg.body
                if name.startswith(":") and not new:
                    # Ending a lease is an act: it runs on the act thread like every other
                    # (pyroute2's sync API cannot run on this loop, and acts stay serialized).
                    self.services.submit(self.network.on_disconnect, name)
            return None
        if msg.message_type != MessageType.METHOD_CALL:
            return None  # replies to our own calls: dbus-next routes them
        task = asyncio.get_running_loop().create_task(self.serve(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def serve(self, msg: Message) -> None:
        fds = list(msg.unix_fds)
        sender = msg.sender or "?"
        caller = Caller(bus_name=sender, uid=-1, pid=0)
        method = METHODS.get((msg.interface, msg.member))
        name = method.audit_name if method else f"{msg.interface}.{msg.member}"
        self.in_flight_by_name[sender] += 1
        counted_uid: int | None = None
        try:
            # Before any wait: a connection over its cap holds nothing while it is refused.
            if self.in_flight_by_name[sender] > MAX_IN_FLIGHT_PER_NAME:
                self._too_many(caller, name, fds, f"{MAX_IN_FLIGHT_PER_NAME} per connection")
            await self.ready.wait()
            caller = await polkit.caller_identity(self.bus, msg.sender)
            counted_uid = caller.uid
            self.in_flight_by_uid[counted_uid] += 1
            if self.in_flight_by_uid[counted_uid] > MAX_IN_FLIGHT_PER_UID:
                self._too_many(caller, name, fds, f"{MAX_IN_FLIGHT_PER_UID} per user")
            if msg.path != pyctr_bus.OBJECT_PATH or method is None:
                self.services.audit.record(caller, name, "refused", path=msg.path,
                                           reason="not in the method table")
                if msg.path != pyctr_bus.OBJECT_PATH:
                    raise _DBusError(UNKNOWN_OBJECT, f"no object {msg.path}")
                raise _DBusError(UNKNOWN_METHOD, f"no method {msg.interface}.{msg.member}")
            reply = await self._call(msg, method, fds, caller)
            self._reply(msg, Message.new_method_return(msg, *reply))
        except _DBusError as e:
            self._reply(msg, Message.new_error(msg, e.name, e.message))
        except HelperError as e:
            self._reply(msg, Message.new_error(msg, e.dbus_name, e.message))
        except Exception:
            log.exception("%s from %s failed", name, caller.bus_name)
            self._reply(msg, Message.new_error(msg, Failed.dbus_name,
                                               "the helper failed; details are in its log"))
        finally:
            self._close(fds)
            self._uncount(self.in_flight_by_name, sender)
            if counted_uid is not None:
                self._uncount(self.in_flight_by_uid, counted_uid)

    def _too_many(self, caller: Caller, name: str, fds: list[int], cap: str) -> None:
        self._drop(fds)
        self.services.audit.record(caller, name, "refused", reason=f"more than {cap} calls in progress")
        raise QuotaExceeded(f"too many calls in progress (at most {cap}); wait for one to finish")

    @staticmethod
    def _uncount(counter: Counter, key: object) -> None:
        counter[key] -= 1
        if counter[key] <= 0:
            del counter[key]

    def _drop(self, fds: list[int]) -> None:
        """Close the call's fds now and forget them (serve's final close then has none)."""
        self._close(fds)
        fds.clear()

    async def _call(self, msg: Message, method: Method, fds: list[int], caller: Caller) -> Reply:
        audit = self.services.audit
        try:
            parse_error = None
            request = None
            if msg.signature != method.signature:
                parse_error = InvalidArgument(
                    f"expected arguments of D-Bus type ({method.signature}), got ({msg.signature})")
            else:
                try:
                    request = method.parse(msg.body)
                except InvalidArgument as e:
                    parse_error = e
            if parse_error is None:
                # The fd count and handle indexes are plain structure: checked before polkit,
                # which may take minutes (a password), so a malformed call holds no fd meanwhile.
                try:
                    fdcheck.fds_by_handle(msg.body[:method.fds], fds, method.fds)
                except InvalidArgument as e:
                    parse_error = e
            if parse_error is not None:
                self._drop(fds)
            # An unparseable request is authorized for the method's base action only.
            actions = method.actions(request) if parse_error is None else _base_actions(method)
            interactive = bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)
            for action in actions:
                await polkit.check(self.bus, caller, action, interactive)
            if parse_error is not None:
                raise parse_error
            reply = await method.handle(self, Call(msg, caller, fds, request, self))
        except NotAuthorized as e:
            audit.record(caller, method.audit_name, "denied", reason=e.message)
            raise
        except HelperError as e:
            audit.record(caller, method.audit_name, "refused", error=e.dbus_name.rsplit(".", 1)[-1],
                         reason=e.message)
            raise
        except _DBusError:
            raise
        except Exception:
            audit.record(caller, method.audit_name, "failed")
            raise
        # Successes are recorded by the acts themselves, with the objects they touched (attach
        # here, a lease's end in network.end, cgroups in resources); reads are not acts.
        return reply

    def _reply(self, msg: Message, reply: Message) -> None:
        if not msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            self.bus.send(reply)

    @staticmethod
    def _close(fds: list[int]) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def _base_actions(method: Method) -> list[str]:
    """The actions a method needs whatever its arguments: what it asks for an empty request."""
    if method.actions in (_public, _own_leases):
        return []
    if method.actions is _attach_actions:
        return [pyctr_bus.ACTION_ATTACH]
    return method.actions(None)
