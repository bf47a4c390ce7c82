"""Kernel interfaces the helper calls directly: nsfs ioctls and pidfds.

Python's fcntl.ioctl and os.pidfd_open cover these, so no cffi is needed here; the only cffi
user is privileges.py (capset/prctl). Every function raises OSError with an errno.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
from dataclasses import dataclass

# linux/nsfs.h: _IO(0xb7, n)
NS_GET_USERNS = 0xB701
NS_GET_NSTYPE = 0xB703
NS_GET_OWNER_UID = 0xB704
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Inode:
    """Identity of a namespace or file: (device, inode)."""

    dev: int
    ino: int

    @classmethod
    def of_fd(cls, fd: int) -> "Inode":
        st = os.fstat(fd)
        return cls(st.st_dev, st.st_ino)

    @classmethod
    def of_path(cls, path: str) -> "Inode":
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino)


def fd_link(fd: int) -> str:
    """What one of our own fds refers to ("net:[4026531992]", "anon_inode:[pidfd]", a path).
    This reads our own /proc/self/fd entry, never a path a caller chose."""
    return os.readlink(f"/proc/self/fd/{fd}")


def ns_type(fd: int) -> int:
    """NS_GET_NSTYPE: the CLONE_NEW* flag of the namespace `fd` refers to."""
    return fcntl.ioctl(fd, NS_GET_NSTYPE)


def ns_owner_uid(ns_fd: int) -> int:
    """The uid (in our user namespace) that owns the user namespace owning `ns_fd`."""
    userns = fcntl.ioctl(ns_fd, NS_GET_USERNS)
    try:
        buf = bytearray(4)
        fcntl.ioctl(userns, NS_GET_OWNER_UID, buf, True)
        return int.from_bytes(buf, "little")
    finally:
        os.close(userns)


def pidfd_pid(fd: int) -> int:
    """The pid a pidfd refers to, from our own fdinfo; -1 once the process exited, 0 when it is
    not visible in our pid namespace. Raises OSError(EBADF) if `fd` is not a pidfd."""
    if fd_link(fd) != "anon_inode:[pidfd]":
        raise OSError(errno.EBADF, "not a pidfd")
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    raise OSError(errno.EBADF, "pidfd without a Pid line")


def pidfd_alive(fd: int) -> bool:
    """True while the process behind the pidfd has not exited: a pidfd polls readable once its
    process exits. (pidfd_send_signal(fd, 0) would need CAP_KILL for another user's process.)"""
    poller = select.poll()  # not select(): the helper's fds may number above FD_SETSIZE
    poller.register(fd, select.POLLIN)
    return not poller.poll(0)


def pidfd_open(pid: int) -> int:
    return os.pidfd_open(pid)


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (clock ticks since boot): with the pid, a process identity
    that survives pid reuse."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def is_thread_group_leader(pid: int) -> bool:
    """True if `pid` is a process (Tgid == Pid), not another thread of one: a pidfd opened
    with PIDFD_THREAD names a thread, and its fdinfo Pid is that thread's id."""
    tgid = own = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Tgid:"):
                tgid = int(line.split()[1])
            elif line.startswith("Pid:"):
                own = int(line.split()[1])
    if tgid is None or own is None:
        raise OSError(errno.ESRCH, "no Tgid/Pid line")
    return tgid == own == pid


def process_uids(pid: int) -> tuple[int, ...]:
    """Real, effective, saved and filesystem uid of `pid`."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return tuple(int(x) for x in line.split()[1:5])
    raise OSError(errno.ESRCH, "no Uid line")
