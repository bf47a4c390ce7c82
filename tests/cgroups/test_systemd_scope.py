"""The frontend's conversation with a systemd user manager, against a stand-in manager on a
private session bus (this machine has no systemd): the scope it asks for, and how it waits.

What systemd then does with the cgroup (delegation, the scope's directory) cannot be exercised
here; test_cgroup_units.py checks how pyctr arranges a delegated scope on a fake tree.
"""

# No `from __future__ import annotations`: dbus-next reads the D-Bus signatures from the
# annotations themselves.
import asyncio
import subprocess
from typing import Iterator

import pytest
from dbus_next import BusType, Variant
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method, signal

from pyctr import cgroup_systemd
from pyctr.cgroup_choice import Mounts
from pyctr.errors import PyctrError


class FakeManager(ServiceInterface):
    """Just enough of org.freedesktop.systemd1.Manager: jobs finish with `result`."""

    def __init__(self, result: str = "done") -> None:
        super().__init__(cgroup_systemd.MANAGER)
        self.result = result
        self.subscribed = False
        self.units: list[tuple[str, str, dict]] = []

    @method()
    def Subscribe(self):
        self.subscribed = True

    @method()
    def StartTransientUnit(self, name: "s", mode: "s", properties: "a(sv)",  # noqa: F821
                           aux: "a(sa(sv))") -> "o":  # noqa: F821
        self.units.append((name, mode, {k: v.value for k, v in properties}))
        job = f"/org/freedesktop/systemd1/job/{len(self.units)}"
        asyncio.get_running_loop().call_soon(self.JobRemoved, len(self.units), job, name, self.result)
        return job

    @signal()
    def JobRemoved(self, id: "u", job: "o", unit: "s", result: "s") -> "uoss":  # noqa: F821
        return [id, job, unit, result]


@pytest.fixture
def session_bus(monkeypatch) -> Iterator[str]:
    proc = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _with_manager(manager: FakeManager, unit: str, pids: list[int]) -> None:
    bus = await MessageBus(bus_type=BusType.SESSION).connect()
    try:
        bus.export(cgroup_systemd.SYSTEMD_PATH, manager)
        await bus.request_name(cgroup_systemd.SYSTEMD)
        await asyncio.wait_for(
            cgroup_systemd.SystemdScopes(Mounts({}, None))._start_scope(unit, pids), 10)
    finally:
        bus.disconnect()


def test_pyctr_asks_for_a_delegated_scope_holding_the_container_and_itself(session_bus):
    manager = FakeManager()
    asyncio.run(_with_manager(manager, "pyctr-0123456789ab.scope", [111, 222]))
    assert manager.subscribed
    (name, mode, props), = manager.units
    assert (name, mode) == ("pyctr-0123456789ab.scope", "fail")
    assert props["PIDs"] == [111, 222]
    assert props["Delegate"] is True
    assert props["CollectMode"] == "inactive-or-failed"


def test_a_failed_scope_job_is_an_error(session_bus):
    with pytest.raises(PyctrError, match="could not start .* \\(failed\\)"):
        asyncio.run(_with_manager(FakeManager(result="failed"), "pyctr-0123456789ab.scope", [1]))


def test_no_systemd_on_the_session_bus_is_an_error(session_bus):
    async def alone() -> None:
        await asyncio.wait_for(cgroup_systemd.SystemdScopes(Mounts({}, None))._start_scope(
            "pyctr-0123456789ab.scope", [1]), 10)

    with pytest.raises(PyctrError, match="systemd refused"):
        asyncio.run(alone())
