"""The container's filesystem, built by its first process inside its own mount namespace.

Runs as root of the container's user namespace: every mount here lives and dies with the
container's mount namespace and can only reach what the user could already reach.

Mount targets inside the rootfs are resolved by `resolve_inside` (symlinks followed as if
the rootfs were /, a ".." above the root refused), then pinned with an O_PATH descriptor
whose real path is checked to be where we resolved it before anything is mounted on
/proc/self/fd/N. A symlink swapped in meanwhile cannot redirect the mount (the
CVE-2021-30465 class).
"""

from __future__ import annotations

import os
import stat

from . import syscalls as sc
from .errors import MountError
from .spec import ContainerSpec, Mount

MASKED_PATHS = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/fs/selinux", "/sys/dev/block", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = (
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"),
             ("core", "/proc/kcore"))
READ_ONLY_ROOT_TMPFS = ("/tmp", "/var/tmp", "/run")

_ST_TO_MS = ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV),
             (os.ST_NOEXEC, sc.MS_NOEXEC), (os.ST_NOATIME, sc.MS_NOATIME),
             (os.ST_NODIRATIME, sc.MS_NODIRATIME), (os.ST_RELATIME, sc.MS_RELATIME))


def _walk(root: str, path: str) -> tuple[list[str], list[str]]:
    """Resolve `path` under `root` as far as it exists: (resolved components, missing rest).

    Symlinks resolve relative to `root` (an absolute target restarts at `root`); a ".."
    that would climb above `root` is refused as an escape.
    """
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if not done:
                raise MountError(f"{path}: a symlink or '..' leads out of the container's root")
            done.pop()
            continue
        current = os.path.join(root, *done, name)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            rest = [name] + parts
            if ".." in rest:
                raise MountError(f"{path}: '..' after a missing directory") from None
            return done, rest
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                raise MountError(f"{path}: too many levels of symbolic links")
            target = os.readlink(current)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        if parts and not stat.S_ISDIR(st.st_mode):
            raise MountError(f"{path}: {'/' + '/'.join(done + [name])} is not a directory")
        done.append(name)
    return done, []


def _create(base: str, rest: list[str], kind: str) -> None:
    for i, name in enumerate(rest):
        current = os.path.join(base, *rest[:i + 1])
        if i < len(rest) - 1 or kind == "dir":
            os.mkdir(current, 0o755)
        else:
            os.close(os.open(current, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644))


def resolve_inside(root: str, path: str, create: str | None = None) -> str:
    """The host path of container path `path` under `root`, with no symlink left in it.
    With `create` ("dir" or "file"), missing components are created, the last as that kind."""
    done, rest = _walk(root, path)
    if rest:
        if create is None:
            raise MountError(f"{path}: does not exist in the container")
        _create(os.path.join(root, *done), rest, create)
    return os.path.join(root, *done, *rest)


def prepare_in_upper(lower: str, upper: str, path: str, kind: str) -> None:
    """Before the overlay is mounted: make a missing mount target exist by creating it in
    the upper layer. ROOTFS usually belongs to someone else (root, unmapped in the
    container), so the container's root could not create it through the overlay; the
    user owns the upper layer. Parent directories copied up this way keep ROOTFS's modes
    and become the user's (root in the container). Best effort: the real resolution, with
    every check, happens at mount time."""
    try:
        done, rest = _walk(lower, path)
    except (MountError, OSError):
        return
    if not rest:
        return
    try:
        for i in range(len(done)):
            up = os.path.join(upper, *done[:i + 1])
            if not os.path.isdir(up):
                os.mkdir(up, stat.S_IMODE(os.stat(os.path.join(lower, *done[:i + 1])).st_mode))
        _create(os.path.join(upper, *done), rest, kind)
    except OSError:
        pass


class Pinned:
    """An O_PATH descriptor on a resolved target, verified to be where it was resolved."""

    def __init__(self, root: str, path: str, create: str | None = None) -> None:
        self.resolved = resolve_inside(root, path, create)
        self.fd = os.open(self.resolved, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        real = os.readlink(f"/proc/self/fd/{self.fd}")
        if real != self.resolved:
            os.close(self.fd)
            raise MountError(f"{path}: changed while being resolved (a symlink race?)")

    @property
    def proc_path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __enter__(self) -> "Pinned":
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def remount_read_only(path: str, recursive: bool = False) -> None:
    """Make a bind mount read-only, keeping the flags the kernel would refuse to clear
    (nosuid, nodev, noexec... are locked on mounts inherited from a more privileged ns)."""
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY
    current = os.statvfs(path).f_flag
    for st_flag, ms_flag in _ST_TO_MS:
        if current & st_flag:
            flags |= ms_flag
    sc.mount(None, path, None, flags | (sc.MS_REC if recursive else 0))


def _mount_at(root: str, destination: str, source: str | None, fstype: str | None,
              flags: int, data: str | None, create: str) -> str:
    with Pinned(root, destination, create) as target:
        sc.mount(source, target.proc_path, fstype, flags, data)
        return target.resolved


def _mount_overlay(spec: ContainerSpec, upper: str, work: str, merged: str) -> None:
    lower = str(spec.rootfs)
    for path in (lower, upper, work):
        if any(c in path for c in ",:\\"):
            # overlayfs's option syntax has no reliable escape for these.
            raise MountError(f"{path}: overlayfs cannot use a path containing ',', ':' or '\\'")
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    try:
        sc.mount("overlay", merged, "overlay", 0, data)
    except OSError as e:
        raise MountError(f"cannot mount the overlay of {lower} with its upper layer in "
                         f"{os.path.dirname(upper)}: {e.strerror}") from None


def _mount_dev(root: str, mapped_tty_gid: bool) -> None:
    dev = _mount_at(root, "/dev", "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC,
                    "mode=755,size=65536k", "dir")
    # A fresh tmpfs: nothing in it can be a symlink, plain paths are safe from here on.
    for name in DEVICES:
        target = os.path.join(dev, name)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
        sc.mount(f"/dev/{name}", target, None, sc.MS_BIND)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(os.path.join(dev, name), 0o755)
    pts_options = "newinstance,ptmxmode=0666,mode=0620" + (",gid=5" if mapped_tty_gid else "")
    sc.mount("devpts", os.path.join(dev, "pts"), "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, pts_options)
    sc.mount("shm", os.path.join(dev, "shm"), "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC,
             "mode=1777,size=65536k")
    sc.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue",
             sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None)
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))


def _mount_sys(root: str, new_netns: bool) -> None:
    if new_netns:
        # sysfs may be mounted only by the owner of the network namespace: ours.
        _mount_at(root, "/sys", "sysfs", "sysfs",
                  sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None, "dir")
    else:
        target = _mount_at(root, "/sys", "/sys", None, sc.MS_BIND | sc.MS_REC, None, "dir")
        remount_read_only(target)


def _user_mount(root: str, m: Mount) -> None:
    if m.source is None:
        options = list(m.options)
        flags = sc.MS_NOSUID | sc.MS_NODEV
        if "exec" not in options:
            flags |= sc.MS_NOEXEC
        data = [o for o in options if "=" in o]
        if not any(o.startswith("mode=") for o in data):
            data.append("mode=1777")
        target = _mount_at(root, m.destination, "tmpfs", "tmpfs", flags, ",".join(data), "dir")
        if m.read_only:
            remount_read_only(target)
        return
    kind = "dir" if os.path.isdir(m.source) else "file"
    try:
        target = _mount_at(root, m.destination, str(m.source), None, sc.MS_BIND | sc.MS_REC,
                           None, kind)
    except OSError as e:
        raise MountError(f"-v {m.source}:{m.destination}: {e.strerror}") from None
    if m.read_only:
        remount_read_only(target, recursive=True)


SCRATCH_DIRS = ("/tmp", "/var/tmp")


def _prepare_scratch_dirs(lower: str, upper: str) -> None:
    """Give world-writable scratch directories (/tmp) an upper-layer twin.

    A ROOTFS owned by host root is unmapped in the container: overlayfs cannot copy such a
    directory up (it could not represent its owner, EOVERFLOW), so without a twin even a
    write to /tmp would fail. The twin keeps the mode (1777) and belongs to the user.
    """
    for path in SCRATCH_DIRS:
        try:
            st = os.lstat(lower + path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH:
            try:
                os.makedirs(os.path.dirname(upper + path), exist_ok=True)
                os.mkdir(upper + path)
                os.chmod(upper + path, stat.S_IMODE(st.st_mode))
            except OSError:
                pass


def etc_files(spec: ContainerSpec) -> tuple[str, ...]:
    """The /etc files pyctr generates in the state directory and bind-mounts (as podman)."""
    names = ("hostname", "hosts", "resolv.conf")
    return names + ("passwd", "group") if spec.keep_id else names


def _targets(spec: ContainerSpec, user_targets: set[str]) -> list[tuple[str, str]]:
    """Every path something is mounted on (or created at), with its kind."""
    targets = [("/proc", "dir"), ("/dev", "dir"), ("/sys", "dir")]
    if spec.read_only:
        targets += [(p, "dir") for p in READ_ONLY_ROOT_TMPFS if p not in user_targets]
    targets += [(f"/etc/{n}", "file") for n in etc_files(spec) if f"/etc/{n}" not in user_targets]
    for m in spec.mounts:
        is_dir = m.source is None or os.path.isdir(m.source)
        targets.append((m.destination, "dir" if is_dir else "file"))
    targets.append((spec.workdir, "dir"))
    return targets


def build(spec: ContainerSpec, upper: str, work: str, merged: str, state_dir: str,
          mapped_tty_gid: bool) -> None:
    """Mount everything under `merged`, then pivot_root into it."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    user_targets = {m.destination for m in spec.mounts}
    lower = str(spec.rootfs)
    for path, kind in _targets(spec, user_targets):
        prepare_in_upper(lower, upper, path, kind)
    _prepare_scratch_dirs(lower, upper)
    _mount_overlay(spec, upper, work, merged)
    root = merged
    _mount_at(root, "/proc", "proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, None, "dir")
    _mount_dev(root, mapped_tty_gid)
    _mount_sys(root, spec.network.mode != "host")
    if spec.read_only:
        for path in READ_ONLY_ROOT_TMPFS:
            if path not in user_targets:
                _mount_at(root, path, "tmpfs", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV,
                          "mode=1777" if path != "/run" else "mode=755", "dir")
    for name in etc_files(spec):
        if f"/etc/{name}" not in user_targets:
            _mount_at(root, f"/etc/{name}", os.path.join(state_dir, name), None, sc.MS_BIND,
                      None, "file")
    for m in spec.mounts:
        _user_mount(root, m)
    resolve_inside(root, spec.workdir, create="dir")
    if spec.read_only:
        remount_read_only(root)
    os.chdir(root)
    sc.pivot_root(".", ".")
    # The old root is stacked under the new one at "/": detach it so no host path is left.
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")


def protect_kernel_paths() -> None:
    """After pivot_root: podman's masked paths hidden, its read-only paths read-only."""
    for path in MASKED_PATHS:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV
                     | sc.MS_NOEXEC, "size=0")
        else:
            sc.mount("/dev/null", path, None, sc.MS_BIND)
    for path in READONLY_PATHS:
        if os.path.lexists(path):
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
            remount_read_only(path)
