"""User namespace id maps: which ids exist in the container, and writing them from outside.

Two backends behind `write()`: with subordinate ranges (/etc/subuid, /etc/subgid) the setuid
helpers newuidmap/newgidmap write the maps (they check the ranges belong to the user); without
ranges the user writes a one-line map of their own id, which the kernel allows only after
"deny" is written to setgroups (so a group the user belongs to cannot be dropped to bypass a
negative group permission).
"""

from __future__ import annotations

import os

from .errors import PyctrError
from .spec import IdMapping

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"


def subordinate_ranges(path: str, name: str, id_: int) -> list[tuple[int, int]]:
    """The (start, count) ranges `path` gives to the user (by name or by number)."""
    ranges = []
    try:
        with open(path) as f:
            for line in f:
                fields = line.strip().split(":")
                if len(fields) != 3 or fields[0] not in (name, str(id_)):
                    continue
                try:
                    start, count = int(fields[1]), int(fields[2])
                except ValueError:
                    continue
                if start >= 0 and count > 0:
                    ranges.append((start, count))
    except FileNotFoundError:
        pass
    return ranges


def build(host_id: int, ranges: list[tuple[int, int]], keep_id: bool) -> tuple[IdMapping, ...]:
    """The container's map: `host_id` becomes 0 (or itself with keep-id); the subordinate
    ranges fill every other container id from 0 upwards, in order."""
    own = host_id if keep_id else 0
    maps = [IdMapping(own, host_id, 1)]
    inside = 0
    for start, count in ranges:
        while count:
            if inside == own:
                inside += 1
            # A block must not cross the container id taken by the user's own id.
            n = min(count, own - inside) if inside < own else count
            maps.append(IdMapping(inside, start, n))
            inside += n
            start += n
            count -= n
    return tuple(sorted(maps, key=lambda m: m.inside))


def maps_id(maps: tuple[IdMapping, ...], inside: int) -> bool:
    return any(m.inside <= inside < m.inside + m.count for m in maps)


def to_host(maps: tuple[IdMapping, ...], inside: int) -> int | None:
    for m in maps:
        if m.inside <= inside < m.inside + m.count:
            return m.outside + inside - m.inside
    return None


def is_single(maps: tuple[IdMapping, ...]) -> bool:
    return len(maps) == 1 and maps[0].count == 1


def _text(maps: tuple[IdMapping, ...]) -> str:
    return "".join(f"{m.inside} {m.outside} {m.count}\n" for m in maps)


def _spawn(tool: str, pid: int, maps: tuple[IdMapping, ...]) -> tuple[int, int]:
    """Start newuidmap/newgidmap (posix_spawn: subprocess would cost an import on the
    start path); returns (pid, read end of its stderr)."""
    args = [str(v) for m in maps for v in (m.inside, m.outside, m.count)]
    r, w = os.pipe()
    try:
        child = os.posix_spawnp(tool, [tool, str(pid), *args], os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, 2)])
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return child, r


def _finish(tool: str, child: int, err_fd: int) -> None:
    try:
        chunks = []
        while chunk := os.read(err_fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(err_fd)
    _, status = os.waitpid(child, 0)
    if status != 0:
        lines = b"".join(chunks).decode(errors="replace").strip().splitlines()
        raise PyctrError(f"{tool} failed: {lines[-1] if lines else os.waitstatus_to_exitcode(status)}")


def write(pid: int, uid_map: tuple[IdMapping, ...], gid_map: tuple[IdMapping, ...]) -> None:
    """Write both maps of process `pid` (which has just unshared its user namespace)."""
    spawned = []
    try:
        for tool, maps in (("newuidmap", uid_map), ("newgidmap", gid_map)):
            if not is_single(maps):
                spawned.append((tool, *_spawn(tool, pid, maps)))
        if is_single(gid_map):
            with open(f"/proc/{pid}/setgroups", "w") as f:
                f.write("deny")
            with open(f"/proc/{pid}/gid_map", "w") as f:
                f.write(_text(gid_map))
        if is_single(uid_map):
            with open(f"/proc/{pid}/uid_map", "w") as f:
                f.write(_text(uid_map))
    except FileNotFoundError as e:
        raise PyctrError(f"cannot write the id maps: {e.filename or e} not found "
                         "(newuidmap and newgidmap come with the uidmap package)") from None
    except OSError as e:
        raise PyctrError(f"cannot write the id maps: {e.strerror}") from None
    finally:
        errors = []
        for tool, child, err_fd in spawned:
            try:
                _finish(tool, child, err_fd)
            except PyctrError as e:
                errors.append(e)
    if errors:
        raise errors[0]
