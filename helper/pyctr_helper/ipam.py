"""Address management: the helper's own, from the lease store. Allocation happens inside the
store lock on the helper's single event loop, and the lease is written (pending) before the lock
is released, so two attaches never get the same address."""

from __future__ import annotations

import ipaddress
import secrets

from .config import Network
from .errors import InvalidArgument, QuotaExceeded
from .store import Lease


def allocate(net: Network, leases: list[Lease],
             requested: ipaddress.IPv4Address | None) -> ipaddress.IPv4Address:
    used = {ipaddress.IPv4Address(l.address) for l in leases if l.network == net.name}
    reserved = {net.subnet.network_address, net.subnet.broadcast_address, net.gateway}
    if requested is not None:
        if requested not in net.subnet or requested in reserved:
            raise InvalidArgument(f"address {requested} is not a usable address of {net.subnet}")
        if requested in used:
            raise InvalidArgument(f"address {requested} is already leased")
        return requested
    for host in net.subnet.hosts():
        if host not in used and host not in reserved:
            return host
    raise QuotaExceeded(f"network {net.name} has no free address left")


def random_mac(taken: set[str]) -> str:
    """A random locally administered unicast MAC, unique among the helper's leases."""
    while True:
        mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        if mac not in taken:
            return mac
