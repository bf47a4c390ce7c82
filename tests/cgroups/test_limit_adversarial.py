"""Resources.Limit called directly on the system bus by a hostile test user: every refusal names
the right error and leaves the host as it was (no pyctr cgroup, the target where it was).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import pyctr_bus
from cgworld import wait_for
from pyctr_helper.cgroup_tree import detect
from pyctr_helper.cgroup_v1 import CgroupV1

CLIENT = str(Path(__file__).with_name("limit_client.py"))
PYTHON = "/opt/pyctr/bin/python"
MiB = 1 << 20
pytestmark = pytest.mark.usefixtures("no_cgroups_left")


@pytest.fixture(autouse=True)
def _world(helper, polkit):
    if not isinstance(detect(), CgroupV1):
        pytest.skip("these tests exercise the helper on cgroup v1")
    if polkit.mode != "allow":
        polkit.set("allow")


@pytest.fixture
def spawn():
    """Processes of the test users (a user namespace of their own, like a container's)."""
    procs: list[subprocess.Popen] = []

    def start(user) -> int:
        proc = user.popen(["unshare", "-Ur", "sleep", "1000"])
        procs.append(proc)
        wait_for(lambda: Path(f"/proc/{proc.pid}/ns/user").exists() and
                 os.readlink(f"/proc/{proc.pid}/ns/user") != os.readlink("/proc/self/ns/user"),
                 what="the process to enter its user namespace")
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def limit(user, **spec) -> dict:
    out = user.run([PYTHON, CLIENT, json.dumps(spec)], timeout=90)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def cgroup_lines(pid: int) -> str:
    return Path(f"/proc/{pid}/cgroup").read_text()


def test_limit_on_the_bus_places_the_callers_process_until_it_exits(user_a, spawn):
    pid = spawn(user_a)
    client = user_a.popen([PYTHON, CLIENT, json.dumps(
        {"fds": [{"pid": pid}], "limits": {"memory": ["x", 64 * MiB], "pids": ["x", 20]},
         "hold": True})], stdin=subprocess.PIPE)
    reply = json.loads(client.stdout.readline())
    assert reply["cgroup"].startswith(f"pyctr/{user_a.uid}-"), reply
    assert set(reply["controllers"]) == {"memory", "pids"}
    assert reply["paths"]["memory"].endswith(reply["cgroup"])
    assert f"memory:/{reply['paths']['memory']}" in cgroup_lines(pid)
    memory = Path("/sys/fs/cgroup/memory") / reply["paths"]["memory"]
    os.kill(pid, 9)
    # The container is gone, but its caller still holds on: the counters stay readable.
    wait_for(lambda: not (memory / "cgroup.procs").read_text().strip(), what="the cgroup to empty")
    assert memory.is_dir()
    client.stdin.close()
    client.wait(timeout=30)
    wait_for(lambda: not memory.exists(), timeout=15, what="the cgroup to be removed")


LIMITS = {"memory": ["x", 64 * MiB]}


@pytest.mark.parametrize("case, spec, error", [
    ("no fd", {"fds": []}, pyctr_bus.INVALID_ARGUMENT),
    ("two fds", {"fds": ["target", "target"]}, pyctr_bus.INVALID_ARGUMENT),
    ("handle out of range", {"fds": ["target"], "handles": [1]}, pyctr_bus.INVALID_ARGUMENT),
    ("/dev/null", {"fds": [{"path": "/dev/null"}]}, pyctr_bus.INVALID_ARGUMENT),
    ("a regular file", {"fds": [{"path": "/etc/hostname"}]}, pyctr_bus.INVALID_ARGUMENT),
    ("a socket", {"fds": [{"socket": 1}]}, pyctr_bus.INVALID_ARGUMENT),
    ("a process of root", {"fds": ["root"]}, pyctr_bus.INVALID_ARGUMENT),
    ("a process of another user", {"fds": ["other"]}, pyctr_bus.INVALID_ARGUMENT),
    ("memory as a string", {"limits": {"memory": ["s", "64m"]}}, pyctr_bus.INVALID_ARGUMENT),
    ("cpus as an integer", {"limits": {"cpus": ["x", 1]}}, pyctr_bus.INVALID_ARGUMENT),
    ("an unknown limit", {"limits": {"swappiness": ["x", 0]}}, pyctr_bus.INVALID_ARGUMENT),
    ("no limit at all", {"limits": {}}, pyctr_bus.INVALID_ARGUMENT),
    ("a negative memory", {"limits": {"memory": ["x", -1]}}, pyctr_bus.INVALID_ARGUMENT),
    ("a wrong signature", {"signature": "a{sv}", "body": [{}]}, pyctr_bus.INVALID_ARGUMENT),
])
def test_limit_refuses_and_changes_nothing(user_a, user_b, spawn, helper, case, spec, error):
    target = spawn(user_a)
    other = spawn(user_b)
    fds = [{"pid": {"target": target, "other": other, "root": helper.pid}[f]} if isinstance(f, str)
           else f for f in spec.pop("fds", ["target"])]
    before = (cgroup_lines(target), cgroup_lines(other), cgroup_lines(helper.pid))
    reply = limit(user_a, fds=fds, **{"limits": LIMITS, **spec})
    assert reply.get("error") == error, (case, reply)
    assert "Traceback" not in reply["message"]
    # Nothing moved (no_cgroups_left also checks that no pyctr cgroup was left behind).
    assert (cgroup_lines(target), cgroup_lines(other), cgroup_lines(helper.pid)) == before


def test_limit_refuses_a_pidfd_naming_a_thread_and_changes_nothing(user_a):
    """A PIDFD_THREAD pidfd's Pid is a thread id: writing it to cgroup.procs would move the
    whole process, so the target must be a thread group leader (Tgid == Pid)."""
    proc = user_a.popen([PYTHON, "-c", "import threading, time; threading.Thread("
                         "target=time.sleep, args=(1000,), daemon=True).start(); time.sleep(1000)"])
    try:
        tids = wait_for(lambda: [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")
                                 if int(t) != proc.pid], what="the second thread")
        before = cgroup_lines(proc.pid)
        reply = limit(user_a, fds=[{"thread": tids[0]}], limits=LIMITS)
        assert reply.get("error") == pyctr_bus.INVALID_ARGUMENT, reply
        assert cgroup_lines(proc.pid) == before
    finally:
        proc.kill()
        proc.wait()


def test_limit_refuses_a_second_placement_of_the_same_process(user_a, spawn):
    pid = spawn(user_a)
    client = user_a.popen([PYTHON, CLIENT, json.dumps(
        {"fds": [{"pid": pid}], "limits": {"pids": ["x", 20]}, "hold": True})],
        stdin=subprocess.PIPE)
    first = json.loads(client.stdout.readline())
    try:
        again = limit(user_a, fds=[{"pid": pid}], limits={"pids": ["x", 4000]})
        assert again.get("error") == pyctr_bus.INVALID_ARGUMENT, again
        assert f"pids:/{first['cgroup']}" in cgroup_lines(pid)
    finally:
        client.stdin.close()
        client.wait(timeout=30)


def test_limit_without_a_grant_needs_a_password_the_call_did_not_allow(user_a, spawn, polkit):
    polkit.set("auth_admin", actions=[pyctr_bus.ACTION_LIMIT_RESOURCES])
    pid = spawn(user_a)
    before = cgroup_lines(pid)
    reply = limit(user_a, fds=[{"pid": pid}], limits=LIMITS)
    assert reply.get("error") == pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED, reply
    assert cgroup_lines(pid) == before


def test_limit_is_denied_by_polkit_before_anything_is_looked_at(user_a, spawn, polkit):
    polkit.set("deny", actions=[pyctr_bus.ACTION_LIMIT_RESOURCES])
    pid = spawn(user_a)
    before = cgroup_lines(pid)
    reply = limit(user_a, fds=[{"pid": pid}], limits=LIMITS)
    assert reply.get("error") == pyctr_bus.NOT_AUTHORIZED, reply
    assert cgroup_lines(pid) == before
