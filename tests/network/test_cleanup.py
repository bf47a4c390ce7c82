"""Every way a container can end releases its veth, rules, lease and reserved ports."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from networld import NETINFO, container_pid, free_port, leases_of, wait_for

TCP, UDP = socket.SOCK_STREAM, socket.SOCK_DGRAM


def _kill_container(c) -> None:
    pid = wait_for(lambda: container_pid(c.proc.pid), what="the container's process")
    os.kill(pid, signal.SIGKILL)


# exit path -> (the container's command after NETINFO, how the test ends it, pyctr's status)
EXIT_PATHS = {
    "normal-exit": ("true", None, 0),
    "non-zero-exit": ("exit 3", None, 3),
    "ctrl-c": ("exec sleep 1000", lambda c: c.proc.send_signal(signal.SIGINT), 130),
    "container-sigkill": ("exec sleep 1000", _kill_container, 137),
    "pyctr-sigkill": ("exec sleep 1000", lambda c: c.proc.kill(), -signal.SIGKILL),
}


@pytest.mark.parametrize("path", list(EXIT_PATHS))
def test_exit_path_releases_everything(path, containers, user_a, nothing_left):
    command, end, status = EXIT_PATHS[path]
    tcp_port, udp_port = free_port(TCP), free_port(UDP)
    c = containers.start(user_a, "-p", f"{tcp_port}:80", "-p", f"{udp_port}:53/udp",
                         command=("sh", "-c", f"{NETINFO}; {command}"))
    if end is not None:
        [lease] = leases_of(user_a)
        assert sorted(p[1] for p in lease["ports"]) == sorted([tcp_port, udp_port])
        inside = container_pid(c.proc.pid)
        end(c)
    assert c.wait_exit() == status, c.err()
    if path == "pyctr-sigkill":
        # pyctr cannot detach: its container dies with it, and the helper's pidfd watch
        # ends the lease.
        wait_for(lambda: not os.path.exists(f"/proc/{inside}"), what="the container to die")
    nothing_left(ports=[(tcp_port, TCP), (udp_port, UDP)])
