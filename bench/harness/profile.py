"""How much to measure: the full run for figures, --quick for a smoke run while developing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    rounds: int             # interleaved hyperfine rounds per start-latency case
    runs: int               # timed runs per round
    warmup: int             # untimed runs before each round
    iperf_runs: int         # interleaved iperf3 runs per throughput case
    iperf_seconds: int      # length of one iperf3 run (the first second is omitted)


FULL = Profile(rounds=6, runs=10, warmup=2, iperf_runs=4, iperf_seconds=5)
QUICK = Profile(rounds=2, runs=3, warmup=1, iperf_runs=1, iperf_seconds=2)
