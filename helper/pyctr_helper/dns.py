"""Which nameservers a container gets.

The host's nameservers from /etc/resolv.conf, as they are. When one sits on loopback (systemd-
resolved's 127.0.0.53, a local dnsmasq), a container cannot reach it directly, so the container
is given the bridge's gateway address instead, and the helper DNATs gateway:53 (udp and tcp,
only from that bridge) to the loopback resolver. route_localnet, which is on for the bridge
alone, lets that DNAT to 127/8 through; the raw-table rule still drops anything from the bridge
addressed to 127/8 directly. This keeps the container's resolver the same as the host's,
without running a DNS proxy in the helper.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

RESOLV_CONF = Path("/etc/resolv.conf")


def host_nameservers(path: Path = RESOLV_CONF) -> list[ipaddress.IPv4Address]:
    out = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                out.append(ipaddress.IPv4Address(parts[1]))
            except ValueError:
                continue  # IPv6 nameservers: containers have IPv4 only
    return out


def loopback_resolver(servers: list[ipaddress.IPv4Address]) -> ipaddress.IPv4Address | None:
    """The first host nameserver on loopback, which the gateway:53 DNAT forwards to."""
    return next((s for s in servers if s.is_loopback), None)


def container_nameservers(servers: list[ipaddress.IPv4Address],
                          gateway: ipaddress.IPv4Address) -> list[str]:
    if not servers:
        return []
    if loopback_resolver(servers) is not None:
        return [str(gateway)] + [str(s) for s in servers if not s.is_loopback]
    return [str(s) for s in servers]
