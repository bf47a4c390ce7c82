"""Watching for the end of things: a process exiting (its pidfd turns readable). Reusable by
every service (network leases, cgroups). Safe to call from the act thread: registrations and
cancellations are handed to the asyncio loop that does the watching."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Callable

from . import syscalls

log = logging.getLogger(__name__)


class Watch:
    """One registration; cancel() stops it and closes the helper's own pidfd duplicate."""

    def __init__(self, watcher: "ExitWatcher", fd: int, callback: Callable[[], None]) -> None:
        self._watcher, self.fd, self._callback = watcher, fd, callback
        self._done = False

    def cancel(self) -> None:
        self._watcher._on_loop(self._stop)

    def _stop(self) -> None:
        if self.fd >= 0:
            try:
                self._watcher.loop.remove_reader(self.fd)
            finally:
                os.close(self.fd)
                self.fd = -1
        self._watcher.watches.discard(self)

    def _fire(self) -> None:
        self._stop()
        if not self._done:
            self._done = True
            try:
                self._callback()
            except Exception:
                log.exception("exit callback failed")


class ExitWatcher:
    """Run a callback (on the loop) once when a process exits, identified by a pidfd.

    watch() duplicates the pidfd it is given, so the caller keeps (and must close) its own; the
    duplicate lives exactly as long as the Watch. If the process is already gone, the callback
    runs on the next loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.watches: set[Watch] = set()

    def _on_loop(self, fn: Callable[[], None]) -> None:
        if threading.get_ident() == self.loop_thread or not self.loop.is_running():
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)

    def watch(self, pidfd: int, callback: Callable[[], None]) -> Watch:
        fd = os.dup(pidfd)
        os.set_inheritable(fd, False)
        w = Watch(self, fd, callback)
        self.watches.add(w)

        def register() -> None:
            if w.fd >= 0:
                self.loop.add_reader(w.fd, w._fire)
        self._on_loop(register)
        return w

    def watch_pid(self, pid: int, start_time: int, callback: Callable[[], None]) -> Watch | None:
        """Re-open a watch on a process recorded earlier (after a helper restart). None when the
        process is gone or the pid now belongs to another process (different start time)."""
        try:
            fd = syscalls.pidfd_open(pid)
        except OSError:
            return None
        try:
            if syscalls.process_start_time(pid) != start_time or not syscalls.pidfd_alive(fd):
                return None
            return self.watch(fd, callback)
        except OSError:
            return None
        finally:
            os.close(fd)

    def close(self) -> None:
        for w in list(self.watches):
            w._stop()
