"""The container's default seccomp filter: a short deny list, installed right before exec.

Why a deny list and not an allow list (podman's profile is an allow list of ~350 calls):
the container already runs in an unprivileged user namespace, so the kernel's own checks
refuse everything that needs real privilege. What remains worth closing is kernel surface
an unprivileged user namespace can still reach and that has no business in a container:

- kernel keyrings (keyctl, add_key, request_key): not namespaced, shared with the host user;
- bpf, perf_event_open, userfaultfd: frequent exploit primitives;
- open_by_handle_at: the "shocker" escape for bind-mounted file systems;
- module, kexec, reboot, swap, quota, syslog, acct, iopl/ioperm and obsolete calls:
  refused anyway without host privilege, denied here so they cannot become reachable.

Every other architecture's syscall convention (i386 via int 0x80, x32) is refused with
ENOSYS: a 64-bit container has no use for them and they would bypass a filter keyed on
x86_64 numbers. `--security-opt seccomp=unconfined` turns the filter off, as with podman.
"""

from __future__ import annotations

import errno
import struct

from . import syscalls

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

DENIED = {
    "read_kernel_log": (103,),                    # syslog
    "keyrings": (248, 249, 250),                  # add_key request_key keyctl
    "bpf": (321,),
    "perf_event_open": (298,),
    "userfaultfd": (323,),
    "open_by_handle_at": (304,),
    "modules_and_kexec": (175, 176, 313, 246, 320, 174, 177, 178),
    "reboot_swap_quota_acct": (169, 167, 168, 179, 443, 163),
    "io_ports": (172, 173),                       # iopl ioperm
    "obsolete": (156, 134, 136, 180, 153, 212),   # _sysctl uselib ustat nfsservctl vhangup lookup_dcookie
}

# classic BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06
# seccomp return values (linux/seccomp.h)
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
# offsets in struct seccomp_data
_NR = 0
_ARCH = 4


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program() -> bytes:
    """The filter as an array of struct sock_filter."""
    numbers = sorted({n for group in DENIED.values() for n in group})
    insns = [
        _insn(_LD_W_ABS, 0, 0, _ARCH),
        _insn(_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
        _insn(_LD_W_ABS, 0, 0, _NR),
        _insn(_JGE_K, 0, 1, X32_SYSCALL_BIT),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
    ]
    for i, number in enumerate(numbers):
        # Jump over the rest of the list and the ALLOW to the EPERM at the end.
        insns.append(_insn(_JEQ_K, len(numbers) - i, 0, number))
    insns.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    insns.append(_insn(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM))
    return b"".join(insns)


def install(filter_program: bytes) -> None:
    """Install the filter on this thread (no_new_privs must already be set)."""
    syscalls.seccomp_filter(filter_program)
