"""Bridge networking through pyctr-helper (placeholder until the helper client lands).

The launcher calls `default_mode()` when --network is not given, `attach()` from the host
user namespace once the container's namespaces exist (before CMD starts), and `detach()`
when the container is gone. attach() returns what the container applies to itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PyctrError
from .spec import ContainerSpec, PortMapping


@dataclass(frozen=True)
class NetworkSetup:
    """What the helper gave the container: applied inside by netconf, kept for detach."""

    lease: str
    ifname: str
    address: str          # CIDR, e.g. "10.88.0.5/24"
    gateway: str
    mac: str
    dns: tuple[str, ...]
    ports: tuple[PortMapping, ...]


def default_mode() -> str:
    return "none"


def attach(spec: ContainerSpec, netns_fd: int, pidfd: int) -> NetworkSetup:
    raise PyctrError("bridge networking is not available yet")


def detach(setup: NetworkSetup) -> None:
    pass
