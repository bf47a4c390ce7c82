"""Traffic that starts in a container: to a neighbour, to the outside, and with a lie in it."""

from __future__ import annotations

import re

from networld import FETCH, NETINFO, PAGE, PEER, PEER_MOUNTS, free_port, http_get


def test_containers_of_one_user_reach_each_other_by_ip(containers, user_a):
    server = containers.start(user_a)
    client = containers.start(user_a, command=(
        "sh", "-c", f"{NETINFO}; {FETCH} http://{server.address}/"))
    client.wait_line(re.escape(PAGE))
    assert client.wait_exit() == 0
    assert client.address != server.address


def test_container_reaches_outside_host_through_masquerade(containers, user_a, outside,
                                                           peer_server):
    """The outside host sees the host's address, never the container's private one."""
    port = free_port()
    server = peer_server("serve-tcp", outside.address, port, netns=outside.netns)
    client = containers.start(user_a, command=(
        "sh", "-c", f"{NETINFO}; {FETCH} http://{outside.address}:{port}/"))
    client.wait_line("peer-ok")
    assert client.wait_exit() == 0
    assert server.next_peer() == f"{outside.host_address} GET"


def test_container_cannot_send_with_another_users_container_address(
        containers, user_a, user_b, peer_server):
    """pyctr-test-b's container, root in its own netns, adds pyctr-test-a's container's
    address to its eth0 and sends a datagram from it, between two from its own address.
    The host hears the first and the last; the spoofed one, sent in between on the same
    path (the gateway's MAC already resolved by the first), never arrives."""
    victim = containers.start(user_a)
    port = free_port()
    listener = peer_server("serve-udp", victim.gateway, port)
    send = f"{PEER} send-udp"
    script = (f"{NETINFO}; me=$(ip -4 -o addr show dev eth0 | awk '{{print $4}}' | cut -d/ -f1); "
              f"{send} $me {victim.gateway} {port} first && "
              f"ip addr add {victim.address}/32 dev eth0 && "
              f"{send} {victim.address} {victim.gateway} {port} spoofed && "
              f"{send} $me {victim.gateway} {port} last && echo SENT && exec sleep 1000")
    spoofer = containers.start(user_b, "--cap-add", "NET_ADMIN", *PEER_MOUNTS,
                               command=("sh", "-c", script))
    spoofer.wait_line("^SENT$")
    assert listener.next_peer() == f"{spoofer.address} first"
    assert listener.next_peer() == f"{spoofer.address} last"
    assert PAGE in http_get(victim.address, 80)  # the victim still owns its address
