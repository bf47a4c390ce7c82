"""Shared pieces of the helper tests: the raw client, namespace helpers, the lease file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pyctr_bus

CLIENT = str(Path(__file__).with_name("client.py"))
PYTHON = "/opt/pyctr/bin/python"


class Client:
    """Calls the helper as one test user, with whatever fds and arguments a test wants."""

    def __init__(self, user) -> None:  # tests/conftest.py's TestUser
        self.user = user
        self.spawned: list[int] = []

    def spawn(self) -> int:
        """A process in a new user+net namespace owned by this user; killed at teardown."""
        out = self.user.run([PYTHON, CLIENT, "spawn"], timeout=30)
        assert out.returncode == 0, out.stderr
        pid = json.loads(out.stdout)["pid"]
        self.spawned.append(pid)
        return pid

    def call(self, member: str, signature: str = "", body: list | None = None,
             fds: list[dict] | None = None, interface: str = pyctr_bus.NETWORK_INTERFACE,
             pass_fds: tuple[int, ...] = (), **extra) -> dict:
        spec = {"member": member, "signature": signature, "body": body or [], "fds": fds or [],
                "interface": interface, **extra}
        out = self.user.run([PYTHON, CLIENT, "call", json.dumps(spec)], timeout=90, pass_fds=pass_fds)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def popen_call(self, member: str, signature: str = "", body: list | None = None,
                   fds: list[dict] | None = None, **extra) -> subprocess.Popen:
        """Start a call without waiting (races, crashes); read JSON from .stdout later."""
        spec = {"member": member, "signature": signature, "body": body or [], "fds": fds or [],
                "interface": pyctr_bus.NETWORK_INTERFACE, **extra}
        return self.user.popen([PYTHON, CLIENT, "call", json.dumps(spec)])

    def cycles(self, pid: int, count: int, options: dict | None = None) -> dict:
        spec = {"pid": pid, "count": count, "options": options or {}}
        out = self.user.run([PYTHON, CLIENT, "cycles", json.dumps(spec)], timeout=600)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def attach(self, pid: int, fds: list[dict] | None = None, handles: list[int] = (0, 1),
               pass_fds: tuple[int, ...] = (), **options) -> dict:
        """Attach(netns of pid, pidfd of pid, options); options given as {key: (sig, value)}."""
        if fds is None:
            fds = [{"netns": pid}, {"pidfd": pid}]
        return self.call("Attach", "hha{sv}", [*handles, variants(options)], fds, pass_fds=pass_fds)

    def detach(self, lease: str) -> dict:
        return self.call("Detach", "s", [lease])

    def list(self) -> list[dict]:
        out = self.call("List")
        assert "body" in out, out
        return out["body"][0]

    def kill_all(self) -> None:
        for pid in self.spawned:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.spawned.clear()


def variants(options: dict) -> dict:
    """{key: (sig, value)} -> the client's JSON form of an a{sv}."""
    return {k: {"__v__": [sig, v]} for k, (sig, v) in options.items()}


def ports(*entries) -> tuple[str, list]:
    """The `ports` option: ports(("", 0, 80, "tcp"), ...)."""
    return ("a(sqqs)", [list(e) for e in entries])


def leases_on_disk() -> list[dict]:
    """The helper's lease records (one JSON file per lease)."""
    d = Path("/var/lib/pyctr/leases")
    if not d.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def in_netns(pid: int, argv: list[str]) -> subprocess.CompletedProcess:
    """Run argv as root inside the network namespace of pid (for checks only)."""
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, text=True)


def nft_tables() -> set[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {l for l in out.splitlines() if "pyctr" in l}


def bound_ports() -> set[str]:
    """TCP and UDP sockets bound (listening or not) on the host, as ss prints them."""
    out = subprocess.run(["ss", "-Htuan"], capture_output=True, text=True).stdout
    return {" ".join(l.split()[:1] + l.split()[4:5]) for l in out.splitlines()}
