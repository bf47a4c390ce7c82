"""A raw Resources.Limit caller for the adversarial tests, run as a test user.

    limit_client.py SPEC_JSON    send one call, hold the bus connection until stdin closes,
                                 print the reply or error as JSON first

SPEC: {"signature", "handles", "limits", "fds", "interactive", "hold"}. "limits" values are
[SIG, VALUE] pairs sent as Variants of that signature (so wrong types can be sent); "fds" is a
list of {"pid": N} (pidfd_open), {"thread": TID} (pidfd_open with PIDFD_THREAD),
{"path": P} (open read-only) or {"socket": 1}. The client
sends whatever it is told: wrong handle indexes, wrong fd counts, wrong types.
"""

import asyncio
import json
import os
import socket
import sys

from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus

import pyctr_bus


def _open(spec: dict) -> int:
    if "pid" in spec:
        return os.pidfd_open(spec["pid"])
    if "thread" in spec:  # PIDFD_THREAD (== O_EXCL): a pidfd naming one thread
        return os.pidfd_open(spec["thread"], os.O_EXCL)
    if "path" in spec:
        return os.open(spec["path"], os.O_RDONLY)
    a, b = socket.socketpair()
    b.close()
    return a.detach()


async def main(spec: dict) -> None:
    fds = [_open(f) for f in spec.get("fds", [])]
    limits = {k: Variant(sig, value) for k, (sig, value) in spec.get("limits", {}).items()}
    signature = spec.get("signature", "ha{sv}")
    body = [*spec.get("handles", [0]), limits] if signature == "ha{sv}" else spec["body"]
    flags = (MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if spec.get("interactive")
             else MessageFlag.NONE)
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    reply = await asyncio.wait_for(bus.call(Message(
        destination=pyctr_bus.BUS_NAME, path=pyctr_bus.OBJECT_PATH,
        interface=pyctr_bus.RESOURCES_INTERFACE, member="Limit", signature=signature,
        body=body, unix_fds=fds, flags=flags)), 60)
    for fd in fds:
        os.close(fd)
    if reply.message_type == MessageType.ERROR:
        out = {"error": reply.error_name, "message": reply.body[0] if reply.body else ""}
    else:
        out = {k: v.value for k, v in reply.body[0].items()}
    print(json.dumps(out), flush=True)
    if spec.get("hold"):
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    bus.disconnect()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
