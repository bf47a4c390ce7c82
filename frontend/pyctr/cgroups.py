"""Resource limits (placeholder until cgroup support lands).

The launcher calls `apply()` from the host side while the container's first process waits,
before CMD starts, and `release()` after it has exited. apply() must raise PyctrError when
a requested limit cannot be enforced: a limit is never silently ignored.
"""

from __future__ import annotations

from .errors import PyctrError
from .spec import Resources


class CgroupPlacement:
    """Whatever apply() created, handed back to release()."""


def apply(resources: Resources, pid: int, pidfd: int) -> CgroupPlacement | None:
    if resources.any:
        raise PyctrError("resource limits are not supported yet")
    return None


def release(placement: CgroupPlacement | None) -> None:
    pass
