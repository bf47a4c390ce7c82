"""What a container is, as typed values.

The CLI parses options into these frozen value types once; nothing below it sees raw
option strings. Each type checks its own invariants in __post_init__ so a bad value
cannot exist, whichever code built it. `@frozen` (record.py) behaves like
`@dataclass(frozen=True)` without dataclasses' import cost on `pyctr run`'s start path.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError
from .record import frozen

PROTOCOLS = ("tcp", "udp")


@frozen
class PortMapping:
    """One published port. host_port 0 lets the helper choose; host_ip "" is every address."""

    container_port: int
    host_port: int = 0
    host_ip: str = ""
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        if not 1 <= self.container_port <= 65535:
            raise UsageError(f"container port {self.container_port} is not in 1-65535")
        if not 0 <= self.host_port <= 65535:
            raise UsageError(f"host port {self.host_port} is not in 0-65535")
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"protocol {self.protocol!r} is not tcp or udp")

    def __str__(self) -> str:
        host = f"{self.host_ip}:" if self.host_ip else ""
        return f"{host}{self.host_port}->{self.container_port}/{self.protocol}"


@frozen
class NetworkConfig:
    """mode is "none", "host" or "bridge"; name is the helper network for bridge mode."""

    mode: str = "none"
    name: str = "pyctr"
    ports: tuple[PortMapping, ...] = ()
    ifname: str = "eth0"
    address: str = ""  # a requested address, else the helper's choice

    def __post_init__(self) -> None:
        if self.mode not in ("none", "host", "bridge"):
            raise UsageError(f"unknown network mode {self.mode!r}")
        if self.ports and self.mode != "bridge":
            raise UsageError(f"-p needs a bridge network; --network {self.mode} cannot publish ports")


@frozen
class Mount:
    """A bind mount (source set) or a tmpfs (source None) at destination inside the rootfs."""

    destination: str
    source: Path | None = None
    read_only: bool = False
    options: tuple[str, ...] = ()  # tmpfs data options (size=, mode=), already validated

    def __post_init__(self) -> None:
        if not self.destination.startswith("/"):
            raise UsageError(f"mount destination {self.destination!r} is not an absolute path")


@frozen
class IdMapping:
    """One line of a uid_map or gid_map: ids [inside, inside+count) are [outside, outside+count)."""

    inside: int
    outside: int
    count: int


@frozen
class Resources:
    """Limits; None means the option was not given (and nothing is set up for it)."""

    memory: int | None = None        # bytes; 0 = unlimited
    memory_swap: int | None = None   # bytes of memory+swap; -1 = unlimited
    cpus: float | None = None        # cores, as a CFS quota
    pids: int | None = None          # -1 = unlimited

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.memory, self.memory_swap, self.cpus, self.pids))


@frozen
class User:
    """The identity CMD runs as inside the container."""

    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()


@frozen
class ContainerSpec:
    rootfs: Path
    command: tuple[str, ...]
    container_id: str
    hostname: str
    user: User = User()
    uid_map: tuple[IdMapping, ...] = ()
    gid_map: tuple[IdMapping, ...] = ()
    keep_id: bool = False  # --userns=keep-id: the user's ids inside, and a passwd entry
    env: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    workdir: str = "/"
    read_only: bool = False
    remove: bool = False
    init: bool = False
    tty: bool = False
    interactive: bool = False
    capabilities: frozenset[str] = frozenset()     # "CAP_CHOWN"...: the bounding set
    added_capabilities: frozenset[str] = frozenset()  # from --cap-add: what a non-root --user keeps
    no_new_privileges: bool = True
    seccomp: bool = True  # the default filter (seccomp.py); --security-opt seccomp=unconfined
    network: NetworkConfig = NetworkConfig()
    resources: Resources = Resources()
