"""Hostile callers: every refusal is clean (a typed D-Bus error, nothing changed on the host).

Each case runs as an unprivileged test user over the real system bus, with the real polkitd
deciding, against the real kernel."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

import pyctr_bus
from helper_world import CLIENT, PYTHON, ports
from pyctr_helper.fdcheck import NETNS_REFUSAL


# --- authorization -------------------------------------------------------------------------

def test_attach_refused_without_polkit_grant(client_a, polkit, nothing_changed):
    pid = client_a.spawn()
    polkit.set("deny")
    out = client_a.attach(pid)
    assert out["error"] == pyctr_bus.NOT_AUTHORIZED, out
    nothing_changed()


def test_attach_needing_a_password_without_interactive_flag_says_so(client_a, polkit, nothing_changed):
    pid = client_a.spawn()
    polkit.set("auth_admin")
    out = client_a.attach(pid)
    assert out["error"] == pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED, out
    nothing_changed()


def _polkitd_pids() -> list[int]:
    out = subprocess.run(["pgrep", "-x", "polkitd"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_attach_refused_when_polkitd_does_not_answer(client_a, polkit, nothing_changed):
    """polkitd stopped (SIGSTOP: killing it would let the bus re-activate it): no answer
    within the helper's timeout is a denial."""
    pid = client_a.spawn()
    polkit.set("allow")
    stopped = _polkitd_pids()
    assert stopped, "polkitd is not running"
    for p in stopped:
        os.kill(p, signal.SIGSTOP)
    try:
        out = client_a.attach(pid)
    finally:
        for p in stopped:
            os.kill(p, signal.SIGCONT)
    assert out["error"] == pyctr_bus.NOT_AUTHORIZED, out
    assert "polkit did not answer" in out["message"]
    nothing_changed()


def test_calls_waiting_on_polkit_hold_no_fds_and_are_capped_per_connection(client_a, helper,
                                                                           polkit, wait_until,
                                                                           nothing_changed):
    """While polkit has not answered (stopped here; a password prompt can take minutes), a call
    with the wrong fd count already gave its fds back, and a connection may have only 8 calls
    in progress: the 9th and later are refused at once, without waiting."""
    from pyctr_helper.facade import MAX_IN_FLIGHT_PER_NAME
    pid = client_a.spawn()
    polkit.set("allow")
    fds_before = helper.fd_count()
    count = MAX_IN_FLIGHT_PER_NAME + 4
    spec = {"member": "Attach", "signature": "hha{sv}", "body": [0, 1, {}], "count": count,
            "fds": [{"netns": pid}, {"pidfd": pid}, {"path": "/dev/null"}]}  # one fd too many
    stopped = _polkitd_pids()
    assert stopped, "polkitd is not running"
    for p in stopped:
        os.kill(p, signal.SIGSTOP)
    try:
        burst = client_a.user.popen([PYTHON, CLIENT, "burst", json.dumps(spec)])
        early = [json.loads(burst.stdout.readline()) for _ in range(count - MAX_IN_FLIGHT_PER_NAME)]
        assert all(r.get("error") == pyctr_bus.QUOTA_EXCEEDED for r in early), early
        assert "calls in progress" in early[0]["message"]
        # The 8 still waiting on polkit hold none of the 24 fds they brought. (They are still
        # waiting when this holds: their replies below are polkit's answer after SIGCONT, not
        # the denial its 10 s silence would have given.)
        wait_until(lambda: helper.fd_count() == fds_before, timeout=8,
                   what="the helper to give back the fds of malformed calls")
    finally:
        for p in stopped:
            os.kill(p, signal.SIGCONT)
    late = [json.loads(burst.stdout.readline()) for _ in range(MAX_IN_FLIGHT_PER_NAME)]
    assert burst.wait(timeout=60) == 0
    assert all(r.get("error") == pyctr_bus.INVALID_ARGUMENT for r in late), late
    assert helper.fd_count() == fds_before
    nothing_changed()


def test_helper_raises_its_open_file_limit_to_the_hard_limit(helper):
    """Calls in progress hold the fds they brought; the soft limit must not be the bottleneck."""
    line = next(l for l in open(f"/proc/{helper.pid}/limits") if l.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard, line


def test_publishing_a_port_needs_the_publish_grant(client_a, polkit, nothing_changed):
    pid = client_a.spawn()
    polkit.set("allow", actions=[pyctr_bus.ACTION_ATTACH])
    out = client_a.attach(pid, ports=ports(("", 0, 80, "tcp")))
    assert out["error"] in (pyctr_bus.NOT_AUTHORIZED, pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED), out
    nothing_changed()


def test_privileged_port_without_grant_is_refused(client_a, polkit, nothing_changed):
    pid = client_a.spawn()
    polkit.set("allow", actions=[pyctr_bus.ACTION_ATTACH, pyctr_bus.ACTION_PUBLISH_PORT])
    out = client_a.attach(pid, ports=ports(("", 80, 80, "tcp")))
    assert out["error"] in (pyctr_bus.NOT_AUTHORIZED, pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED), out
    nothing_changed()


def test_privileged_port_refused_when_the_admin_allows_none(client_a, polkit, nothing_changed):
    pid = client_a.spawn()
    polkit.set("allow")  # every action granted; the default config still forbids port 80
    out = client_a.attach(pid, ports=ports(("", 80, 80, "tcp")))
    assert out["error"] == pyctr_bus.INVALID_ARGUMENT, out
    assert "privileged" in out["message"]
    nothing_changed()


# --- the netns fd ----------------------------------------------------------------------------

def _foreign_fd(path: str) -> int:
    """Opened by the test (root), then passed down to the client: how a caller could hold an
    fd it could never open itself."""
    return os.open(path, os.O_RDONLY)


@pytest.mark.parametrize("kind", [
    "dev-null", "regular-file", "socket", "pid-namespace", "host-netns", "helper-netns",
    "other-users-netns", "netns-owned-by-root",
])
def test_attach_refuses_every_bad_netns_with_one_message(kind, client_a, client_b, helper, polkit,
                                                         nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    fds_before = helper.fd_count()
    pass_fds: tuple[int, ...] = ()
    if kind == "dev-null":
        netns = {"path": "/dev/null"}
    elif kind == "regular-file":
        netns = {"path": "/etc/hostname"}
    elif kind == "socket":
        netns = {"socket": 1}
    elif kind == "pid-namespace":
        netns = {"pidns": pid}
    elif kind == "host-netns":
        netns = {"path": "/proc/self/ns/net"}  # the client runs in the host's netns
    else:
        if kind == "helper-netns":
            fd = _foreign_fd(f"/proc/{helper.pid}/ns/net")
        elif kind == "other-users-netns":
            fd = _foreign_fd(f"/proc/{client_b.spawn()}/ns/net")
        else:
            root_ns = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
            try:
                _wait_netns_differs(root_ns.pid)
                fd = _foreign_fd(f"/proc/{root_ns.pid}/ns/net")
            finally:
                root_ns.kill()
                root_ns.wait()
        pass_fds = (fd,)
        netns = {"inherited": fd}
    try:
        out = client_a.attach(pid, fds=[netns, {"pidfd": pid}], pass_fds=pass_fds)
    finally:
        for fd in pass_fds:
            os.close(fd)
    assert out == {"error": pyctr_bus.INVALID_NAMESPACE, "message": NETNS_REFUSAL}
    assert helper.fd_count() == fds_before, "a received fd was not closed"
    nothing_changed()


def _wait_netns_differs(pid: int) -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    for _ in range(2000):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != own:
                return
        except FileNotFoundError:
            pass
        os.sched_yield()
    raise AssertionError("unshare did not enter a new netns")


@pytest.mark.parametrize("fds,handles", [
    ([], [0, 1]),
    (["netns"], [0, 0]),
    (["netns", "pidfd", "netns"], [0, 1]),
    (["netns", "pidfd"], [0, 5]),
    (["netns", "pidfd"], [7, 1]),
    (["netns", "pidfd"], [0, 0]),
])
def test_attach_refuses_wrong_fd_count_or_handles(fds, handles, client_a, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    specs = [{"netns": pid} if f == "netns" else {"pidfd": pid} for f in fds]
    out = client_a.attach(pid, fds=specs, handles=handles)
    assert out["error"] == pyctr_bus.INVALID_ARGUMENT, out
    nothing_changed()


def test_attach_refuses_a_pidfd_of_another_users_process(client_a, client_b, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    fd = os.pidfd_open(client_b.spawn())
    try:
        out = client_a.attach(pid, fds=[{"netns": pid}, {"inherited": fd}], pass_fds=(fd,))
    finally:
        os.close(fd)
    assert out["error"] == pyctr_bus.INVALID_ARGUMENT and "pidfd" in out["message"], out
    nothing_changed()


def test_attach_refuses_a_pidfd_naming_a_thread(client_a, user_a, polkit, wait_until,
                                                nothing_changed):
    """A PIDFD_THREAD pidfd (Linux 6.9+) names one thread; its fdinfo Pid is a thread id. The
    lease's process must be a process: Tgid == Pid."""
    polkit.set("allow")
    pid = client_a.spawn()
    proc = user_a.popen(["/opt/pyctr/bin/python", "-c", "import threading, time; threading."
                         "Thread(target=time.sleep, args=(1000,), daemon=True).start(); "
                         "time.sleep(1000)"])
    try:
        tids = wait_until(lambda: [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")
                                   if int(t) != proc.pid], what="the second thread")
        fd = os.pidfd_open(tids[0], os.O_EXCL)  # PIDFD_THREAD == O_EXCL
        try:
            out = client_a.attach(pid, fds=[{"netns": pid}, {"inherited": fd}], pass_fds=(fd,))
        finally:
            os.close(fd)
    finally:
        proc.kill()
        proc.wait()
    assert out["error"] == pyctr_bus.INVALID_ARGUMENT and "pidfd" in out["message"], out
    nothing_changed()


def test_attach_refuses_a_pidfd_that_is_not_one(client_a, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    out = client_a.attach(pid, fds=[{"netns": pid}, {"path": "/dev/null"}])
    assert out["error"] == pyctr_bus.INVALID_ARGUMENT and "pidfd" in out["message"], out
    nothing_changed()


# --- arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    {"ifname": ("s", "")},
    {"ifname": ("s", "a" * 16)},
    {"ifname": ("s", "/")},
    {"ifname": ("s", "..")},
    {"ifname": ("s", "eth 0")},
    {"ifname": ("s", "eth0/../x")},
    {"address": ("s", "10.88.0.300")},
    {"address": ("s", "not-an-ip")},
    {"address": ("s", "8.8.8.8")},
    {"address": ("s", "10.88.0.0/24")},
    {"network": ("s", "no-such-network")},
    {"network": ("i", 1)},
    {"unknown": ("s", "x")},
    {"ports": ports(("", 8080, 0, "tcp"))},
    {"ports": ports(("", 8080, 80, "sctp"))},
    {"ports": ports(("999.1.1.1", 8080, 80, "tcp"))},
    {"ports": ports(("192.0.2.123", 8080, 80, "tcp"))},
    {"ports": ("a(siis)", [["", 65536, 80, "tcp"]])},
    {"ports": ("a(siis)", [["", -1, 80, "tcp"]])},
    {"ports": ("a(siis)", [["", 8080, -80, "tcp"]])},
    {"ports": ports(("", 8080, 80, "tcp"), ("", 8080, 81, "tcp"))},
])
def test_attach_refuses_invalid_arguments(options, client_a, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    out = client_a.attach(pid, **options)
    assert out["error"] == pyctr_bus.INVALID_ARGUMENT, out
    nothing_changed()


def test_attach_refuses_a_wrong_signature(client_a, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    out = client_a.call("Attach", "hh", [0, 1], [{"netns": pid}, {"pidfd": pid}])
    assert out["error"] == pyctr_bus.INVALID_ARGUMENT, out
    nothing_changed()


# --- other users' leases ------------------------------------------------------------------

def test_detach_and_list_never_reach_another_users_lease(client_a, client_b, polkit, unchanged_host):
    polkit.set("allow", actions=[pyctr_bus.ACTION_ATTACH, pyctr_bus.ACTION_PUBLISH_PORT])
    out = client_a.attach(client_a.spawn())
    lease = out["body"][0]["lease"]
    assert client_b.list() == []
    refused = client_b.detach(lease)
    assert refused["error"] == pyctr_bus.NO_SUCH_LEASE, refused
    # the same answer as for a lease that does not exist
    assert client_b.detach("0" * 16)["message"].replace("0" * 16, lease) == refused["message"]
    assert [l["lease"] for l in client_a.list()] == [lease]
    assert client_a.detach(lease) == {"body": []}
    unchanged_host()


def test_detach_refuses_a_malformed_lease_id(client_a, polkit, nothing_changed):
    polkit.set("allow")
    out = client_a.detach("../../etc/passwd")
    assert out["error"] == pyctr_bus.INVALID_ARGUMENT, out
    nothing_changed()


def test_manage_all_grant_lets_an_admin_detach_anothers_lease(client_a, client_b, polkit,
                                                              nothing_changed):
    polkit.set("allow")  # every org.pyctr action, org.pyctr.network.manage-all included
    out = client_a.attach(client_a.spawn())
    lease = out["body"][0]["lease"]
    assert client_b.list() == [], "List stays the caller's own, even with manage-all"
    assert client_b.detach(lease) == {"body": []}
    assert client_a.list() == []
    nothing_changed()


def test_interactive_attach_without_an_agent_is_refused_cleanly(client_a, polkit, nothing_changed):
    pid = client_a.spawn()
    polkit.set("auth_admin")
    out = client_a.call("Attach", "hha{sv}", [0, 1, {}], [{"netns": pid}, {"pidfd": pid}],
                        interactive=True)
    assert out["error"] == pyctr_bus.NOT_AUTHORIZED, out
    nothing_changed()


def test_own_lease_can_be_listed_and_detached_after_the_grant_is_gone(client_a, polkit,
                                                                      nothing_changed):
    """Detach and List act on the caller's own leases by the bus uid: giving a lease up must
    not need a grant the user may no longer have (a one-time password, a revoked rule)."""
    out = client_a.attach(client_a.spawn())
    lease = out["body"][0]["lease"]
    polkit.set("deny")
    assert [l["lease"] for l in client_a.list()] == [lease]
    assert client_a.detach(lease) == {"body": []}
    assert client_a.list() == []
    nothing_changed()
