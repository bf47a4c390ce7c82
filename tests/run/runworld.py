"""Pieces the `pyctr run` tests share: a runner with a private data dir, process lookup."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from waiting import wait_until as wait_for  # noqa: F401 - the run tests import it from here

PYCTR = str(Path(os.environ.get("PYCTR_PREFIX", "/opt/pyctr")) / "bin" / "pyctr")


@dataclass
class Runner:
    """Runs `pyctr run` as `user` with XDG_DATA_HOME in a directory of this test only,
    so concurrent sessions of the same user never show up in our checks."""

    user: Any
    data_home: Path
    scratch: Path  # a directory the user owns, for volumes

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"XDG_DATA_HOME": str(self.data_home)}
        env.update(extra or {})
        return env

    def run(self, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
        return self.user.run([PYCTR, "run", *args], env=self.env(env), **kw)

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        return self.user.popen([PYCTR, "run", *args], env=self.env(env), **kw)

    def containers(self) -> list[str]:
        d = self.data_home / "pyctr" / "containers"
        return sorted(n for n in os.listdir(d) if not n.startswith(".")) if d.exists() else []

    def assert_nothing_left(self, marker: str | None = None) -> None:
        """No state directory, no mount naming our data dir, no process naming the marker."""
        assert self.containers() == []
        mounts = Path("/proc/mounts").read_text()
        assert str(self.data_home) not in mounts
        if marker:
            wait_for(lambda: not processes_with(marker), timeout=10,
                       what=f"processes with {marker!r} to exit")


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.append(int(pid))
    return found
