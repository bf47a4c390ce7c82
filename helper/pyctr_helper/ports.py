"""Host port reservations: a published port is bound by a socket the helper holds for the
lease's lifetime.

Binding without SO_REUSEADDR/SO_REUSEPORT fails with EADDRINUSE whenever anyone, a root service
included, already has the port, so a user can never DNAT a port another service listens on; and
while the lease lives nobody else can take it. The socket never listens: traffic to the port is
DNATed before it could reach it.
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
from dataclasses import dataclass

from .config import PortPolicy
from .errors import Failed, InvalidArgument, PortInUse
from .requests import PortRequest
from .store import Port

PICK_ATTEMPTS = 512


def unprivileged_port_start() -> int:
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        return int(f.read())


def is_privileged(port: int) -> bool:
    return 0 < port < unprivileged_port_start()


@dataclass
class Reservation:
    port: Port
    sock: socket.socket

    def release(self) -> None:
        self.sock.close()


def _bind(host_ip: str, port: int, protocol: str) -> socket.socket:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind | socket.SOCK_CLOEXEC)
    try:
        sock.bind((host_ip or "0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock


def reserve_exact(port: Port) -> Reservation:
    """Bind `port` (a stored one, for reconciliation, or a validated request)."""
    try:
        return Reservation(port, _bind(port.host_ip, port.host_port, port.protocol))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(f"host port {port.host_port}/{port.protocol} is already in use")
        if e.errno == errno.EADDRNOTAVAIL:
            raise InvalidArgument(f"host address {port.host_ip} is not a local address")
        if e.errno == errno.EACCES:
            raise Failed(f"the helper may not bind port {port.host_port}")
        raise


def check_request(req: PortRequest, policy: PortPolicy, local: set[ipaddress.IPv4Address],
                  bridges: tuple[ipaddress.IPv4Network, ...] = ()) -> None:
    """Refuse a host port outside the admin's ranges, a privileged one the admin forbids, or a
    host address that is not local or lies in a pyctr network (`bridges`): a mapping on a
    gateway would capture what containers send to their gateway (their DNS among it)."""
    if req.host_ip is not None and req.host_ip not in local:
        raise InvalidArgument(f"host address {req.host_ip} is not a local address")
    if req.host_ip is not None and any(req.host_ip in subnet for subnet in bridges):
        raise InvalidArgument(f"host address {req.host_ip} belongs to a pyctr network; publish "
                              "on a host address instead")
    if is_privileged(req.host_port) and not policy.allow_privileged:
        raise InvalidArgument(f"host port {req.host_port} is privileged and the admin allows none")
    if req.host_port and not policy.allows(req.host_port):
        raise InvalidArgument(f"host port {req.host_port} is outside the allowed ranges")


def reserve(req: PortRequest, policy: PortPolicy) -> Reservation:
    """Reserve the requested host port, or pick a free unprivileged one in the allowed ranges."""
    ip = str(req.host_ip) if req.host_ip is not None else ""
    if req.host_port:
        return reserve_exact(Port(ip, req.host_port, req.container_port, req.protocol))
    floor = unprivileged_port_start()
    ranges = [(max(lo, floor), hi) for lo, hi in policy.ranges if hi >= floor]
    total = sum(hi - lo + 1 for lo, hi in ranges)
    if not total:
        raise PortInUse("no unprivileged host port is allowed for automatic choice")
    rng = random.SystemRandom()
    for _ in range(min(PICK_ATTEMPTS, total)):
        n = rng.randrange(total)
        for lo, hi in ranges:
            if n <= hi - lo:
                candidate = lo + n
                break
            n -= hi - lo + 1
        try:
            return reserve_exact(Port(ip, candidate, req.container_port, req.protocol))
        except PortInUse:
            continue
    raise PortInUse("no free host port in the allowed ranges")
