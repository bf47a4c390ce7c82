"""Limits on cgroup v2 with systemd delegation: no root involved.

pyctr asks the user's own systemd manager, over the user session bus, for a transient scope
`pyctr-<id>.scope` with Delegate=yes holding the container's first process and pyctr itself.
Delegation hands the scope's subtree to the user, and pyctr arranges it as

    pyctr-<id>.scope/          cgroup.subtree_control: +memory +cpu +pids (no process here)
        container/             the container: memory.max, memory.swap.max, cpu.max, pids.max,
                               memory.oom.group=1 (an OOM kills the whole container, nothing else)
        supervisor/            pyctr itself, without limits

pyctr sits in the scope so that systemd keeps it (and the container's memory.events) until
pyctr has read the OOM-kill counter after the container exits; when pyctr exits the scope is
empty and systemd removes it (CollectMode=inactive-or-failed, even if a process failed).

Here the limits are the user's own choice inside their own slice, so there are no admin
maximums to check; the container cannot reach them, as it has no view of the host's
/sys/fs/cgroup (its /sys is read-only and it has no cgroup namespace of its own to mount).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import Any

from .cgroup_choice import CGROUP_ROOT, Mounts
from .cgroups import Wanted, oom_note
from .errors import PyctrError

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
TIMEOUT = 10.0
CPU_PERIOD_US = 100_000


def write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise PyctrError(f"cannot enforce the resource limits: writing {value!r} to "
                         f"{path}: {os.strerror(e.errno or 0)}") from None


def make_dir(path: Path) -> None:
    """mkdir in the delegated tree (the kernel fills it with control files)."""
    try:
        os.mkdir(path, 0o755)
    except OSError as e:
        raise PyctrError(f"cannot enforce the resource limits: creating {path}: "
                         f"{os.strerror(e.errno or 0)}") from None


def limit_files(wanted: Wanted) -> list[tuple[str, str]]:
    """The v2 control files and values for `wanted`, in the order they must be written."""
    out = []
    if wanted.memory is not None:
        out += [("memory.max", str(wanted.memory)), ("memory.oom.group", "1")]
        if wanted.memory_swap is not None:
            out.append(("memory.swap.max", str(wanted.memory_swap - wanted.memory)))
    if wanted.cpus is not None:
        out.append(("cpu.max", f"{max(1000, round(wanted.cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}"))
    if wanted.pids is not None:
        out.append(("pids.max", str(wanted.pids)))
    return out


def arrange(scope: Path, container_pid: int, own_pid: int, wanted: Wanted) -> Path:
    """Split the delegated scope into container/ and supervisor/ and write the limits.

    Processes leave the scope's own cgroup before controllers are enabled in it (cgroup v2
    allows no process in a cgroup that hands controllers to its children).
    """
    available = set((scope / "cgroup.controllers").read_text().split())
    missing = [c for c in wanted.controllers() if c not in available]
    if missing:
        raise PyctrError(f"cannot enforce the resource limits: systemd did not delegate the "
                         f"{', '.join(missing)} controller(s) to this user")
    container, supervisor = scope / "container", scope / "supervisor"
    for d in (container, supervisor):
        make_dir(d)
    write(supervisor / "cgroup.procs", str(own_pid))
    write(container / "cgroup.procs", str(container_pid))
    if wanted.controllers():
        write(scope / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted.controllers()))
    for name, value in limit_files(wanted):
        if name == "memory.swap.max" and not (container / name).exists():
            raise PyctrError("cannot enforce --memory-swap: this host does not account swap")
        write(container / name, value)
    return container


def own_cgroup(pid: int) -> Path:
    """Where `pid` sits in the unified tree ("0::/user.slice/...")."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return CGROUP_ROOT / line[3:].strip().lstrip("/")
    raise PyctrError("cannot enforce the resource limits: no cgroup v2 path for the container")


class ScopePlacement:
    def __init__(self, container: Path, wanted: Wanted) -> None:
        self.container, self.wanted = container, wanted

    def release(self) -> str | None:
        kills = 0
        try:
            for line in (self.container / "memory.events").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    kills = int(value)
        except (OSError, ValueError):
            pass
        return oom_note(kills, self.wanted)


class SystemdScopes:
    def __init__(self, mounts: Mounts) -> None:
        self.mounts = mounts

    def apply(self, wanted: Wanted, pid: int, pidfd: int) -> ScopePlacement:
        unit = f"pyctr-{secrets.token_hex(6)}.scope"
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(asyncio.wait_for(
                self._start_scope(unit, [pid, os.getpid()]), TIMEOUT))
        except asyncio.TimeoutError:
            raise PyctrError("cannot enforce the resource limits: the systemd user manager did "
                             f"not start {unit} within {TIMEOUT:g} s") from None
        except OSError as e:
            raise PyctrError(f"cannot enforce the resource limits: the user session bus: "
                             f"{e.strerror or e}") from None
        finally:
            loop.close()
        scope = own_cgroup(pid)
        if scope.name != unit:
            raise PyctrError(f"cannot enforce the resource limits: systemd put the container "
                             f"in {scope}, not {unit}")
        return ScopePlacement(arrange(scope, pid, os.getpid(), wanted), wanted)

    async def _start_scope(self, unit: str, pids: list[int]) -> None:
        from dbus_next import BusType, Message, MessageType, Variant
        from dbus_next.aio import MessageBus

        bus = await MessageBus(bus_type=BusType.SESSION).connect()
        try:
            done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            def on_message(msg: Any) -> None:
                if (msg.message_type == MessageType.SIGNAL and msg.member == "JobRemoved"
                        and msg.interface == MANAGER and len(msg.body) == 4
                        and msg.body[2] == unit and not done.done()):
                    done.set_result(msg.body[3])

            bus.add_message_handler(on_message)
            await self._call(bus, Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="AddMatch", signature="s",
                body=[f"type='signal',sender='{SYSTEMD}',interface='{MANAGER}',member='JobRemoved'"]))
            await self._call(bus, Message(destination=SYSTEMD, path=SYSTEMD_PATH,
                                          interface=MANAGER, member="Subscribe"))
            properties = [
                ["Description", Variant("s", "pyctr container with resource limits")],
                ["PIDs", Variant("au", pids)],
                ["Delegate", Variant("b", True)],
                ["CollectMode", Variant("s", "inactive-or-failed")],
            ]
            reply = await self._call(bus, Message(
                destination=SYSTEMD, path=SYSTEMD_PATH, interface=MANAGER,
                member="StartTransientUnit", signature="ssa(sv)a(sa(sv))",
                body=[unit, "fail", properties, []]))
            result = await done
            if result != "done":
                raise PyctrError(f"cannot enforce the resource limits: systemd could not start "
                                 f"{unit} ({result})")
        finally:
            bus.disconnect()

    @staticmethod
    async def _call(bus: Any, message: Any) -> Any:
        from dbus_next import MessageType

        reply = await bus.call(message)
        if reply is None or reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply is not None and reply.body else "no reply"
            raise PyctrError(f"cannot enforce the resource limits: systemd refused "
                             f"{message.member}: {text}")
        return reply
