"""The one rollback mechanism: an undo stack. Each act that changes the system pushes its undo
right after it succeeds; if a later step fails, everything pushed runs in reverse order."""

from __future__ import annotations

import logging
import os
import signal
from typing import Callable

log = logging.getLogger(__name__)

# Fault injection for the crash-recovery tests: `pyctr-helper --crash-at STEP` SIGKILLs the
# helper when an attach reaches STEP. It can only kill the helper itself.
CRASH_AT: str | None = None


def checkpoint(step: str) -> None:
    if CRASH_AT == step:
        log.warning("crash-at %s: killing the helper as asked", step)
        os.kill(os.getpid(), signal.SIGKILL)


class UndoStack:
    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, undo: Callable[[], None]) -> None:
        self._undo.append((what, undo))
        checkpoint(what)

    def commit(self) -> None:
        """Success: keep everything."""
        self._undo.clear()

    def __enter__(self) -> "UndoStack":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            while self._undo:
                what, undo = self._undo.pop()
                try:
                    undo()
                except Exception:
                    log.exception("rollback of %s failed", what)
        return False
