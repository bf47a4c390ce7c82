"""Memory a runtime costs per running container: RSS of its own processes, not the workload.

For each runtime, one container runs `sleep`; the processes that appeared for it (as the
bench user or in its subordinate id range) minus the `sleep` itself are the runtime's:
pyctr's frontend processes; podman's conmon, plus slirp4netns and rootlessport with a
published port. podman's per-user pause process exists before and is shown apart.
The helper's RSS is read from its pid, idle and while the container holds a lease.
"""

from __future__ import annotations

import subprocess
from typing import Callable

from .host import (PYCTR, BenchUser, Unavailable, comm, last_line, memory_kib, run,
                   stop_process, wait_for)
from .results import Case
from .world import IMAGE, World, bench_processes

WORKLOAD = "sleep"


def _runtime_processes(user: BenchUser, before: set[int]) -> dict[int, str]:
    return {p: comm(p) for p in bench_processes(user) - before if comm(p) != WORKLOAD}


def _workload_running(user: BenchUser, before: set[int]) -> bool:
    return any(comm(p) == WORKLOAD for p in bench_processes(user) - before)


def _case(group: str, name: str, pids: dict[int, str], pyctr: bool = False) -> Case:
    per_process, rss, pss = [], 0, 0
    for pid, name_ in sorted(pids.items()):
        mem = memory_kib(pid)
        if mem is None:
            continue
        rss, pss = rss + mem[0], pss + mem[1]
        per_process.append({"pid": pid, "comm": name_, "rss_kib": mem[0], "pss_kib": mem[1]})
    names = "+".join(sorted({p["comm"] for p in per_process})) or "none"
    return Case(group, f"{name} [{names}]", pyctr=pyctr, samples=[rss / 1024],
                given_spread=f"PSS {pss / 1024:.1f}",
                detail={"processes": per_process, "rss_kib": rss, "pss_kib": pss})


def _measure_pyctr(world: World, group: str, name: str, net_args: list[str],
                   extra: Callable[[], list[Case]] = lambda: []) -> list[Case]:
    user = world.user
    before = bench_processes(user)
    proc = subprocess.Popen(
        user.argv([str(PYCTR), "run", "--rm", *net_args, str(world.rootfs), "sleep", "300"]),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=user.home)
    try:
        wait_for(lambda: proc.poll() is not None or _workload_running(user, before),
                 timeout=20, what="the pyctr container to run sleep")
        if proc.poll() is not None:
            raise Unavailable(f"exit {proc.returncode}: {last_line(proc.stderr.read())}")
        return [_case(group, name, _runtime_processes(user, before), pyctr=True), *extra()]
    except Unavailable as e:
        return [Case(group, name, pyctr=True, unavailable=str(e))]
    finally:
        stop_process(proc, timeout=15)


def _measure_podman(world: World, group: str, name: str, net_args: list[str]) -> Case:
    user = world.user
    before = bench_processes(user)
    container = "pyctrb-mem"
    try:
        run(user.argv(["podman", "run", "-d", "--name", container, *net_args, IMAGE,
                       "sleep", "300"]), timeout=60, check=True, cwd=user.home)
        wait_for(lambda: _workload_running(user, before), timeout=20,
                 what="the podman container to run sleep")
        return _case(group, name, _runtime_processes(user, before))
    except Unavailable as e:
        return Case(group, name, unavailable=str(e))
    finally:
        run(user.argv(["podman", "rm", "-f", "-t", "0", container]), timeout=60, cwd=user.home)


def helper_case(name: str, helper_pid: int | None) -> Case:
    mem = memory_kib(helper_pid) if helper_pid else None
    if mem is None:
        return Case("mem-net", name, compare=False, unavailable="no helper running")
    return Case("mem-net", name, compare=False, samples=[mem[0] / 1024],
                given_spread=f"PSS {mem[1] / 1024:.1f}",
                detail={"pid": helper_pid, "rss_kib": mem[0], "pss_kib": mem[1]})


def pause_process(user: BenchUser) -> Case:
    pids = {p: comm(p) for p in bench_processes(user) if comm(p) == "catatonit"}
    case = _case("mem-none", "podman pause process (one per user, shared)", pids)
    case.compare = False
    return case


def measure(world: World, port: int, helper_pid: int | None,
            helper_unavailable: str | None) -> list[Case]:
    cases = _measure_pyctr(world, "mem-none", "pyctr run --network none", ["--network", "none"])
    cases.append(_measure_podman(world, "mem-none", "podman run --network none",
                                 ["--network", "none"]))
    cases.append(pause_process(world.user))
    if helper_unavailable is None:
        cases += _measure_pyctr(
            world, "mem-net", f"pyctr run --network bridge -p {port}:80",
            ["--network", "bridge", "-p", f"{port}:80"],
            extra=lambda: [helper_case("pyctr-helper, holding this lease", helper_pid)])
    else:
        cases.append(Case("mem-net", f"pyctr run --network bridge -p {port}:80", pyctr=True,
                          unavailable=helper_unavailable))
    cases.append(_measure_podman(world, "mem-net", f"podman run -p {port}:80",
                                 ["-p", f"{port}:80"]))
    return cases
