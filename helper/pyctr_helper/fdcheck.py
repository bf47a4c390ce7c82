"""Validation of the file descriptors a caller passes. The helper never opens a path a caller
names (lxc-user-nic CVE-2017-5985, CVE-2018-6556): it only inspects fds it received.

Every reason to refuse a netns fd gives the same message (CVE-2022-47952): which check failed
would tell the caller something about a file it may not be able to see. The audit log keeps the
reason.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from . import syscalls
from .errors import InvalidArgument, InvalidNamespace

log = logging.getLogger(__name__)

NETNS_REFUSAL = "the netns file descriptor is not a network namespace you own"
PIDFD_REFUSAL = "the pidfd does not refer to a running process you own"


@dataclass(frozen=True)
class ForbiddenNamespaces:
    """Network namespaces never to attach to: the helper's own and init's. Read at start-up,
    while the helper may still look at /proc/1 (it later lacks CAP_SYS_PTRACE)."""

    own: syscalls.Inode
    host: syscalls.Inode

    @classmethod
    def read(cls) -> "ForbiddenNamespaces":
        own = syscalls.Inode.of_path("/proc/self/ns/net")
        try:
            host = syscalls.Inode.of_path("/proc/1/ns/net")
        except PermissionError:
            # Some sandboxes deny even root a look at pid 1. The helper runs in the host's
            # netns (the service manager starts it there), and a host netns belongs to the
            # initial user namespace, owned by uid 0, which the owner check refuses anyway.
            log.warning("cannot read /proc/1/ns/net; treating the helper's own netns as the host's")
            host = own
        return cls(own=own, host=host)


def fds_by_handle(handles: list[object], fds: list[int], expected: int) -> list[int]:
    """Map handle indexes to received fds: exactly `expected` fds, each index in range, distinct."""
    if len(fds) != expected:
        raise InvalidArgument(f"expected exactly {expected} file descriptors, got {len(fds)}")
    out = []
    for h in handles:
        if not isinstance(h, int) or not 0 <= h < len(fds):
            raise InvalidArgument("file descriptor handle index out of range")
        out.append(fds[h])
    if len(set(handles)) != len(handles):
        raise InvalidArgument("each file descriptor handle must name a different fd")
    return out


def check_netns(fd: int, uid: int, forbidden: ForbiddenNamespaces) -> None:
    """`fd` is a network namespace, neither ours nor the host's, owned (through its user
    namespace) by `uid`. Raises InvalidNamespace with one message for every reason."""
    reason = _netns_problem(fd, uid, forbidden)
    if reason:
        log.info("netns fd refused for uid %d: %s", uid, reason)
        raise InvalidNamespace(NETNS_REFUSAL)


def _netns_problem(fd: int, uid: int, forbidden: ForbiddenNamespaces) -> str | None:
    try:
        # Look before any ioctl: an ioctl number means different things to different drivers,
        # so it is only sent to something that already looks like an nsfs inode.
        if not syscalls.fd_link(fd).startswith("net:["):
            return "not an nsfs network namespace file"
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != forbidden.own.dev:
            return "not on nsfs"
        if syscalls.ns_type(fd) != syscalls.CLONE_NEWNET:
            return "NS_GET_NSTYPE is not CLONE_NEWNET"
        ident = syscalls.Inode(st.st_dev, st.st_ino)
        if ident == forbidden.own:
            return "the helper's own network namespace"
        if ident == forbidden.host:
            return "the host's network namespace"
        owner = syscalls.ns_owner_uid(fd)
        if owner != uid:
            return f"owning user namespace belongs to uid {owner}"
    except OSError as e:
        return f"inspection failed: {e}"
    return None


@dataclass(frozen=True)
class Process:
    pid: int
    start_time: int


def subuid_ranges(uid: int, path: Path = Path("/etc/subuid")) -> list[tuple[int, int]]:
    """The caller's subordinate uid ranges, by name or number, from the admin's file."""
    import pwd
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = None
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (name, str(uid)) and parts[1].isdigit() and parts[2].isdigit():
            out.append((int(parts[1]), int(parts[2])))
    return out


def check_pidfd(fd: int, uid: int) -> Process:
    """`fd` is a pidfd of a live process whose uids all belong to the caller: its own uid or
    one of its subordinate uids (a container's processes run as those)."""
    try:
        pid = syscalls.pidfd_pid(fd)
        if pid <= 0:
            raise OSError("exited or not in our pid namespace")
        if not syscalls.is_thread_group_leader(pid):
            raise OSError("a thread's pidfd (PIDFD_THREAD), not a process's")
        uids = syscalls.process_uids(pid)
        start = syscalls.process_start_time(pid)
        # The pidfd pins the process identity: if it is still alive now, the /proc reads above
        # described this process and not a later one that reused the pid.
        if not syscalls.pidfd_alive(fd):
            raise OSError("exited")
    except OSError as e:
        log.info("pidfd refused for uid %d: %s", uid, e)
        raise InvalidArgument(PIDFD_REFUSAL)
    ranges = subuid_ranges(uid)
    for u in uids:
        if u != uid and not any(lo <= u < lo + n for lo, n in ranges):
            log.info("pidfd refused for uid %d: process %d runs as uid %d", uid, pid, u)
            raise InvalidArgument(PIDFD_REFUSAL)
    return Process(pid, start)
