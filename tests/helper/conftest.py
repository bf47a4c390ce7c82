"""Fixtures for the helper's contract tests: a raw D-Bus client run as a test user, and
throwaway user+net namespace processes ("containers") to attach."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import pytest

from helper_world import Client


@pytest.fixture
def client_a(user_a, helper) -> Iterator[Client]:
    c = Client(user_a)
    yield c
    c.kill_all()


@pytest.fixture
def client_b(user_b, helper) -> Iterator[Client]:
    c = Client(user_b)
    yield c
    c.kill_all()


@pytest.fixture
def wait_until() -> Callable:
    """Poll a predicate until truthy; fail after `timeout` seconds."""
    def wait(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)
        return value
    return wait


@pytest.fixture
def nothing_changed(unchanged_host, client_a, client_b, polkit):
    """Call the returned function at the end of a test: the host (links, rules, pyctr nft
    tables, bound ports) is as before, and neither test user holds a lease."""
    from helper_world import bound_ports, leases_on_disk, nft_tables
    tables, sockets = nft_tables(), bound_ports()
    leases = [l["id"] for l in leases_on_disk()]

    def check() -> None:
        unchanged_host()
        if polkit.mode != "allow":
            polkit.set("allow")  # List itself needs the attach grant
        assert nft_tables() == tables
        assert client_a.list() == [] and client_b.list() == []
        assert [l["id"] for l in leases_on_disk()] == leases
        assert bound_ports() <= sockets | {s for s in bound_ports() if "TIME-WAIT" in s}
    return check
