"""Fixtures for the cgroup tests (the pieces they use live in cgworld.py)."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from cgworld import Driven, pyctr_cgroups, wait_for


@pytest.fixture
def no_cgroups_left(user_a, user_b) -> Iterator[None]:
    """Fails the test if a test user's pyctr cgroup outlives it (after a short wait)."""
    uids = {user_a.uid, user_b.uid}
    before = pyctr_cgroups(uids)
    yield
    wait_for(lambda: pyctr_cgroups(uids) <= before, timeout=15,
             what="the test's pyctr cgroups to be removed")


@pytest.fixture
def driven(no_cgroups_left) -> Iterator[Driven]:
    """The helper's CgroupService on its own loop, as root, without the bus; what it made is
    removed when the test ends, and no_cgroups_left checks that."""
    if os.geteuid() != 0:
        pytest.skip("drives the helper's cgroup service: needs root")
    d = Driven()
    yield d
    d.close()
