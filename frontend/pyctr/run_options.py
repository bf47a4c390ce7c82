"""`pyctr run` options, podman's spelling, parsed into a ContainerSpec.

A small table-driven parser rather than click: `pyctr run` start time is a benchmark target
and click costs ~20 ms to import. Option parsing stops at ROOTFS, as podman's stops at the
image: everything after it is CMD and its arguments.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from . import capabilities, idmap
from .errors import UsageError
from .spec import ContainerSpec, Mount, NetworkConfig, PortMapping, Resources, User

USAGE = "usage: pyctr run [OPTIONS] ROOTFS [CMD [ARG...]]"

HELP = f"""{USAGE}

Run CMD (default /bin/sh) in a new rootless container made from the directory ROOTFS.

Options:
  --rm                       remove the container's state when it exits
  --read-only                mount the root filesystem read-only
  --init                     run a tiny init as pid 1 that reaps zombies and forwards signals
  -t, --tty                  allocate a pseudo-terminal
  -i, --interactive          keep stdin open
  -h, --hostname NAME        the container's hostname (default: its short id)
  --network MODE             none, host or bridge[:NAME]
  -p, --publish SPEC         [[IP:]HOST:]CTR[/tcp|/udp], ranges as 8000-8002:80-82
  --userns keep-id           keep the user's uid and gid inside the container
  -u, --user UID[:GID]       the user CMD runs as inside
  -v, --volume SRC:DST[:ro|rw]  bind mount SRC at DST
  --tmpfs DST[:OPTIONS]      mount a tmpfs at DST
  -w, --workdir DIR          CMD's working directory
  -e, --env K=V | K          set a variable (K alone copies the host's value)
  --env-file FILE            read K=V lines from FILE
  --cap-add CAP, --cap-drop CAP   adjust the capability set (ALL for every one)
  -m, --memory N[b|k|m|g]    memory limit (0 unlimited)
  --memory-swap N[b|k|m|g]   memory plus swap limit (-1 unlimited)
  --cpus N                   CPU limit, fractional
  --pids-limit N             process limit (-1 unlimited)
  --help                     show this help
"""

# option name -> (destination, takes a value, may repeat)
_OPTIONS: dict[str, tuple[str, bool, bool]] = {
    "--rm": ("rm", False, False),
    "--read-only": ("read_only", False, False),
    "--init": ("init", False, False),
    "-t": ("tty", False, False), "--tty": ("tty", False, False),
    "-i": ("interactive", False, False), "--interactive": ("interactive", False, False),
    "-h": ("hostname", True, False), "--hostname": ("hostname", True, False),
    "--network": ("network", True, False), "--net": ("network", True, False),
    "-p": ("publish", True, True), "--publish": ("publish", True, True),
    "--userns": ("userns", True, False),
    "-u": ("user", True, False), "--user": ("user", True, False),
    "-v": ("volume", True, True), "--volume": ("volume", True, True),
    "--tmpfs": ("tmpfs", True, True),
    "-w": ("workdir", True, False), "--workdir": ("workdir", True, False),
    "-e": ("env", True, True), "--env": ("env", True, True),
    "--env-file": ("env_file", True, True),
    "--cap-add": ("cap_add", True, True), "--cap-drop": ("cap_drop", True, True),
    "-m": ("memory", True, False), "--memory": ("memory", True, False),
    "--memory-swap": ("memory_swap", True, False),
    "--cpus": ("cpus", True, False),
    "--pids-limit": ("pids_limit", True, False),
}

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HelpRequested(Exception):
    pass


class RawOptions:
    """The options as given: name -> value (or list of values for repeatable options)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.rootfs = ""
        self.command: list[str] = []

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def list(self, name: str) -> list[str]:
        return self.values.get(name, [])  # type: ignore[return-value]


def parse_argv(argv: list[str]) -> RawOptions:
    raw = RawOptions()
    i = 0

    def store(name: str, value: object) -> None:
        dest, _, repeat = _OPTIONS[name]
        if repeat:
            raw.values.setdefault(dest, []).append(value)  # type: ignore[union-attr]
        else:
            raw.values[dest] = value

    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--help":
            raise HelpRequested()
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in _OPTIONS:
                raise UsageError(f"unknown option {name}")
            if _OPTIONS[name][1]:
                if not eq:
                    if i >= len(argv):
                        raise UsageError(f"option {name} needs a value")
                    value = argv[i]
                    i += 1
                store(name, value)
            else:
                if eq:
                    if value.lower() not in ("true", "false"):
                        raise UsageError(f"option {name} takes true or false, not {value!r}")
                    store(name, value.lower() == "true")
                else:
                    store(name, True)
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                name = "-" + arg[j]
                if name not in _OPTIONS:
                    raise UsageError(f"unknown option {name}")
                if _OPTIONS[name][1]:
                    value = arg[j + 1:]
                    if not value:
                        if i >= len(argv):
                            raise UsageError(f"option {name} needs a value")
                        value = argv[i]
                        i += 1
                    store(name, value)
                    break
                store(name, True)
                j += 1
        else:
            i -= 1
            break
    if i >= len(argv):
        raise UsageError(f"ROOTFS is missing ({USAGE})")
    raw.rootfs = argv[i]
    raw.command = argv[i + 1:]
    return raw


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


def parse_resources(raw: RawOptions) -> Resources:
    memory = memory_swap = pids = None
    cpus = None
    if raw.get("memory") is not None:
        memory = parse_size(raw.get("memory"), "--memory")
    if raw.get("memory_swap") is not None:
        memory_swap = parse_size(raw.get("memory_swap"), "--memory-swap", allow_minus_one=True)
        if not memory:
            raise UsageError("--memory-swap needs --memory")
        if memory_swap != -1 and memory_swap < memory:
            raise UsageError("--memory-swap must be at least --memory (it counts memory plus swap)")
    if raw.get("cpus") is not None:
        try:
            cpus = float(raw.get("cpus"))
        except ValueError:
            raise UsageError(f"--cpus: {raw.get('cpus')!r} is not a number") from None
        if not 0 <= cpus < 1 << 20 or cpus != cpus:
            raise UsageError(f"--cpus: {raw.get('cpus')!r} is out of range")
    if raw.get("pids_limit") is not None:
        try:
            pids = int(raw.get("pids_limit"))
        except ValueError:
            raise UsageError(f"--pids-limit: {raw.get('pids_limit')!r} is not an integer") from None
        if pids < -1:
            raise UsageError("--pids-limit must be -1 (unlimited) or more")
    return Resources(memory=memory, memory_swap=memory_swap, cpus=cpus, pids=pids)


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


def parse_network(raw: RawOptions, default_mode) -> NetworkConfig:
    value = raw.get("network")
    if value is None:
        value = default_mode()
    mode, colon, name = value.partition(":")
    if mode == "private":
        mode = "none"
    if mode not in ("none", "host", "bridge"):
        raise UsageError(f"--network {value}: expected none, host or bridge[:NAME]")
    if colon and (mode != "bridge" or not name):
        raise UsageError(f"--network {value}: only bridge takes a network name")
    ports: list[PortMapping] = []
    for item in raw.list("publish"):
        ports.extend(parse_publish(item))
    if ports and mode != "bridge":
        raise UsageError(f"-p needs a bridge network; --network {mode} cannot publish ports")
    seen = set()
    for p in ports:
        key = (p.host_ip, p.host_port, p.protocol)
        if p.host_port and key in seen:
            raise UsageError(f"-p: host port {p.host_port}/{p.protocol} is published twice")
        seen.add(key)
    return NetworkConfig(mode=mode, name=name or "pyctr", ports=tuple(ports))


def _read_env_file(path: str) -> list[str]:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"--env-file {path}: {e.strerror}") from None
    return [line for line in (l.strip() for l in lines) if line and not line.startswith("#")]


def parse_env(raw: RawOptions) -> list[tuple[str, str]]:
    """--env-file lines first, then -e, in order; K=V sets, K alone copies the host's value."""
    items = [e for path in raw.list("env_file") for e in _read_env_file(path)] + raw.list("env")
    env: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key or "\0" in item or key != key.strip():
            raise UsageError(f"-e {item!r}: expected NAME=VALUE or NAME")
        if eq:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return list(env.items())


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
    return Mount(destination=os.path.normpath(dst), source=source, read_only=read_only)


_TMPFS_OPTIONS = ("ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec")


def parse_tmpfs(spec: str) -> Mount:
    dst, _, opts = spec.partition(":")
    if not dst.startswith("/"):
        raise UsageError(f"--tmpfs {spec}: DST must be an absolute path")
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


def _passwd_home(rootfs: Path, uid: int) -> str | None:
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


def _check_hostname(name: str) -> str:
    if not 0 < len(name) <= 64 or not all(c.isalnum() or c in "-._" for c in name):
        raise UsageError(f"--hostname {name!r}: letters, digits, '-', '.', '_', at most 64")
    return name


def default_maps() -> tuple[tuple, tuple]:
    """The user's (uid_map, gid_map) without keep-id."""
    uid, gid = os.getuid(), os.getgid()
    name = pwd.getpwuid(uid).pw_name
    return (idmap.build(uid, idmap.subordinate_ranges(idmap.SUBUID, name, uid), False),
            idmap.build(gid, idmap.subordinate_ranges(idmap.SUBGID, name, uid), False))


def build_spec(raw: RawOptions, default_network_mode) -> ContainerSpec:
    """Every check on the user's input happens here, before anything is created."""
    rootfs = Path(os.path.abspath(raw.rootfs))
    if not os.path.isdir(rootfs):
        raise UsageError(f"ROOTFS {raw.rootfs}: not a directory")
    command = tuple(raw.command) or ("/bin/sh",)

    uid, gid = os.getuid(), os.getgid()
    userns = raw.get("userns")
    if userns not in (None, "", "keep-id"):
        raise UsageError(f"--userns {userns}: only keep-id is supported")
    keep_id = userns == "keep-id"
    name = pwd.getpwuid(uid).pw_name
    uid_ranges = idmap.subordinate_ranges(idmap.SUBUID, name, uid)
    gid_ranges = idmap.subordinate_ranges(idmap.SUBGID, name, uid)
    uid_map = idmap.build(uid, uid_ranges, keep_id)
    gid_map = idmap.build(gid, gid_ranges, keep_id)

    if raw.get("user") is not None:
        c_uid, c_gid = parse_user(raw.get("user"), rootfs)
    elif keep_id:
        c_uid, c_gid = uid, gid
    else:
        c_uid, c_gid = 0, 0
    if not idmap.maps_id(uid_map, c_uid) or not idmap.maps_id(gid_map, c_gid):
        mapped = ", ".join(f"{m.inside}-{m.inside + m.count - 1}" for m in uid_map)
        raise UsageError(f"--user {c_uid}:{c_gid}: not mapped in the container (ids {mapped})")

    container_id = os.urandom(32).hex()
    network = parse_network(raw, default_network_mode)
    hostname = raw.get("hostname")
    if hostname is None:
        hostname = os.uname().nodename if network.mode == "host" else container_id[:12]
    hostname = _check_hostname(hostname)

    caps, added = capabilities.resolve(raw.list("cap_add"), raw.list("cap_drop"))

    mounts = [parse_volume(v) for v in raw.list("volume")]
    mounts += [parse_tmpfs(t) for t in raw.list("tmpfs")]

    workdir = raw.get("workdir") or "/"
    if not workdir.startswith("/"):
        raise UsageError(f"--workdir {workdir}: must be an absolute path")

    home = _passwd_home(rootfs, c_uid) or ("/root" if c_uid == 0 else "/")
    env = {"PATH": DEFAULT_PATH, "HOME": home, "HOSTNAME": hostname, "container": "pyctr"}
    tty = bool(raw.get("tty"))
    if tty:
        env["TERM"] = "xterm"
    env.update(parse_env(raw))

    return ContainerSpec(
        rootfs=rootfs, command=command, container_id=container_id, hostname=hostname,
        user=User(c_uid, c_gid), uid_map=uid_map, gid_map=gid_map, env=tuple(env.items()),
        mounts=tuple(mounts), workdir=os.path.normpath(workdir), read_only=bool(raw.get("read_only")),
        remove=bool(raw.get("rm")), init=bool(raw.get("init")), tty=tty,
        interactive=bool(raw.get("interactive")), capabilities=caps, added_capabilities=added,
        network=network, resources=parse_resources(raw))
