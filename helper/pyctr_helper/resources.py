"""Resources.Limit: cgroups for containers on hosts where users cannot create them.

The facade calls `limit` after it has authorized the caller for
pyctr_bus.ACTION_LIMIT_RESOURCES, checked the fd count and handle, validated the pidfd as a
live process of the caller's (`process`), and checked `limits` against pyctr_bus.LIMIT_OPTIONS.
The rest (ranges, the admin's maximums, what the host can enforce, the cgroup itself and its
removal) is cgroup_service.CgroupService's; the cgroup filesystems are behind cgroup_tree.

One CgroupService per helper, made on first use (or by `start`, which also removes the pyctr
cgroups an earlier helper left behind).
"""

from __future__ import annotations

from .audit import Caller
from .cgroup_service import CgroupService
from .fdcheck import Process
from .services import Services

_service: CgroupService | None = None


def _get(services: Services) -> CgroupService:
    global _service
    if _service is None:
        _service = CgroupService(services.config, services.audit, services.exits,
                                 submit=services.submit)
        _service.reconcile()
        services.on_shutdown(_service.close)
    return _service


def start(services: Services) -> None:
    """At helper start: reconcile pyctr cgroups with the kernel (remove the stale ones)."""
    _get(services)


def limit(caller: Caller, pidfd: int, process: Process, limits: dict[str, object],
          services: Services) -> dict[str, tuple[str, object]]:
    """Put the process behind `pidfd` into a new cgroup with `limits`; remove it on exit.

    Returns the reply's a{sv} as {key: (D-Bus signature, value)}:
    {"cgroup": ("s", "pyctr/<uid>-<id>"), "controllers": ("as", ["memory", "cpu", ...])}.
    """
    return _get(services).limit(caller, pidfd, limits)
