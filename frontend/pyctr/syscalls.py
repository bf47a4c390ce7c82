"""The Linux system calls Python 3.11 lacks, as Python functions that raise OSError.

This is the only module that touches cffi (pyctr._libc, generated from _libc_build.py in
out-of-line ABI mode, so importing it parses no C). Everything else calls these functions.
"""

from __future__ import annotations

import os

from ._libc import ffi

_lib = ffi.dlopen(None)

# <sched.h> namespace flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <sys/mount.h>
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_RELATIME = 0x200000
MNT_DETACH = 0x2

# <sys/prctl.h>
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155  # x86_64
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret == -1:
        err = ffi.errno
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def unshare(flags: int) -> None:
    _check(_lib.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_lib.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2); `target` may be /proc/self/fd/N of an O_PATH fd (how pyctr pins targets)."""
    src = ffi.NULL if source is None else os.fsencode(source)
    fst = ffi.NULL if fstype is None else os.fsencode(fstype)
    dat = ffi.NULL if data is None else os.fsencode(data)
    _check(_lib.mount(src, os.fsencode(target), fst, flags, dat), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_lib.umount2(os.fsencode(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    ret = _lib.syscall(ffi.cast("long", _SYS_PIVOT_ROOT),
                       ffi.new("char[]", os.fsencode(new_root)),
                       ffi.new("char[]", os.fsencode(put_old)))
    _check(ret, "pivot_root", new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_lib.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_lib.sethostname(raw, len(raw)), "sethostname")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's three capability sets (each a bitmask over capability numbers)."""
    hdr = ffi.new("unsigned int[2]", [_LINUX_CAPABILITY_VERSION_3, 0])
    data = ffi.new("unsigned int[6]")  # two __user_cap_data_struct {effective, permitted, inheritable}
    for i in range(2):
        shift = 32 * i
        data[3 * i] = (effective >> shift) & 0xFFFFFFFF
        data[3 * i + 1] = (permitted >> shift) & 0xFFFFFFFF
        data[3 * i + 2] = (inheritable >> shift) & 0xFFFFFFFF
    _check(_lib.capset(hdr, data), "capset")


def seccomp_filter(program: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &sock_fprog) for a classic BPF program."""
    count = len(program) // 8
    insns = ffi.new("char[]", program)
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }: the short sits
    # in the first (padded) word, the pointer in the second.
    fprog = ffi.new("unsigned long[2]", [count, int(ffi.cast("uintptr_t", insns))])
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, int(ffi.cast("uintptr_t", fprog)))
