"""Configure the container's own network namespace from inside it, with plain ioctls.

The container's first process has CAP_NET_ADMIN over its network namespace (it created it
in its user namespace), so it brings up loopback and, in bridge mode, sets the address and
default route the helper leased. Stdlib only: pyroute2 would cost tens of milliseconds of
import on every `pyctr run`.
"""

from __future__ import annotations

import _socket as socket  # the C module: socket.py's import costs ~2 ms per start
import fcntl
import struct

SIOCSIFFLAGS = 0x8914
SIOCGIFFLAGS = 0x8913
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCADDRT = 0x890B
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))


def _ifreq(ifname: str, payload: bytes) -> bytes:
    return struct.pack("16s", ifname.encode()) + payload.ljust(24, b"\0")


def _set_up(sock, ifname: str) -> None:
    got = fcntl.ioctl(sock, SIOCGIFFLAGS, _ifreq(ifname, b""))
    flags = struct.unpack_from("H", got, 16)[0]
    fcntl.ioctl(sock, SIOCSIFFLAGS, _ifreq(ifname, struct.pack("H", flags | IFF_UP)))


def _netmask(prefix: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF if prefix else 0
    return socket.inet_ntoa(struct.pack("!I", bits))


def _ioctl_socket():
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def loopback_up() -> None:
    sock = _ioctl_socket()
    try:
        _set_up(sock, "lo")
    finally:
        sock.close()


def configure(ifname: str, cidr: str, gateway: str) -> None:
    """`ifname` up with address `cidr` (e.g. 10.88.0.5/24), default route via `gateway`."""
    address, _, prefix = cidr.partition("/")
    sock = _ioctl_socket()
    try:
        _set_up(sock, "lo")
        fcntl.ioctl(sock, SIOCSIFADDR, _ifreq(ifname, _sockaddr_in(address)))
        fcntl.ioctl(sock, SIOCSIFNETMASK, _ifreq(ifname, _sockaddr_in(_netmask(int(prefix or 32)))))
        _set_up(sock, ifname)
        if gateway:
            zero = _sockaddr_in("0.0.0.0")
            # struct rtentry (x86_64, native alignment): pad1, dst, gateway, genmask, flags,
            # pad2, pad3, pad4, metric, dev, mtu, window, irtt.
            rtentry = struct.pack("@L16s16s16sHhLPhPLLH", 0, zero, _sockaddr_in(gateway), zero,
                                  RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0)
            fcntl.ioctl(sock, SIOCADDRT, rtentry)
    finally:
        sock.close()
