"""Fixtures for the bridge-networking tests (the pieces they use live in networld.py)."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import pytest

from networld import (HERE, OUTSIDE_ADDR, OUTSIDE_HOST_ADDR, OUTSIDE_HOST_IF, OUTSIDE_NS,
                      OUTSIDE_PREFIX, PYTHON, Containers, Outside, PeerServer, leases_of, nft_tables,
                      port_bindable, remove_outside, sh, sockets_on, wait_for)


@pytest.fixture(scope="session")
def bridge(helper, polkit_session, user_a, rootfs) -> None:
    """The helper's bridge and base rules exist before any test compares the host's state.

    The first attach creates them, and they stay for the helper's life by design; a
    container run here makes them exist, so `unchanged_host` sees only what a test adds.
    """
    polkit_session.set("allow")
    out = user_a.pyctr("run", "--rm", "--network", "bridge", str(rootfs), "true", timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def containers(bridge, rootfs) -> Iterator[Containers]:
    cs = Containers(rootfs)
    yield cs
    cs.close()


@pytest.fixture(scope="session")
def outside(bridge) -> Iterator[Outside]:
    """198.51.100.2 in its own netns, reached through the host's 198.51.100.1.

    It has no default route: the only addresses it can answer are on its own link, the
    host's, which is what masquerading turns a container's source into.
    """
    remove_outside()
    try:
        sh("ip", "netns", "add", OUTSIDE_NS)
        sh("ip", "link", "add", OUTSIDE_HOST_IF, "type", "veth", "peer", "name", "eth0",
           "netns", OUTSIDE_NS)
        sh("ip", "addr", "add", f"{OUTSIDE_HOST_ADDR}/{OUTSIDE_PREFIX}", "dev", OUTSIDE_HOST_IF)
        sh("ip", "link", "set", OUTSIDE_HOST_IF, "up")
        sh("ip", "-n", OUTSIDE_NS, "addr", "add", f"{OUTSIDE_ADDR}/{OUTSIDE_PREFIX}", "dev", "eth0")
        sh("ip", "-n", OUTSIDE_NS, "link", "set", "eth0", "up")
        sh("ip", "-n", OUTSIDE_NS, "link", "set", "lo", "up")
        yield Outside(OUTSIDE_NS, OUTSIDE_ADDR, OUTSIDE_HOST_ADDR)
    finally:
        remove_outside()


@pytest.fixture
def peer_server() -> Iterator[Callable[..., PeerServer]]:
    started: list[PeerServer] = []

    def start(mode: str, address: str, port: int, netns: str | None = None) -> PeerServer:
        argv = [PYTHON, str(HERE / "peer.py"), mode, address, str(port)]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        server = PeerServer(argv)
        started.append(server)
        return server

    yield start
    for s in started:
        s.close()


@pytest.fixture
def nothing_left(unchanged_host, user_a) -> Callable[..., None]:
    """Check on the kernel's side that a container left nothing: links, NAT and filter rules
    (unchanged_host), nftables tables (the helper's anti-spoofing), the user's leases (the
    helper's List) and the host port's sockets."""
    tables_before = nft_tables()

    def check(user=user_a, ports: Sequence[tuple[int, int]] = ()) -> None:
        unchanged_host()
        wait_for(lambda: nft_tables() == tables_before, what="nftables to be as before")
        wait_for(lambda: leases_of(user) == [], what=f"{user.name}'s leases to end")
        for port, kind in ports:
            wait_for(lambda: not sockets_on(port) and port_bindable(port, kind),
                     what=f"host port {port} to be released")

    return check
