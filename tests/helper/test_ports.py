"""Published host ports: reserved by binding, never hijacked, never double-booked, within quota."""

from __future__ import annotations

import json
import socket
import textwrap

import pyctr_bus
from helper_world import ports


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def test_port_a_root_service_listens_on_is_refused(client_a, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    with socket.socket() as service:  # the test runs as root: a root service
        service.bind(("127.0.0.1", 0))
        service.listen()
        port = service.getsockname()[1]
        out = client_a.attach(pid, ports=ports(("", port, 80, "tcp")))
        assert out["error"] == pyctr_bus.PORT_IN_USE, out
        out = client_a.attach(pid, ports=ports(("127.0.0.1", port, 80, "tcp")))
        assert out["error"] == pyctr_bus.PORT_IN_USE, out
    nothing_changed()


def test_a_published_port_is_held_for_the_lease(client_a, polkit, nothing_changed):
    polkit.set("allow")
    pid = client_a.spawn()
    port = _free_port()
    out = client_a.attach(pid, ports=ports(("", port, 80, "tcp"), ("", port, 53, "udp")))
    lease = out["body"][0]
    assert sorted(map(tuple, lease["ports"])) == [("", port, 53, "udp"), ("", port, 80, "tcp")]
    with socket.socket() as other:
        try:
            other.bind(("127.0.0.1", port))
            raise AssertionError("a root service could bind a port the helper reserved")
        except OSError:
            pass
    assert client_a.detach(lease["lease"]) == {"body": []}
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))  # free again
    nothing_changed()


def test_two_users_racing_for_one_host_port_exactly_one_wins(client_a, client_b, polkit,
                                                            nothing_changed):
    polkit.set("allow")
    port = _free_port()
    pids = {"a": client_a.spawn(), "b": client_b.spawn()}
    racers = []
    for name, client in (("a", client_a), ("b", client_b)):
        for _ in range(3):
            racers.append((client, client.popen_call(
                "Attach", "hha{sv}",
                [0, 1, {"ports": {"__v__": ["a(sqqs)", [["", port, 80, "tcp"]]]}}],
                [{"netns": pids[name]}, {"pidfd": pids[name]}])))
    results = []
    for client, proc in racers:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        results.append((client, json.loads(out)))
    winners = [(c, r) for c, r in results if "body" in r]
    losers = [r for _, r in results if "body" not in r]
    assert len(winners) == 1, results
    assert {r["error"] for r in losers} <= {pyctr_bus.PORT_IN_USE, pyctr_bus.INVALID_ARGUMENT}, losers
    assert any(r["error"] == pyctr_bus.PORT_IN_USE for r in losers), losers
    client, reply = winners[0]
    assert client.detach(reply["body"][0]["lease"]) == {"body": []}
    nothing_changed()


def test_quota_exceeded_is_refused(client_a, helper, polkit, nothing_changed, tmp_path):
    polkit.set("allow")
    config = tmp_path / "helper.toml"
    config.write_text(textwrap.dedent("""
        [quotas.default]
        max_interfaces = 1
        max_ports = 1
    """))
    helper.start(config)
    try:
        first = client_a.attach(client_a.spawn())
        assert "body" in first, first
        out = client_a.attach(client_a.spawn())
        assert out["error"] == pyctr_bus.QUOTA_EXCEEDED, out
        client_a.detach(first["body"][0]["lease"])
        out = client_a.attach(client_a.spawn(), ports=ports(("", 0, 80, "tcp"), ("", 0, 81, "tcp")))
        assert out["error"] == pyctr_bus.QUOTA_EXCEEDED, out
    finally:
        helper.start()
    nothing_changed()


def test_publishing_on_a_pyctr_gateway_is_refused_and_lease_dnat_stays_below_dns(client_a, polkit,
                                                                                nothing_changed):
    """The gateway is a local address while its bridge is up, but a mapping on it would capture
    what containers send to their gateway; and a lease's DNAT rules never shadow the network's
    own (the DNS DNAT to the gateway)."""
    import subprocess
    polkit.set("allow")
    first = client_a.attach(client_a.spawn(), ports=ports(("", 0, 53, "udp")))
    assert "body" in first, first
    lease = first["body"][0]
    gateway = lease["gateway"]
    try:
        out = client_a.attach(client_a.spawn(), ports=ports((gateway, 0, 80, "tcp")))
        assert out["error"] == pyctr_bus.INVALID_ARGUMENT and "pyctr network" in out["message"], out
        assert len(client_a.list()) == 1
        # Lease rules are appended, so they follow the network's rules (the DNS DNAT, present
        # when the host resolver is on loopback) and each other in attach order.
        second = client_a.attach(client_a.spawn(), ports=ports(("", 0, 80, "tcp")))
        assert "body" in second, second
        rules = subprocess.run(["iptables-legacy", "-t", "nat", "-S", "PYCTR-DNAT"],
                               capture_output=True, text=True).stdout.splitlines()
        at = {r: i for i, r in enumerate(rules)}
        first_at = [i for r, i in at.items() if f"pyctr:{lease['lease']}" in r]
        second_at = [i for r, i in at.items() if f"pyctr:{second['body'][0]['lease']}" in r]
        network_at = [i for r, i in at.items() if "pyctr-net:" in r]
        assert max(network_at, default=-1) < min(first_at) < min(second_at), rules
        assert client_a.detach(second["body"][0]["lease"]) == {"body": []}
    finally:
        assert client_a.detach(lease["lease"]) == {"body": []}
    nothing_changed()
