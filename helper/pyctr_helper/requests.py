"""Parse a caller's D-Bus arguments into typed requests, or raise InvalidArgument.

Pure: nothing here touches the system, so it may run before authorization completes (the facade
still reports its errors only to an authorized caller)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pyctr_bus
from dbus_next import Variant

from .errors import InvalidArgument

MAX_PORTS_PER_ATTACH = 64
# Kernel interface names: at most 15 bytes, never "/", ":" or whitespace. We allow a safe subset.
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_LEASE_ID = re.compile(r"^[0-9a-f]{16}$")


@dataclass(frozen=True)
class PortRequest:
    host_ip: ipaddress.IPv4Address | None  # None: every local address
    host_port: int  # 0: the helper picks one
    container_port: int
    protocol: str


@dataclass(frozen=True)
class AttachRequest:
    network: str
    ifname: str
    ports: tuple[PortRequest, ...]
    address: ipaddress.IPv4Address | None


def parse_ipv4(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise InvalidArgument(f"{what} {text!r} is not an IPv4 address")


def parse_ifname(name: str) -> str:
    if not _IFNAME.match(name) or name in (".", ".."):
        raise InvalidArgument(
            f"interface name {name!r} is invalid: use 1-15 characters of A-Z a-z 0-9 _ . -")
    return name


def parse_lease_id(text: object) -> str:
    if not isinstance(text, str) or not _LEASE_ID.match(text):
        raise InvalidArgument("lease ids are 16 lowercase hexadecimal digits")
    return text


def _port(item: object, index: int) -> PortRequest:
    if not (isinstance(item, list) and len(item) == 4):
        raise InvalidArgument(f"ports[{index}] must be (host_ip, host_port, container_port, protocol)")
    host_ip, host_port, container_port, protocol = item
    if not (isinstance(host_ip, str) and isinstance(protocol, str)
            and isinstance(host_port, int) and isinstance(container_port, int)):
        raise InvalidArgument(f"ports[{index}] has wrong types")
    ip = parse_ipv4(host_ip, f"ports[{index}] host address") if host_ip else None
    if not 0 <= host_port <= 65535:
        raise InvalidArgument(f"ports[{index}] host port {host_port} is out of range 0-65535")
    if not 1 <= container_port <= 65535:
        raise InvalidArgument(f"ports[{index}] container port {container_port} is out of range 1-65535")
    if protocol not in pyctr_bus.PROTOCOLS:
        raise InvalidArgument(f"ports[{index}] protocol {protocol!r} is not tcp or udp")
    return PortRequest(ip, host_port, container_port, protocol)


def options(raw: object, schema: dict[str, str], what: str) -> dict[str, object]:
    """Check an a{sv} against its schema: known keys, exact signatures. Returns plain values."""
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{what} must be a{{sv}}")
    out = {}
    for key, variant in raw.items():
        if key not in schema:
            raise InvalidArgument(f"unknown {what} key {key!r}")
        if not isinstance(variant, Variant) or variant.signature != schema[key]:
            raise InvalidArgument(f"{what} {key!r} must have D-Bus type {schema[key]}")
        out[key] = variant.value
    return out


def attach_request(raw_options: object) -> AttachRequest:
    opts = options(raw_options, pyctr_bus.ATTACH_OPTIONS, "Attach option")
    network = opts.get("network", pyctr_bus.DEFAULT_NETWORK)
    ifname = parse_ifname(opts.get("ifname", pyctr_bus.DEFAULT_IFNAME))
    raw_ports = opts.get("ports", [])
    if len(raw_ports) > MAX_PORTS_PER_ATTACH:
        raise InvalidArgument(f"at most {MAX_PORTS_PER_ATTACH} ports per Attach")
    ports = tuple(_port(p, i) for i, p in enumerate(raw_ports))
    seen = set()
    for p in ports:
        if p.host_port:
            key = (p.host_port, p.protocol)
            if key in seen:
                raise InvalidArgument(f"host port {p.host_port}/{p.protocol} is published twice")
            seen.add(key)
    address = opts.get("address")
    return AttachRequest(
        network=network, ifname=ifname, ports=ports,
        address=parse_ipv4(address, "address") if address is not None else None)
