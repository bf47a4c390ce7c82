"""Anti-spoofing: a container that takes another container's IP or MAC gets its frames dropped."""

from __future__ import annotations

import ipaddress

from helper_world import in_netns


def _configure(pid: int, lease: dict) -> None:
    """What the frontend does with the Attach reply: address, link up, default route."""
    for argv in (["ip", "link", "set", "lo", "up"],
                 ["ip", "addr", "add", lease["address"], "dev", "eth0"],
                 ["ip", "link", "set", "eth0", "up"],
                 ["ip", "route", "add", "default", "via", lease["gateway"]]):
        r = in_netns(pid, argv)
        assert r.returncode == 0, r.stderr


def _pings(pid: int, address: str) -> bool:
    return in_netns(pid, ["busybox", "ping", "-c", "1", "-W", "2", address]).returncode == 0


def test_container_taking_another_containers_ip_or_mac_is_dropped(client_a, client_b, polkit,
                                                                 wait_until, nothing_changed):
    polkit.set("allow")
    pids, leases = [], []
    for client in (client_a, client_b):
        pid = client.spawn()
        out = client.attach(pid)
        assert "body" in out, out
        pids.append(pid)
        leases.append(out["body"][0])
        _configure(pid, out["body"][0])
    spoofer, victim = pids
    mine, theirs = leases
    gateway = mine["gateway"]
    # The honest path works (the first ping may wait for the bridge to learn the MAC).
    wait_until(lambda: _pings(spoofer, gateway), timeout=20, what="the spoofer's own address to work")
    assert _pings(victim, gateway)
    assert _pings(spoofer, theirs["address"].split("/")[0])

    # Take the victim's address.
    in_netns(spoofer, ["ip", "addr", "flush", "dev", "eth0"])
    in_netns(spoofer, ["ip", "addr", "add", theirs["address"], "dev", "eth0"])
    in_netns(spoofer, ["ip", "route", "add", "default", "via", gateway])
    assert not _pings(spoofer, gateway)
    assert _pings(victim, gateway), "the victim must keep working"

    # Own address back, but the victim's MAC.
    in_netns(spoofer, ["ip", "addr", "flush", "dev", "eth0"])
    in_netns(spoofer, ["ip", "link", "set", "eth0", "address", theirs["mac"]])
    in_netns(spoofer, ["ip", "addr", "add", mine["address"], "dev", "eth0"])
    in_netns(spoofer, ["ip", "route", "add", "default", "via", gateway])
    assert not _pings(spoofer, gateway)

    # And a third, unleased address of the subnet.
    net = ipaddress.ip_interface(mine["address"]).network
    stranger = f"{net.broadcast_address - 1}/{net.prefixlen}"
    in_netns(spoofer, ["ip", "addr", "flush", "dev", "eth0"])
    in_netns(spoofer, ["ip", "link", "set", "eth0", "address", mine["mac"]])
    in_netns(spoofer, ["ip", "addr", "add", stranger, "dev", "eth0"])
    in_netns(spoofer, ["ip", "route", "add", "default", "via", gateway])
    assert not _pings(spoofer, gateway)

    for client, lease in ((client_a, mine), (client_b, theirs)):
        assert client.detach(lease["lease"]) == {"body": []}
    nothing_changed()
