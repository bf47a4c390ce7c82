"""What a run measured (cases in groups), the targets, the table and the JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Group:
    key: str
    title: str
    unit: str
    higher_is_better: bool


GROUPS = {g.key: g for g in (
    Group("start-none", "start, no network: `CMD /bin/true` wall time", "ms", False),
    Group("start-port", "start with a network and one published port", "ms", False),
    Group("fwd-host", "TCP through a published port, iperf3 client on the host (127.0.0.1)",
          "Gbit/s", True),
    Group("fwd-netns", "TCP through a published port, iperf3 client in another netns",
          "Gbit/s", True),
    Group("outside", "TCP from the container to outside (iperf3 server in a netns)",
          "Gbit/s", True),
    Group("attach", "helper Attach/Detach latency (bench/helper_attach.py)", "ms", False),
    Group("mem-none", "memory per running container, no network (RSS of the runtime's "
          "own processes)", "MiB", False),
    Group("mem-net", "memory per running container, network + published port", "MiB", False),
)}


@dataclass
class Case:
    """One line of the table. Either samples, or a summary given by a sub-tool, or why not."""

    group: str
    name: str
    pyctr: bool = False             # the row the group's ratios are taken against
    samples: list[float] = field(default_factory=list)
    given_median: float | None = None
    given_spread: str | None = None
    unavailable: str | None = None
    compare: bool = True            # False: shown for information, no ratio to pyctr
    detail: dict = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        if self.unavailable:
            return None
        if self.given_median is not None:
            return self.given_median
        return statistics.median(self.samples) if self.samples else None

    @property
    def spread(self) -> str:
        if self.given_spread is not None:
            return self.given_spread
        n = len(self.samples)
        if n < 8:       # too few for quartiles: the whole range
            return f"{fmt(min(self.samples))}..{fmt(max(self.samples))} n={n}" if n > 1 \
                else f"n={n}"
        q1, _, q3 = statistics.quantiles(self.samples, n=4)
        return f"IQR {fmt(q1)}..{fmt(q3)} n={n}"


@dataclass(frozen=True)
class Target:
    """`subject` / `anchor` (medians, same group) must be at most or at least `bound`."""

    text: str
    group: str
    subject: str
    anchor: str
    bound: float
    at_most: bool


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def find(cases: list[Case], group: str, name: str) -> Case | None:
    return next((c for c in cases if c.group == group and c.name == name), None)


def judge(target: Target, cases: list[Case]) -> tuple[str, float | None, str]:
    """("PASS" | "FAIL" | "n/a", ratio, why n/a)."""
    subject, anchor = find(cases, target.group, target.subject), find(cases, target.group,
                                                                        target.anchor)
    for case, role in ((subject, target.subject), (anchor, target.anchor)):
        if case is None:
            return "n/a", None, f"{role}: not measured in this run"
        if case.median is None:
            return "n/a", None, f"{case.name}: {case.unavailable or 'no samples'}"
    if anchor.median == 0:
        return "n/a", None, f"{anchor.name}: measured 0"
    ratio = subject.median / anchor.median
    ok = ratio <= target.bound if target.at_most else ratio >= target.bound
    return ("PASS" if ok else "FAIL"), ratio, ""


def header(meta: dict) -> str:
    v = meta["versions"]
    return (f"pyctr {v['pyctr']} on {meta['host']['kernel']}, {meta['host']['cpus']} CPUs, "
            f"load {meta['host']['loadavg_start'][0]:.2f} at start"
            f"{' (--quick)' if meta['quick'] else ''}\nanchors: " +
            ", ".join(v[k] for k in ("podman", "crun", "runc", "bwrap", "slirp4netns",
                                     "iperf3", "hyperfine")))


def table(cases: list[Case]) -> str:
    lines = []
    width = max((len(c.name) for c in cases), default=20) + 2
    for group in GROUPS.values():
        rows = [c for c in cases if c.group == group.key]
        if not rows:
            continue
        better = "higher" if group.higher_is_better else "lower"
        lines.append(f"\n{group.title}  [{group.unit}, {better} is better]")
        ref = next((c for c in rows if c.pyctr and c.median is not None), None)
        lines.append(f"  {'case':<{width}}{'median':>10}  {'spread':<22}{'pyctr ÷ case':>12}")
        for c in rows:
            if c.median is None:
                lines.append(f"  {c.name:<{width}}{'n/a':>10}  ({c.unavailable})")
                continue
            if c.pyctr:
                ratio = "(pyctr)"
            elif not c.compare:
                ratio = ""
            elif ref is not None and c.median:
                ratio = f"{ref.median / c.median:.2f}×"
            else:
                ratio = "-"
            lines.append(f"  {c.name:<{width}}{fmt(c.median):>10}  {c.spread:<22}{ratio:>12}")
    return "\n".join(lines)


def verdicts(targets: list[Target], cases: list[Case]) -> tuple[str, list[dict]]:
    lines, out = ["\ntargets"], []
    for t in targets:
        outcome, ratio, why = judge(t, cases)
        shown = f"{ratio:.2f}×" if ratio is not None else why
        lines.append(f"  {outcome:<5} {t.text:<58} {shown}")
        out.append({**asdict(t), "outcome": outcome, "ratio": ratio, "why": why or None})
    return "\n".join(lines), out


def write_json(path: Path, meta: dict, cases: list[Case], judged: list[dict]) -> None:
    doc = {
        "meta": meta,
        "groups": {k: asdict(g) for k, g in GROUPS.items()},
        "cases": [{**asdict(c), "median": c.median, "spread": c.spread} for c in cases],
        "targets": judged,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
