"""Who is calling, and may they: the bus daemon's word on identity, polkit's on permission.

The polkit subject is the caller's unique bus name (system-bus-name), never a pid (CVE-2013-4288:
a pid can be recycled between the check and the act). The uid comes from the bus daemon
(GetConnectionCredentials), never from arguments. Any failure to get an answer is a denial.
"""

from __future__ import annotations

import asyncio
import logging

from dbus_next import Message, MessageType, Variant
from dbus_next.aio import MessageBus

from .audit import Caller
from .errors import InteractiveAuthorizationRequired, NotAuthorized

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 10.0  # seconds: polkitd answers in milliseconds; silence means deny
INTERACTIVE_TIMEOUT = 300.0  # a person typing a password
ALLOW_USER_INTERACTION = 0x1


async def _call(bus: MessageBus, msg: Message, timeout: float) -> Message:
    reply = await asyncio.wait_for(bus.call(msg), timeout)
    if reply.message_type == MessageType.ERROR:
        raise RuntimeError(f"{reply.error_name}: {reply.body[0] if reply.body else ''}")
    return reply


async def caller_identity(bus: MessageBus, sender: str) -> Caller:
    """The sender's uid and pid as the bus daemon knows them (the pid is for the audit log only)."""
    try:
        reply = await _call(bus, Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="GetConnectionCredentials",
            signature="s", body=[sender]), CHECK_TIMEOUT)
        creds = reply.body[0]
        uid = creds["UnixUserID"].value
        pid = creds["ProcessID"].value if "ProcessID" in creds else 0
        return Caller(bus_name=sender, uid=int(uid), pid=int(pid))
    except Exception as e:
        log.warning("no credentials for %s: %s", sender, e)
        raise NotAuthorized("the bus could not say who you are")


async def check(bus: MessageBus, caller: Caller, action: str, interactive: bool) -> None:
    """Return if polkit authorizes `caller` for `action`; raise NotAuthorized otherwise, or
    InteractiveAuthorizationRequired when a password would help but the caller allowed none."""
    subject = ["system-bus-name", {"name": Variant("s", caller.bus_name)}]
    flags = ALLOW_USER_INTERACTION if interactive else 0
    try:
        reply = await _call(bus, Message(
            destination="org.freedesktop.PolicyKit1", path="/org/freedesktop/PolicyKit1/Authority",
            interface="org.freedesktop.PolicyKit1.Authority", member="CheckAuthorization",
            signature="(sa{sv})sa{ss}us", body=[subject, action, {}, flags, ""]),
            INTERACTIVE_TIMEOUT if interactive else CHECK_TIMEOUT)
        authorized, challenge, _details = reply.body[0]
    except Exception as e:
        log.warning("polkit gave no answer for %s (%s): %s", action, caller.bus_name, e or type(e).__name__)
        raise NotAuthorized(f"not authorized for {action}: polkit did not answer")
    if authorized:
        return
    if challenge and not interactive:
        raise InteractiveAuthorizationRequired(
            f"{action} needs authentication; retry allowing interactive authorization")
    raise NotAuthorized(f"not authorized for {action}")
