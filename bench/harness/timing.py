"""Start latency with hyperfine, interleaved across cases because the machine is noisy.

hyperfine runs all of one command's runs before the next command's, so a burst of load
from a neighbour would land on one case only. Instead each round runs a short block of
every case (warm-up first), rotating the order, and the samples of all rounds are pooled.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .host import BenchUser, Unavailable, last_line, run
from .results import Case

UNIFIED = Path("/sys/fs/cgroup/unified")


@dataclass(frozen=True)
class Command:
    name: str
    argv: list[str]
    pyctr: bool = False
    # crun 1.8.1 refuses this hybrid-cgroup host; it runs fine in a mount namespace where
    # an empty tmpfs hides the controller-less cgroup2 tree (issue 7).
    hide_unified_cgroup: bool = False


def as_user(user: BenchUser, command: Command, argv: list[str]) -> list[str]:
    inner = user.argv(argv)
    if command.hide_unified_cgroup and os.path.ismount(UNIFIED):
        # Root makes the private mount namespace, then drops to the user inside it.
        script = f'mount -t tmpfs -o size=4k,mode=0555 pyctr-bench {UNIFIED} && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                *inner]
    return inner


def probe(user: BenchUser, command: Command) -> str | None:
    """Run once outside hyperfine; the reason it cannot be measured, or None."""
    try:
        proc = run(as_user(user, command, command.argv), timeout=60, cwd=user.home)
    except Unavailable as e:
        return str(e)
    if proc.returncode != 0:
        return f"exit {proc.returncode}: {last_line(proc.stderr or proc.stdout)}"
    return None


def measure(user: BenchUser, group: str, commands: list[Command], rounds: int,
            runs_per_round: int, warmup: int) -> list[Case]:
    cases = {c.name: Case(group, c.name, pyctr=c.pyctr,
                          detail={"argv": c.argv, "rounds": rounds,
                                  "runs_per_round": runs_per_round, "warmup": warmup})
             for c in commands}
    for c in commands:
        cases[c.name].unavailable = probe(user, c)
    live = [c for c in commands if cases[c.name].unavailable is None]
    export = user.home / "hyperfine.json"
    for r in range(rounds):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for c in order:
            case = cases[c.name]
            if case.unavailable:
                continue
            hf = ["hyperfine", "--shell=none", "--style", "none", "--warmup", str(warmup),
                  "--runs", str(runs_per_round), "--export-json", str(export),
                  shlex.join(c.argv)]
            try:
                proc = run(as_user(user, c, hf), timeout=300, cwd=user.home)
            except Unavailable as e:
                case.unavailable, case.samples = str(e), []
                continue
            if proc.returncode != 0:
                case.unavailable = f"failed in round {r + 1}: {last_line(proc.stderr)}"
                case.samples = []
                continue
            times = json.loads(export.read_text())["results"][0]["times"]
            case.samples.extend(t * 1000 for t in times)
    export.unlink(missing_ok=True)
    return [cases[c.name] for c in commands]
