"""What a caller may ask of Resources.Limit, and what the admin lets each user have.

Two steps, both before anything on the host changes:
- `parse_limits` turns the caller's a{sv} into a `LimitRequest`, refusing unknown keys, wrong
  types and values no kernel would accept (InvalidArgument);
- `check_maximums` compares it with the admin's per-user maximums (`[limits]` in
  helper.toml, parsed by config.py) (QuotaExceeded);
- `with_maximums` makes every configured maximum part of what is written: a limit the caller
  did not ask for gets the maximum itself, so `{"cpus": 1.0}` cannot yield a cgroup without
  the admin's memory and pids ceilings.

An "unlimited" request (memory 0, memory_swap -1, pids -1) exceeds every configured maximum:
an admin who sets a ceiling means it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping

import pyctr_bus

if TYPE_CHECKING:
    from . import config

# Below this the container's own runtime cannot start (docker's floor is the same 6 MiB).
MIN_MEMORY = 6 * 1024 * 1024
CPU_PERIOD_US = 100_000
MIN_CPUS = 0.01


class LimitError(Exception):
    """A refused or failed limit; `kind` picks the helper error it becomes."""

    kind = "failed"


class InvalidLimit(LimitError):
    kind = "invalid"


class LimitAboveMaximum(LimitError):
    kind = "quota"


class LimitUnsupported(LimitError):
    """The host cannot enforce this limit (a controller or swap accounting is missing)."""

    kind = "unsupported"


@dataclass(frozen=True)
class LimitRequest:
    """A validated request. None in a field: not requested. `*_unlimited` flags: asked for none.

    memory and memory_swap are bytes (memory_swap is memory plus swap, as docker means it);
    cpus is cores; pids is a count.
    """

    memory: int | None = None
    memory_unlimited: bool = False
    memory_swap: int | None = None
    memory_swap_unlimited: bool = False
    cpus: float | None = None
    pids: int | None = None
    pids_unlimited: bool = False

    @property
    def wants_memory(self) -> bool:
        return self.memory is not None or self.memory_unlimited or self.wants_swap

    @property
    def wants_swap(self) -> bool:
        return self.memory_swap is not None or self.memory_swap_unlimited

    @property
    def wants_cpu(self) -> bool:
        return self.cpus is not None

    @property
    def wants_pids(self) -> bool:
        return self.pids is not None or self.pids_unlimited

    @property
    def cpu_quota_us(self) -> int:
        assert self.cpus is not None
        return max(1000, round(self.cpus * CPU_PERIOD_US))

    def describe(self) -> str:
        """A short form for audit lines: memory=67108864 cpus=0.5 pids=max."""
        parts = []
        if self.wants_memory:
            parts.append(f"memory={'max' if self.memory is None else self.memory}")
        if self.wants_swap:
            parts.append(f"memory_swap={'max' if self.memory_swap is None else self.memory_swap}")
        if self.cpus is not None:
            parts.append(f"cpus={self.cpus:g}")
        if self.wants_pids:
            parts.append(f"pids={'max' if self.pids is None else self.pids}")
        return " ".join(parts)


def parse_limits(options: Mapping[str, Any], cpu_count: int | None = None) -> LimitRequest:
    """The caller's a{sv} (values already unwrapped from their Variants) as a LimitRequest."""
    if not isinstance(options, Mapping):
        raise InvalidLimit("limits must be a dictionary")
    for key, value in options.items():
        if key not in pyctr_bus.LIMIT_OPTIONS:
            raise InvalidLimit(f"unknown limit {key!r}")
        want = pyctr_bus.LIMIT_OPTIONS[key]
        ok = (isinstance(value, float) if want == "d"
              else isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise InvalidLimit(f"limit {key!r} has the wrong type")
    if not options:
        raise InvalidLimit("no limit requested")

    limits = LimitRequest()
    if "memory" in options:
        memory = options["memory"]
        if memory == 0:
            limits = replace(limits, memory_unlimited=True)
        elif MIN_MEMORY <= memory < 2**62:
            limits = replace(limits, memory=memory)
        else:
            raise InvalidLimit(f"memory must be at least {MIN_MEMORY >> 20} MiB and below 4 EiB "
                               "(or 0 for unlimited)")
    if "memory_swap" in options:
        swap = options["memory_swap"]
        if "memory" not in options or limits.memory_unlimited:
            raise InvalidLimit("memory_swap needs a memory limit as well")
        if swap == -1:
            limits = replace(limits, memory_swap_unlimited=True)
        elif limits.memory is not None and limits.memory <= swap < 2**62:
            limits = replace(limits, memory_swap=swap)
        else:
            raise InvalidLimit("memory_swap must be -1 (unlimited) or at least the memory limit")
    if "cpus" in options:
        cpus = options["cpus"]
        cores = cpu_count or os.cpu_count() or 1
        if not (math.isfinite(cpus) and MIN_CPUS <= cpus <= cores):
            raise InvalidLimit(f"cpus must be between {MIN_CPUS} and {cores} (the host's cores)")
        limits = replace(limits, cpus=cpus)
    if "pids" in options:
        pids = options["pids"]
        if pids == -1:
            limits = replace(limits, pids_unlimited=True)
        elif 1 <= pids <= 2**22:  # PID_MAX_LIMIT
            limits = replace(limits, pids=pids)
        else:
            raise InvalidLimit("pids must be -1 (unlimited) or between 1 and 4194304")
    return limits


def check_maximums(request: "LimitRequest", maximums: "config.Limits") -> None:
    """Raise LimitAboveMaximum naming the first limit over the user's ceiling (None: no ceiling).

    helper.toml has no separate swap ceiling: a memory ceiling also bounds memory+swap, so
    a user cannot trade a refused --memory for an unlimited --memory-swap.
    """
    def over(asked: float | None, unlimited: bool, ceiling: float | None) -> bool:
        return ceiling is not None and (unlimited or (asked is not None and asked > ceiling))

    if request.wants_memory and over(request.memory, request.memory is None, maximums.max_memory):
        raise LimitAboveMaximum(
            f"--memory above the administrator's maximum of {maximums.max_memory} bytes")
    if request.wants_swap and over(request.memory_swap, request.memory_swap is None,
                                   None if maximums.max_memory is None else 2 * maximums.max_memory):
        raise LimitAboveMaximum(f"--memory-swap above the administrator's maximum of "
                                f"{2 * maximums.max_memory} bytes (twice the memory maximum)")
    if over(request.cpus, False, maximums.max_cpus):
        raise LimitAboveMaximum(f"--cpus above the administrator's maximum of {maximums.max_cpus:g}")
    if request.wants_pids and over(request.pids, request.pids is None, maximums.max_pids):
        raise LimitAboveMaximum(
            f"--pids-limit above the administrator's maximum of {maximums.max_pids}")


def with_maximums(request: "LimitRequest", maximums: "config.Limits",
                  swap_accounted: bool = False) -> "LimitRequest":
    """`request` checked against the maximums, with every configured maximum made mandatory:
    min(requested, maximum) where asked, the maximum itself where not (LimitAboveMaximum
    first if the request is over one). The memory maximum also bounds memory+swap (twice it,
    as check_maximums reads it), written where the host accounts swap."""
    check_maximums(request, maximums)
    if maximums.max_memory is not None:
        asked = request.memory
        request = replace(request, memory=maximums.max_memory if asked is None
                          else min(asked, maximums.max_memory))
        if swap_accounted and request.memory_swap is None:
            request = replace(request, memory_swap=2 * maximums.max_memory)
    if maximums.max_cpus is not None:
        asked_cpus = request.cpus
        request = replace(request, cpus=maximums.max_cpus if asked_cpus is None
                          else min(asked_cpus, maximums.max_cpus))
    if maximums.max_pids is not None:
        asked_pids = request.pids
        request = replace(request, pids=maximums.max_pids if asked_pids is None
                          else min(asked_pids, maximums.max_pids))
    return request
