"""A raw D-Bus client for the helper tests, run as a test user by /opt/pyctr/bin/python.

    client.py spawn                 start `unshare -Urn sleep infinity`, print {"pid": N}
    client.py fill SPEC_JSON        {"count", "options"}: spawn and attach COUNT of them
    client.py cycles SPEC_JSON      {"pid", "count", "options"}: Attach+Detach COUNT times
    client.py call SPEC_JSON        send one method call, print the reply or error as JSON
    client.py burst SPEC_JSON       the call `count` times at once on one connection, a line
                                    per reply as it arrives

SPEC: {"interface", "member", "signature", "body", "fds", "interactive", "path"}.
"fds" is a list of what to open and pass, in order:
    {"netns": PID}  /proc/PID/ns/net        {"pidns": PID}  /proc/PID/ns/pid
    {"pidfd": PID}  pidfd_open(PID)         {"path": P}     open(P) read-only
    {"socket": 1}   a unix socket            {"inherited": N} fd N, passed down by the test
In "body", {"__v__": [SIG, VALUE]} is a Variant. The client deliberately sends whatever it is
told: wrong handle indexes, wrong fd counts, wrong types.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

from dbus_next import BusType, Message, MessageFlag, MessageType, Variant
from dbus_next.aio import MessageBus

import pyctr_bus


def _decode(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__v__"}:
            sig, value = obj["__v__"]
            return Variant(sig, _decode(value))
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(x) for x in obj]
    return obj


def _encode(obj):
    if isinstance(obj, Variant):
        return _encode(obj.value)
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(x) for x in obj]
    return obj


def _open(spec):
    if "netns" in spec:
        return os.open(f"/proc/{spec['netns']}/ns/net", os.O_RDONLY)
    if "pidns" in spec:
        return os.open(f"/proc/{spec['pidns']}/ns/pid", os.O_RDONLY)
    if "pidfd" in spec:
        return os.pidfd_open(spec["pidfd"])
    if "path" in spec:
        return os.open(spec["path"], os.O_RDONLY)
    if "inherited" in spec:
        return os.dup(spec["inherited"])
    if "socket" in spec:
        a, b = socket.socketpair()
        b.close()
        return a.detach()
    raise SystemExit(f"unknown fd spec {spec}")


async def _send(bus, spec, default_timeout: float) -> dict:
    """Send the call `spec` describes, with fds it opens and always closes; the reply as JSON."""
    fds = [_open(f) for f in spec.get("fds", [])]
    flags = MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION if spec.get("interactive") else MessageFlag.NONE
    msg = Message(destination=pyctr_bus.BUS_NAME, path=spec.get("path", pyctr_bus.OBJECT_PATH),
                  interface=spec.get("interface", pyctr_bus.NETWORK_INTERFACE),
                  member=spec["member"], signature=spec.get("signature", ""),
                  body=_decode(spec.get("body", [])), unix_fds=fds, flags=flags)
    try:
        reply = await asyncio.wait_for(bus.call(msg), spec.get("timeout", default_timeout))
    finally:
        for fd in fds:
            os.close(fd)
    if reply.message_type == MessageType.ERROR:
        return {"error": reply.error_name, "message": reply.body[0] if reply.body else ""}
    return {"body": _encode(reply.body)}


async def call(spec):
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    out = await _send(bus, spec, 60)
    if spec.get("hold"):
        # keep the connection open until stdin closes (for bus-disconnect tests)
        print(json.dumps(out), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        bus.disconnect()
        return
    bus.disconnect()
    print(json.dumps(out))


async def cycles(spec):
    """Attach and Detach `count` times on one connection, with the netns and pidfd of `pid`.
    Prints {"ok": n, "errors": [...], "attach_ms": [...], "detach_ms": [...]}."""
    pid, count = spec["pid"], spec["count"]
    netns, pidfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY), os.pidfd_open(pid)
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    options = _decode(spec.get("options", {}))
    result = {"ok": 0, "errors": [], "attach_ms": [], "detach_ms": []}
    for _ in range(count):
        t0 = time.perf_counter()
        reply = await bus.call(Message(
            destination=pyctr_bus.BUS_NAME, path=pyctr_bus.OBJECT_PATH,
            interface=pyctr_bus.NETWORK_INTERFACE, member="Attach", signature="hha{sv}",
            body=[0, 1, options], unix_fds=[netns, pidfd]))
        t1 = time.perf_counter()
        if reply.message_type == MessageType.ERROR:
            result["errors"].append([reply.error_name, reply.body[0] if reply.body else ""])
            continue
        lease = reply.body[0]["lease"].value
        reply = await bus.call(Message(
            destination=pyctr_bus.BUS_NAME, path=pyctr_bus.OBJECT_PATH,
            interface=pyctr_bus.NETWORK_INTERFACE, member="Detach", signature="s", body=[lease]))
        t2 = time.perf_counter()
        if reply.message_type == MessageType.ERROR:
            result["errors"].append([reply.error_name, reply.body[0] if reply.body else ""])
            continue
        result["ok"] += 1
        result["attach_ms"].append((t1 - t0) * 1000)
        result["detach_ms"].append((t2 - t1) * 1000)
    bus.disconnect()
    print(json.dumps(result))


async def fill(spec):
    """Start `count` namespace processes and attach each (leases live until they are killed).
    Prints {"pids": [...], "errors": [...]}."""
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    options = _decode(spec.get("options", {}))
    out = {"pids": [], "errors": []}
    for _ in range(spec["count"]):
        pid = _spawn_one()
        out["pids"].append(pid)
        fds = [os.open(f"/proc/{pid}/ns/net", os.O_RDONLY), os.pidfd_open(pid)]
        reply = await bus.call(Message(
            destination=pyctr_bus.BUS_NAME, path=pyctr_bus.OBJECT_PATH,
            interface=pyctr_bus.NETWORK_INTERFACE, member="Attach", signature="hha{sv}",
            body=[0, 1, options], unix_fds=fds))
        for fd in fds:
            os.close(fd)
        if reply.message_type == MessageType.ERROR:
            out["errors"].append([reply.error_name, reply.body[0] if reply.body else ""])
    bus.disconnect()
    print(json.dumps(out))


async def burst(spec):
    """Send the call `count` times at once on one connection; print each reply as one JSON
    line, in the order the replies arrive."""
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()

    async def one():
        print(json.dumps(await _send(bus, spec, 120)), flush=True)

    await asyncio.gather(*(one() for _ in range(spec["count"])))
    bus.disconnect()


def _spawn_one() -> int:
    proc = subprocess.Popen(["unshare", "-Urn", "sleep", "infinity"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    own = os.stat("/proc/self/ns/net").st_ino
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.stat(f"/proc/{proc.pid}/ns/net").st_ino != own:
            break
        time.sleep(0.002)
    return proc.pid


def spawn():
    print(json.dumps({"pid": _spawn_one()}))


if __name__ == "__main__":
    if sys.argv[1] == "spawn":
        spawn()
    elif sys.argv[1] == "fill":
        asyncio.run(fill(json.loads(sys.argv[2])))
    elif sys.argv[1] == "cycles":
        asyncio.run(cycles(json.loads(sys.argv[2])))
    elif sys.argv[1] == "burst":
        asyncio.run(burst(json.loads(sys.argv[2])))
    else:
        asyncio.run(call(json.loads(sys.argv[2])))
