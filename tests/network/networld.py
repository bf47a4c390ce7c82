"""The test world of tests/network: containers on the helper's bridge, an outside host played
by a network namespace, servers that record their peers, and the host-side probes.

Every address a test sends to is on the helper's bridge, on loopback, or inside the
"outside" netns (198.51.100.0/24, TEST-NET-2, routed only to that netns).
(A module of its own, not conftest.py, so that test modules can import it by a unique name.)
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from waiting import wait_until

HERE = Path(__file__).resolve().parent
PYTHON = "/opt/pyctr/bin/python"
PYCTR = "/opt/pyctr/bin/pyctr"

OUTSIDE_NS = "pyctr-t-outside"
OUTSIDE_HOST_IF = "pyt-outside0"
OUTSIDE_HOST_ADDR = "198.51.100.1"   # the host's address on the test's veth
OUTSIDE_ADDR = "198.51.100.2"        # the "external host"
OUTSIDE_PREFIX = 24

# A container that prints its network and then serves /var/www on port 80.
NETINFO = "ip -4 -o addr show dev eth0; ip route show default; echo READY"
WEB = f"{NETINFO}; exec httpd -f -p 80 -h /var/www"
PAGE = "hello from a pyctr container"
# busybox wget's own -T segfaults in Debian's busybox-static 1.35: bound it with timeout(1).
FETCH = "timeout 10 wget -q -O -"
# Host Python inside a container: /usr bind-mounted read-only, run through the loader so the
# busybox rootfs needs no /lib.
LOADER = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
# peer.py inside a container, with the mounts it needs.
PEER_MOUNTS = ("-v", "/usr:/usr:ro", "-v", f"{HERE}:/t:ro")
PEER = f"{LOADER} /usr/bin/python3 /t/peer.py"


def wait_for(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition"):
    """wait_until with the longer default these multi-process network checks need."""
    return wait_until(predicate, timeout, what)


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True, **kw)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A host port nobody holds right now, in the helper's default range."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_bindable(port: int, kind: int = socket.SOCK_STREAM) -> bool:
    """True when root can bind the port on every address: no reservation holds it."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def sockets_on(port: int) -> list[str]:
    """ss's view of any TCP or UDP socket bound to `port` on the host."""
    out = sh("ss", "-Htuan", f"sport = :{port}").stdout
    return [line for line in out.splitlines() if line.strip()]


def nft_tables() -> list[str]:
    """`nft list tables`, sorted: the anti-spoofing tables the helper adds per lease."""
    return sorted(sh("nft", "list", "tables").stdout.splitlines())


def http_get(address: str, port: int, timeout: float = 3.0) -> str:
    """GET / over a plain socket (no proxy settings, no name lookups); "" on failure."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Container:
    """A `pyctr run` in the background, its output lines collected by a thread."""

    proc: subprocess.Popen
    lines: "queue.Queue[str]" = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    address: str = ""
    gateway: str = ""

    def start_readers(self) -> None:
        def pump(stream, sink) -> None:
            for line in stream:
                sink(line.rstrip("\n"))
        threading.Thread(target=pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=pump, args=(self.proc.stderr, self.stderr.append), daemon=True).start()

    def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first output line matching `pattern` (earlier lines are kept in `seen`)."""
        for line in self.seen:
            if m := re.search(pattern, line):
                return m
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = None
            if line is not None:
                self.seen.append(line)
                if m := re.search(pattern, line):
                    return m
                continue
            if self.proc.poll() is not None and self.lines.empty():
                raise AssertionError(f"pyctr exited {self.proc.returncode} before printing "
                                     f"{pattern!r}; stdout {self.seen}; stderr {self.stderr}")
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r} after {timeout}s; "
                                     f"stdout {self.seen}; stderr {self.stderr}")

    def wait_ready(self) -> "Container":
        self.address = self.wait_line(r"inet (\d+\.\d+\.\d+\.\d+)/").group(1)
        self.gateway = self.wait_line(r"default via (\d+\.\d+\.\d+\.\d+)").group(1)
        self.wait_line(r"^READY$")
        return self

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pyctr did not exit; stderr {self.stderr}") from None

    def stop(self) -> int:
        """SIGTERM to pyctr (forwarded to the container's init), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def err(self) -> str:
        return "\n".join(self.stderr)


class Containers:
    """Starts containers as a test user; kills whatever a test left running."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self.running: list[Container] = []
        self.users: dict[str, object] = {}

    def start(self, user, *options: str, command: Sequence[str] = ("sh", "-c", WEB),
              ready: bool = True) -> Container:
        argv = ["run", "--rm", "--init", *options, str(self.rootfs), *command]
        proc = user.pyctr_popen(*argv)
        self.users[user.name] = user
        c = Container(proc)
        c.start_readers()
        self.running.append(c)
        return c.wait_ready() if ready else c

    def close(self) -> None:
        for c in self.running:
            if c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
                try:
                    c.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    c.kill()
        # pyctr sends Detach without waiting for it, and the helper's pidfd watch ends leases
        # on its own: wait until it has, so the next test starts from a settled host.
        for user in self.users.values():
            wait_for(lambda: leases_of(user) == [], what=f"{user.name}'s leases to end")


def leases_of(user) -> list[dict]:
    """The user's leases, from the helper's List, asked as that user."""
    script = ("import json; from pyctr.helper_client import HelperClient\n"
              "with HelperClient() as c: print(json.dumps(c.list()))")
    out = user.run([PYTHON, "-c", script], timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@dataclass(frozen=True)
class Outside:
    """A network namespace playing a host beyond this one, linked to it by a veth."""

    netns: str
    address: str
    host_address: str

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], capture_output=True,
                              text=True, timeout=timeout, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def popen(self, *argv: str) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def remove_outside() -> None:
    sh("ip", "netns", "del", OUTSIDE_NS, check=False)
    sh("ip", "link", "del", OUTSIDE_HOST_IF, check=False)


class PeerServer:
    """A peer.py server on the host or in a netns: records who sent what."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
        self.peers: "queue.Queue[str]" = queue.Queue()
        first = self.proc.stdout.readline()
        assert first.startswith("listening"), first + self.proc.stderr.read()

        def pump() -> None:
            for line in self.proc.stdout:
                self.peers.put(line.strip())
        threading.Thread(target=pump, daemon=True).start()

    def next_peer(self, timeout: float = 20.0) -> str:
        """The next message, as 'PEER_IP PAYLOAD'."""
        try:
            return self.peers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the peer server heard nothing") from None

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def container_pid(pyctr_pid: int) -> int | None:
    """The container's first process: pyctr's first descendant in another pid namespace."""
    mine = os.readlink("/proc/self/ns/pid")
    todo = [pyctr_pid]
    while todo:
        pid = todo.pop(0)
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") != mine:
                return pid
            children = []
            for task in os.listdir(f"/proc/{pid}/task"):
                children += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        todo.extend(int(c) for c in children)
    return None
