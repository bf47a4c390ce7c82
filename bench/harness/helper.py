"""The machine-wide helper session: the lock the tests share, a polkit grant for the bench
user, and a pyctr-helper started as root the way D-Bus activation would start it.

The helper's bus name and polkit rules exist once per machine; tests/conftest.py and this
bench take /run/pyctr-tests.lock around every use, so the two never fight over them.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .host import (PYCTR_HELPER, REPO, STATE, WORK, BenchUser, Unavailable, run, stop_process,
                   wait_for)

WORLD_LOCK = Path("/run/pyctr-tests.lock")
RULES = Path("/etc/polkit-1/rules.d/10-pyctr-bench.rules")
HELPER_PID_FILE = STATE / "helper.pid"
BUS_NAME = "org.pyctr.Helper1"


def take_world_lock(timeout: float) -> IO:
    """The open lock file, flocked; closing it releases the lock."""
    lock = open(WORLD_LOCK, "a")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise Unavailable(f"{WORLD_LOCK} stayed busy for {timeout:.0f}s; "
                                  f"open in {lock_holders() or 'no process found'}")
            time.sleep(0.5)


def lock_holders() -> str:
    """Who has the lock file open (a test session, or a child that inherited its fd)."""
    holders = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
            if not any(os.readlink(f"/proc/{entry.name}/fd/{fd}") == str(WORLD_LOCK)
                       for fd in fds):
                continue
            cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        holders.append(f"pid {entry.name} ({cmd.decode(errors='replace').strip()[:60]})")
    return ", ".join(holders[:3])


def _dbus(method: str, *args: str) -> subprocess.CompletedProcess:
    return run(["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus", "/",
                f"org.freedesktop.DBus.{method}", *args], timeout=15)


def _bus_ready() -> bool:
    try:
        out = _dbus("NameHasOwner", "string:org.freedesktop.PolicyKit1")
    except Unavailable:
        return False
    return out.returncode == 0 and "boolean true" in out.stdout


def helper_pid() -> int | None:
    out = _dbus("GetConnectionUnixProcessID", f"string:{BUS_NAME}")
    if out.returncode != 0:
        return None
    return int(out.stdout.split()[-1])


class HelperSession:
    """Holds the lock, the grant and the helper; `pid` is the helper serving this run."""

    def __init__(self, user: BenchUser, unavailable: str | None = None) -> None:
        self.user = user
        self.unavailable = unavailable      # set when the lock could not be taken
        self.left_behind: list[str] = []    # host changes from taking the lock to leaving it
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.started_here = False
        self.log = WORK / "helper.log"

    def start(self) -> None:
        if self.unavailable:
            raise Unavailable(self.unavailable)
        if not _bus_ready():
            run(["bash", "-c", f". {REPO}/scripts/lib.sh && start_services"], timeout=60)
            if not _bus_ready():
                raise Unavailable("the system bus or polkitd is not running")
        self._grant()
        self.pid = helper_pid()
        if self.pid is not None:
            return      # already activated on the bus: measure that one, leave it running
        if not PYCTR_HELPER.exists():
            raise Unavailable(f"{PYCTR_HELPER} is not installed")
        with open(self.log, "a") as stderr:
            self.proc = subprocess.Popen([str(PYCTR_HELPER), "--log", str(self.log)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=stderr, cwd="/")
        HELPER_PID_FILE.write_text(str(self.proc.pid))
        self.started_here = True
        try:
            wait_for(lambda: helper_pid() is not None or self.proc.poll() is not None,
                     timeout=20, what="pyctr-helper to own its bus name")
        except Unavailable:
            self.stop()
            raise
        code = self.proc.poll()
        if code is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            self.stop()
            raise Unavailable(f"pyctr-helper exited {code}: {tail[0][:160]}")
        self.pid = helper_pid()

    def _grant(self) -> None:
        RULES.write_text(
            "// Written by pyctr's bench/run.sh for its own user; removed when it ends.\n"
            "polkit.addRule(function(action, subject) {\n"
            f'    if (action.id.indexOf("org.pyctr.") == 0 && subject.user == "{self.user.name}") {{\n'
            "        return polkit.Result.YES;\n"
            "    }\n"
            "});\n")
        RULES.chmod(0o644)
        # polkitd reloads rules.d on inotify: wait until it answers yes for our user.
        probe = self.user.argv(["sh", "-c", "exec pkcheck --action-id org.pyctr.network.attach "
                                "--process $$"])
        wait_for(lambda: run(probe, timeout=15).returncode == 0, timeout=20,
                 what="polkitd to load the bench grant", interval=0.2)

    def stop(self) -> None:
        if self.proc is not None:
            # SIGTERM ends every lease and removes the helper's chains and bridge: give it time.
            stop_process(self.proc, timeout=60)
            self.proc = None
        HELPER_PID_FILE.unlink(missing_ok=True)
        RULES.unlink(missing_ok=True)


def cleanup_stale() -> None:
    """After a crashed run: stop the helper it started (checked by pid and command line)."""
    RULES.unlink(missing_ok=True)
    try:
        pid = int(HELPER_PID_FILE.read_text())
    except (OSError, ValueError):
        return
    try:
        if "pyctr-helper" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            os.kill(pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        pass
    HELPER_PID_FILE.unlink(missing_ok=True)


@contextmanager
def helper_session(user: BenchUser, lock_timeout: float) -> Iterator[HelperSession]:
    """Lock, then (on start()) grant and helper; all undone on the way out. Without the
    lock the session still opens, so podman's cases run, but start() refuses."""
    try:
        lock = take_world_lock(lock_timeout)
    except Unavailable as e:
        yield HelperSession(user, unavailable=str(e))
        return
    session = HelperSession(user)
    before = host_network_state()
    try:
        yield session
    finally:
        session.stop()
        # Still under the lock, so no other helper can have changed these meanwhile.
        after = host_network_state()
        session.left_behind = sorted(f"+ {l}" for l in after - before) + \
            sorted(f"- {l}" for l in before - after)
        lock.close()


def host_network_state() -> set[str]:
    """Links and iptables rules, the way tests/conftest.py's unchanged_host sees them."""
    lines = {f"link {l.split(':')[1].strip().split('@')[0]}"
             for l in run(["ip", "-o", "link", "show"], timeout=10).stdout.splitlines()}
    for table in ("nat", "filter"):
        out = run(["iptables-legacy", "-t", table, "-S"], timeout=10).stdout
        lines |= {f"iptables -t {table} {l}" for l in out.splitlines() if l.strip()}
    return lines
