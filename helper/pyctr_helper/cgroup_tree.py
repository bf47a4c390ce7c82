"""The cgroup filesystems the helper writes to, behind one small interface.

Every container the helper limits gets one cgroup named `pyctr/<uid>-<16 hex>` in each
hierarchy it needs (cgroup v1: one per controller mount; v2: the single unified tree).
The helper alone creates, fills and removes them; the directories and their control files
stay root-owned, so neither the container nor its owner can raise a limit or move a
process in or out, and the uid in the name lets reconciliation tell whose a leftover was.

`detect()` reads /proc/self/mountinfo once and returns the backend the host supports:
CgroupV1 when the controllers live on v1 mounts (hybrid hosts like Debian without systemd),
CgroupV2 when they live in the unified tree.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import time
from pathlib import Path
from typing import Iterable, Protocol

from .cgroup_limits import LimitRequest, LimitError, LimitUnsupported

SUBTREE = "pyctr"
NAME = re.compile(r"^(\d+)-[0-9a-f]{16}$")
RMDIR_ATTEMPTS = 50       # a dying task can keep a cgroup busy for a few milliseconds
RMDIR_BACKOFF = 0.01


class CgroupFailure(LimitError):
    """The kernel refused a step the helper had every right to take."""


def new_name(uid: int) -> str:
    return f"{uid}-{secrets.token_hex(8)}"


def owner_of(name: str) -> int | None:
    m = NAME.match(name)
    return int(m.group(1)) if m else None


def write(path: Path, value: str) -> None:
    """Write one control file; the kernel's errno becomes a CgroupFailure naming the file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupFailure(f"cannot write {value!r} to {path.name}: {os.strerror(e.errno)}") from e


def read(path: Path) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def keyed(path: Path) -> dict[str, int]:
    """A flat-keyed control file (memory.events, memory.oom_control) as a dict."""
    out = {}
    try:
        for line in read(path).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
    except OSError:
        pass
    return out


def procs(directory: Path) -> set[int]:
    try:
        return {int(p) for p in read(directory / "cgroup.procs").split()}
    except FileNotFoundError:
        return set()


def make_dir(path: Path) -> None:
    """mkdir that refuses to reuse: a name collision is a bug or an attack, never shared state."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError as e:
        raise CgroupFailure(f"cgroup {path} already exists") from e
    except OSError as e:
        raise CgroupFailure(f"cannot create cgroup {path}: {os.strerror(e.errno)}") from e


def ensure_dir(path: Path) -> None:
    """The shared pyctr/ parent: created once, root-owned, never removed."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise CgroupFailure(f"{path} is not a cgroup directory")
    except OSError as e:
        raise CgroupFailure(f"cannot create cgroup {path}: {os.strerror(e.errno)}") from e


def remove_dir(path: Path, attempts: int = RMDIR_ATTEMPTS) -> bool:
    """rmdir a cgroup, retrying briefly while exiting tasks leave it; True once it is gone."""
    for _ in range(attempts):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY:
                return False
        time.sleep(RMDIR_BACKOFF)
    return False


class CgroupBackend(Protocol):
    """What resources.py needs from a cgroup version; dirs are absolute, one per hierarchy."""

    version: int

    def check(self, limits: LimitRequest) -> None:
        """Raise LimitUnsupported when this host cannot enforce `limits`; changes nothing."""

    def create(self, name: str, limits: LimitRequest) -> list[Path]:
        """Make the cgroup(s) with the limits written; on failure nothing is left behind."""

    def move(self, dirs: list[Path], pid: int) -> None:
        """Put process `pid` (all its threads) into dirs."""

    def oom_kills(self, dirs: list[Path]) -> int:
        """How many processes the kernel's OOM killer has killed inside this cgroup."""

    def restore(self, pid: int, proc_cgroup: tuple[str, ...]) -> None:
        """Undo move(): put pid back in the cgroups /proc/PID/cgroup listed before."""

    def controllers(self, dirs: list[Path]) -> list[str]:
        """The controllers that limit dirs, for the caller's reply."""

    def remove(self, dirs: list[Path], attempts: int = RMDIR_ATTEMPTS) -> bool:
        """rmdir what is empty; True when nothing is left."""

    def existing(self) -> dict[str, list[Path]]:
        """Every pyctr cgroup now on the host, by name (for reconciliation at start)."""


def remove_all(dirs: Iterable[Path], attempts: int = RMDIR_ATTEMPTS) -> bool:
    ok = True
    for d in reversed(list(dirs)):
        ok = remove_dir(d, attempts) and ok
    return ok


def restore(pid: int, proc_cgroup: Iterable[str], roots: dict[str, Path]) -> None:
    """Best effort: put `pid` back where /proc/PID/cgroup said it was (rollback of a move).

    `roots` maps a /proc/PID/cgroup controller field ("memory", "cpu,cpuacct", "" for v2)
    to the hierarchy's mount point."""
    for line in proc_cgroup:
        _, controllers, path = line.split(":", 2)
        root = roots.get(controllers)
        if root is None:
            continue
        try:
            write(root / path.lstrip("/") / "cgroup.procs", str(pid))
        except CgroupFailure:
            pass


def existing_in(roots: Iterable[Path]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for root in roots:
        try:
            entries = list(os.scandir(root / SUBTREE))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if NAME.match(entry.name) and entry.is_dir(follow_symlinks=False):
                found.setdefault(entry.name, []).append(Path(entry.path))
    return found


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def cgroup_mounts(mountinfo: str) -> tuple[dict[str, Path], Path | None]:
    """v1 controller → mount point (hierarchy roots only), and the unified mount if any."""
    v1: dict[str, Path] = {}
    unified: Path | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        root, mountpoint = fields[3], Path(_unescape(fields[4]))
        fstype, superopts = fields[sep + 1], fields[sep + 3] if len(fields) > sep + 3 else ""
        if root != "/":
            continue  # a bind mount of a sub-cgroup is not a place to make ours
        if fstype == "cgroup":
            for opt in superopts.split(","):
                if opt in ("memory", "cpu", "cpuacct", "pids"):
                    v1.setdefault(opt, mountpoint)
        elif fstype == "cgroup2" and unified is None:
            unified = mountpoint
    return v1, unified


def detect(mountinfo: str | None = None) -> CgroupBackend:
    """The backend for this host: the one where the memory, cpu and pids controllers live."""
    from .cgroup_v1 import CgroupV1
    from .cgroup_v2 import CgroupV2

    if mountinfo is None:
        mountinfo = read(Path("/proc/self/mountinfo"))
    v1, unified = cgroup_mounts(mountinfo)
    if v1:
        return CgroupV1(v1)
    if unified is not None:
        return CgroupV2(unified)
    raise LimitUnsupported("no cgroup filesystem is mounted on this host")
