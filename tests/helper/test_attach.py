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


def test_route_localnet_is_on_for_the_bridge_only(client_a, polkit, unchanged_host):
    polkit.set("allow")
    out = client_a.attach(client_a.spawn())
    lease = out["body"][0]
    conf = "/proc/sys/net/ipv4/conf"
    with open(f"{conf}/all/route_localnet") as f:
        assert f.read().strip() == "0"
    with open(f"{conf}/pyctr0/route_localnet") as f:
        assert f.read().strip() == "1"
    raw = subprocess.run(["iptables-legacy", "-t", "raw", "-S", "PYCTR-PREROUTING"],
                         capture_output=True, text=True).stdout
    assert "-A PYCTR-PREROUTING -d 127.0.0.0/8 -i pyctr0" in raw and "-j DROP" in raw
    assert client_a.detach(lease["lease"]) == {"body": []}
    unchanged_host()


def test_publishing_a_udp_port_flushes_its_stale_conntrack_entries(client_a, polkit, unchanged_host):
    import socket
    polkit.set("allow")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", port))  # nobody listens: conntrack still records the flow

    def entries() -> str:
        return subprocess.run(["conntrack", "-L", "-p", "udp", "--orig-port-dst", str(port)],
                              capture_output=True, text=True).stdout
    assert f"dport={port}" in entries()
    out = client_a.attach(client_a.spawn(), ports=("a(sqqs)", [["", port, 53, "udp"]]))
    assert "body" in out, out
    assert f"dport={port}" not in entries()
    assert client_a.detach(out["body"][0]["lease"]) == {"body": []}
    unchanged_host()


def test_udp_conntrack_flush_spares_flows_to_other_addresses_on_the_same_port(client_a, polkit,
                                                                             unchanged_host):
    """Publishing 127.0.0.1:P forgets flows to 127.0.0.1:P only; a flow of the host to another
    address with destination port P (here 127.0.0.2, standing for a remote server) is not the
    mapping's business and survives both the attach and the detach."""
    import socket
    polkit.set("allow")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in ("127.0.0.1", "127.0.0.2"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"x", (address, port))  # nobody listens: conntrack still records the flow

    def entries(address: str) -> str:
        return subprocess.run(["conntrack", "-L", "-p", "udp", "--orig-dst", address,
                               "--orig-port-dst", str(port)], capture_output=True, text=True).stdout
    try:
        assert f"dport={port}" in entries("127.0.0.1") and f"dport={port}" in entries("127.0.0.2")
        out = client_a.attach(client_a.spawn(), ports=("a(sqqs)", [["127.0.0.1", port, 53, "udp"]]))
        assert "body" in out, out
        assert f"dport={port}" not in entries("127.0.0.1")
        assert f"dport={port}" in entries("127.0.0.2")
        assert client_a.detach(out["body"][0]["lease"]) == {"body": []}
        assert f"dport={port}" in entries("127.0.0.2")
    finally:
        subprocess.run(["conntrack", "-D", "-p", "udp", "--orig-dst", "127.0.0.2",
                        "--orig-port-dst", str(port)], capture_output=True)
    unchanged_host()
