"""Waiting on a condition, the one way the tests do it: poll with a deadline, never a bare sleep."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition",
               interval: float = 0.05, spin: Callable[[], None] | None = None) -> object:
    """Poll `predicate` until it returns something truthy, and return that; fail the test
    after `timeout` seconds. `spin`, if given, runs between polls instead of sleeping."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        if spin is not None:
            spin()
        else:
            time.sleep(interval)
