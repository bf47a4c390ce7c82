"""Unit level, below the end-to-end path: the parts this machine cannot run for real.

This host is cgroup v1 without systemd, so the cgroup v2 limit writers (the helper's CgroupV2 and
the frontend's systemd-delegation path) are checked here on a fake cgroupfs directory tree;
backend choice is checked on sample mountinfo files. Nothing here needs root.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pyctr import cgroup_choice, cgroup_systemd, cgroups
from pyctr.errors import PyctrError
from pyctr.spec import Resources
from pyctr_helper import cgroup_v2
from pyctr_helper.cgroup_limits import (LimitAboveMaximum, LimitRequest, LimitUnsupported,
                                        parse_limits, with_maximums)
from pyctr_helper.config import Limits
from pyctr_helper.cgroup_tree import cgroup_mounts, detect, in_pyctr_cgroup
from pyctr_helper.cgroup_v1 import CgroupV1
from pyctr_helper.cgroup_v2 import CgroupV2

MiB = 1 << 20

HYBRID = """\
25 22 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
28 25 0:25 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
31 25 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
32 29 0:26 /lxc/box /srv/bind\\040dir rw,relatime - cgroup cgroup rw,memory
"""
COMOUNTED = """\
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""
PURE_V2 = """\
25 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
"""


# --- the frontend: what needs a cgroup, and who makes it -------------------------------------

def test_unlimited_values_need_no_cgroup():
    wanted = cgroups.Wanted.of(Resources(memory=0, memory_swap=-1, cpus=0.0, pids=-1))
    assert not wanted.any
    assert cgroups.apply(Resources(memory=0, pids=0), pid=1, pidfd=-1) is None


def test_wanted_limits_go_on_the_wire_with_their_dbus_types():
    wanted = cgroups.Wanted.of(Resources(memory=64 * MiB, memory_swap=128 * MiB, cpus=1, pids=10))
    assert wanted.wire() == {"memory": 64 * MiB, "memory_swap": 128 * MiB, "cpus": 1.0, "pids": 10}
    assert isinstance(wanted.wire()["cpus"], float)
    assert wanted.controllers() == ["memory", "cpu", "pids"]
    # swap without a memory limit means nothing to enforce
    assert cgroups.Wanted.of(Resources(memory_swap=128 * MiB)).wire() == {}


def test_oom_note_names_the_limit_only_when_something_was_killed():
    wanted = cgroups.Wanted.of(Resources(memory=32 * MiB))
    assert cgroups.oom_note(0, wanted) is None
    note = cgroups.oom_note(1, wanted)
    assert "ran out of memory" in note and "--memory 32m" in note


def test_release_never_raises_on_the_exit_path():
    class Broken:
        def release(self):
            raise OSError("gone")

    assert cgroups.release(Broken()) is None
    assert cgroups.release(None) is None


def test_no_limit_options_import_no_dbus():
    code = ("import sys; from pyctr import cgroups; from pyctr.spec import Resources;"
            "assert cgroups.apply(Resources(), 1, -1) is None;"
            "print(sorted(m for m in ('dbus_next', 'asyncio', 'pyctr.cgroup_choice') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mounts_are_read_from_mountinfo():
    hybrid = cgroup_choice.Mounts.read(HYBRID)
    assert hybrid.v1["memory"] == Path("/sys/fs/cgroup/memory")
    assert hybrid.unified == Path("/sys/fs/cgroup/unified") and not hybrid.pure_v2
    assert cgroup_choice.Mounts.read(PURE_V2).pure_v2


def _delegating_host(tmp_path: Path, uid: int, controllers: str) -> Path:
    manager = tmp_path / "user.slice" / f"user-{uid}.slice" / f"user@{uid}.service"
    manager.mkdir(parents=True)
    (manager / "cgroup.controllers").write_text(controllers + "\n")
    return tmp_path


def test_systemd_delegation_is_chosen_only_with_v2_controllers_and_a_user_bus(tmp_path):
    uid = 4242
    root = _delegating_host(tmp_path, uid, "cpu memory pids")
    bus = tmp_path / "run" / "bus"
    bus.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(bus))
        env = {"XDG_RUNTIME_DIR": str(bus.parent)}
        wanted = cgroups.Wanted.of(Resources(memory=64 * MiB, pids=10))
        v2 = cgroup_choice.Mounts.read(PURE_V2)
        assert cgroup_choice.use_systemd(wanted, v2, uid, env, root)
        assert not cgroup_choice.use_systemd(wanted, cgroup_choice.Mounts.read(HYBRID), uid, env, root)
        assert not cgroup_choice.use_systemd(wanted, v2, uid, {"XDG_RUNTIME_DIR": "/nonexistent"}, root)
        assert not cgroup_choice.use_systemd(wanted, v2, uid + 1, env, root)
        (root / "user.slice" / f"user-{uid}.slice" / f"user@{uid}.service" /
         "cgroup.controllers").write_text("memory\n")
        assert not cgroup_choice.use_systemd(wanted, v2, uid, env, root)


def test_delegated_scope_is_split_and_the_limits_written(tmp_path, monkeypatch):
    scope = tmp_path / "pyctr-abc.scope"
    scope.mkdir()
    (scope / "cgroup.controllers").write_text("cpu memory pids\n")
    real_make_dir = cgroup_systemd.make_dir

    def make_dir_with_swap(path: Path) -> None:  # cgroupfs adds memory.swap.max where swap is on
        real_make_dir(path)
        (path / "memory.swap.max").write_text("max\n")

    monkeypatch.setattr(cgroup_systemd, "make_dir", make_dir_with_swap)
    wanted = cgroups.Wanted.of(Resources(memory=64 * MiB, memory_swap=96 * MiB, cpus=0.5, pids=10))
    container = cgroup_systemd.arrange(scope, container_pid=111, own_pid=222, wanted=wanted)
    assert container == scope / "container"
    assert (container / "cgroup.procs").read_text() == "111"
    assert (scope / "supervisor" / "cgroup.procs").read_text() == "222"
    assert (scope / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (container / "memory.max").read_text() == str(64 * MiB)
    assert (container / "memory.oom.group").read_text() == "1"
    assert (container / "memory.swap.max").read_text() == str(32 * MiB)
    assert (container / "cpu.max").read_text() == "50000 100000"
    assert (container / "pids.max").read_text() == "10"


def test_delegated_scope_without_a_controller_is_refused(tmp_path):
    scope = tmp_path / "pyctr-abc.scope"
    scope.mkdir()
    (scope / "cgroup.controllers").write_text("memory\n")
    with pytest.raises(PyctrError, match="pids"):
        cgroup_systemd.arrange(scope, 1, 2, cgroups.Wanted.of(Resources(pids=10)))
    assert not (scope / "container").exists()


# --- the helper: which backend, and cgroup v2 limits -----------------------------------------

def test_helper_finds_v1_hierarchies_and_ignores_bind_mounted_subtrees():
    v1, unified = cgroup_mounts(HYBRID)
    assert v1 == {"cpu": Path("/sys/fs/cgroup/cpu"), "cpuacct": Path("/sys/fs/cgroup/cpuacct"),
                  "memory": Path("/sys/fs/cgroup/memory"), "pids": Path("/sys/fs/cgroup/pids")}
    assert unified == Path("/sys/fs/cgroup/unified")
    assert isinstance(detect(HYBRID), CgroupV1)
    assert isinstance(detect(PURE_V2), CgroupV2)
    comounted, _ = cgroup_mounts(COMOUNTED)
    assert comounted["cpu"] == comounted["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    with pytest.raises(LimitUnsupported):
        detect("")


def test_v1_cpu_and_cpuacct_comounted_make_one_directory():
    backend = CgroupV1(cgroup_mounts(COMOUNTED)[0])
    assert backend._hierarchies(LimitRequest(cpus=0.5)) == [Path("/sys/fs/cgroup/cpu,cpuacct")]


V2_FILES = ("cgroup.procs", "memory.max", "memory.swap.max", "memory.oom.group", "memory.events",
            "cpu.max", "pids.max", "cgroup.subtree_control")


@pytest.fixture
def fake_v2(tmp_path, monkeypatch) -> Path:
    """A directory tree shaped like a cgroup2 mount: mkdir also makes the control files."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("\n")
    real_make_dir = cgroup_v2.make_dir
    real_ensure_dir = cgroup_v2.ensure_dir

    def populate(path: Path) -> None:
        for name in V2_FILES:
            if not (path / name).exists():
                (path / name).write_text("")

    monkeypatch.setattr(cgroup_v2, "make_dir", lambda p: (real_make_dir(p), populate(p)))
    monkeypatch.setattr(cgroup_v2, "ensure_dir", lambda p: (real_ensure_dir(p), populate(p)))
    return root


def test_v2_limits_are_written_with_oom_group_and_controllers_enabled(fake_v2):
    backend = CgroupV2(fake_v2)
    request = parse_limits({"memory": 64 * MiB, "memory_swap": 96 * MiB, "cpus": 1.5, "pids": 20},
                           cpu_count=2)
    (path,) = backend.create("1001-0123456789abcdef", request)
    assert path == fake_v2 / "pyctr" / "1001-0123456789abcdef"
    assert (fake_v2 / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (fake_v2 / "pyctr" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    assert (path / "memory.max").read_text() == str(64 * MiB)
    assert (path / "memory.swap.max").read_text() == str(32 * MiB)
    assert (path / "memory.oom.group").read_text() == "1"
    assert (path / "cpu.max").read_text() == "150000 100000"
    assert (path / "pids.max").read_text() == "20"
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert backend.oom_kills([path]) == 1
    assert backend.existing() == {"1001-0123456789abcdef": [path]}


def test_v2_refuses_a_controller_the_tree_does_not_have(fake_v2):
    (fake_v2 / "cgroup.controllers").write_text("cpu memory\n")
    with pytest.raises(LimitUnsupported, match="pids"):
        CgroupV2(fake_v2).create("1001-0123456789abcdef", LimitRequest(pids=5))
    assert not (fake_v2 / "pyctr" / "1001-0123456789abcdef").exists()


def test_v2_without_swap_accounting_refuses_memory_swap_and_leaves_nothing(fake_v2, monkeypatch):
    real = cgroup_v2.make_dir

    def no_swap(path: Path) -> None:
        real(path)
        (path / "memory.swap.max").unlink()

    monkeypatch.setattr(cgroup_v2, "make_dir", no_swap)
    request = parse_limits({"memory": 64 * MiB, "memory_swap": 96 * MiB})
    with pytest.raises(LimitUnsupported, match="swap"):
        CgroupV2(fake_v2).create("1001-0123456789abcdef", request)
    leftover = fake_v2 / "pyctr" / "1001-0123456789abcdef"
    # rmdir cannot remove a regular directory with files in it: a real cgroupfs can.
    assert not leftover.exists() or {p.name for p in leftover.iterdir()} <= set(V2_FILES)


def test_every_configured_maximum_is_written_even_when_not_asked_for():
    maximums = Limits(max_memory=128 * MiB, max_cpus=1.5, max_pids=64)
    only_cpus = with_maximums(parse_limits({"cpus": 1.0}, cpu_count=2), maximums)
    assert (only_cpus.memory, only_cpus.cpus, only_cpus.pids) == (128 * MiB, 1.0, 64)
    lower = with_maximums(parse_limits({"memory": 64 * MiB, "pids": 10}, cpu_count=2), maximums)
    assert (lower.memory, lower.cpus, lower.pids) == (64 * MiB, 1.5, 10)
    assert with_maximums(parse_limits({"pids": 5}), Limits()) == LimitRequest(pids=5)
    swapped = with_maximums(parse_limits({"pids": 5}), maximums, swap_accounted=True)
    assert (swapped.memory, swapped.memory_swap) == (128 * MiB, 256 * MiB)
    asked = with_maximums(parse_limits({"memory": 64 * MiB, "memory_swap": 96 * MiB}), maximums,
                          swap_accounted=True)
    assert (asked.memory, asked.memory_swap) == (64 * MiB, 96 * MiB)
    for over in ({"memory": 256 * MiB}, {"memory": 0}, {"pids": -1}, {"cpus": 2.0}):
        with pytest.raises(LimitAboveMaximum):
            with_maximums(parse_limits(over, cpu_count=2), maximums)


def test_v2_refuses_a_process_outside_the_root_cgroup_rather_than_lift_it_out(fake_v2):
    """Placing it at /pyctr would shed its own cgroup's limits; v2 cannot nest under a
    cgroup that holds processes."""
    with pytest.raises(LimitUnsupported, match="root cgroup"):
        CgroupV2(fake_v2).create("1001-0123456789abcdef", LimitRequest(pids=5),
                                 ("0::/user.slice/user-1001.slice/session-1.scope",))
    assert not (fake_v2 / "pyctr" / "1001-0123456789abcdef").exists()
    (path,) = CgroupV2(fake_v2).create("1001-0123456789abcdef", LimitRequest(pids=5), ("0::/",))
    assert path == fake_v2 / "pyctr" / "1001-0123456789abcdef"


@pytest.mark.parametrize("path, inside", [
    ("/pyctr/1001-0123456789abcdef", True), ("/a/b/pyctr/1001-0123456789abcdef", True),
    ("/pyctr", True), ("/", False), ("/pyctrx/1001-0123456789abcdef", False),
    ("/user.slice/pyctr-like", False)])
def test_a_process_in_a_pyctr_cgroup_at_any_depth_is_recognised(path, inside):
    assert in_pyctr_cgroup(path) is inside
