"""cgroup v2 without delegation: one directory in the unified tree, controllers enabled above it.

The helper enables the controllers a request needs in the root's and pyctr/'s
cgroup.subtree_control (pyctr/ holds no process, so the no-internal-process rule holds),
then writes memory.max, memory.swap.max, cpu.max and pids.max in the container's cgroup.
memory.oom.group=1 makes the OOM killer take the whole container, never a single process
of it nor anything outside it.

Placement. A v2 cgroup that holds processes cannot give its children controllers (the
no-internal-process rule), and the process asking is in its own cgroup, so the helper
cannot nest the container's cgroup under it as v1 does. Putting it at the root instead would
let the container shed its ancestors' limits (a user slice's MemoryMax, TasksMax): so only
a process in the root cgroup (a host without a cgroup manager) is limited, at /pyctr/<name>;
any other is refused with a message pointing at systemd delegation, which the frontend uses
on v2 hosts that have it.
"""

from __future__ import annotations

from pathlib import Path

from .cgroup_limits import CPU_PERIOD_US, LimitRequest, LimitUnsupported
from .cgroup_tree import (RMDIR_ATTEMPTS, SUBTREE, current_paths, ensure_dir, existing_in, keyed,
                          make_dir, read, remove_all, restore, write, write_each)


class CgroupV2:
    version = 2

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def _controllers(limits: LimitRequest) -> list[str]:
        wanted = []
        if limits.wants_memory:
            wanted.append("memory")
        if limits.wants_cpu:
            wanted.append("cpu")
        if limits.wants_pids:
            wanted.append("pids")
        return wanted

    def accounts_swap(self) -> bool:
        # memory.swap.max exists only in child cgroups: look at pyctr/ if it is there.
        return (self.root / SUBTREE / "memory.swap.max").exists()

    def check(self, limits: LimitRequest) -> None:
        try:
            available = set(read(self.root / "cgroup.controllers").split())
        except OSError:
            available = set()
        missing = [c for c in self._controllers(limits) if c not in available]
        if missing:
            raise LimitUnsupported(f"the {', '.join(missing)} cgroup controller(s) are not "
                                   "available in this host's unified cgroup tree")

    def _enable(self, directory: Path, controllers: list[str]) -> None:
        if not controllers:
            return
        enabled = set(read(directory / "cgroup.subtree_control").split())
        todo = [c for c in controllers if c not in enabled]
        if todo:
            write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in todo))

    def create(self, name: str, limits: LimitRequest, proc_cgroup: tuple[str, ...] = ()) -> list[Path]:
        self.check(limits)
        current = current_paths(proc_cgroup).get("", "/")
        if current != "/":
            raise LimitUnsupported(
                "cgroup v2: the container's process is not in the root cgroup, and a cgroup "
                "outside its own would escape that cgroup's limits; use a systemd-delegated "
                "scope instead")
        controllers = self._controllers(limits)
        parent = self.root / SUBTREE
        self._enable(self.root, controllers)
        ensure_dir(parent)
        self._enable(parent, controllers)
        path = parent / name
        make_dir(path)
        try:
            self._write_limits(path, limits)
        except BaseException:
            remove_all([path])
            raise
        return [path]

    def _write_limits(self, path: Path, limits: LimitRequest) -> None:
        if limits.wants_memory:
            write(path / "memory.max", str(limits.memory) if limits.memory else "max")
            write(path / "memory.oom.group", "1")
        if limits.wants_swap:
            if not (path / "memory.swap.max").exists():
                raise LimitUnsupported("this host does not account swap (no memory.swap.max): "
                                       "--memory-swap cannot be enforced")
            swap = ("max" if limits.memory_swap is None
                    else str(limits.memory_swap - (limits.memory or 0)))
            write(path / "memory.swap.max", swap)
        if limits.wants_cpu:
            write(path / "cpu.max", f"{limits.cpu_quota_us} {CPU_PERIOD_US}")
        if limits.wants_pids:
            write(path / "pids.max", "max" if limits.pids is None else str(limits.pids))

    def move(self, dirs: list[Path], pid: int) -> None:
        for path in dirs:
            write(path / "cgroup.procs", str(pid))

    def oom_kills(self, dirs: list[Path]) -> int:
        return sum(keyed(p / "memory.events").get("oom_kill", 0) for p in dirs)

    def restore(self, pid: int, proc_cgroup: tuple[str, ...]) -> None:
        restore(pid, proc_cgroup, {"": self.root})

    def controllers(self, dirs: list[Path]) -> list[str]:
        try:
            return read(dirs[0].parent / "cgroup.subtree_control").split()
        except (OSError, IndexError):
            return []

    def unlimit(self, dirs: list[Path]) -> None:
        for path in dirs:
            write_each([(path / "memory.max", "max"), (path / "memory.swap.max", "max"),
                        (path / "cpu.max", "max"), (path / "pids.max", "max")])

    def paths(self, dirs: list[Path]) -> dict[str, str]:
        return {"": str(dirs[0].relative_to(self.root))} if dirs else {}

    def remove(self, dirs: list[Path], attempts: int = RMDIR_ATTEMPTS) -> bool:
        return remove_all(dirs, attempts, roots=[self.root])

    def existing(self) -> dict[str, list[Path]]:
        return existing_in([self.root])
