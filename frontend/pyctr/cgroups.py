"""Resource limits: --memory, --memory-swap, --cpus, --pids-limit, enforced or refused.

The launcher calls `apply()` from the host side while the container's first process waits,
before CMD starts, and `release()` after it has exited. apply() raises PyctrError (exit 125)
when a requested limit cannot be enforced: a limit is never silently ignored.

Two ways to get a cgroup, chosen by cgroup_choice.py from cheap checks of this host:
- cgroup v2 with a systemd user manager that delegates controllers: pyctr asks it for a
  transient scope with Delegate=yes and writes the limits itself (cgroup_systemd.py);
- otherwise (cgroup v1, or v2 without delegation): pyctr-helper creates a root-owned cgroup,
  checks the admin's maximums, writes the limits and moves the container in (cgroup_helper.py).

release() returns a line for the user when the kernel's OOM killer killed a process of the
container ("the container ran out of memory ..."); the launcher prints it as
`pyctr: <line>` on stderr. The container's first process was then SIGKILLed, so pyctr's exit
status is already 137 (128 + 9).

Without limit options nothing here imports anything beyond this file: dbus-next and asyncio
stay off the path of a container without limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .spec import Resources


@dataclass(frozen=True)
class Wanted:
    """The limits that need a cgroup, in the wire units of pyctr_bus.LIMIT_OPTIONS.

    "Unlimited" values (memory 0, memory-swap -1, cpus 0, pids-limit -1 or 0) are dropped:
    a container outside any pyctr cgroup already has no limit of its own, so they need no
    privilege and no cgroup.
    """

    memory: int | None = None       # bytes
    memory_swap: int | None = None  # bytes of memory + swap
    cpus: float | None = None       # cores
    pids: int | None = None

    @classmethod
    def of(cls, resources: Resources) -> "Wanted":
        memory = resources.memory or None
        swap = resources.memory_swap if memory and resources.memory_swap not in (None, -1) else None
        cpus = resources.cpus or None
        pids = resources.pids if resources.pids is not None and resources.pids > 0 else None
        return cls(memory, swap, cpus, pids)

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.memory, self.memory_swap, self.cpus, self.pids))

    def wire(self) -> dict[str, int | float]:
        """The Resources.Limit a{sv} values (unwrapped), absent keys not set."""
        values = {"memory": self.memory, "memory_swap": self.memory_swap,
                  "cpus": float(self.cpus) if self.cpus is not None else None, "pids": self.pids}
        return {k: v for k, v in values.items() if v is not None}

    def controllers(self) -> list[str]:
        out = []
        if self.memory is not None:
            out.append("memory")
        if self.cpus is not None:
            out.append("cpu")
        if self.pids is not None:
            out.append("pids")
        return out


class CgroupPlacement(Protocol):
    """Whatever apply() created, handed back to release()."""

    def release(self) -> str | None:
        """Read the container's OOM count, let go of the cgroup; a note for the user or None."""


def apply(resources: Resources, pid: int, pidfd: int) -> CgroupPlacement | None:
    """Put the waiting container process `pid` (also named by `pidfd`) under `resources`."""
    if not resources.any:
        return None
    wanted = Wanted.of(resources)
    if not wanted.any:
        return None
    from . import cgroup_choice

    return cgroup_choice.backend(wanted).apply(wanted, pid, pidfd)


def release(placement: CgroupPlacement | None) -> str | None:
    """After the container exited: a line for the user if it ran out of memory, else None.

    Never raises: it runs on every exit path.
    """
    if placement is None:
        return None
    try:
        return placement.release()
    except Exception:  # the exit path goes on whatever happened to the cgroup
        return None


def oom_note(kills: int, wanted: Wanted) -> str | None:
    if kills <= 0:
        return None
    limit = f" (--memory {_size(wanted.memory)})" if wanted.memory else ""
    return f"the container ran out of memory{limit}: the kernel's OOM killer killed its process"


def _size(n: int | None) -> str:
    assert n is not None
    for unit, shift in (("g", 30), ("m", 20), ("k", 10)):
        if n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}b"
