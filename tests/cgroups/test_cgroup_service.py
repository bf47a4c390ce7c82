"""The helper's side of Resources.Limit on this machine's real cgroupfs, driven without the bus:
validate, create, move, and remove once both the container and its pyctr are gone.

The caller and the "container" are real processes of the test users; the facade's part
(polkit, the fd count, the bus) is covered end to end in test_limits.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cgworld import Driven, pyctr_cgroups, wait_for
from pyctr_helper.audit import Caller
from pyctr_helper.cgroup_limits import LimitRequest, LimitUnsupported
from pyctr_helper.cgroup_tree import SUBTREE, detect, new_name, procs
from pyctr_helper.cgroup_v1 import CgroupV1
from pyctr_helper.cgroup_v2 import CgroupV2
from pyctr_helper.config import Limits
from pyctr_helper.errors import InvalidArgument, QuotaExceeded

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _v1_host():
    if not isinstance(detect(), CgroupV1):
        pytest.skip("this machine's controllers are not on cgroup v1")


def _caller(d: Driven, user) -> Caller:
    """A stand-in for the user's pyctr process: the cgroup lives until it exits."""
    proc, fd = d.process(user)
    os.close(fd)
    return Caller(bus_name=":1.test", uid=user.uid, pid=proc.pid)


def _dirs(reply: dict) -> list[Path]:
    backend = detect()
    paths = reply["paths"][1]
    return [backend.mounts[c] / paths[c] for c in reply["controllers"][1]]


def _cgroup_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def test_limit_moves_the_process_into_root_owned_cgroups_with_the_limits(driven, user_a):
    caller = _caller(driven, user_a)
    proc, pidfd = driven.process(user_a)
    reply = driven.limit(caller, pidfd, {"memory": 64 * MiB, "cpus": 0.5, "pids": 10})
    os.close(pidfd)

    assert reply["cgroup"][1].startswith(f"{SUBTREE}/{user_a.uid}-")
    assert set(reply["controllers"][1]) == {"memory", "cpu", "cpuacct", "pids"}
    paths = reply["paths"][1]
    dirs = {c: detect().mounts[c] / paths[c] for c in reply["controllers"][1]}
    assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 * MiB)
    assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (dirs["cpu"] / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (dirs["pids"] / "pids.max").read_text().strip() == "10"
    for d in dirs.values():
        st = d.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o755)
        assert (d / "cgroup.procs").stat().st_uid == 0
        assert procs(d) == {proc.pid}
    assert f"memory:/{paths['memory']}" in _cgroup_of(proc.pid)
    assert ("resources.limit", "ok") in [(a, o) for a, o, _ in driven.audit.lines]


def test_cgroup_stays_while_pyctr_reads_it_and_goes_when_pyctr_exits(driven, user_a):
    caller_proc, fd = driven.process(user_a)
    os.close(fd)
    caller = Caller(bus_name=":1.test", uid=user_a.uid, pid=caller_proc.pid)
    proc, pidfd = driven.process(user_a)
    reply = driven.limit(caller, pidfd, {"pids": 5})
    os.close(pidfd)
    dirs = _dirs(reply)
    name = reply["cgroup"][1].split("/")[1]

    proc.kill()
    proc.wait()
    wait_for(lambda: driven.service.placements[name].exited, spin=driven.spin,
             what="the helper to see the container exit")
    # The container is gone but its pyctr still runs: it may still read the OOM counter.
    assert all(d.is_dir() for d in dirs)

    caller_proc.kill()
    caller_proc.wait()
    wait_for(lambda: not any(d.exists() for d in dirs), spin=driven.spin,
             what="the cgroup to be removed")
    assert name not in driven.service.placements
    assert ("resources.release", "ok") in [(a, o) for a, o, _ in driven.audit.lines]


def test_limit_refuses_a_process_of_another_user(driven, user_a, user_b):
    before = pyctr_cgroups({user_a.uid, user_b.uid})
    caller = _caller(driven, user_a)
    _, pidfd = driven.process(user_b)
    with pytest.raises(InvalidArgument, match="does not name a live process"):
        driven.limit(caller, pidfd, {"memory": 64 * MiB})
    os.close(pidfd)
    assert pyctr_cgroups({user_a.uid, user_b.uid}) == before


def test_limit_refuses_a_process_of_root(driven, user_a):
    caller = _caller(driven, user_a)
    pidfd = os.pidfd_open(os.getpid())
    try:
        with pytest.raises(InvalidArgument, match="does not name a live process"):
            driven.limit(caller, pidfd, {"pids": 5})
    finally:
        os.close(pidfd)


def test_limit_refuses_an_exited_process(driven, user_a):
    caller = _caller(driven, user_a)
    proc, pidfd = driven.process(user_a, ["true"])
    proc.wait()
    with pytest.raises(InvalidArgument, match="does not name a live process"):
        driven.limit(caller, pidfd, {"pids": 5})
    os.close(pidfd)


def test_limit_refuses_to_move_an_already_limited_process(driven, user_a):
    caller = _caller(driven, user_a)
    proc, pidfd = driven.process(user_a)
    first = driven.limit(caller, pidfd, {"pids": 5})
    with pytest.raises(InvalidArgument, match="already limited"):
        driven.limit(caller, pidfd, {"pids": 500})
    os.close(pidfd)
    assert f"pids:/{first['cgroup'][1]}" in _cgroup_of(proc.pid)
    assert len(driven.service.placements) == 1


def test_limit_refuses_requests_above_the_admins_maximum(driven, user_a):
    driven.config.maximums = Limits(max_memory=128 * MiB, max_cpus=1.0, max_pids=100)
    before = pyctr_cgroups({user_a.uid})
    caller = _caller(driven, user_a)
    _, pidfd = driven.process(user_a)
    for asked, what in (({"memory": 256 * MiB}, "--memory"), ({"memory": 0}, "--memory"),
                        ({"memory": 64 * MiB, "memory_swap": 512 * MiB}, "--memory-swap"),
                        ({"cpus": 1.5}, "--cpus"), ({"pids": 101}, "--pids-limit"),
                        ({"pids": -1}, "--pids-limit")):
        with pytest.raises(QuotaExceeded, match=what):
            driven.limit(caller, pidfd, asked)
    assert pyctr_cgroups({user_a.uid}) == before
    driven.limit(caller, pidfd, {"memory": 128 * MiB, "cpus": 1.0, "pids": 100})
    os.close(pidfd)


@pytest.mark.parametrize("asked, message", [
    ({}, "no limit"),
    ({"memory": 4096}, "memory must be"),
    ({"memory": -5}, "memory must be"),
    ({"memory_swap": 64 * MiB}, "needs a memory limit"),
    ({"memory": 64 * MiB, "memory_swap": 32 * MiB}, "at least the memory limit"),
    ({"cpus": 0.0}, "cpus must be"),
    ({"cpus": float("nan")}, "cpus must be"),
    ({"cpus": 10_000.0}, "cpus must be"),
    ({"pids": 0}, "pids must be"),
    ({"pids": -2}, "pids must be"),
    ({"pids": 1 << 40}, "pids must be"),
    ({"memory": True}, "wrong type"),
    ({"cpus": 1}, "wrong type"),
    ({"swap": 1}, "unknown limit"),
])
def test_limit_refuses_invalid_values_before_touching_anything(driven, user_a, asked, message):
    before = pyctr_cgroups({user_a.uid})
    caller = _caller(driven, user_a)
    _, pidfd = driven.process(user_a)
    with pytest.raises(InvalidArgument, match=message):
        driven.limit(caller, pidfd, asked)
    os.close(pidfd)
    assert pyctr_cgroups({user_a.uid}) == before


def test_memory_swap_is_written_where_the_host_accounts_swap(driven, user_a):
    backend = detect()
    if not (backend.mounts["memory"] / "memory.memsw.limit_in_bytes").exists():
        pytest.skip("no swap accounting on this host")
    caller = _caller(driven, user_a)
    _, pidfd = driven.process(user_a)
    reply = driven.limit(caller, pidfd, {"memory": 64 * MiB, "memory_swap": 96 * MiB})
    os.close(pidfd)
    memory = backend.mounts["memory"] / reply["paths"][1]["memory"]
    assert (memory / "memory.memsw.limit_in_bytes").read_text().strip() == str(96 * MiB)


def test_reconcile_removes_stale_cgroups_and_watches_live_ones(driven, user_a):
    backend = detect()
    stale = backend.create(new_name(user_a.uid), LimitRequest(pids=5))
    live = backend.create(new_name(user_a.uid), LimitRequest(pids=5))
    proc, pidfd = driven.process(user_a)
    os.close(pidfd)
    backend.move(live, proc.pid)

    driven.act(driven.service.reconcile)
    wait_for(lambda: not any(d.exists() for d in stale), spin=driven.spin,
             what="the stale cgroup to be removed")
    assert all(d.is_dir() for d in live)
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(d.exists() for d in live), spin=driven.spin,
             what="the reconciled cgroup to be removed after its last process")


def test_reconcile_finds_cgroups_nested_under_a_processs_own(driven, user_a):
    """Cgroups are made under the process's own cgroups, so reconcile looks at every depth;
    a nested pyctr/ parent goes with its last cgroup."""
    backend = detect()
    proc, pidfd = driven.process(user_a)
    os.close(pidfd)
    where = tuple(_cgroup_of(proc.pid).splitlines())
    stale = backend.create(new_name(user_a.uid), LimitRequest(memory=64 * MiB, pids=5), where)
    own = dict(line.split(":", 2)[1:] for line in where)
    assert (backend.mounts["memory"] / own["memory"].lstrip("/") / "pyctr") in {
        d.parent for d in stale}
    driven.act(driven.service.reconcile)
    wait_for(lambda: not any(d.exists() for d in stale), spin=driven.spin,
             what="the nested stale cgroup to be removed")
    for d in stale:
        if d.parent.parent not in backend.mounts.values():
            assert not d.parent.exists(), d.parent


def test_v2_tree_without_controllers_refuses_limits_and_still_manages_cgroups(user_a):
    """On this hybrid host the unified tree has no controllers (they are all on v1): the v2
    backend must refuse every limit, yet its create/move/remove work on the real kernel."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.controllers").exists():
        pytest.skip("no unified cgroup tree mounted")
    backend = CgroupV2(unified)
    for request in (LimitRequest(memory=64 * MiB), LimitRequest(cpus=0.5), LimitRequest(pids=5)):
        if not set(request_controllers(request)) <= set((unified / "cgroup.controllers").read_text().split()):
            with pytest.raises(LimitUnsupported, match="not available"):
                backend.check(request)
    name = new_name(user_a.uid)
    dirs = backend.create(name, LimitRequest())
    proc = user_a.popen(["sleep", "60"])
    try:
        backend.move(dirs, proc.pid)
        assert f"0::/{SUBTREE}/{name}" in _cgroup_of(proc.pid)
        assert backend.oom_kills(dirs) == 0
        assert backend.remove(dirs, attempts=1) is False  # still populated
    finally:
        proc.kill()
        proc.wait()
    assert backend.remove(dirs)
    assert not dirs[0].exists()


def request_controllers(request: LimitRequest) -> list[str]:
    return CgroupV2._controllers(request)


def test_a_failed_move_puts_the_process_back_and_leaves_no_cgroup(driven, user_a, monkeypatch):
    """The kernel refusing the second hierarchy's move: the first move is undone, then rmdir."""
    from pyctr_helper.cgroup_tree import CgroupFailure
    from pyctr_helper.errors import Failed

    backend = driven.service.backend
    real_move = backend.move

    def move_then_fail(dirs, pid):
        real_move(dirs[:1], pid)
        raise CgroupFailure("cannot write to cgroup.procs: No space left on device")

    monkeypatch.setattr(backend, "move", move_then_fail)
    before = pyctr_cgroups({user_a.uid})
    caller = _caller(driven, user_a)
    proc, pidfd = driven.process(user_a)
    original = _cgroup_of(proc.pid)
    with pytest.raises(Failed, match="cgroup.procs"):
        driven.limit(caller, pidfd, {"memory": 64 * MiB, "pids": 10})
    os.close(pidfd)
    assert _cgroup_of(proc.pid) == original
    assert pyctr_cgroups({user_a.uid}) == before
    assert not driven.service.placements


def test_a_pid_reused_mid_move_is_left_in_place_unlimited_never_moved_back(driven, user_a, user_b,
                                                                          monkeypatch):
    """The target dies and its pid names another process by the time cgroup.procs is written:
    no further hierarchy is written once the pidfd no longer names the target; the unknown
    process is not moved into the target's old cgroup (which may be the caller's to write),
    it stays where it is with the limits lifted, and the cgroup goes once it exits."""
    from pyctr_helper import cgroup_service
    from pyctr_helper.errors import InvalidArgument

    backend = driven.service.backend
    stand_in, fd = driven.process(user_b)  # what the reused pid now names
    os.close(fd)
    moved: list[Path] = []

    def move_the_stand_in(dirs, pid):
        for d in dirs:
            (d / "cgroup.procs").write_text(str(stand_in.pid))
            moved.append(d)

    monkeypatch.setattr(backend, "move", move_the_stand_in)
    monkeypatch.setattr(cgroup_service, "still_same", lambda pidfd, target: not moved)
    caller = _caller(driven, user_a)
    proc, pidfd = driven.process(user_a)
    target_before, stand_in_before = _cgroup_of(proc.pid), _cgroup_of(stand_in.pid)
    with pytest.raises(InvalidArgument):
        driven.limit(caller, pidfd, {"memory": 64 * MiB, "pids": 10})
    os.close(pidfd)

    assert len(moved) == 1  # the pids hierarchy was not written after the check failed
    (memory,) = moved
    assert procs(memory) == {stand_in.pid}
    assert int((memory / "memory.limit_in_bytes").read_text()) > 1 << 60
    assert _cgroup_of(proc.pid) == target_before
    assert ("resources.limit", "failed") in [(a, o) for a, o, _ in driven.audit.lines]
    assert _cgroup_of(stand_in.pid) != stand_in_before  # left where it is, not moved back
    stand_in.kill()
    stand_in.wait()
    wait_for(lambda: not memory.exists(), spin=driven.spin, timeout=15,
             what="the cgroup to go once the unknown process exits")
    assert not driven.service.placements


def test_a_user_holds_a_bounded_number_of_limited_containers(driven, user_a, monkeypatch):
    from pyctr_helper import cgroup_service

    monkeypatch.setattr(cgroup_service, "MAX_PER_USER", 2)
    caller = _caller(driven, user_a)
    for _ in range(2):
        _, pidfd = driven.process(user_a)
        driven.limit(caller, pidfd, {"pids": 10})
        os.close(pidfd)
    _, pidfd = driven.process(user_a)
    with pytest.raises(QuotaExceeded, match="at most 2"):
        driven.limit(caller, pidfd, {"pids": 10})
    os.close(pidfd)


def test_reconcile_removes_each_live_cgroup_when_its_own_processes_exit(driven, user_a):
    backend = detect()
    cgroups, procs_ = [], []
    for _ in range(3):
        dirs = backend.create(new_name(user_a.uid), LimitRequest(pids=5))
        proc, pidfd = driven.process(user_a)
        os.close(pidfd)
        backend.move(dirs, proc.pid)
        cgroups.append(dirs)
        procs_.append(proc)
    driven.act(driven.service.reconcile)
    for i, proc in enumerate(procs_):
        proc.kill()
        proc.wait()
        wait_for(lambda: not any(d.exists() for d in cgroups[i]), spin=driven.spin,
                 what=f"cgroup {i} to be removed after its process")
        assert all(d.is_dir() for later in cgroups[i + 1:] for d in later)
