"""The helper's happy path, called as a test user over the real system bus."""

import subprocess

import pyctr_bus

from helper_world import in_netns, leases_on_disk


def test_attach_creates_peer_in_netns_and_detach_removes_everything(client_a, polkit, unchanged_host):
    polkit.set("allow")
    pid = client_a.spawn()
    out = client_a.attach(pid, ifname=("s", "eth0"), ports=("a(sqqs)", [["", 0, 80, "tcp"]]))
    assert "body" in out, out
    lease = out["body"][0]
    assert set(lease) == set(pyctr_bus.LEASE_FIELDS)
    assert lease["address"].endswith("/24")
    host_port = lease["ports"][0][1]
    assert 1024 <= host_port <= 65535
    link = in_netns(pid, ["ip", "-o", "link", "show", "eth0"])
    assert lease["mac"] in link.stdout
    assert subprocess.run(["ip", "link", "show", lease["host_ifname"]], capture_output=True).returncode == 0
    nat = subprocess.run(["iptables-legacy", "-t", "nat", "-S", "PYCTR-DNAT"], capture_output=True, text=True).stdout
    assert f"--dport {host_port}" in nat
    assert [l["lease"] for l in client_a.list()] == [lease["lease"]]
    assert client_a.detach(lease["lease"]) == {"body": []}
    assert client_a.list() == []
    assert leases_on_disk() == []
    unchanged_host()


def test_lease_ends_when_the_container_exits(client_a, polkit, unchanged_host, wait_until):
    polkit.set("allow")
    pid = client_a.spawn()
    out = client_a.attach(pid)
    assert "body" in out, out
    client_a.kill_all()
    wait_until(lambda: client_a.list() == [] and leases_on_disk() == [], what="the lease to end")
    unchanged_host()
