"""Which way this host gives pyctr a cgroup, decided from a few file reads (no bus call).

systemd delegation is used when all of these hold, else pyctr-helper:
- /sys/fs/cgroup is the unified (v2) hierarchy;
- the user's systemd manager (user@UID.service) has the controllers the limits need;
- a user session bus is there to ask it on ($DBUS_SESSION_BUS_ADDRESS or $XDG_RUNTIME_DIR/bus).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .cgroups import CgroupPlacement, Wanted

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Backend(Protocol):
    def apply(self, wanted: Wanted, pid: int, pidfd: int) -> CgroupPlacement:
        """Create the cgroup, write the limits, move `pid` in; PyctrError when it cannot."""


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mounts:
    """The cgroup mounts of our mount namespace: v1 controller → path, and the v2 tree."""

    v1: dict[str, Path]
    unified: Path | None

    @classmethod
    def read(cls, mountinfo: str | None = None) -> "Mounts":
        if mountinfo is None:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read()
        v1: dict[str, Path] = {}
        unified = None
        for line in mountinfo.splitlines():
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            if fields[3] != "/" or len(fields) < sep + 4:
                continue
            fstype, mountpoint = fields[sep + 1], Path(_unescape(fields[4]))
            if fstype == "cgroup":
                for opt in fields[sep + 3].split(","):
                    if opt not in ("rw", "ro"):
                        v1.setdefault(opt, mountpoint)
            elif fstype == "cgroup2" and unified is None:
                unified = mountpoint
        return cls(v1, unified)

    @property
    def pure_v2(self) -> bool:
        return self.unified == CGROUP_ROOT and not self.v1


def user_bus_address(env: dict[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    if env.get("DBUS_SESSION_BUS_ADDRESS"):
        return env["DBUS_SESSION_BUS_ADDRESS"]
    runtime = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    if Path(runtime, "bus").is_socket():
        return f"unix:path={runtime}/bus"
    return None


def delegated_controllers(uid: int, root: Path = CGROUP_ROOT) -> set[str]:
    """Controllers the user's systemd manager may hand on (empty when there is no manager)."""
    manager = root / "user.slice" / f"user-{uid}.slice" / f"user@{uid}.service"
    try:
        return set((manager / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def use_systemd(wanted: Wanted, mounts: Mounts, uid: int, env: dict[str, str] | None = None,
                root: Path = CGROUP_ROOT) -> bool:
    return (mounts.pure_v2
            and set(wanted.controllers()) <= delegated_controllers(uid, root)
            and user_bus_address(env) is not None)


def backend(wanted: Wanted) -> Backend:
    mounts = Mounts.read()
    if use_systemd(wanted, mounts, os.getuid()):
        from .cgroup_systemd import SystemdScopes
        return SystemdScopes(mounts)
    from .cgroup_helper import HelperCgroups
    return HelperCgroups(mounts)
