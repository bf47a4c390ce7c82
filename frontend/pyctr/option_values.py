"""Values of single `pyctr run` options, each parsed and checked on its own.

run_options.py walks argv and assembles the ContainerSpec; the functions here turn one
option's text (a size, a -p mapping, a -v or --tmpfs spec, a --user, an env file) into typed
values, raising UsageError with a one-line message for anything malformed.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .spec import Mount, PortMapping


def parse_size(text: str, option: str, allow_minus_one: bool = False) -> int:
    """'512m' -> bytes. Units b, k, m, g (any case, optional trailing 'b' as in 'mb')."""
    value = text.strip().lower()
    if allow_minus_one and value == "-1":
        return -1
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if value.endswith("b") and len(value) > 2 and value[-2] in "kmg":
        value = value[:-1]
    factor = 1
    if value and value[-1] in units:
        factor = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value) if "." in value else int(value)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a size (a number with b, k, m or g)") from None
    if number < 0:
        raise UsageError(f"{option}: {text!r} must not be negative")
    return int(number * factor)


def _port_range(text: str, what: str) -> tuple[int, int]:
    first, dash, last = text.partition("-")
    try:
        lo = int(first)
        hi = int(last) if dash else lo
    except ValueError:
        raise UsageError(f"-p: {what} {text!r} is not a port or a range") from None
    if hi < lo:
        raise UsageError(f"-p: range {text!r} ends before it starts")
    return lo, hi


def parse_publish(spec: str) -> list[PortMapping]:
    """One -p value: [[IP:][HOST]:]CTR[/PROTO], HOST and CTR may be equal-length ranges."""
    body, slash, proto = spec.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"-p {spec}: protocol must be tcp or udp")
    host_ip = ""
    if body.startswith("["):
        close = body.find("]")
        if close < 0 or body[close + 1:close + 2] != ":":
            raise UsageError(f"-p {spec}: bad IPv6 address")
        host_ip, body = body[1:close], body[close + 2:]
    parts = body.split(":")
    if len(parts) == 3 and not host_ip:
        host_ip, host, ctr = parts
    elif len(parts) == 2:
        host, ctr = parts
    elif len(parts) == 1:
        host, ctr = "", parts[0]
    else:
        raise UsageError(f"-p {spec}: expected [[IP:]HOST:]CTR")
    if host_ip:
        import ipaddress
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise UsageError(f"-p {spec}: {host_ip!r} is not an IP address") from None
    c_lo, c_hi = _port_range(ctr, "container port")
    if host:
        h_lo, h_hi = _port_range(host, "host port")
        if h_hi - h_lo != c_hi - c_lo:
            raise UsageError(f"-p {spec}: host and container ranges differ in length")
    else:
        h_lo = h_hi = 0
    return [PortMapping(container_port=c_lo + k, host_port=(h_lo + k) if host else 0,
                        host_ip=host_ip, protocol=proto)
            for k in range(c_hi - c_lo + 1)]


def read_env_file(path: str) -> list[str]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"--env-file {path}: {e.strerror}") from None
    return [line for line in (l.strip() for l in lines) if line and not line.startswith("#")]


def parse_volume(spec: str) -> Mount:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise UsageError(f"-v {spec}: expected SRC:DST[:ro|rw]")
    src, dst = parts[0], parts[1]
    read_only = False
    if len(parts) == 3:
        for opt in parts[2].split(","):
            if opt == "ro":
                read_only = True
            elif opt in ("rw", "z", "Z", ""):
                pass
            else:
                raise UsageError(f"-v {spec}: unknown option {opt!r} (ro or rw)")
    if not (src.startswith("/") or src.startswith(".")):
        raise UsageError(f"-v {spec}: SRC must be a path (named volumes are not supported)")
    source = Path(os.path.abspath(src))
    if not os.path.exists(source):
        raise UsageError(f"-v {spec}: {source} does not exist")
    if not dst.startswith("/"):
        raise UsageError(f"-v {spec}: DST must be an absolute path")
    if os.path.normpath(dst) == "/":
        raise UsageError(f"-v {spec}: DST cannot be the container's root")
    return Mount(destination=os.path.normpath(dst), source=source, read_only=read_only)


_TMPFS_OPTIONS = ("ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec")


def parse_tmpfs(spec: str) -> Mount:
    dst, _, opts = spec.partition(":")
    if not dst.startswith("/") or os.path.normpath(dst) == "/":
        raise UsageError(f"--tmpfs {spec}: DST must be an absolute path other than /")
    options = []
    read_only = False
    for opt in filter(None, opts.split(",")):
        key = opt.partition("=")[0]
        if opt == "ro":
            read_only = True
        elif key in ("size", "mode", "nr_inodes") or opt in _TMPFS_OPTIONS:
            options.append(opt)
        else:
            raise UsageError(f"--tmpfs {spec}: unknown option {opt!r}")
    return Mount(destination=os.path.normpath(dst), source=None, read_only=read_only,
                 options=tuple(options))


def _lookup(rootfs: Path, table: str, name: str) -> int | None:
    """A user or group name from the rootfs's own /etc/passwd or /etc/group (podman's way)."""
    try:
        with open(rootfs / "etc" / table) as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 3 and fields[0] == name:
                    return int(fields[2])
    except (OSError, ValueError):
        pass
    return None


def passwd_home(rootfs: Path, uid: int) -> str | None:
    try:
        with open(rootfs / "etc" / "passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or None
    except OSError:
        pass
    return None


def parse_user(text: str, rootfs: Path) -> tuple[int, int]:
    user, colon, group = text.partition(":")
    if not user or (colon and not group):
        raise UsageError(f"--user {text!r}: expected UID[:GID]")

    def one(value: str, table: str) -> int:
        if value.isdigit():
            number = int(value)
        else:
            found = _lookup(rootfs, table, value)
            if found is None:
                raise UsageError(f"--user {text!r}: no {table} entry {value!r} in the rootfs")
            number = found
        if number > 0xFFFFFFFE:
            raise UsageError(f"--user {text!r}: {number} is out of range")
        return number

    uid = one(user, "passwd")
    if colon:
        gid = one(group, "group")
    else:
        gid = _primary_gid(rootfs, uid)
    return uid, gid


def _primary_gid(rootfs: Path, uid: int) -> int:
    try:
        with open(rootfs / "etc" / "passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 4 and fields[2] == str(uid) and fields[3].isdigit():
                    return int(fields[3])
    except OSError:
        pass
    return 0 if uid == 0 else uid
