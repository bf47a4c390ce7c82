"""cgroup v1: one directory per controller hierarchy (memory, cpu, cpuacct, pids).

Only the hierarchies a request needs are touched: --cpus alone makes no memory cgroup
(unless the admin set a memory maximum, which every Limit then writes).
In each hierarchy the cgroup is made under the one the process is in (v1 has no rule against
a cgroup holding both processes and children), so the ancestors' limits keep applying.
cpuacct comes with cpu (co-mounted or not) so the container's CPU use can be read back.
The OOM killer of a limited memory cgroup picks its victims inside that cgroup only
(memory.oom_control's oom_kill_disable stays 0), so an OOM never spills onto the host.
"""

from __future__ import annotations

from pathlib import Path

from .cgroup_limits import CPU_PERIOD_US, LimitRequest, LimitUnsupported
from .cgroup_tree import (RMDIR_ATTEMPTS, SUBTREE, current_paths, ensure_dir, existing_in, keyed,
                          make_dir, parent_in, remove_all, restore, write, write_each)

MEMSW = "memory.memsw.limit_in_bytes"


class CgroupV1:
    version = 1

    def __init__(self, mounts: dict[str, Path]) -> None:
        self.mounts = dict(mounts)  # controller → hierarchy root

    def _hierarchies(self, limits: LimitRequest) -> list[Path]:
        wanted = []
        if limits.wants_memory:
            wanted.append("memory")
        if limits.wants_cpu:
            wanted += ["cpu", "cpuacct"]
        if limits.wants_pids:
            wanted.append("pids")
        roots: list[Path] = []
        for controller in wanted:
            root = self.mounts.get(controller)
            if root is None:
                if controller == "cpuacct":
                    continue  # accounting is a nicety; the quota is what was asked for
                raise LimitUnsupported(f"the {controller} cgroup controller is not mounted on this host")
            if root not in roots:  # co-mounted controllers (cpu,cpuacct) share one directory
                roots.append(root)
        return roots

    def accounts_swap(self) -> bool:
        return "memory" in self.mounts and (self.mounts["memory"] / MEMSW).exists()

    def check(self, limits: LimitRequest) -> None:
        self._hierarchies(limits)
        if limits.wants_swap and not (self.mounts["memory"] / MEMSW).exists():
            raise LimitUnsupported("this host does not account swap (no memory.memsw): "
                                   "--memory-swap cannot be enforced")

    def create(self, name: str, limits: LimitRequest, proc_cgroup: tuple[str, ...] = ()) -> list[Path]:
        self.check(limits)
        current = current_paths(proc_cgroup)
        made: list[Path] = []
        try:
            for root in self._hierarchies(limits):
                parent = parent_in(root, self._path_in(root, current))
                ensure_dir(parent / SUBTREE)
                path = parent / SUBTREE / name
                make_dir(path)
                made.append(path)
                self._write_limits(root, path, limits)
        except BaseException:
            remove_all(made, roots=self.mounts.values())
            raise
        return made

    def _path_in(self, root: Path, current: dict[str, str]) -> str:
        """The process's cgroup in the hierarchy mounted at root ("/" if not known)."""
        for controller, mount in self.mounts.items():
            if mount == root and controller in current:
                return current[controller]
        return "/"

    def _root_of(self, path: Path) -> Path | None:
        for root in self.mounts.values():
            if root in path.parents:
                return root
        return None

    def _write_limits(self, root: Path, path: Path, limits: LimitRequest) -> None:
        if root == self.mounts.get("memory") and limits.wants_memory:
            write(path / "memory.limit_in_bytes", str(limits.memory or -1))
            if limits.wants_swap:  # memsw must stay >= limit_in_bytes: written second
                write(path / MEMSW, str(limits.memory_swap or -1))
        if root == self.mounts.get("cpu") and limits.wants_cpu:
            write(path / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            write(path / "cpu.cfs_quota_us", str(limits.cpu_quota_us))
        if root == self.mounts.get("pids") and limits.wants_pids:
            write(path / "pids.max", "max" if limits.pids is None else str(limits.pids))

    def move(self, dirs: list[Path], pid: int) -> None:
        for path in dirs:
            write(path / "cgroup.procs", str(pid))

    def oom_kills(self, dirs: list[Path]) -> int:
        memory = self.mounts.get("memory")
        for path in dirs:
            if memory is not None and self._root_of(path) == memory:
                return keyed(path / "memory.oom_control").get("oom_kill", 0)
        return 0

    def restore(self, pid: int, proc_cgroup: tuple[str, ...]) -> None:
        roots = {}
        for line in proc_cgroup:
            controllers = line.split(":", 2)[1]
            first = controllers.split(",")[0]
            if first in self.mounts:
                roots[controllers] = self.mounts[first]
        restore(pid, proc_cgroup, roots)

    def controllers(self, dirs: list[Path]) -> list[str]:
        roots = {self._root_of(d) for d in dirs}
        return [c for c, root in self.mounts.items() if root in roots]

    def unlimit(self, dirs: list[Path]) -> None:
        for path in dirs:  # memsw first: it must stay >= limit_in_bytes
            write_each([(path / MEMSW, "-1"), (path / "memory.limit_in_bytes", "-1"),
                        (path / "cpu.cfs_quota_us", "-1"), (path / "pids.max", "max")])

    def paths(self, dirs: list[Path]) -> dict[str, str]:
        by_root = {self._root_of(d): d for d in dirs}
        return {c: str(by_root[root].relative_to(root)) for c, root in self.mounts.items()
                if root in by_root}

    def remove(self, dirs: list[Path], attempts: int = RMDIR_ATTEMPTS) -> bool:
        return remove_all(dirs, attempts, roots=self.mounts.values())

    def existing(self) -> dict[str, list[Path]]:
        return existing_in(dict.fromkeys(self.mounts.values()))

