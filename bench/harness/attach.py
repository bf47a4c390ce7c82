"""Helper Attach/Detach latency, measured by bench/helper_attach.py (the helper's own
benchmark script) and shown in the same table. The harness runs it while it holds the
machine-wide lock and a helper serves the bus; the script prints one JSON document.
"""

from __future__ import annotations

import json
import os

from .host import PYCTR_PYTHON, REPO, BenchUser, Unavailable, last_line, run
from .results import Case

SCRIPT = REPO / "bench" / "helper_attach.py"
LEASE_COUNTS = (10, 500)


def _na(reason: str) -> list[Case]:
    return [Case("attach", f"{op} p50, {n} live leases", compare=False, unavailable=reason)
            for n in LEASE_COUNTS for op in ("attach", "detach")]


def measure(user: BenchUser, quick: bool, helper_unavailable: str | None) -> list[Case]:
    if not SCRIPT.exists():
        return _na("n/a (not built yet): bench/helper_attach.py does not exist")
    if helper_unavailable is not None:
        return _na(helper_unavailable)
    env = {**user.env(), "PYCTR_BENCH_USER": user.name, "PYCTR_BENCH_LOCK_HELD": "1"}
    env = {**os.environ, **env}
    argv = [str(PYCTR_PYTHON), str(SCRIPT)] + (["--quick"] if quick else [])
    try:
        proc = run(argv, timeout=300, env=env)
    except Unavailable as e:
        return _na(str(e))
    if proc.returncode != 0:
        return _na(f"helper_attach.py exit {proc.returncode}: {last_line(proc.stderr)}")
    try:
        return parse(json.loads(proc.stdout))
    except (ValueError, KeyError, TypeError) as e:
        return _na(f"helper_attach.py printed unexpected JSON ({e!r})")


def parse(doc: dict) -> list[Case]:
    """Expected: {"leases": {"10": {"attach": {"p50_ms", "p99_ms"}, "detach": {...}},
    "500": {...}}, "helper_rss_kib": {...}}."""
    cases = []
    for n in LEASE_COUNTS:
        for op in ("attach", "detach"):
            stats = doc["leases"][str(n)][op]
            cases.append(Case("attach", f"{op} p50, {n} live leases", compare=False,
                              given_median=float(stats["p50_ms"]),
                              given_spread=f"p99 {float(stats['p99_ms']):.2f}",
                              detail={"raw": stats}))
    for key, kib in doc.get("helper_rss_kib", {}).items():
        cases.append(Case("mem-net", f"pyctr-helper, {key} (helper_attach.py)", compare=False,
                          samples=[float(kib) / 1024]))
    return cases
