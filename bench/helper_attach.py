"""pyctr-helper Attach/Detach latency and memory, with 10 and with 500 live leases.

    sudo /opt/pyctr/bin/python bench/helper_attach.py [--quick] [--user NAME] [--runs N]

Runs as root and drives the helper as an unprivileged user (env PYCTR_BENCH_USER, else
--user, else pyctr-test-a) through tests/helper/client.py, over the real system bus:
1. Takes /run/pyctr-tests.lock unless PYCTR_BENCH_LOCK_HELD=1 (the bench harness holds it).
2. Grants the user the org.pyctr.* polkit actions (a rules.d file, removed at the end).
3. Replaces whatever helper serves the bus with one of its own, on a bench config: the default
   network is a /24 and the default quota 32 interfaces, too small for 500 leases, so the
   config has a /16 network "pyctr" on pyctr0 and a quota of 2000. At the end that helper is
   stopped with SIGTERM (removing every veth and rule) and none is left running: the next call
   D-Bus-activates a fresh one.
4. For 10 and then 500 live leases (each a `unshare -Urn sleep infinity` process with one
   published port): RUNS Attach+Detach cycles (one published port, host port chosen by the
   helper) on one bus connection, timed by the client around each call.
5. Helper RSS idle (after start) and while holding 500 leases.

Prints one JSON document on stdout:
    {"leases": {"10": {"attach": {"p50_ms", "p99_ms", "n"}, "detach": {...}}, "500": {...}},
     "ratio_500_over_10": {"attach": r, "detach": r}, "target_ratio": 1.5,
     "helper_rss_kib": {"idle": kib, "500 leases": kib}}
Progress goes to stderr. --quick: 100 runs instead of 500 (the lease counts stay 10 and 500).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pwd
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PREFIX = Path(os.environ.get("PYCTR_PREFIX", "/opt/pyctr"))
PYTHON = str(PREFIX / "bin" / "python")
HELPER = str(PREFIX / "bin" / "pyctr-helper")
CLIENT = str(REPO / "tests" / "helper" / "client.py")
LOCK = Path("/run/pyctr-tests.lock")
RULES = Path("/etc/polkit-1/rules.d/10-pyctr-bench-attach.rules")
BUS_NAME = "org.pyctr.Helper1"
CONFIG = """
[networks.pyctr]
bridge = "pyctr0"
subnet = "{subnet}"

[quotas.default]
max_interfaces = 2000
max_ports = 4000
"""
PORT_OPTIONS = {"ports": {"__v__": ["a(sqqs)", [["", 0, 80, "tcp"]]]}}


def log(msg: str) -> None:
    print(f"helper_attach: {msg}", file=sys.stderr, flush=True)


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"helper_attach: timed out waiting for {what}")
        time.sleep(0.05)


def bus_owner_pid() -> int | None:
    out = subprocess.run(["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus",
                          "/", "org.freedesktop.DBus.GetConnectionUnixProcessID",
                          f"string:{BUS_NAME}"], capture_output=True, text=True)
    return int(out.stdout.split()[-1]) if out.returncode == 0 else None


class User:
    def __init__(self, name: str) -> None:
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir

    def client(self, *args: str, timeout: float = 1800) -> dict:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.home, "USER": self.name,
               "LANG": "C.UTF-8"}
        out = subprocess.run([PYTHON, CLIENT, *args], user=self.uid, group=self.gid,
                             extra_groups=[], env=env, cwd="/", capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise SystemExit(f"helper_attach: client {args[0]} failed: {out.stderr.strip()[-500:]}")
        return json.loads(out.stdout)


def grant(user: User) -> None:
    RULES.write_text(
        "// Written by bench/helper_attach.py; removed when it ends.\n"
        "polkit.addRule(function(action, subject) {\n"
        f'    if (action.id.indexOf("org.pyctr.") == 0 && subject.user == "{user.name}") {{\n'
        "        return polkit.Result.YES;\n    }\n});\n")
    RULES.chmod(0o644)
    probe = f"exec pkcheck --action-id org.pyctr.network.attach --process $$"
    wait_until(lambda: subprocess.run(["sh", "-c", probe], user=user.uid, group=user.gid,
                                      capture_output=True).returncode == 0,
               15, "polkitd to load the bench rule")


def free_subnet() -> str:
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True).stdout
    routes = "\n".join(l for l in out.splitlines() if "dev pyctr0" not in l)
    for n in range(88, 100):
        if f"10.{n}." not in routes:
            return f"10.{n}.0.0/16"
    raise SystemExit("helper_attach: no free 10.x.0.0/16 for the bench network")


@contextlib.contextmanager
def bench_helper(config: Path, log_path: Path):
    old = bus_owner_pid()
    if old is not None:
        log(f"stopping the helper on the bus (pid {old}) to run one with the bench config")
        os.kill(old, signal.SIGTERM)
        wait_until(lambda: bus_owner_pid() is None, 30, "the old helper to leave the bus")
    proc = subprocess.Popen([HELPER, "--config", str(config), "--log", str(log_path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: bus_owner_pid() == proc.pid or proc.poll() is not None, 30,
                   "the bench helper to own the bus name")
        if proc.poll() is not None:
            raise SystemExit(f"helper_attach: helper exited {proc.returncode}; see {log_path}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stats(values: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(values), 3), "p99_ms": round(percentile(values, 0.99), 3),
            "n": len(values)}


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--user", default=os.environ.get("PYCTR_BENCH_USER", "pyctr-test-a"))
    p.add_argument("--runs", type=int)
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("helper_attach: run as root (it starts the helper and drives a user)")
    runs = args.runs or (100 if args.quick else 500)
    user = User(args.user)
    lock = None
    if os.environ.get("PYCTR_BENCH_LOCK_HELD") != "1":
        lock = open(LOCK, "w")
        log("waiting for /run/pyctr-tests.lock")
        fcntl.flock(lock, fcntl.LOCK_EX)
    fillers: list[int] = []
    result: dict = {"leases": {}, "helper_rss_kib": {}, "target_ratio": 1.5, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="pyctr-bench-attach-") as tmp:
        config = Path(tmp) / "helper.toml"
        config.write_text(CONFIG.format(subnet=free_subnet()))
        os.chmod(tmp, 0o755)
        try:
            grant(user)
            with bench_helper(config, Path(tmp) / "helper.log") as helper:
                probe = user.client("spawn")["pid"]
                fillers.append(probe)
                time.sleep(1)  # let start-up allocations settle before the idle figure
                result["helper_rss_kib"]["idle"] = rss_kib(helper.pid)
                held = 0
                for count in (10, 500):
                    log(f"filling to {count} live leases")
                    filled = user.client("fill", json.dumps({"count": count - held,
                                                             "options": PORT_OPTIONS}))
                    fillers += filled["pids"]
                    if filled["errors"]:
                        raise SystemExit(f"helper_attach: fill failed: {filled['errors'][:3]}")
                    held = count
                    log(f"{runs} attach/detach cycles with {count} live leases")
                    cyc = user.client("cycles", json.dumps({"pid": probe, "count": runs,
                                                            "options": PORT_OPTIONS}))
                    if cyc["errors"]:
                        raise SystemExit(f"helper_attach: cycles failed: {cyc['errors'][:3]}")
                    result["leases"][str(count)] = {"attach": stats(cyc["attach_ms"]),
                                                    "detach": stats(cyc["detach_ms"])}
                    if count == 500:
                        result["helper_rss_kib"]["500 leases"] = rss_kib(helper.pid)
                kill_all(fillers)
        finally:
            kill_all(fillers)
            RULES.unlink(missing_ok=True)
            if lock is not None:
                lock.close()
    l10, l500 = result["leases"]["10"], result["leases"]["500"]
    result["ratio_500_over_10"] = {op: round(l500[op]["p50_ms"] / l10[op]["p50_ms"], 3)
                                   for op in ("attach", "detach")}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
