"""TCP throughput with iperf3: through a published port, and from a container to outside.

Servers and clients run as the bench user. "Outside" is an iperf3 server in a network
namespace of ours (OUTSIDE_NS), reached through the host's routing: no real host is
ever contacted. Runs are interleaved across cases, like the start-latency rounds.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

from .host import PYCTR, BenchUser, Unavailable, last_line, run, stop_process, wait_for
from .profile import Profile
from .results import Case
from .world import CLIENT_NS, IMAGE_IPERF3, OUTSIDE_NS, World

IPERF3_PORT = 5201
ROOTLESSKIT = "podman, rootlesskit builtin port driver"
SLIRP_HANDLER = "podman, slirp4netns port handler"
PYCTR_FWD = "pyctr run --network bridge -p"
SLIRP_OUT = "podman, slirp4netns"
PYCTR_OUT = "pyctr run --network bridge"
READY_TIMEOUT = 20.0


def iperf3_client(host: str, port: int, seconds: int) -> list[str]:
    # -O 1 leaves TCP slow start out of the figure (not in the one-second warm-up).
    omit = ["-O", "1"] if seconds > 1 else []
    return ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), *omit, "-J"]


def gbits(proc: subprocess.CompletedProcess) -> float:
    """The receiver's rate from iperf3 -J output; Unavailable with iperf3's reason."""
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise Unavailable(f"iperf3 exit {proc.returncode}: "
                          f"{last_line(proc.stderr or proc.stdout)}")
    if "error" in doc:
        raise Unavailable(f"iperf3: {doc['error']}")
    return doc["end"]["sum_received"]["bits_per_second"] / 1e9


def measure_once(argv: list[str], seconds: int, cwd) -> float:
    return gbits(run(argv, timeout=seconds + 30, cwd=cwd))


class WatchedServer:
    """A server process this harness started; says why it died, to every client that asks."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self._said: str | None = None

    def death(self) -> str | None:
        if self.proc.poll() is None:
            return None
        if self._said is None:
            self._said = self.proc.stderr.read() if self.proc.stderr else ""
        return f"the server exited {self.proc.returncode}: {last_line(self._said)}"


def first_success(argv: list[str], cwd, server: WatchedServer | None) -> None:
    """Warm-up that doubles as readiness: a server behind a port forwarder may accept the
    connection before it listens itself, so retry until one short test completes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            measure_once(argv, 1, cwd)
            return
        except Unavailable:
            died = server.death() if server is not None else None
            if died:
                raise Unavailable(died)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@dataclass
class Contender:
    """One case: how to start its server (or nothing) and the client argv for each run."""

    case: Case
    client: list[str]
    warmup_client: list[str]
    server: WatchedServer | None = None


def _interleave(user: BenchUser, contenders: list[Contender], runs: int, seconds: int) -> None:
    live = []
    for c in contenders:
        if c.case.unavailable:
            continue
        try:
            first_success(c.warmup_client, user.home, c.server)
            live.append(c)
        except Unavailable as e:
            c.case.unavailable = f"warm-up failed: {e}"
    for r in range(runs):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for c in order:
            try:
                c.case.samples.append(measure_once(c.client, seconds, user.home))
            except Unavailable as e:
                c.case.detail.setdefault("failed_runs", []).append(str(e))
    for c in live:
        if not c.case.samples:
            c.case.unavailable = c.case.detail["failed_runs"][-1]


def _start_podman_server(user: BenchUser, name: str, network: str, port: int) -> str | None:
    proc = run(user.argv(["podman", "run", "-d", "--name", name, "--network", network,
                          "-p", f"{port}:{IPERF3_PORT}", IMAGE_IPERF3,
                          "iperf3", "-s", "-p", str(IPERF3_PORT)]), timeout=60, cwd=user.home)
    return None if proc.returncode == 0 else f"podman run -d: {last_line(proc.stderr)}"


def forwarded(world: World, profile: Profile, ports: dict[str, int],
              helper_unavailable: str | None) -> list[Case]:
    """iperf3 -s in a container behind a published port; clients on the host and in
    CLIENT_NS (which reaches the host's address on its veth: the PREROUTING path)."""
    user = world.user
    servers = [
        (ROOTLESSKIT, "pyctrb-rlk",
         "slirp4netns:port_handler=rootlesskit", ports["rootlesskit"]),
        (SLIRP_HANDLER, "pyctrb-slirp",
         "slirp4netns:port_handler=slirp4netns", ports["slirp4netns"]),
    ]
    started: dict[str, str | None] = {}
    for label, name, network, port in servers:
        started[label] = _start_podman_server(user, name, network, port)
    pyctr_label = PYCTR_FWD
    pyctr_proc, pyctr_server = None, None
    started[pyctr_label] = helper_unavailable
    if helper_unavailable is None:
        pyctr_proc = subprocess.Popen(
            user.argv([str(PYCTR), "run", "--rm", "--network", "bridge",
                       "-p", f"{ports['pyctr']}:{IPERF3_PORT}", str(world.rootfs_iperf3),
                       "/usr/bin/iperf3", "-s", "-p", str(IPERF3_PORT)]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, cwd=user.home)
        pyctr_server = WatchedServer(pyctr_proc)
    all_ports = {s[0]: s[3] for s in servers} | {pyctr_label: ports["pyctr"]}
    cases: list[Case] = []
    try:
        for group, where, host in (("fwd-host", "host", "127.0.0.1"),
                                   ("fwd-netns", "netns", CLIENT_NS.host_address)):
            contenders = []
            for label, port in all_ports.items():
                case = Case(group, label, pyctr=label == pyctr_label,
                            unavailable=started[label],
                            detail={"host_port": port, "client": where,
                                    "seconds": profile.iperf_seconds})
                argv = user.argv(iperf3_client(host, port, profile.iperf_seconds))
                warm = user.argv(iperf3_client(host, port, 1))
                if where == "netns":
                    argv, warm = CLIENT_NS.exec(argv), CLIENT_NS.exec(warm)
                contenders.append(Contender(case, argv, warm,
                                            pyctr_server if label == pyctr_label else None))
            _interleave(user, contenders, profile.iperf_runs, profile.iperf_seconds)
            cases += [c.case for c in contenders]
    finally:
        if pyctr_proc is not None:
            stop_process(pyctr_proc, timeout=15)
        for _, name, _, _ in servers:
            run(user.argv(["podman", "rm", "-f", "-t", "0", name]), timeout=60, cwd=user.home)
    return cases


def outside(world: World, profile: Profile, helper_unavailable: str | None) -> list[Case]:
    """The container is the iperf3 client; the server listens in OUTSIDE_NS."""
    user = world.user
    server = subprocess.Popen(
        OUTSIDE_NS.exec(user.argv(["iperf3", "-s", "-p", str(IPERF3_PORT)])),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd="/")
    try:
        wait_for(lambda: run(OUTSIDE_NS.exec(["ss", "-Hltn", f"sport = :{IPERF3_PORT}"]))
                 .stdout.strip(), timeout=10, what="iperf3 -s in the outside netns")
        client = iperf3_client(OUTSIDE_NS.address, IPERF3_PORT, profile.iperf_seconds)
        warm = iperf3_client(OUTSIDE_NS.address, IPERF3_PORT, 1)
        podman = ["podman", "run", "--rm", "--network", "slirp4netns", IMAGE_IPERF3]
        pyctr = [str(PYCTR), "run", "--rm", "--network", "bridge", str(world.rootfs_iperf3)]
        contenders = [
            Contender(Case("outside", SLIRP_OUT, detail={"argv": podman + client}),
                      user.argv(podman + client), user.argv(podman + warm)),
            Contender(Case("outside", PYCTR_OUT, pyctr=True,
                           unavailable=helper_unavailable, detail={"argv": pyctr + client}),
                      user.argv(pyctr + client), user.argv(pyctr + warm)),
        ]
        _interleave(user, contenders, profile.iperf_runs, profile.iperf_seconds)
        return [c.case for c in contenders]
    finally:
        stop_process(server)
