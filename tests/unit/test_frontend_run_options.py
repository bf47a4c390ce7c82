"""`pyctr run` option parsing into the frozen spec types (no kernel involved)."""

from __future__ import annotations

import pytest

from pyctr import capabilities, idmap
from pyctr.errors import UsageError
from pyctr.option_values import parse_publish, parse_size
from pyctr.run_options import parse_argv, parse_resources
from pyctr.spec import IdMapping, PortMapping


def test_parsing_stops_at_rootfs_and_the_rest_is_the_command():
    raw = parse_argv(["--rm", "-it", "-e", "A=1", "/r", "sh", "-c", "--rm"])
    assert raw.rootfs == "/r" and raw.command == ["sh", "-c", "--rm"]
    assert raw.get("rm") and raw.get("tty") and raw.get("interactive")
    assert raw.list("env") == ["A=1"]


def test_attached_and_equals_values():
    raw = parse_argv(["-eA=1", "--env=B=2", "--network=bridge:n1", "/r"])
    assert raw.list("env") == ["A=1", "B=2"] and raw.get("network") == "bridge:n1"


@pytest.mark.parametrize("spec,expected", [
    ("80", [PortMapping(80, 0)]),
    ("8080:80", [PortMapping(80, 8080)]),
    ("127.0.0.1:8080:80/udp", [PortMapping(80, 8080, "127.0.0.1", "udp")]),
    ("127.0.0.1::80", [PortMapping(80, 0, "127.0.0.1")]),
    ("[::1]:8080:80", [PortMapping(80, 8080, "::1")]),
    ("8000-8002:80-82/tcp", [PortMapping(80, 8000), PortMapping(81, 8001), PortMapping(82, 8002)]),
])
def test_publish_forms(spec, expected):
    assert parse_publish(spec) == expected


@pytest.mark.parametrize("spec", ["8000-8001:80-82", "a:80", "1.2.3:80:80", "80/sctp", "0", "70000",
                                  "1:2:3:4"])
def test_bad_publish_is_refused(spec):
    with pytest.raises(UsageError):
        parse_publish(spec)


@pytest.mark.parametrize("text,value", [("0", 0), ("512", 512), ("1b", 1), ("4k", 4096),
                                        ("512m", 512 << 20), ("2G", 2 << 30), ("1.5g", 3 << 29)])
def test_sizes(text, value):
    assert parse_size(text, "--memory") == value


def test_resources_from_options():
    raw = parse_argv(["--memory", "256m", "--memory-swap", "-1", "--cpus", "0.5",
                      "--pids-limit", "-1", "/r"])
    r = parse_resources(raw)
    assert (r.memory, r.memory_swap, r.cpus, r.pids) == (256 << 20, -1, 0.5, -1) and r.any


@pytest.mark.parametrize("args", [["--memory", "-1"], ["--memory", "12x"], ["--memory-swap", "1g"],
                                  ["--memory", "1g", "--memory-swap", "512m"], ["--cpus", "x"],
                                  ["--pids-limit", "-2"]])
def test_bad_resources_are_refused(args):
    with pytest.raises(UsageError):
        parse_resources(parse_argv([*args, "/r"]))


def test_capabilities_any_case_optional_prefix_and_all():
    caps, added = capabilities.resolve(["net_admin"], ["CAP_CHOWN", "Kill"])
    assert "CAP_NET_ADMIN" in caps and "CAP_CHOWN" not in caps and "CAP_KILL" not in caps
    assert added == {"CAP_NET_ADMIN"}
    assert capabilities.resolve([], ["all"])[0] == frozenset()
    with pytest.raises(UsageError):
        capabilities.resolve(["CAP_NOPE"], [])


def test_keep_id_map_skips_the_users_own_id():
    m = idmap.build(1001, [(100000, 65536)], keep_id=True)
    assert m == (IdMapping(0, 100000, 1001), IdMapping(1001, 1001, 1),
                 IdMapping(1002, 101001, 64535))
    assert idmap.build(1001, [], keep_id=False) == (IdMapping(0, 1001, 1),)
