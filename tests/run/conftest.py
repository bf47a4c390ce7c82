"""Fixtures for end-to-end `pyctr run` tests: a private data dir per test, a user without
subordinate ids (created and deleted here), a unique marker for process checks."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from runworld import Runner


def _make_runner(user) -> Iterator[Runner]:
    base = Path(tempfile.mkdtemp(prefix="pyctr-run-test-", dir="/tmp"))
    os.chmod(base, 0o755)
    data_home, scratch = base / "data", base / "scratch"
    for d in (data_home, scratch):
        d.mkdir()
        os.chown(d, user.uid, user.gid)
    try:
        yield Runner(user, data_home, scratch)
    finally:
        # Files created by subordinate ids inside the container belong to them: root removes.
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def run_a(user_a) -> Iterator[Runner]:
    yield from _make_runner(user_a)


@pytest.fixture
def marker() -> str:
    return f"pyctr-marker-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def sleep_marker() -> str:
    """A marker `sleep` accepts as an extra duration (busybox adds its arguments up)."""
    return str(uuid.uuid4().int % 9 * 10**8 + 10**8 + uuid.uuid4().int % 10**8)


NO_RANGES_USER = "pyctr-test-c"


def _kill_processes_of(uid: int) -> None:
    """SIGKILL, by pid, whatever the temporary user still runs (a failed test's container)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uids = next((l.split()[1:] for l in status.splitlines() if l.startswith("Uid:")), [])
        if str(uid) in uids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def run_c(user_a) -> Iterator[Runner]:
    """A temporary user with no /etc/subuid or /etc/subgid lines, deleted afterwards."""
    subprocess.run(["userdel", "-r", NO_RANGES_USER], capture_output=True)
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "-K", "SUB_UID_COUNT=0",
                    "-K", "SUB_GID_COUNT=0", NO_RANGES_USER], check=True)
    pw = pwd.getpwnam(NO_RANGES_USER)
    try:
        for f in ("/etc/subuid", "/etc/subgid"):
            assert not any(l.startswith(f"{NO_RANGES_USER}:") for l in Path(f).read_text().splitlines())
        user = type(user_a)(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)
        yield from _make_runner(user)
    finally:
        _kill_processes_of(pw.pw_uid)
        subprocess.run(["userdel", "-r", NO_RANGES_USER], capture_output=True)
