"""The bench world: the user's private dirs, the rootfs trees, podman's storage and images,
a runc/crun bundle, /dev/net/tun's mode, and two network namespaces of our own.

`cleanup()` removes all of it and is safe to run at any time: at the start of a run (a
crashed run may have left things) and at the end. Every step tolerates "already gone".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from dataclasses import dataclass
from pathlib import Path

from .host import (REPO, RUNTIME_DIR, STATE, WORK, BenchUser, Unavailable, processes_of, run,
                   subordinate_range, wait_for)

TUN = Path("/dev/net/tun")
TUN_MODE_FILE = STATE / "tun-mode"
IMAGE = "localhost/pyctr-bench-busybox"
IMAGE_IPERF3 = "localhost/pyctr-bench-iperf3"


@dataclass(frozen=True)
class Netns:
    """A namespace of ours, joined to the host by a veth on a /30 from 198.18.0.0/15,
    the range set aside for benchmarks (RFC 2544): it cannot be a real host."""

    name: str
    host_ifname: str
    host_address: str
    address: str

    def exec(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


CLIENT_NS = Netns("pyctrb-client", "pyctrb-c0", "198.18.213.1", "198.18.213.2")
OUTSIDE_NS = Netns("pyctrb-outside", "pyctrb-o0", "198.18.214.1", "198.18.214.2")


@dataclass(frozen=True)
class World:
    user: BenchUser
    rootfs: Path            # busybox
    rootfs_iperf3: Path     # busybox plus iperf3 and its libraries
    bundle: Path            # OCI bundle for runc and crun: /bin/true in rootfs, own netns


def setup(user: BenchUser) -> World:
    """Build the world from nothing; raises Unavailable if a step fails."""
    STATE.mkdir(mode=0o700, exist_ok=True)
    WORK.mkdir(mode=0o755, exist_ok=True)
    for d in (user.home, user.runtime_dir):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chown(d, user.uid, user.gid)
    world = World(user, WORK / "rootfs", WORK / "rootfs-iperf3", WORK / "bundle")
    mkrootfs = str(REPO / "scripts" / "mkrootfs.sh")
    run(["bash", mkrootfs, str(world.rootfs)], timeout=120, check=True)
    run(["bash", mkrootfs, str(world.rootfs_iperf3), "--iperf3"], timeout=120, check=True)
    _write_podman_config(user)
    for image, tree in ((IMAGE, world.rootfs), (IMAGE_IPERF3, world.rootfs_iperf3)):
        tarball = WORK / f"{tree.name}.tar"
        run(["tar", "-C", str(tree), "-cf", str(tarball), "."], timeout=60, check=True)
        tarball.chmod(0o644)
        # A podman that cannot import makes podman's cases n/a (their first run fails
        # and says why), not the whole run.
        run(user.argv(["podman", "import", str(tarball), image]), timeout=120, cwd=user.home)
        tarball.unlink()
    _write_bundle(user, world)
    if TUN.exists():
        _open_tun()
    for ns in (CLIENT_NS, OUTSIDE_NS):
        _add_netns(ns)
    return world


def _write_podman_config(user: BenchUser) -> None:
    # What works rootless on this host (issue 7): runc, cgroupfs, file events, overlay.
    conf = user.home / ".config" / "containers"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "containers.conf").write_text(
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    (conf / "storage.conf").write_text('[storage]\ndriver = "overlay"\n')
    for d in (user.home / ".config", conf, conf / "containers.conf", conf / "storage.conf"):
        os.chown(d, user.uid, user.gid)


def _write_bundle(user: BenchUser, world: World) -> None:
    """`runc spec --rootless`, made to run /bin/true in our rootfs with its own netns,
    as `pyctr run --network none` and `podman run --network none` do."""
    world.bundle.mkdir(exist_ok=True)
    os.chown(world.bundle, user.uid, user.gid)
    run(user.argv(["runc", "spec", "--rootless"]), cwd=world.bundle)
    path = world.bundle / "config.json"
    if not path.exists():
        return      # runc and crun then fail their first run and are shown n/a
    spec = json.loads(path.read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["/bin/true"]
    spec["root"] = {"path": str(world.rootfs), "readonly": True}
    if {"type": "network"} not in spec["linux"]["namespaces"]:
        spec["linux"]["namespaces"].append({"type": "network"})
    path.write_text(json.dumps(spec, indent=1))


def _open_tun() -> None:
    """slirp4netns opens /dev/net/tun as the user: 0666 for the run, the old mode after."""
    if not TUN_MODE_FILE.exists():
        TUN_MODE_FILE.write_text(oct(stat.S_IMODE(TUN.stat().st_mode)))
    TUN.chmod(0o666)


def _add_netns(ns: Netns) -> None:
    steps = [
        ["ip", "netns", "add", ns.name],
        ["ip", "link", "add", ns.host_ifname, "type", "veth", "peer", "name", "eth0",
         "netns", ns.name],
        ["ip", "addr", "add", f"{ns.host_address}/30", "dev", ns.host_ifname],
        ["ip", "link", "set", ns.host_ifname, "up"],
        ["ip", "-n", ns.name, "addr", "add", f"{ns.address}/30", "dev", "eth0"],
        ["ip", "-n", ns.name, "link", "set", "eth0", "up"],
        ["ip", "-n", ns.name, "link", "set", "lo", "up"],
    ]
    for argv in steps:
        run(argv, check=True)


def cleanup(user: BenchUser) -> list[str]:
    """Remove everything a run (this one or a crashed one) made; returns what failed."""
    problems: list[str] = []

    def step(what: str, argv: list[str], **kw) -> None:
        try:
            proc = run(argv, timeout=120, **kw)
            if proc.returncode != 0:
                problems.append(f"{what}: {proc.stderr.strip()[:200]}")
        except Unavailable as e:
            problems.append(f"{what}: {e}")

    if (user.home / ".local" / "share" / "containers").exists():
        # rm may complain about a container caught half-stopped; the reset after it is
        # what has to succeed.
        try:
            run(user.argv(["podman", "rm", "-af", "-t", "0"]), timeout=120, cwd=user.home)
        except Unavailable:
            pass
        step("podman system reset", user.argv(["podman", "system", "reset", "-f"]),
             cwd=user.home)
    # What is still running as the bench user or in its subordinate range was started by
    # this harness (podman's pause process, a container left by a crash): end it by pid.
    own = bench_processes(user)
    for pid in own:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        wait_for(lambda: not (own & bench_processes(user)), timeout=10,
                 what="the bench user's processes to end")
    except Unavailable as e:
        problems.append(str(e))
    for ns in (CLIENT_NS, OUTSIDE_NS):
        if Path(f"/run/netns/{ns.name}").exists():
            step(f"netns {ns.name}", ["ip", "netns", "del", ns.name])
        # Deleting the netns takes the veth pair with it, a moment later.
        host_end = Path(f"/sys/class/net/{ns.host_ifname}")
        try:
            wait_for(lambda: not host_end.exists(), timeout=3, what=f"{host_end} to go")
        except Unavailable:
            step(f"veth {ns.host_ifname}", ["ip", "link", "del", ns.host_ifname])
    for mountpoint in _mounts_under(WORK) + _mounts_under(RUNTIME_DIR):
        step(f"umount {mountpoint}", ["umount", "-l", mountpoint])
    if TUN_MODE_FILE.exists():
        TUN.chmod(int(TUN_MODE_FILE.read_text(), 8))
        TUN_MODE_FILE.unlink()
    for tree in (WORK, RUNTIME_DIR):
        shutil.rmtree(tree, ignore_errors=True)
        if tree.exists():
            problems.append(f"{tree} could not be removed")
    try:
        STATE.rmdir()       # only once empty: a helper pid file means a helper still runs
    except OSError:
        pass
    return problems


def bench_processes(user: BenchUser) -> set[int]:
    pids = processes_of(range(user.uid, user.uid + 1))
    sub = subordinate_range(user.name)
    return pids | (processes_of(sub) if sub else set())


def _mounts_under(root: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(root) or point.startswith(str(root) + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)
