"""A lease's whole life: container exit, helper crash and restart, SIGTERM, many cycles."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

import pyctr_bus
from helper_world import PYTHON, CLIENT, leases_on_disk, nft_tables, ports, variants

HELPER = str(Path(os.environ.get("PYCTR_PREFIX", "/opt/pyctr")) / "bin" / "pyctr-helper")


def _owned() -> bool:
    return subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                           "/", "org.freedesktop.DBus.NameHasOwner", f"string:{pyctr_bus.BUS_NAME}"],
                          capture_output=True, text=True).stdout.endswith("true\n")


def _start_crashing(helper, step: str, wait_until) -> None:
    """The session's helper, restarted with fault injection at `step`."""
    helper.stop()
    wait_until(lambda: not _owned(), what="the helper to leave the bus")
    helper.proc = subprocess.Popen([HELPER, "--log", str(helper.log_path), "--crash-at", step],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    wait_until(lambda: _owned() or helper.proc.poll() is not None, what="the helper to start")


def _pyctr_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = {l.split(":")[1].strip().split("@")[0] for l in out.splitlines()}
    return {n for n in names if n.startswith("pc") or n == "pyctr0"}


def _chains() -> str:
    return "".join(subprocess.run(["iptables-legacy", "-t", t, "-S"], capture_output=True,
                                  text=True).stdout for t in ("nat", "filter", "raw"))


def _nft_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


@pytest.mark.parametrize("step", ["reserve-port", "record-pending", "bridge", "veth", "antispoof",
                                  "enslave", "rules"])
def test_helper_killed_mid_attach_leaves_nothing_stale_after_restart(step, client_a, helper, polkit,
                                                                    wait_until, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    _start_crashing(helper, step, wait_until)
    try:
        out = client_a.attach(pid, ports=ports(("", 0, 80, "tcp"), ("", 0, 53, "udp")))
        assert "error" in out, out  # the helper died before it could answer
        helper.proc.wait(timeout=30)
        assert helper.proc.returncode == -signal.SIGKILL
    finally:
        helper.start()
    assert leases_on_disk() == []
    nothing_changed()


def test_helper_restart_keeps_a_live_lease_and_its_port(client_a, helper, polkit, wait_until,
                                                       nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    out = client_a.attach(pid, ports=ports(("", 0, 80, "tcp")))
    lease = out["body"][0]
    port = lease["ports"][0][1]
    helper.stop(signal.SIGKILL)
    helper.start()
    assert [l["lease"] for l in client_a.list()] == [lease["lease"]]
    assert lease["host_ifname"] in _pyctr_links()
    assert f"--dport {port}" in _chains()
    assert not _port_free(port), "the restarted helper must hold the port again"
    client_a.kill_all()  # the container exits: the re-opened pidfd ends the lease
    wait_until(lambda: client_a.list() == [], what="the lease to end with its process")
    assert _port_free(port)
    nothing_changed()


def test_sigterm_removes_every_veth_rule_table_and_lease(client_a, helper, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    out = client_a.attach(pid, ports=ports(("", 0, 80, "tcp")))
    port = out["body"][0]["ports"][0][1]
    helper.stop(signal.SIGTERM)
    try:
        assert _pyctr_links() == set()
        assert "PYCTR" not in _chains()
        assert nft_tables() == set()
        assert leases_on_disk() == []
        assert _port_free(port)
    finally:
        helper.start()
    nothing_changed()


def test_lease_ends_when_the_owners_bus_connection_drops_if_configured(client_a, helper, polkit,
                                                                      wait_until, nothing_changed,
                                                                      tmp_path):
    polkit.set("allow")
    config = tmp_path / "helper.toml"
    config.write_text("[leases]\nend_on_disconnect = true\n")
    helper.start(config)
    try:
        pid = client_a.spawn()
        options = variants({"ports": ports(("", 0, 80, "tcp"))})
        spec = {"member": "Attach", "signature": "hha{sv}", "body": [0, 1, options],
                "fds": [{"netns": pid}, {"pidfd": pid}], "hold": True}
        holder = client_a.user.popen([PYTHON, CLIENT, "call", json.dumps(spec)],
                                     stdin=subprocess.PIPE)
        reply = json.loads(holder.stdout.readline())
        assert "body" in reply, reply
        lease = client_a.list()[0]
        veth, address = lease["host_ifname"], lease["address"].split("/")[0]
        assert veth in _pyctr_links() and veth in _nft_ruleset() and address in _chains()
        holder.stdin.close()  # the client leaves the bus; its container lives on
        holder.wait(timeout=30)
        wait_until(lambda: client_a.list() == [], what="the lease to end with the connection")
        # The end ran where acts run (not on the bus loop, where pyroute2 fails): the veth,
        # its anti-spoofing elements, its rules and its lease record are all gone, while
        # the container still lives.
        assert os.path.exists(f"/proc/{pid}")
        wait_until(lambda: veth not in _pyctr_links(), what="the veth to be deleted")
        assert veth not in _nft_ruleset()
        assert address not in _chains()
        assert leases_on_disk() == []
        assert "event loop" not in helper.log_path.read_text()
    finally:
        helper.start()
    nothing_changed()


def test_200_attach_detach_cycles_leak_nothing(client_a, helper, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    fds_before = helper.fd_count()
    result = client_a.cycles(pid, 200, {"ports": {"__v__": ["a(sqqs)", [["", 0, 80, "tcp"],
                                                                       ["", 0, 53, "udp"]]]}})
    assert result["errors"] == [] and result["ok"] == 200
    assert helper.fd_count() == fds_before
    assert leases_on_disk() == []
    nothing_changed()


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def test_ip_forward_is_set_by_the_first_lease_and_restored_after_the_last_even_across_a_crash(
        client_a, helper, polkit, wait_until, nothing_changed):
    """ip_forward is global: the helper turns it on for its first bridge only once an attach
    is accepted, and puts back the value it found when its last bridge goes, also when the
    helper was killed in between (the value waits in the state dir)."""
    polkit.set("allow")
    assert client_a.list() == []
    found = IP_FORWARD.read_text()
    IP_FORWARD.write_text("0\n")
    try:
        pid = client_a.spawn()
        # Refused after the bridge was made: the netns already has an interface named lo.
        refused = client_a.attach(pid, ifname=("s", "lo"))
        assert refused.get("error") == pyctr_bus.INVALID_ARGUMENT, refused
        assert IP_FORWARD.read_text().strip() == "0"  # a refused attach changes nothing

        out = client_a.attach(pid)
        assert "body" in out, out
        assert IP_FORWARD.read_text().strip() == "1"
        assert client_a.detach(out["body"][0]["lease"]) == {"body": []}
        assert IP_FORWARD.read_text().strip() == "0"

        out = client_a.attach(client_a.spawn())
        assert "body" in out, out
        assert IP_FORWARD.read_text().strip() == "1"
        helper.stop(signal.SIGKILL)  # no chance to restore anything
        client_a.kill_all()  # the lease is stale for the next helper
        helper.start()
        wait_until(lambda: client_a.list() == [], what="the restarted helper to serve")
        assert IP_FORWARD.read_text().strip() == "0"
        assert not (Path("/var/lib/pyctr") / "ip_forward.before").exists()
    finally:
        IP_FORWARD.write_text(found)
    nothing_changed()
