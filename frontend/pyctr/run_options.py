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
from .option_values import (parse_publish, parse_size, parse_tmpfs, parse_user, parse_volume,
                            passwd_home, read_env_file)
from .errors import UsageError
from .spec import ContainerSpec, NetworkConfig, PortMapping, Resources, User

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
  --security-opt OPT         seccomp=unconfined (no filter), no-new-privileges (always on)
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
    "--security-opt": ("security_opt", True, True),
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


def parse_env(raw: RawOptions) -> list[tuple[str, str]]:
    """--env-file lines first, then -e, in order; K=V sets, K alone copies the host's value."""
    items = [e for path in raw.list("env_file") for e in read_env_file(path)] + raw.list("env")
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

    home = passwd_home(rootfs, c_uid)
    if home is None and keep_id and c_uid == uid:
        home = pwd.getpwuid(uid).pw_dir  # podman: keep-id's user gets their own home path
    home = home or ("/root" if c_uid == 0 else "/")
    env = {"PATH": DEFAULT_PATH, "HOME": home, "HOSTNAME": hostname, "container": "pyctr"}
    tty = bool(raw.get("tty"))
    if tty:
        env["TERM"] = "xterm"
    env.update(parse_env(raw))

    seccomp = True
    for opt in raw.list("security_opt"):
        if opt == "seccomp=unconfined":
            seccomp = False
        elif opt in ("no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"):
            pass
        else:
            raise UsageError(f"--security-opt {opt}: supported are seccomp=unconfined and "
                             "no-new-privileges (always on)")

    return ContainerSpec(
        rootfs=rootfs, command=command, container_id=container_id, hostname=hostname,
        user=User(c_uid, c_gid), uid_map=uid_map, gid_map=gid_map, keep_id=keep_id,
        env=tuple(env.items()),
        mounts=tuple(mounts), workdir=os.path.normpath(workdir), read_only=bool(raw.get("read_only")),
        remove=bool(raw.get("rm")), init=bool(raw.get("init")), tty=tty,
        interactive=bool(raw.get("interactive")), capabilities=caps, added_capabilities=added,
        network=network, resources=parse_resources(raw), seccomp=seccomp)
