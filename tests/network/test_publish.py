"""Published ports (-p): a server in a container, reached from every side of the host."""

from __future__ import annotations

import re
import socket

from networld import FETCH, NETINFO, PAGE, PEER, PEER_MOUNTS, free_port, http_get, wait_for


def _page(address: str, port: int) -> bool:
    return PAGE in http_get(address, port)


def test_http_reaches_container_through_loopback_port(containers, user_a):
    port = free_port()
    containers.start(user_a, "-p", f"{port}:80")
    assert wait_for(lambda: _page("127.0.0.1", port), what="the page on 127.0.0.1")


def test_http_reaches_container_through_bridge_address(containers, user_a):
    port = free_port()
    web = containers.start(user_a, "-p", f"{port}:80")
    assert wait_for(lambda: _page(web.gateway, port), what="the page on the bridge address")


def test_http_reaches_container_from_outside_host(containers, user_a, outside):
    """The PREROUTING path: another host asks for the host's address on its own link."""
    port = free_port()
    containers.start(user_a, "-p", f"{port}:80")
    url = f"http://{outside.host_address}:{port}/"

    def fetched() -> bool:
        return PAGE in outside.run("timeout", "5", "busybox", "wget", "-q", "-O", "-", url).stdout

    assert wait_for(fetched, what="the page from the outside netns")


def test_container_reaches_its_own_published_port_through_host(containers, user_a):
    """Hairpin: out to the host's address and DNATed straight back into the same container."""
    port = free_port()
    script = (f"{NETINFO}; httpd -p 80 -h /var/www; "
              "gw=$(ip route | awk '/^default/ {print $3}'); "
              f"{FETCH} http://$gw:{port}/")
    c = containers.start(user_a, "-p", f"{port}:80", command=("sh", "-c", script))
    c.wait_line(re.escape(PAGE))
    assert c.wait_exit() == 0


def test_udp_echo_through_published_udp_port(containers, user_a):
    port = free_port(socket.SOCK_DGRAM)
    containers.start(user_a, "-p", f"{port}:7007/udp", *PEER_MOUNTS,
                     command=("sh", "-c", f"{NETINFO}; exec {PEER} echo-udp 0.0.0.0 7007"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)

        def echoed() -> bool:
            s.sendto(b"ping-through-udp", ("127.0.0.1", port))
            try:
                return s.recvfrom(100)[0] == b"ping-through-udp"
            except socket.timeout:
                return False  # the server may not be bound yet: send again

        assert wait_for(echoed, what="the UDP echo")


def test_port_range_publishes_every_port(containers, user_a):
    first = free_port()
    while not all(_free(p) for p in (first + 1, first + 2)):
        first = free_port()
    script = f"{NETINFO}; httpd -p 81 -h /var/www; httpd -p 82 -h /var/www; exec httpd -f -p 80 -h /var/www"
    containers.start(user_a, "-p", f"{first}-{first + 2}:80-82", command=("sh", "-c", script))
    for port in (first, first + 1, first + 2):
        assert wait_for(lambda: _page("127.0.0.1", port), what=f"the page on port {port}")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_helper_chosen_port_is_printed_and_works(containers, user_a):
    web = containers.start(user_a, "-p", "80")
    wait_for(lambda: any("published" in line for line in web.stderr), what="the published port")
    line = next(line for line in web.stderr if "published" in line)
    m = re.search(r"published [\d.]+:(\d+) -> 80/tcp", line)
    assert m, line
    assert wait_for(lambda: _page("127.0.0.1", int(m.group(1))), what="the page on the chosen port")


def test_host_port_in_use_fails_with_port_in_use_and_leaves_nothing(
        user_a, rootfs, bridge, nothing_left):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = user_a.pyctr("run", "--rm", "-p", f"{port}:80", str(rootfs), "true")
        assert out.returncode == 125, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert str(port) in out.stderr and "in use" in out.stderr.lower(), out.stderr
        nothing_left()


def test_publish_without_bridge_network_is_a_usage_error(user_a, rootfs):
    out = user_a.pyctr("run", "--rm", "--network", "none", "-p", "8080:80", str(rootfs), "true")
    assert out.returncode == 125
    assert "-p" in out.stderr and "bridge" in out.stderr
