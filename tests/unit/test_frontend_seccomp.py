"""The default seccomp filter, installed in a forked child of the test process."""

from __future__ import annotations

import os

from pyctr import seccomp, syscalls
from pyctr._libc import ffi

SYS_KEYCTL = 250
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_SESSION_KEYRING = -3


def _in_filtered_child(check) -> int:
    """Run `check()` (returns an exit status) in a child under the filter."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
            seccomp.install(seccomp.program())
            code = check()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _keyctl() -> tuple[int, int]:
    lib = syscalls._lib
    ret = lib.syscall(ffi.cast("long", SYS_KEYCTL), ffi.cast("long", KEYCTL_GET_KEYRING_ID),
                      ffi.cast("long", KEY_SPEC_SESSION_KEYRING), ffi.cast("long", 0))
    return ret, ffi.errno


def test_denied_syscall_fails_with_eperm():
    def check() -> int:
        ret, err = _keyctl()
        return 0 if ret == -1 and err == 1 else 1  # EPERM
    assert _in_filtered_child(check) == 0


def test_ordinary_syscalls_still_work():
    def check() -> int:
        fd = os.open("/proc/self/status", os.O_RDONLY)
        status = os.read(fd, 4096).decode()
        os.close(fd)
        return 0 if "Seccomp:\t2" in status and os.getpid() > 0 else 1
    assert _in_filtered_child(check) == 0


def test_every_denied_number_is_in_the_program():
    program = seccomp.program()
    assert len(program) % 8 == 0
    ks = {int.from_bytes(program[i + 4:i + 8], "little") for i in range(0, len(program), 8)}
    for numbers in seccomp.DENIED.values():
        assert set(numbers) <= ks
