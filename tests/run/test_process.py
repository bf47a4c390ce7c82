"""Namespaces, pid 1, file descriptors, environment, exit codes and signals."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from runworld import processes_with, wait_for


def test_cmd_is_pid_1(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c", "echo $$")
    assert out.stdout == "1\n"


def test_init_option_runs_cmd_under_a_pid_1_init(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "--init", str(rootfs), "sh", "-c", "echo $$")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "2\n"


def test_hostname_defaults_to_the_short_container_id(run_a, rootfs):
    out = run_a.run("--network", "none", str(rootfs), "hostname")
    [cid] = run_a.containers()
    assert out.stdout == cid[:12] + "\n"


def test_hostname_option_sets_hostname_and_etc_files(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "--hostname", "box1", str(rootfs), "sh", "-c",
                    "hostname; cat /etc/hostname; grep -c box1 /etc/hosts")
    assert out.stdout.split() == ["box1", "box1", "1"]


def test_network_none_has_only_loopback_and_it_is_up(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    "ls /sys/class/net; ip -o link show lo")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "lo"
    assert "UP" in lines[1]


def test_only_stdio_descriptors_reach_the_container(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "ls", "/proc/self/fd")
    assert out.returncode == 0, out.stderr
    fds = sorted(int(x) for x in out.stdout.split())
    # 0, 1, 2, and the one ls opened to read the directory.
    assert fds == [0, 1, 2, 3]


def test_environment_defaults_and_options(run_a, rootfs):
    env_file = run_a.scratch / "env"
    env_file.write_text("# comment\nFROM_FILE=1\nOVERRIDE=file\n")
    os.chown(env_file, run_a.user.uid, run_a.user.gid)
    out = run_a.run("--rm", "--network", "none", "--hostname", "h1", "--env-file", str(env_file),
                    "-e", "A=b=c", "-e", "OVERRIDE=cli", "-e", "FROM_HOST", "-e", "UNSET_ON_HOST",
                    str(rootfs), "env", env={"FROM_HOST": "host-value"})
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert env["PATH"].startswith("/usr/local/sbin:")
    assert env["HOME"] == "/root" and env["HOSTNAME"] == "h1"
    assert env["A"] == "b=c" and env["OVERRIDE"] == "cli" and env["FROM_FILE"] == "1"
    assert env["FROM_HOST"] == "host-value"
    assert "UNSET_ON_HOST" not in env and "TERM" not in env


def test_exit_code_zero(run_a, rootfs):
    assert run_a.run("--rm", "--network", "none", str(rootfs), "true").returncode == 0


def test_exit_code_is_cmds(run_a, rootfs):
    assert run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c", "exit 42").returncode == 42


def test_exit_code_126_for_a_command_that_cannot_run(run_a, rootfs, marker):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "/etc/passwd", marker)
    assert out.returncode == 126
    assert len(out.stderr.splitlines()) == 1
    run_a.assert_nothing_left(marker)


def test_exit_code_127_for_a_missing_command(run_a, rootfs, marker):
    out = run_a.run("--network", "none", str(rootfs), "/no/such/cmd", marker)
    assert out.returncode == 127
    assert len(out.stderr.splitlines()) == 1 and "/no/such/cmd" in out.stderr
    run_a.assert_nothing_left(marker)  # even without --rm: the container never ran


def _container_pid(pyctr: subprocess.Popen) -> int:
    """The container's pid 1 is pyctr's only child (pyctr is its subreaper)."""
    def child():
        text = Path(f"/proc/{pyctr.pid}/task/{pyctr.pid}/children").read_text().split()
        return int(text[0]) if len(text) == 1 else 0
    return wait_for(child, what="the container's pid 1")


def test_exit_code_137_when_the_container_is_killed(run_a, rootfs, sleep_marker):
    marker = sleep_marker
    p = run_a.popen("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    f"echo ready; exec sleep 1000 {marker}")
    assert p.stdout.readline() == "ready\n"
    os.kill(_container_pid(p), signal.SIGKILL)
    assert p.wait(timeout=30) == 137
    p.communicate()
    run_a.assert_nothing_left(marker)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_is_forwarded_to_the_container(run_a, rootfs, sig):
    name = sig.name[3:]
    p = run_a.popen("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    f"trap 'echo got-{name}; exit 7' {name}; echo ready; while :; do sleep 0.05; done")
    assert p.stdout.readline() == "ready\n"
    p.send_signal(sig)
    assert p.wait(timeout=30) == 7
    assert p.stdout.read() == f"got-{name}\n"
    p.communicate()


def test_init_forwards_signals_and_reports_the_signal(run_a, rootfs, sleep_marker):
    marker = sleep_marker
    p = run_a.popen("--rm", "--network", "none", "--init", str(rootfs), "sh", "-c",
                    f"echo ready; exec sleep 1000 {marker}")
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == 128 + signal.SIGINT
    p.communicate()
    run_a.assert_nothing_left(marker)


def test_killing_pyctr_kills_the_container_and_next_run_collects_its_state(run_a, rootfs,
                                                                          sleep_marker):
    marker = sleep_marker
    p = run_a.popen("--network", "none", str(rootfs), "sh", "-c", f"echo ready; exec sleep 1000 {marker}")
    assert p.stdout.readline() == "ready\n"
    p.kill()
    p.wait(timeout=30)
    p.communicate()
    wait_for(lambda: not processes_with(marker), what="the container to die with pyctr")
    assert len(run_a.containers()) == 1
    assert run_a.run("--rm", "--network", "none", str(rootfs), "true").returncode == 0
    run_a.assert_nothing_left(marker)


def test_netconf_sets_the_leased_address_and_default_route(user_a):
    """What a bridge container applies to itself, run in a throwaway user+net namespace."""
    script = ("ip link add v0 type veth peer name v1 && "
              "/opt/pyctr/bin/python -c 'from pyctr import netconf; "
              "netconf.configure(\"v0\", \"10.1.2.3/24\", \"10.1.2.1\")' && "
              "ip -4 -o addr show v0 && ip route show default && ip -o link show lo")
    out = user_a.run(["unshare", "-rn", "sh", "-c", script])
    assert out.returncode == 0, out.stderr
    assert "inet 10.1.2.3/24" in out.stdout
    assert "default via 10.1.2.1 dev v0" in out.stdout
    assert "LOOPBACK,UP" in out.stdout


def test_init_holds_no_pyctr_descriptor(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "--init", str(rootfs), "ls", "/proc/1/fd")
    assert out.returncode == 0, out.stderr
    assert sorted(int(x) for x in out.stdout.split()) == [0, 1, 2]


def test_init_reaps_orphaned_zombies(run_a, rootfs):
    # The subshell exits at once; its background sleep is re-parented to pid 1, the init,
    # which must reap it when it exits. Poll (bounded) until no zombie is left.
    script = ("(sleep 0.05 &); "
              "for i in $(seq 200); do ps -o stat,comm | grep -q '^Z' || break; sleep 0.05; done; "
              "sleep 0.1; ps -o stat,comm")
    out = run_a.run("--rm", "--network", "none", "--init", str(rootfs), "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    assert not [l for l in out.stdout.splitlines() if l.startswith("Z")], out.stdout


def test_interrupt_while_starting_exits_130_and_leaves_nothing(run_a, rootfs, marker):
    """Hold the state directory's creation lock so pyctr waits mid-start, then Ctrl-C it."""
    import fcntl

    base = run_a.data_home / "pyctr" / "containers"
    base.mkdir(parents=True)
    for d in (base.parent, base):
        os.chown(d, run_a.user.uid, run_a.user.gid)
    with open(base / ".gc.lock", "w") as lock:
        os.chown(base / ".gc.lock", run_a.user.uid, run_a.user.gid)
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = run_a.popen("--rm", "--network", "none", str(rootfs), "true", marker)
        # /proc/locks lists a process blocked on a lock with "->" before its line.
        wait_for(lambda: any(f" {p.pid} " in line and "->" in line
                             for line in Path("/proc/locks").read_text().splitlines()),
                 what="pyctr to wait for the state lock")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGINT
    assert len(err.splitlines()) == 1 and "interrupted" in err
    run_a.assert_nothing_left(marker)


@pytest.mark.parametrize("fd", [3, 4, 5, 6, 7])
def test_workdir_through_a_descriptor_is_refused(run_a, rootfs, marker, fd):
    """The CVE-2024-21626 shape: -w /proc/self/fd/N must not land outside the container."""
    out = run_a.run("--rm", "--network", "none", "-w", f"/proc/self/fd/{fd}", str(rootfs),
                    "sh", "-c", "pwd; ls /", marker)
    assert out.returncode == 125
    assert len(out.stderr.splitlines()) == 1
    run_a.assert_nothing_left(marker)


def test_network_host_shares_the_hosts_interfaces_and_hostname(run_a, rootfs):
    before = set(os.listdir("/sys/class/net"))
    out = run_a.run("--rm", "--network", "host", str(rootfs), "sh", "-c",
                    "hostname; ls /sys/class/net")
    after = set(os.listdir("/sys/class/net"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] == os.uname().nodename
    # Other tests add and remove veths meanwhile: compare what existed throughout.
    assert (before & after) <= set(lines[1:]) and len(before & after) > 1
