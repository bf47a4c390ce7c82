"""The admin configuration, /etc/pyctr/helper.toml, parsed once into frozen types.

Every key is checked; an unknown key, a wrong type or an inconsistent value raises ConfigError
and the helper refuses to serve rather than run half-configured. helper/helper.toml.example
documents every key.
"""

from __future__ import annotations

import grp
import ipaddress
import pwd
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError

DEFAULT_PATH = Path("/etc/pyctr/helper.toml")
DEFAULT_STATE_DIR = Path("/var/lib/pyctr")
DEFAULT_NETWORK = "pyctr"
DEFAULT_BRIDGE = "pyctr0"
# Candidate subnets for the default network, tried in order; the first that overlaps no host
# route or address wins.
DEFAULT_SUBNET_CANDIDATES = tuple(f"10.{n}.0.0/24" for n in range(88, 100)) + tuple(
    f"172.{n}.0.0/24" for n in range(29, 32))

_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class Network:
    """An admin-defined network: one bridge, one IPv4 subnet, the bridge's own address."""

    name: str
    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address


@dataclass(frozen=True)
class Quota:
    """How much one user may hold at once; None means no limit."""

    max_interfaces: int | None = 32
    max_ports: int | None = 64


@dataclass(frozen=True)
class Limits:
    """The most a user may ask Resources.Limit for; None means no maximum."""

    max_memory: int | None = None  # bytes
    max_cpus: float | None = None  # cores
    max_pids: int | None = None


@dataclass(frozen=True)
class PortPolicy:
    ranges: tuple[tuple[int, int], ...] = ((1024, 65535),)
    allow_privileged: bool = False

    def allows(self, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ranges)


@dataclass(frozen=True)
class Config:
    networks: dict[str, Network]
    ports: PortPolicy = PortPolicy()
    end_on_disconnect: bool = False
    quota_default: Quota = Quota()
    quota_users: dict[int, Quota] = field(default_factory=dict)
    quota_groups: dict[int, Quota] = field(default_factory=dict)
    limits_default: Limits = Limits()
    limits_users: dict[int, Limits] = field(default_factory=dict)
    limits_groups: dict[int, Limits] = field(default_factory=dict)
    state_dir: Path = DEFAULT_STATE_DIR

    def quota_for(self, uid: int) -> Quota:
        """The user's own entry; else the most generous of their groups'; else the default."""
        return _pick(uid, self.quota_users, self.quota_groups, self.quota_default, _quota_key)

    def limits_for(self, uid: int) -> Limits:
        """Same precedence as quota_for, for the Resources.Limit maximums."""
        return _pick(uid, self.limits_users, self.limits_groups, self.limits_default, _limits_key)


def _unbounded(v: float | None) -> float:
    return float("inf") if v is None else v


def _quota_key(q: Quota) -> tuple[float, float]:
    return (_unbounded(q.max_interfaces), _unbounded(q.max_ports))


def _limits_key(l: Limits) -> tuple[float, float, float]:
    return (_unbounded(l.max_memory), _unbounded(l.max_cpus), _unbounded(l.max_pids))


def _pick(uid, users, groups, default, key):
    if uid in users:
        return users[uid]
    mine = [groups[g] for g in user_gids(uid) if g in groups]
    return max(mine, key=key) if mine else default


def user_gids(uid: int) -> set[int]:
    """The user's primary and supplementary groups, from the account database (never the caller)."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return set()
    gids = {pw.pw_gid}
    gids.update(g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem)
    return gids


# --- parsing ------------------------------------------------------------------------------

Route = tuple[ipaddress.IPv4Network, str]  # (destination, device)


def load(path: Path | None, host_routes: Iterable[Route] = ()) -> Config:
    """Read `path` (default /etc/pyctr/helper.toml). A missing default file gives the default
    network; a missing explicit path is an error. `host_routes` are the networks in use on the
    host with their devices, used to choose a free default subnet and to refuse a configured one
    that collides; routes on a network's own bridge (ours, from an earlier run) do not count."""
    explicit = path is not None
    path = path or DEFAULT_PATH
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{path}: no such file")
        raw = {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}")
    try:
        return _parse(raw, list(host_routes))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}")


def _parse(raw: dict, routes: list[Route]) -> Config:
    _keys(raw, "top level", {"networks", "ports", "leases", "quotas", "limits", "state_dir"})
    networks = _networks(raw.get("networks"), routes)
    ports = _ports(_table(raw, "ports"))
    leases = _table(raw, "leases")
    _keys(leases, "[leases]", {"end_on_disconnect"})
    end = _typed(leases, "end_on_disconnect", bool, False, "[leases]")
    quotas = _table(raw, "quotas")
    _keys(quotas, "[quotas]", {"default", "users", "groups"})
    limits = _table(raw, "limits")
    _keys(limits, "[limits]", {"default", "users", "groups"})
    state_dir = Path(_typed(raw, "state_dir", str, str(DEFAULT_STATE_DIR), "top level"))
    if not state_dir.is_absolute():
        raise ConfigError("state_dir must be an absolute path")
    return Config(
        networks=networks, ports=ports, end_on_disconnect=end, state_dir=state_dir,
        quota_default=_quota(_table(quotas, "default"), "[quotas.default]"),
        quota_users=_by_id(quotas.get("users"), "users", _quota),
        quota_groups=_by_id(quotas.get("groups"), "groups", _quota),
        limits_default=_limits(_table(limits, "default"), "[limits.default]"),
        limits_users=_by_id(limits.get("users"), "users", _limits),
        limits_groups=_by_id(limits.get("groups"), "groups", _limits),
    )


def _table(raw: dict, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table")
    return value


def _keys(table: dict, where: str, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))}")


def _typed(table: dict, key: str, kind, default, where: str):
    value = table.get(key, default)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where} {key} must be {kind.__name__}")
    return value


def _nonneg(table: dict, key: str, where: str, kind=int) -> Any:
    value = _typed(table, key, kind, None, where)
    if value is not None and value < 0:
        raise ConfigError(f"{where} {key} must not be negative")
    return value


def _networks(raw: Any, routes: list[Route]) -> dict[str, Network]:
    if raw is None:
        return {DEFAULT_NETWORK: default_network(routes)}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("[networks] must be a non-empty table of networks")
    out: dict[str, Network] = {}
    for name, table in raw.items():
        where = f"[networks.{name}]"
        if not _NAME.match(name):
            raise ConfigError(f"{where}: network names are 1-32 of A-Z a-z 0-9 _ -")
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        _keys(table, where, {"bridge", "subnet", "gateway"})
        bridge = _typed(table, "bridge", str, None, where)
        if not bridge or not _IFNAME.match(bridge) or bridge in (".", ".."):
            raise ConfigError(f"{where} bridge must be a valid interface name")
        try:
            subnet = ipaddress.IPv4Network(_typed(table, "subnet", str, "", where))
        except ValueError as e:
            raise ConfigError(f"{where} subnet: {e}")
        if subnet.prefixlen > 29 or subnet.is_loopback or subnet.is_multicast:
            raise ConfigError(f"{where} subnet must be a unicast IPv4 network of /29 or larger")
        gw_text = _typed(table, "gateway", str, str(subnet.network_address + 1), where)
        try:
            gateway = ipaddress.IPv4Address(gw_text)
        except ValueError as e:
            raise ConfigError(f"{where} gateway: {e}")
        if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
            raise ConfigError(f"{where} gateway {gateway} is not a host address of {subnet}")
        for route, dev in routes:
            if dev != bridge and route.prefixlen > 0 and route.overlaps(subnet):
                raise ConfigError(f"{where} subnet {subnet} collides with host route {route}")
        out[name] = Network(name, bridge, subnet, gateway)
    bridges = [n.bridge for n in out.values()]
    if len(set(bridges)) != len(bridges):
        raise ConfigError("two networks name the same bridge")
    nets = list(out.values())
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            if a.subnet.overlaps(b.subnet):
                raise ConfigError(f"networks {a.name} and {b.name} have overlapping subnets")
    return out


def default_network(routes: list[Route]) -> Network:
    """Network `pyctr` on pyctr0, with the first candidate /24 that no host route touches."""
    for text in DEFAULT_SUBNET_CANDIDATES:
        subnet = ipaddress.IPv4Network(text)
        if not any(dev != DEFAULT_BRIDGE and r.prefixlen > 0 and r.overlaps(subnet)
                   for r, dev in routes):
            return Network(DEFAULT_NETWORK, DEFAULT_BRIDGE, subnet, subnet.network_address + 1)
    raise ConfigError("no free subnet for the default network; configure [networks] explicitly")


def _ports(table: dict) -> PortPolicy:
    _keys(table, "[ports]", {"ranges", "allow_privileged"})
    ranges = table.get("ranges", ["1024-65535"])
    if not isinstance(ranges, list) or not ranges:
        raise ConfigError("[ports] ranges must be a non-empty list of \"LOW-HIGH\" strings")
    parsed = []
    for item in ranges:
        m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", item) if isinstance(item, str) else None
        if not m:
            raise ConfigError(f"[ports] range {item!r} is not \"LOW-HIGH\"")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if not 1 <= lo <= hi <= 65535:
            raise ConfigError(f"[ports] range {item!r} must satisfy 1 <= LOW <= HIGH <= 65535")
        parsed.append((lo, hi))
    allow = _typed(table, "allow_privileged", bool, False, "[ports]")
    return PortPolicy(tuple(parsed), allow)


def _quota(table: dict, where: str) -> Quota:
    _keys(table, where, {"max_interfaces", "max_ports"})
    d = Quota()
    return Quota(
        max_interfaces=_nonneg(table, "max_interfaces", where) if "max_interfaces" in table else d.max_interfaces,
        max_ports=_nonneg(table, "max_ports", where) if "max_ports" in table else d.max_ports)


def _limits(table: dict, where: str) -> Limits:
    _keys(table, where, {"max_memory", "max_cpus", "max_pids"})
    cpus = _nonneg(table, "max_cpus", where, float)
    return Limits(max_memory=_nonneg(table, "max_memory", where), max_cpus=cpus,
                  max_pids=_nonneg(table, "max_pids", where))


def _by_id(raw: Any, kind: str, parse) -> dict[int, Any]:
    """Entries keyed by user/group name or numeric id, resolved to ids now."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{kind} must be a table of names")
    out = {}
    for name, table in raw.items():
        where = f"[.{kind}.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        try:
            if name.isdigit():
                ident = int(name)
            elif kind == "users":
                ident = pwd.getpwnam(name).pw_uid
            else:
                ident = grp.getgrnam(name).gr_gid
        except KeyError:
            raise ConfigError(f"{where}: no such {kind[:-1]} {name!r}")
        out[ident] = parse(table, where)
    return out
