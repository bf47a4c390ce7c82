"""Start-latency cases: `/bin/true` in a fresh container, pyctr against the anchors."""

from __future__ import annotations

from .host import PYCTR
from .profile import Profile
from .results import Case
from .timing import Command, measure
from .world import IMAGE, World

CRUN = "crun run (rootless)"
PODMAN_NONE = "podman run --rm --network none"
PYCTR_NONE = "pyctr run --rm --network none"
PODMAN_PORT = "podman run --rm -p HOST:80 (slirp4netns + rootlessport)"
PYCTR_PORT = "pyctr run --rm --network bridge -p HOST:80"


def no_network(world: World, profile: Profile) -> list[Case]:
    run_dir = world.user.runtime_dir
    rootfs = str(world.rootfs)
    commands = [
        Command("unshare: user+mount+uts+ipc+net+pid ns (floor)",
                ["unshare", "--user", "--map-root-user", "--mount", "--uts", "--ipc", "--net",
                 "--pid", "--fork", "/bin/true"]),
        Command("bwrap --unshare-all",
                ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/",
                 "--proc", "/proc", "--dev", "/dev", "/bin/true"]),
        Command(CRUN,
                ["crun", "--root", f"{run_dir}/crun", "run", "-b", str(world.bundle),
                 "pyctr-bench-crun"], hide_unified_cgroup=True),
        Command("runc run (rootless)",
                ["runc", "--root", f"{run_dir}/runc", "run", "-b", str(world.bundle),
                 "pyctr-bench-runc"]),
        Command(PODMAN_NONE,
                ["podman", "run", "--rm", "--network", "none", IMAGE, "/bin/true"]),
        Command(PYCTR_NONE,
                [str(PYCTR), "run", "--rm", "--network", "none", rootfs, "/bin/true"],
                pyctr=True),
    ]
    return measure(world.user, "start-none", commands, profile.rounds, profile.runs,
                   profile.warmup)


def published_port(world: World, profile: Profile, podman_port: int, pyctr_port: int,
                   helper_unavailable: str | None) -> list[Case]:
    # Each case gets its own free host port: the port number does not change the work done,
    # and a port another engineer's test holds must not fail a run.
    commands = [
        Command(PODMAN_PORT,
                ["podman", "run", "--rm", "-p", f"{podman_port}:80", IMAGE, "/bin/true"]),
        Command(PYCTR_PORT,
                [str(PYCTR), "run", "--rm", "--network", "bridge", "-p", f"{pyctr_port}:80",
                 str(world.rootfs), "/bin/true"], pyctr=True),
    ]
    cases = measure(world.user, "start-port", commands if helper_unavailable is None
                    else commands[:1], profile.rounds, profile.runs, profile.warmup)
    if helper_unavailable is not None:
        cases.append(Case("start-port", commands[1].name, pyctr=True,
                          unavailable=helper_unavailable))
    return cases
