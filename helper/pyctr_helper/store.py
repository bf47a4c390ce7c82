"""The lease store: every lease the helper holds, persisted so it survives a crash or restart.

One JSON file per lease (state_dir/leases/<id>.json), each written atomically (temp file,
fsync, rename) while holding an exclusive flock on state_dir/leases.lock; a change costs the
same with 5 leases or 500. A lease is written as "pending" before the helper touches the
kernel for it, so after a crash mid-attach the restarted helper knows which objects may exist
and removes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

PENDING = "pending"
ACTIVE = "active"


@dataclass(frozen=True)
class Port:
    host_ip: str  # "" = every local address
    host_port: int
    container_port: int
    protocol: str

    def wire(self) -> list:
        return [self.host_ip, self.host_port, self.container_port, self.protocol]


@dataclass(frozen=True)
class Lease:
    id: str
    owner_uid: int
    bus_name: str
    network: str
    bridge: str
    address: str  # without prefix
    prefixlen: int
    gateway: str
    mac: str
    host_ifname: str
    ifname: str
    ports: tuple[Port, ...] = ()
    dns: tuple[str, ...] = ()
    pid: int = 0
    pid_start: int = 0
    state: str = PENDING

    def to_json(self) -> dict:
        d = asdict(self)
        d["ports"] = [asdict(p) for p in self.ports]
        d["dns"] = list(self.dns)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Lease":
        d = dict(d)
        d["ports"] = tuple(Port(**p) for p in d.get("ports", ()))
        d["dns"] = tuple(d.get("dns", ()))
        return cls(**d)

    def activated(self, pid: int, pid_start: int) -> "Lease":
        return replace(self, pid=pid, pid_start=pid_start, state=ACTIVE)


@dataclass
class LeaseStore:
    """In-memory view of the store file; every change goes to disk before it is relied on."""

    state_dir: Path
    leases: dict[str, Lease] = field(default_factory=dict)
    # Re-entrancy is per thread: another thread must take the flock (and wait) itself.
    _held: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    @property
    def dir(self) -> Path:
        return self.state_dir / "leases"

    def open(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.locked():
            self.leases = {}
            for path in self.dir.iterdir():
                if path.suffix == ".tmp":
                    path.unlink()  # a temp file from a crash mid-write
                if path.suffix != ".json":
                    continue
                try:
                    lease = Lease.from_json(json.loads(path.read_text()))
                except (ValueError, TypeError, KeyError) as e:
                    # Records are renamed into place whole, so this is outside damage: keep it
                    # for the admin, out of the way.
                    log.error("%s: unreadable lease record (%s); moved aside", path, e)
                    path.rename(path.with_suffix(".bad"))
                    continue
                self.leases[lease.id] = lease

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock on the store, against a second helper instance or an admin tool.
        Re-entrant within one thread (flock on a second open file would block on ourselves);
        a second thread opens its own file and waits for the flock like any other holder."""
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth = depth
            return
        fd = os.open(self.state_dir / "leases.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.depth = 1
            yield
        finally:
            self._held.depth = 0
            os.close(fd)

    def put(self, lease: Lease) -> None:
        self.leases[lease.id] = lease
        self._write(lease)

    def remove(self, lease_id: str) -> None:
        if self.leases.pop(lease_id, None) is not None:
            with self.locked():
                (self.dir / f"{lease_id}.json").unlink(missing_ok=True)

    def owned_by(self, uid: int) -> list[Lease]:
        return [l for l in self.leases.values() if l.owner_uid == uid]

    def on_network(self, network: str) -> list[Lease]:
        return [l for l in self.leases.values() if l.network == network]

    def _write(self, lease: Lease) -> None:
        data = json.dumps(lease.to_json(), separators=(",", ":")).encode()
        tmp = self.dir / f"{lease.id}.tmp"
        with self.locked():
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.dir / f"{lease.id}.json")
