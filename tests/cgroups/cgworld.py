"""Pieces the cgroup tests share: finding pyctr cgroups on the host, and a CgroupService driven
without the bus (the helper-side lifecycle, on the real kernel, with real test-user processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from pyctr_helper.audit import Caller
from pyctr_helper.cgroup_service import CgroupService
from pyctr_helper.cgroup_tree import detect, owner_of
from pyctr_helper.config import Limits
from pyctr_helper.lifetime import ExitWatcher
from waiting import wait_until


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition",
             spin: Callable[[], None] | None = None) -> object:
    """wait_until, kept under the name these tests use."""
    return wait_until(predicate, timeout, what, spin=spin)


def controllers_of(d: Path) -> set[str]:
    """The v1 controllers whose hierarchy holds d (a pyctr cgroup sits at any depth)."""
    return {c for c, root in detect().mounts.items() if root in d.parents}


def pyctr_cgroups(uids: set[int]) -> set[Path]:
    """Every pyctr cgroup on the host that belongs to one of `uids`."""
    found = set()
    for dirs in detect().existing().values():
        found.update(d for d in dirs if owner_of(d.name) in uids)
    return found


class Recorder:
    """Collects audit records instead of writing syslog (the service is driven without a bus)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def record(self, caller: Caller, action: str, outcome: str, **objects: object) -> None:
        self.lines.append((action, outcome, objects))


@dataclass
class FakeConfig:
    maximums: Limits = Limits()

    def limits_for(self, uid: int) -> Limits:
        return self.maximums


class Driven:
    """A CgroupService threaded as the helper runs it: watches and timers on an asyncio loop
    (turned by spin()), every act on one worker thread (limit(), act())."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.watcher = ExitWatcher(self.loop)
        self.audit = Recorder()
        self.config = FakeConfig()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-act")
        self.service = CgroupService(self.config, self.audit, self.watcher,
                                     submit=lambda fn, *args: self.worker.submit(fn, *args))
        self.procs: list[subprocess.Popen] = []

    def act(self, fn, *args):
        """Run fn on the act thread and return its result (or raise its exception)."""
        return self.worker.submit(fn, *args).result(timeout=30)

    def limit(self, caller: Caller, pidfd: int, values: dict) -> dict:
        return self.act(self.service.limit, caller, pidfd, values)

    def spin(self) -> None:
        self.loop.run_until_complete(asyncio.sleep(0.02))

    def process(self, user, argv=("sleep", "60")) -> tuple[subprocess.Popen, int]:
        """A process of `user`, and a pidfd of it (closed by close())."""
        proc = user.popen(list(argv))
        self.procs.append(proc)
        return proc, os.pidfd_open(proc.pid)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        for name in list(self.service.placements):
            self.act(self.service._remove, name)
        for _ in range(100):
            if not self.service.placements:
                break
            self.spin()
        self.act(self.service.close)
        self.worker.shutdown(wait=True)
        self.watcher.close()
        self.loop.close()


