"""The cgroup filesystems the helper writes to, behind one small interface.

Every container the helper limits gets one cgroup named `pyctr/<uid>-<16 hex>` in each
hierarchy it needs (cgroup v1: one per controller mount; v2: the single unified tree),
nested under the cgroup the process is in when it asks (`<its cgroup>/pyctr/<name>`): the
container stays under every limit its ancestors set (a user slice's TasksMax or MemoryMax,
an admin's parent cgroup), so a Limit call can only add limits, never shed them.
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
import stat
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
    """A shared pyctr/ parent: created when first needed, root-owned. One that someone else
    made (in a cgroup delegated to a user) is refused: its owner could write its limits."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        try:
            st = os.lstat(path)
        except OSError as e:
            raise CgroupFailure(f"{path} is not a cgroup directory") from e
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise CgroupFailure(f"{path} is not a root-owned cgroup directory")
    except OSError as e:
        raise CgroupFailure(f"cannot create cgroup {path}: {os.strerror(e.errno)}") from e


def current_paths(proc_cgroup: Iterable[str]) -> dict[str, str]:
    """/proc/PID/cgroup as {controller: path}; the unified (v2) line's controller is ""."""
    out: dict[str, str] = {}
    for line in proc_cgroup:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            out[controller] = path
    return out


def parent_in(root: Path, path: str) -> Path:
    """`root` joined with a /proc/PID/cgroup path: the directory to nest ours under.

    The kernel wrote the path, but a user with a delegated cgroup chooses its names: refuse
    anything that is not plain components of an existing directory inside `root`."""
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/") or any(p in (".", "..") for p in parts):
        raise CgroupFailure("the process's current cgroup has an unusable path")
    parent = root.joinpath(*parts)
    if os.path.realpath(parent) != str(parent) or not parent.is_dir():
        raise CgroupFailure("the process's current cgroup is gone or not a directory")
    if any(part == SUBTREE for part in parts):
        raise CgroupFailure("the process is already inside a pyctr cgroup")
    return parent


def in_pyctr_cgroup(path: str) -> bool:
    """True if a /proc/PID/cgroup path lies in (or is) a pyctr/<name> cgroup, at any depth."""
    parts = path.split("/")
    return any(a == SUBTREE and (b == "" or NAME.match(b)) for a, b in zip(parts, parts[1:] + [""]))


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

    def accounts_swap(self) -> bool:
        """True if a memory+swap limit can be written here (checked without changing anything)."""

    def create(self, name: str, limits: LimitRequest, proc_cgroup: tuple[str, ...] = ()) -> list[Path]:
        """Make the cgroup(s) with the limits written, nested under the cgroups the process's
        /proc/PID/cgroup lines name (none: at the hierarchy roots); on failure nothing is
        left behind."""

    def move(self, dirs: list[Path], pid: int) -> None:
        """Put process `pid` (all its threads) into dirs."""

    def oom_kills(self, dirs: list[Path]) -> int:
        """How many processes the kernel's OOM killer has killed inside this cgroup."""

    def restore(self, pid: int, proc_cgroup: tuple[str, ...]) -> None:
        """Undo move(): put pid back in the cgroups /proc/PID/cgroup listed before."""

    def controllers(self, dirs: list[Path]) -> list[str]:
        """The controllers that limit dirs, for the caller's reply."""

    def unlimit(self, dirs: list[Path]) -> None:
        """Best effort: lift every limit in dirs (a process that is not the target is inside)."""

    def paths(self, dirs: list[Path]) -> dict[str, str]:
        """Where dirs are, relative to each hierarchy's root, by controller ("" on v2)."""

    def remove(self, dirs: list[Path], attempts: int = RMDIR_ATTEMPTS) -> bool:
        """rmdir what is empty; True when nothing is left."""

    def existing(self) -> dict[str, list[Path]]:
        """Every pyctr cgroup now on the host, by name (for reconciliation at start)."""


def write_each(writes: Iterable[tuple[Path, str]]) -> None:
    """Best effort: write each (file, value), skipping files absent or refused."""
    for path, value in writes:
        if path.exists():
            try:
                write(path, value)
            except CgroupFailure:
                pass


def remove_all(dirs: Iterable[Path], attempts: int = RMDIR_ATTEMPTS,
               roots: Iterable[Path] = ()) -> bool:
    """rmdir each of dirs; then, best effort, a pyctr/ parent nested in someone's cgroup that
    is left empty (it would keep that cgroup from being removed). A pyctr/ right under a
    hierarchy root in `roots` stays, as it always has."""
    ok = True
    roots = set(roots)
    for d in reversed(list(dirs)):
        gone = remove_dir(d, attempts)
        ok = gone and ok
        if gone and d.parent.name == SUBTREE and d.parent.parent not in roots:
            try:
                os.rmdir(d.parent)
            except OSError:
                pass  # another container of this cgroup is still in it, or already gone
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
    """Every root-owned pyctr/<uid>-<hex> under a root-owned pyctr/ anywhere in the hierarchies
    (they are nested under the cgroups their processes came from)."""
    found: dict[str, list[Path]] = {}
    for root in roots:
        for dirpath, dirnames, _ in os.walk(root, followlinks=False):
            here = Path(dirpath)
            if here.name != SUBTREE or not _root_owned(here):
                continue
            for entry in list(dirnames):
                path = here / entry
                if NAME.match(entry) and _root_owned(path):
                    found.setdefault(entry, []).append(path)
                    dirnames.remove(entry)  # nothing of ours below a container's cgroup
    return found


def _root_owned(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0


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
