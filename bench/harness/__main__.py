"""bench/run.sh's harness: build the world, measure, clean up, print, write JSON.

Sections (--only): start (no-network start latency), network (start with a published
port, forwarded TCP, container to outside), memory, helper (Attach/Detach latency).
The sections that use pyctr-helper run while this process holds /run/pyctr-tests.lock.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import sys
import time
import traceback
from datetime import datetime, timezone

from . import attach, memory, start, throughput, world
from .helper import HelperSession, cleanup_stale, helper_session
from .host import PYCTR, REPO, RUNTIME_DIR, WORK, BenchUser, Unavailable, run
from .profile import FULL, QUICK, Profile
from .results import Case, Target, header, table, verdicts, write_json

SECTIONS = ("start", "network", "memory", "helper")
RESULTS = REPO / "bench" / "results"
LOCK_TIMEOUT = 180.0

TARGETS = [
    Target("no-network start <= 0.25x podman", "start-none", start.PYCTR_NONE,
           start.PODMAN_NONE, 0.25, True),
    Target("no-network start <= 4x crun", "start-none", start.PYCTR_NONE, start.CRUN, 4, True),
    Target("start with network + port <= 0.4x podman", "start-port", start.PYCTR_PORT,
           start.PODMAN_PORT, 0.4, True),
    *(Target(f"forwarded TCP ({where}) >= {bound}x {short}", group, throughput.PYCTR_FWD,
             anchor, bound, False)
      for group, where in (("fwd-host", "host client"), ("fwd-netns", "netns client"))
      for anchor, short, bound in ((throughput.ROOTLESSKIT, "rootlesskit builtin", 1.2),
                                   (throughput.SLIRP_HANDLER, "slirp4netns port handler", 2.5))),
    Target("container to outside >= 5x slirp4netns", "outside", throughput.PYCTR_OUT,
           throughput.SLIRP_OUT, 5, False),
    Target("attach p50 at 500 leases <= 1.5x at 10", "attach", "attach p50, 500 live leases",
           "attach p50, 10 live leases", 1.5, True),
]


class Interrupted(Exception):
    pass


def _on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def free_ports(count: int, start_at: int = 18080) -> list[int]:
    """Host ports nobody holds now, from a range the tests do not use."""
    ports = []
    for port in range(start_at, start_at + 1000):
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise Unavailable("no free host ports in 18080-19079")


def versions() -> dict[str, str]:
    out = {}
    for tool, argv in (("hyperfine", ["hyperfine", "--version"]), ("iperf3", ["iperf3", "-v"]),
                       ("bwrap", ["bwrap", "--version"]), ("runc", ["runc", "--version"]),
                       ("crun", ["crun", "--version"]), ("podman", ["podman", "--version"]),
                       ("slirp4netns", ["slirp4netns", "--version"])):
        try:
            proc = run(argv, timeout=10)
            out[tool] = (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (Unavailable, IndexError):
            out[tool] = "missing"
    try:
        commit = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], timeout=10)
        out["pyctr"] = commit.stdout.strip() or "?"
    except Unavailable:
        out["pyctr"] = "?"
    return out


def measure(user: BenchUser, profile: Profile, sections: set[str], args: argparse.Namespace,
            meta: dict, cases: list[Case]) -> None:
    """Append to `cases` as sections finish, so an interrupted run still reports them."""
    w = world.setup(user)
    timings = meta["section_seconds"] = {}
    t0 = time.monotonic()
    if "start" in sections:
        print("bench: start latency, no network", file=sys.stderr)
        cases.extend(start.no_network(w, profile))
        timings["start"] = round(time.monotonic() - t0)
    if not sections & {"network", "memory", "helper"}:
        return
    print("bench: waiting for /run/pyctr-tests.lock", file=sys.stderr)
    session = None
    try:
        with helper_session(user, args.lock_timeout) as session:
            _with_helper(w, session, profile, sections, args, meta, cases)
    finally:
        if session is not None and session.left_behind:
            meta["helper_left_behind"] = session.left_behind


def _with_helper(w: world.World, session: HelperSession, profile: Profile,
                 sections: set[str], args: argparse.Namespace, meta: dict,
                 cases: list[Case]) -> None:
    timings = meta["section_seconds"]
    try:
        session.start()
        no_helper = None
    except Unavailable as e:
        no_helper = f"helper unavailable: {e}"
    meta["helper"] = {"pid": session.pid, "started_by_bench": session.started_here,
                      "unavailable": no_helper}
    ports = free_ports(6)
    helper_idle = memory.helper_case("pyctr-helper, idle (before any container)",
                                     session.pid)
    if "network" in sections:
        t0 = time.monotonic()
        print("bench: start latency with a published port", file=sys.stderr)
        cases.extend(start.published_port(w, profile, ports[0], ports[1], no_helper))
        print("bench: forwarded TCP throughput", file=sys.stderr)
        cases.extend(throughput.forwarded(
            w, profile, {"rootlesskit": ports[2], "slirp4netns": ports[3],
                         "pyctr": ports[4]}, no_helper))
        print("bench: container to outside", file=sys.stderr)
        cases.extend(throughput.outside(w, profile, no_helper))
        timings["network"] = round(time.monotonic() - t0)
    if "memory" in sections:
        t0 = time.monotonic()
        print("bench: memory", file=sys.stderr)
        cases.extend([helper_idle, *memory.measure(w, ports[5], session.pid, no_helper)])
        timings["memory"] = round(time.monotonic() - t0)
    if "helper" in sections:
        t0 = time.monotonic()
        print("bench: helper attach/detach", file=sys.stderr)
        cases.extend(attach.measure(w.user, args.quick, no_helper))
        timings["helper"] = round(time.monotonic() - t0)


def leftovers(user: BenchUser) -> list[str]:
    """What this harness could have left: checked on the host after cleanup."""
    found = []
    links = run(["ip", "-o", "link", "show"], timeout=10).stdout
    found += [f"link {l.split(':')[1].strip()}" for l in links.splitlines() if "pyctrb-" in l]
    netns = run(["ip", "netns", "list"], timeout=10).stdout
    found += [f"netns {l.split()[0]}" for l in netns.splitlines() if l.startswith("pyctrb-")]
    found += [f"directory {d}" for d in (WORK, RUNTIME_DIR) if d.exists()]
    stray = world.bench_processes(user)
    if stray:
        found.append(f"processes of {user.name}: {sorted(stray)}")
    if world.TUN_MODE_FILE.exists():
        found.append("/dev/net/tun mode not restored")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/run.sh")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few iterations")
    parser.add_argument("--lock-timeout", type=float, default=LOCK_TIMEOUT, metavar="S",
                        help="how long to wait for /run/pyctr-tests.lock (default %(default)s)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {','.join(SECTIONS)}")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"unknown section in --only: {args.only}")
    profile = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)

    user = BenchUser.lookup()
    started = datetime.now(timezone.utc)
    stamp = started.strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    meta = {"started": started.isoformat(timespec="seconds"), "quick": args.quick,
            "sections": sorted(sections), "profile": profile.__dict__,
            "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                     "loadavg_start": os.getloadavg()},
            "pyctr": str(PYCTR), "versions": versions()}
    cleanup_stale()
    stale = world.cleanup(user)
    cases: list[Case] = []
    failure = None
    try:
        measure(user, profile, sections, args, meta, cases)
    except (Unavailable, Interrupted, KeyboardInterrupt) as e:
        failure = f"the run stopped early: {e or type(e).__name__}"
    except Exception as e:       # a harness bug: still clean up and report what was measured
        traceback.print_exc()
        failure = f"harness error: {e!r}"
    finally:
        # Cleanup runs to its end: a second signal (or Ctrl-C) must not cut it short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        helper_log = WORK / "helper.log"
        if helper_log.exists():     # the helper this run started: its log outlives the run
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(helper_log, RESULTS / f"bench-{stamp}-helper.log")
            meta["helper_log"] = f"bench/results/bench-{stamp}-helper.log"
        problems = world.cleanup(user)
    meta["loadavg_end"] = os.getloadavg()
    meta["seconds"] = round((datetime.now(timezone.utc) - started).total_seconds())
    left = leftovers(user) + [f"host network state changed while the bench held the lock: {l}"
                              for l in meta.get("helper_left_behind", [])]
    meta.update(cleanup_problems=stale + problems, leftovers=left, failure=failure)

    print(header(meta))
    print(table(cases))
    text, judged = verdicts(TARGETS, cases)
    print(text)
    out = RESULTS / f"bench-{stamp}.json"
    write_json(out, meta, cases, judged)
    (RESULTS / "latest.json").write_text(out.read_text())
    print(f"\nJSON: {out.relative_to(REPO)}  ({meta['seconds']}s, load "
          f"{meta['host']['loadavg_start'][0]:.2f} -> {meta['loadavg_end'][0]:.2f})")
    for line in ([failure] if failure else []) + problems + left:
        print(f"bench: WARNING: {line}", file=sys.stderr)
    return 1 if failure or left else 0


if __name__ == "__main__":
    sys.exit(main())
