"""`pyctr run --memory/--memory-swap/--cpus/--pids-limit` end to end, as the test users, on this
machine's cgroup v1, through the real pyctr-helper, system bus and polkitd.

Every test ends with no pyctr cgroup of the test users left (the `no_cgroups_left` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import pyctr_bus
from cgworld import controllers_of, pyctr_cgroups, wait_for
from pyctr_helper.cgroup_tree import detect
from pyctr_helper.cgroup_v1 import CgroupV1

MiB = 1 << 20
pytestmark = pytest.mark.usefixtures("no_cgroups_left")


@pytest.fixture(autouse=True)
def _limits_world(helper, polkit, rootfs):
    if not isinstance(detect(), CgroupV1):
        pytest.skip("these tests exercise the helper on cgroup v1")
    if polkit.mode != "allow":
        polkit.set("allow")


def run(user, rootfs, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    *options, command = args
    return user.pyctr("run", "--rm", "--network", "none", *options, str(rootfs), "sh", "-c",
                      command, timeout=timeout)


def container_cgroup(user, controller: str) -> Path:
    """The one live pyctr cgroup of `user` in `controller`'s hierarchy."""
    found = [d for d in pyctr_cgroups({user.uid}) if controller in controllers_of(d)
             and (d / "cgroup.procs").read_text().split()]
    assert len(found) == 1, found
    return found[0]


class Background:
    """A container that runs until told to stop (SIGTERM to pyctr, which forwards it).

    sh is the container's pid 1, which ignores signals it has no handler for: it traps TERM,
    then starts the command; tests wait for the command's process before they stop it."""

    def __init__(self, user, rootfs, *options: str, command: str = "sleep 1000") -> None:
        script = f"trap 'exit 0' TERM; {command} & wait"
        self.proc = user.pyctr_popen("run", "--rm", "--network", "none", *options, str(rootfs),
                                     "sh", "-c", script)

    def stop(self) -> subprocess.CompletedProcess:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


@pytest.fixture
def background(user_a, rootfs):
    started: list[Background] = []

    def start(*options: str, command: str = "sleep 1000") -> Background:
        bg = Background(user_a, rootfs, *options, command=command)
        started.append(bg)
        return bg

    yield start
    for bg in started:
        bg.stop()


def test_allocating_past_memory_is_oom_killed_and_pyctr_says_so(user_a, rootfs):
    # busybox dd allocates its block buffer up front and fills it: 100 MiB of anonymous memory.
    out = run(user_a, rootfs, "--memory", "32m", "exec dd if=/dev/zero of=/dev/null bs=100M count=1")
    assert out.returncode == 137, out.stderr
    assert "ran out of memory" in out.stderr
    assert "--memory 32m" in out.stderr


def test_the_same_allocation_fits_under_a_larger_limit(user_a, rootfs):
    out = run(user_a, rootfs, "--memory", "256m", "exec dd if=/dev/zero of=/dev/null bs=100M count=1")
    assert out.returncode == 0, out.stderr
    assert "out of memory" not in out.stderr


def test_fork_loop_stops_at_pids_limit(user_a, rootfs):
    # sh (1 process) starts sleeps until fork fails; it prints how many it started.
    loop = "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); echo $i; done"
    out = run(user_a, rootfs, "--pids-limit", "10", loop)
    started = [int(x) for x in out.stdout.split()]
    assert max(started) == 9, (out.stdout, out.stderr)
    assert "can't fork" in out.stderr
    unlimited = run(user_a, rootfs, "--pids-limit", "-1", loop + "; kill $(jobs -p) 2>/dev/null; true")
    assert max(int(x) for x in unlimited.stdout.split()) == 40, unlimited.stderr


def test_busy_loop_under_half_a_cpu_gets_about_half_a_core(user_a, rootfs, background):
    """A measurement of the enforced quota (cpuacct over a few seconds), not of our speed."""
    bg = background("--cpus", "0.5", command="while :; do :; done")
    cpuacct = wait_for(lambda: _live_cgroup(user_a, "cpuacct"), timeout=30,
                       what="the container's cpuacct cgroup")
    usage = cpuacct / "cpuacct.usage"
    used0, t0 = int(usage.read_text()), time.monotonic()
    wait_for(lambda: time.monotonic() - t0 >= 3.0, timeout=10, what="a 3 s measuring window")
    used1, t1 = int(usage.read_text()), time.monotonic()
    share = (used1 - used0) / 1e9 / (t1 - t0)
    assert 0.3 <= share <= 0.7, f"the container used {share:.2f} cores under --cpus 0.5"
    quota = container_cgroup(user_a, "cpu") / "cpu.cfs_quota_us"
    assert quota.read_text().strip() == "50000"
    assert bg.stop().returncode == 0


def _live_cgroup(user, controller: str) -> Path | None:
    """The container's cgroup once its command runs: sh (its TERM trap set) and its child."""
    try:
        found = container_cgroup(user, controller)
        return found if len((found / "cgroup.procs").read_text().split()) >= 2 else None
    except (AssertionError, OSError):
        return None


def _cgroups_of(text: str) -> dict[str, str]:
    return dict(line.split(":", 2)[1:] for line in text.splitlines())


def test_container_sits_in_its_cgroups_nested_under_its_own_and_they_are_gone_after_exit(
        user_a, rootfs, background):
    """The pyctr cgroup is made under the cgroup the container came from in each hierarchy,
    so the limits of that cgroup and its ancestors keep applying (no escape to the root)."""
    own = _cgroups_of(user_a.run(["cat", "/proc/self/cgroup"]).stdout)
    bg = background("--memory", "64m", "--cpus", "1", "--pids-limit", "50")
    memory = wait_for(lambda: _live_cgroup(user_a, "memory"), timeout=30,
                      what="the container's memory cgroup")
    pid = (memory / "cgroup.procs").read_text().split()[0]
    host_view = _cgroups_of(Path(f"/proc/{pid}/cgroup").read_text())
    places = {}
    for controller in ("memory", "cpu", "cpuacct", "pids"):
        field = next(f for f in host_view if controller in f.split(","))
        places[controller] = f"{own[field].rstrip('/')}/pyctr/{memory.name}"
        assert host_view[field] == places[controller], (host_view, own)
    assert bg.stop().returncode == 0
    wait_for(lambda: not any((Path("/sys/fs/cgroup") / c / places[c].lstrip("/")).exists()
                             for c in places),
             timeout=15, what="the container's cgroups to be removed")
    # A pyctr/ parent made inside someone's cgroup does not outlive its last container.
    for c, place in places.items():
        parent = Path("/sys/fs/cgroup") / c / place.lstrip("/").rsplit("/", 1)[0]
        if own[next(f for f in own if c in f.split(","))] != "/":
            assert not parent.exists(), parent


def test_unrequested_limits_get_the_admins_maximums(user_a, rootfs, helper, tmp_path, background):
    """Limit {"cpus": 1.0} once made a cgroup with no memory or pids limit: every maximum the
    admin configured is now written whether the caller asked for that limit or not."""
    config = tmp_path / "helper.toml"
    config.write_text("[limits.default]\nmax_memory = %d\nmax_pids = 64\nmax_cpus = 1.5\n"
                      % (128 * MiB))
    config.chmod(0o644)
    helper.restart(config=config)
    try:
        bg = background("--cpus", "1")
        memory = wait_for(lambda: _live_cgroup(user_a, "memory"), timeout=30,
                          what="the container's memory cgroup")
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(128 * MiB)
        if (memory / "memory.memsw.limit_in_bytes").exists():  # memory+swap: twice the maximum
            assert (memory / "memory.memsw.limit_in_bytes").read_text().strip() == str(256 * MiB)
        pids = container_cgroup(user_a, "pids")
        assert (pids / "pids.max").read_text().strip() == "64"
        cpu = container_cgroup(user_a, "cpu")
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "100000"
        assert bg.stop().returncode == 0
        wait_for(lambda: not memory.exists(), timeout=15, what="the cgroups to be removed")
    finally:
        helper.restart()


def test_container_sees_its_cgroup_as_its_root(user_a, rootfs):
    """pyctr unshares the cgroup namespace after the move: no host path leaks inside."""
    out = run(user_a, rootfs, "--memory", "64m", "cat /proc/self/cgroup")
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(":", 2)[1:] for line in out.stdout.splitlines())
    assert lines["memory"] == "/" and "pyctr" not in out.stdout, out.stdout


def test_container_cannot_raise_its_limits_from_inside(user_a, rootfs):
    script = (
        "cg=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup); "
        "for f in /sys/fs/cgroup/memory$cg/memory.limit_in_bytes /sys/fs/cgroup/memory.max; do "
        "  echo -1 > $f 2>/dev/null && echo WROTE $f; done; "
        "mkdir -p /tmp/cg; "
        "mount -t cgroup -o memory none /tmp/cg 2>/dev/null && echo MOUNTED v1; "
        "mount -t cgroup2 none /tmp/cg 2>/dev/null && echo MOUNTED v2; "
        "echo done")
    out = run(user_a, rootfs, "--memory", "64m", script)
    assert out.returncode == 0, out.stderr
    assert "WROTE" not in out.stdout and "MOUNTED" not in out.stdout, out.stdout
    assert out.stdout.strip().endswith("done")


def test_owner_and_other_users_cannot_touch_the_cgroup_from_the_host(user_a, user_b, rootfs, background):
    bg = background("--memory", "64m", "--pids-limit", "20")
    memory = wait_for(lambda: _live_cgroup(user_a, "memory"), timeout=30,
                      what="the container's memory cgroup")
    pid = (memory / "cgroup.procs").read_text().split()[0]
    root_procs = Path("/sys/fs/cgroup/memory/cgroup.procs")
    attempts = {
        "raise the limit": f"echo -1 > {memory}/memory.limit_in_bytes",
        "move the container out": f"echo {pid} > {root_procs}",
        "join the cgroup": f"echo $$ > {memory}/cgroup.procs",
        "remove the cgroup": f"rmdir {memory}",
        "make a sub-cgroup": f"mkdir {memory}/escape",
    }
    for user in (user_a, user_b):
        for what, command in attempts.items():
            result = user.run(["sh", "-c", command])
            assert result.returncode != 0, f"{user.name} could {what}"
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 * MiB)
    assert pid in (memory / "cgroup.procs").read_text().split()
    assert bg.stop().returncode == 0


def test_request_above_the_admins_maximum_is_refused(user_a, rootfs, helper, tmp_path):
    config = tmp_path / "helper.toml"
    config.write_text("[limits.default]\nmax_memory = %d\nmax_pids = 64\n" % (128 * MiB))
    config.chmod(0o644)
    helper.restart(config=config)
    try:
        over = run(user_a, rootfs, "--memory", "256m", "echo ran")
        assert over.returncode == 125
        assert "maximum" in over.stderr and "ran" not in over.stdout
        assert len(over.stderr.strip().splitlines()) == 1, over.stderr
        unlimited = run(user_a, rootfs, "--memory", "64m", "--pids-limit", "100", "echo ran")
        assert unlimited.returncode == 125 and "pids" in unlimited.stderr
        within = run(user_a, rootfs, "--memory", "128m", "--pids-limit", "64", "echo ran")
        assert within.returncode == 0, within.stderr
        assert within.stdout.strip() == "ran"
    finally:
        helper.restart()


def test_limits_are_refused_not_ignored_without_a_polkit_grant(user_a, rootfs, polkit):
    polkit.set("deny", actions=[pyctr_bus.ACTION_LIMIT_RESOURCES])
    out = run(user_a, rootfs, "--memory", "64m", "echo ran")
    assert out.returncode == 125
    assert "ran" not in out.stdout
    assert pyctr_bus.ACTION_LIMIT_RESOURCES in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_unlimited_values_need_no_cgroup_and_no_grant(user_a, rootfs, polkit):
    polkit.set("deny", actions=[pyctr_bus.ACTION_LIMIT_RESOURCES])
    out = run(user_a, rootfs, "--memory", "0", "--pids-limit", "-1", "--cpus", "0",
              "cat /proc/self/cgroup")
    assert out.returncode == 0, out.stderr
    assert "pyctr" not in out.stdout


def test_memory_swap_limit_is_written_where_the_host_accounts_swap(user_a, rootfs, background):
    if not Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists():
        pytest.skip("this host does not account swap")
    bg = background("--memory", "64m", "--memory-swap", "96m")
    memory = wait_for(lambda: _live_cgroup(user_a, "memory"), timeout=30,
                      what="the container's memory cgroup")
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 * MiB)
    assert (memory / "memory.memsw.limit_in_bytes").read_text().strip() == str(96 * MiB)
    assert bg.stop().returncode == 0


def test_helper_restart_reconciles_stale_and_live_cgroups(user_a, rootfs, helper, background):
    from pyctr_helper.cgroup_limits import LimitRequest
    from pyctr_helper.cgroup_tree import new_name

    live = background("--pids-limit", "20")
    pids = wait_for(lambda: _live_cgroup(user_a, "pids"), timeout=30,
                    what="the container's pids cgroup")
    stale = detect().create(new_name(user_a.uid), LimitRequest(pids=5))  # as a crash leaves it
    helper.restart()
    # The new helper reconciles when it first serves Resources (or at start, given the hook).
    out = run(user_a, rootfs, "--pids-limit", "10", "true")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: not any(d.exists() for d in stale), timeout=15,
             what="the stale cgroup to be removed")
    assert pids.is_dir()
    assert live.stop().returncode == 0
    wait_for(lambda: not pids.exists(), timeout=15,
             what="the live container's cgroup to be removed after it exits")


def test_cgroup_is_removed_when_pyctr_itself_is_killed(user_a, rootfs, background):
    bg = background("--memory", "64m", "--pids-limit", "20")
    memory = wait_for(lambda: _live_cgroup(user_a, "memory"), timeout=30,
                      what="the container's memory cgroup")
    bg.proc.send_signal(signal.SIGKILL)
    bg.proc.wait(timeout=30)
    wait_for(lambda: not memory.exists(), timeout=20,
             what="the cgroup to be removed after pyctr was killed")
