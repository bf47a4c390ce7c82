"""Running commands on the host: as root, or as the unprivileged bench user.

Every measured command runs as BENCH_USER with a small, explicit environment, so no
root-only state and no caller environment leaks into a figure.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

BENCH_USER = "pyctr-bench"
WORK = Path("/var/lib/pyctr-bench")     # everything the bench makes on disk; removed at the end
STATE = Path("/run/pyctr-bench")         # what cleanup must undo after a crash (tun mode, helper pid)
# The user's XDG_RUNTIME_DIR. Short on purpose: podman puts slirp4netns's API socket at
# $XDG_RUNTIME_DIR/libpod/tmp/<64 hex>.net, and a unix socket path has at most 107 bytes.
RUNTIME_DIR = Path("/run/pyctrb")
PYCTR_PREFIX = Path(os.environ.get("PYCTR_PREFIX", "/opt/pyctr"))
PYCTR = PYCTR_PREFIX / "bin" / "pyctr"
PYCTR_HELPER = PYCTR_PREFIX / "bin" / "pyctr-helper"
PYCTR_PYTHON = PYCTR_PREFIX / "bin" / "python"
REPO = Path(__file__).resolve().parents[2]


class Unavailable(Exception):
    """A case cannot be measured here; the message says why, in one line."""


@dataclass(frozen=True)
class BenchUser:
    name: str
    uid: int
    gid: int
    home: Path
    runtime_dir: Path

    @classmethod
    def lookup(cls) -> "BenchUser":
        pw = pwd.getpwnam(BENCH_USER)
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, WORK / "home", RUNTIME_DIR)

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "LANG": "C.UTF-8",
            # podman wants a private 0700 runtime dir owned by the user (world.py makes it).
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
        }

    def argv(self, argv: Sequence[str]) -> list[str]:
        """argv prefixed so that it runs as this user, from root, with env() only."""
        env = [f"{k}={v}" for k, v in self.env().items()]
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--inh-caps=-all", "env", "-i", *env, *argv]


def run(argv: Sequence[str], timeout: float = 60, check: bool = False,
        **kw) -> subprocess.CompletedProcess:
    """Run as root and capture text output; a timeout is a failure, never a hang."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("cwd", "/")
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"`{' '.join(argv[:3])} ...` did not finish within {timeout:.0f}s")
    except FileNotFoundError as e:
        raise Unavailable(f"{e.filename}: no such file or directory")
    if check and proc.returncode != 0:
        raise Unavailable(f"`{' '.join(argv)}` failed: {last_line(proc.stderr or proc.stdout)}")
    return proc


def last_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:200] if lines else "(no output)"


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> object:
    """Poll until predicate() is truthy; Unavailable after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Unavailable(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL: only a process this harness started, by its own handle."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def processes_of(uids: range) -> set[int]:
    """Live pids (zombies left out) whose real uid falls in `uids`."""
    pids = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields["State"].split()[0] == "Z":
            continue
        if int(fields["Uid"].split()[0]) in uids:
            pids.add(int(entry.name))
    return pids


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) of one process in KiB, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None

    def field(text: str, name: str) -> int:
        for line in text.splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        return 0

    return field(status, "VmRSS"), field(rollup, "Pss")


def subordinate_range(user: str) -> range | None:
    """The user's /etc/subuid range, as the kernel will see its container processes."""
    try:
        for line in Path("/etc/subuid").read_text().splitlines():
            name, start, count = line.split(":")
            if name == user:
                return range(int(start), int(start) + int(count))
    except (OSError, ValueError):
        pass
    return None
