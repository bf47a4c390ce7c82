"""Capability names, the --cap-add/--cap-drop arithmetic, and applying the sets in the container.

How the five sets are set follows runc/podman after CVE-2022-24769 (inheritable capabilities
leaking into a non-root process through file capabilities):
- bounding: the container's set (podman's default 11, adjusted by --cap-drop/--cap-add);
- CMD running as root (uid 0 inside): effective = permitted = the set, inheritable and
  ambient empty (execve as root gives root the bounding set anyway);
- CMD running as another user: effective = permitted = inheritable = ambient = only the
  capabilities named with --cap-add (podman: a non-root user gets no capability unless asked
  for one; the ambient set is the only way one survives execve without file capabilities).
All of this is inside the container's user namespace: no capability here is a capability
over anything the user does not already own.
"""

from __future__ import annotations

from .errors import UsageError
from . import syscalls

NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
NUMBERS = {f"CAP_{name}": number for number, name in enumerate(NAMES)}

DEFAULT = frozenset(f"CAP_{n}" for n in (
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETFCAP", "SETGID",
    "SETPCAP", "SETUID", "SYS_CHROOT"))


def canonical(name: str) -> str:
    """'net_admin', 'CAP_NET_ADMIN', 'Cap_Net_Admin' -> 'CAP_NET_ADMIN'; unknown names refused."""
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in NUMBERS:
        raise UsageError(f"unknown capability {name!r}")
    return full


def resolve(cap_add: list[str], cap_drop: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(bounding set, explicitly added) from the options, the way podman combines them:
    drops apply to the default set first ("ALL" empties it), then adds ("ALL" is every cap)."""
    drop = {c for c in cap_drop if c.upper() != "ALL"}
    add = {c for c in cap_add if c.upper() != "ALL"}
    dropped = {canonical(c) for c in drop}
    added = {canonical(c) for c in add}
    caps = set() if any(c.upper() == "ALL" for c in cap_drop) else set(DEFAULT)
    caps -= dropped
    if any(c.upper() == "ALL" for c in cap_add):
        added = set(NUMBERS)
    caps |= added
    return frozenset(caps), frozenset(added)


def mask(names: frozenset[str]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << NUMBERS[name]
    return bits


def last_cap() -> int:
    """The highest capability this kernel knows (read before pivot_root)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def apply_bounding(names: frozenset[str], last: int) -> None:
    """Drop every capability outside `names` from the bounding set (needs CAP_SETPCAP)."""
    keep = mask(names)
    for number in range(last + 1):
        if not keep & (1 << number):
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, number)


def apply_for_root(names: frozenset[str]) -> None:
    bits = mask(names)
    syscalls.capset(effective=bits, permitted=bits, inheritable=0)
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)


def prepare_for_user(names: frozenset[str], last: int) -> None:
    """Before setresuid to a non-root uid: keep permitted across the change, set inheritable
    (raising inheritable needs CAP_SETPCAP, which only the root side still has)."""
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1)
    full = (1 << (last + 1)) - 1
    syscalls.capset(effective=full, permitted=full, inheritable=mask(names))


def apply_for_user(names: frozenset[str]) -> None:
    """After setresuid: E = P = I = A = names; everything else is gone for good."""
    bits = mask(names)
    syscalls.capset(effective=bits, permitted=bits, inheritable=bits)
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 0)
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    for name in names:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, NUMBERS[name])

