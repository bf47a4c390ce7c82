"""Which process Resources.Limit may act on: the caller's own, named by a pidfd, still alive.

The caller proves nothing by naming a pid, so the helper takes a pidfd and reads the pid from
its own /proc/self/fdinfo. A pidfd can be opened on anyone's process, so ownership is checked
from the kernel's view of the process: all of its uids (real, effective, saved, filesystem)
must be the caller's, which is what a container's first process looks like before CMD starts
(container root maps onto the user). The helper keeps no CAP_SYS_PTRACE, so it cannot look at
the process's namespaces; it does not need to: a user may limit any process of their own,
which can only constrain them, because the new cgroup is nested under the ones the process is
in (cgroup_tree) and carries every maximum the admin configured (cgroup_limits.with_maximums).

Between the check and the move the process may die and its pid be reused; `still_same`
after the move detects that (fdinfo says -1 once the pidfd's process is gone).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import syscalls
from .fdcheck import subuid_ranges
from .cgroup_limits import InvalidLimit
from .cgroup_tree import in_pyctr_cgroup


class TargetRefused(InvalidLimit):
    """One message for every reason, so a caller learns nothing about processes not theirs."""

    def __init__(self) -> None:
        super().__init__("the pidfd does not name a live process of the caller's that is not "
                         "already limited")


@dataclass(frozen=True)
class Target:
    pid: int
    cgroups: tuple[str, ...]  # lines of /proc/PID/cgroup before the move, to move back on failure


def resolve(pidfd: int, caller_uid: int) -> Target:
    """The process behind `pidfd`, if it is the caller's, alive, and in no pyctr cgroup yet."""
    try:
        pid = syscalls.pidfd_pid(pidfd)
        if pid <= 0:
            raise TargetRefused()
        if not syscalls.is_thread_group_leader(pid):  # a PIDFD_THREAD pidfd names a thread
            raise TargetRefused()
        uids = syscalls.process_uids(pid)
        with open(f"/proc/{pid}/cgroup", encoding="ascii") as f:
            lines = tuple(f.read().splitlines())
        # The pid was read before the files: it must still be the pidfd's process now.
        if syscalls.pidfd_pid(pidfd) != pid:
            raise TargetRefused()
    except (OSError, ValueError, UnicodeDecodeError):
        raise TargetRefused() from None
    ranges = subuid_ranges(caller_uid)
    if not all(u == caller_uid or any(lo <= u < lo + n for lo, n in ranges) for u in uids):
        raise TargetRefused()
    for line in lines:
        if in_pyctr_cgroup(line.split(":", 2)[-1]):
            raise TargetRefused()
    return Target(pid, lines)


def still_same(pidfd: int, target: Target) -> bool:
    """True if the pidfd's process still holds target.pid, so what we moved was that process."""
    try:
        return syscalls.pidfd_pid(pidfd) == target.pid
    except OSError:
        return False
