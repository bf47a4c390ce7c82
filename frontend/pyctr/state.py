"""A container's state directory on the host, and removing it on every path.

Layout, under $XDG_DATA_HOME/pyctr (default ~/.local/share/pyctr), all owned by the user:

    containers/<id>/lock          flock()ed by the pyctr process for the container's lifetime
    containers/<id>/upper, work   the overlay's upper and work directories (ROOTFS is the lower)
    containers/<id>/merged        the overlay's mount point (mounted only in the container's
                                  own mount namespace: nothing ever appears in the host's)
    containers/<id>/hostname, hosts, resolv.conf   bind-mounted onto the container's /etc
    containers/<id>/exited        written when the container exited and its state is kept

A directory without `exited` whose lock nobody holds belongs to a pyctr process that died
(SIGKILL, a crash): the next `pyctr run` removes it.
"""

from __future__ import annotations

import fcntl
import os

from . import idmap, syscalls
from .errors import PyctrError
from .spec import IdMapping


def data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "pyctr")


def containers_dir() -> str:
    return os.path.join(data_dir(), "containers")


class ContainerState:
    """A created state directory and the descriptor holding its lock."""

    def __init__(self, path: str, lock_fd: int) -> None:
        self.path = path
        self.lock_fd = lock_fd

    @property
    def upper(self) -> str:
        return os.path.join(self.path, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.path, "work")

    @property
    def merged(self) -> str:
        return os.path.join(self.path, "merged")

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def write(self, name: str, text: str) -> None:
        """Write a generated file in place (its inode may already be bind-mounted)."""
        fd = os.open(self.file(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def mark_exited(self, code: int) -> None:
        self.write("exited", f"{code}\n")


GC_LOCK = ".gc.lock"  # shared while a state directory is being created, exclusive for GC


def _gc_lock(base: str, operation: int) -> int:
    fd = os.open(os.path.join(base, GC_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, operation)
    except OSError:
        os.close(fd)
        raise
    return fd


def create(container_id: str) -> ContainerState:
    base = containers_dir()
    path = os.path.join(base, container_id)
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        # Between mkdir and flock the new directory has no held lock: keep a concurrent
        # `pyctr run`'s garbage collection out of that window.
        gc_fd = _gc_lock(base, fcntl.LOCK_SH)
    except OSError as e:
        raise PyctrError(f"cannot create the container's state under {base}: {e.strerror}") from None
    try:
        os.mkdir(path, 0o700)
        lock_fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for name in ("upper", "work", "merged"):
            os.mkdir(os.path.join(path, name), 0o755)
    except OSError as e:
        try:
            _rmtree(path)
        except OSError:
            pass
        raise PyctrError(f"cannot create the container's state in {path}: {e.strerror}") from None
    finally:
        os.close(gc_fd)
    return ContainerState(path, lock_fd)


def _lock_held(path: str) -> bool:
    try:
        fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def list_containers() -> list[tuple[str, str]]:
    """(id, "running" | "exited N" | "dead") for every state directory."""
    base = containers_dir()
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    result = []
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(base, name)
        try:
            with open(os.path.join(path, "exited")) as f:
                result.append((name, f"exited {f.read().strip()}"))
                continue
        except OSError:
            pass
        result.append((name, "running" if _lock_held(path) else "dead"))
    return result


def collect_garbage(uid_map: tuple[IdMapping, ...], gid_map: tuple[IdMapping, ...]) -> None:
    """Remove the state of containers whose pyctr process died without cleaning up."""
    base = containers_dir()
    try:
        names = os.listdir(base)
        gc_fd = _gc_lock(base, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # nothing to collect, or another pyctr is creating or collecting right now
    try:
        _collect(base, names, uid_map, gid_map)
    finally:
        os.close(gc_fd)


def _collect(base: str, names: list[str], uid_map: tuple[IdMapping, ...],
             gid_map: tuple[IdMapping, ...]) -> None:
    for name in names:
        path = os.path.join(base, name)
        if name.startswith(".") or os.path.exists(os.path.join(path, "exited")):
            continue
        try:
            fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1  # died between mkdir and lock: nothing ran
        except OSError:
            continue
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live pyctr holds it
        try:
            remove_tree(path, uid_map, gid_map)
        except PyctrError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)


def _open_overlay_workdir(path: str) -> None:
    """overlayfs leaves work/work with mode 000; its owner may open it up to delete it."""
    try:
        os.chmod(os.path.join(path, "work", "work"), 0o700, follow_symlinks=False)
    except OSError:
        pass


def _rmtree(path: str) -> None:
    """shutil.rmtree without its import cost: descriptor-relative, never follows a symlink
    (the container wrote the upper layer: anything in it may be a symlink)."""
    parent_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _rmtree_at(parent_fd, os.path.basename(path))
    finally:
        os.close(parent_fd)


def _rmtree_at(dir_fd: int, name: str) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    _rmtree_at(fd, entry.name)
                else:
                    os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def remove_tree(path: str, uid_map: tuple[IdMapping, ...], gid_map: tuple[IdMapping, ...]) -> None:
    """Remove a state directory. Files a non-root container user created belong to
    subordinate ids the user cannot delete directly: then remove them as root of a fresh
    user namespace with the container's maps (root there owns exactly those ids)."""
    try:
        _open_overlay_workdir(path)
        _rmtree(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    _remove_in_userns(path, uid_map, gid_map)


def _remove_in_userns(path: str, uid_map: tuple[IdMapping, ...],
                      gid_map: tuple[IdMapping, ...]) -> None:

    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(to_child_w)
            os.close(to_parent_r)
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(to_parent_w, b"u")
            if os.read(to_child_r, 1) == b"m":  # the parent has written the maps
                _open_overlay_workdir(path)
                _rmtree(path)
                code = 0
        except BaseException:
            pass
        os._exit(code)
    os.close(to_child_r)
    os.close(to_parent_w)
    try:
        if os.read(to_parent_r, 1) == b"u":
            idmap.write(pid, uid_map, gid_map)
            os.write(to_child_w, b"m")
    except (OSError, PyctrError):
        pass
    finally:
        os.close(to_child_w)
        os.close(to_parent_r)
        _, status = os.waitpid(pid, 0)
    if os.path.lexists(path):
        raise PyctrError(f"could not remove {path} (status {status})")
