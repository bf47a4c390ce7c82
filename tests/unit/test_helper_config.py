"""helper.toml parsing: every key typed and checked, bad files refused with a clear reason."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pyctr_helper import config
from pyctr_helper.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
HOST = [(ipaddress.IPv4Network("192.0.2.0/24"), "eth0"), (ipaddress.IPv4Network("10.88.0.0/24"), "docker0")]


def load(tmp_path, text: str, routes=HOST) -> config.Config:
    path = tmp_path / "helper.toml"
    path.write_text(text)
    return config.load(path, routes)


def test_the_example_file_is_valid_and_means_the_defaults(tmp_path):
    cfg = config.load(REPO / "helper" / "helper.toml.example", [])
    assert cfg.networks["pyctr"].bridge == "pyctr0"
    assert cfg.ports.ranges == ((1024, 65535),) and not cfg.ports.allow_privileged
    assert cfg.quota_default == config.Quota(32, 64)


def test_without_a_file_the_default_network_avoids_host_routes(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    cfg = config.load(None, HOST)
    net = cfg.networks["pyctr"]
    assert (net.bridge, str(net.subnet), str(net.gateway)) == ("pyctr0", "10.89.0.0/24", "10.89.0.1")


def test_the_default_networks_own_bridge_route_does_not_count_as_a_collision(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_PATH", tmp_path / "absent.toml")
    cfg = config.load(None, [(ipaddress.IPv4Network("10.88.0.0/24"), "pyctr0")])
    assert str(cfg.networks["pyctr"].subnet) == "10.88.0.0/24"


def test_an_explicit_path_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "nope.toml", [])


def test_a_full_file_is_parsed_into_types(tmp_path):
    cfg = load(tmp_path, """
        state_dir = "/tmp/pyctr-state"
        [networks.a]
        bridge = "br-a"
        subnet = "10.90.0.0/16"
        gateway = "10.90.0.254"
        [ports]
        ranges = ["8000-8999", "443"]
        allow_privileged = true
        [leases]
        end_on_disconnect = true
        [quotas.default]
        max_interfaces = 2
        [quotas.users.0]
        max_ports = 5
        [limits.default]
        max_memory = 1073741824
        max_cpus = 2
        max_pids = 100
    """)
    net = cfg.networks["a"]
    assert net.subnet == ipaddress.IPv4Network("10.90.0.0/16")
    assert str(net.gateway) == "10.90.0.254"
    assert cfg.ports.ranges == ((8000, 8999), (443, 443)) and cfg.ports.allow_privileged
    assert cfg.ports.allows(443) and not cfg.ports.allows(444)
    assert cfg.end_on_disconnect
    assert cfg.quota_default == config.Quota(2, 64)
    assert cfg.quota_for(0) == config.Quota(32, 5)
    assert cfg.limits_for(12345) == config.Limits(1073741824, 2.0, 100)
    assert cfg.state_dir == Path("/tmp/pyctr-state")


@pytest.mark.parametrize("text,reason", [
    ("nonsense = 1", "unknown key"),
    ("[networks.a]\nbridge = 'br-a'\nsubnet = '10.90.0.0/24'\nmtu = 9000", "unknown key"),
    ("[networks.a]\nbridge = 'br/a'\nsubnet = '10.90.0.0/24'", "valid interface name"),
    ("[networks.a]\nbridge = 'this-name-is-too-long'\nsubnet = '10.90.0.0/24'", "valid interface name"),
    ("[networks.a]\nbridge = 'br-a'\nsubnet = '10.90.0.1/24'", "subnet"),
    ("[networks.a]\nbridge = 'br-a'\nsubnet = '10.90.0.0/30'", "/29 or larger"),
    ("[networks.a]\nbridge = 'br-a'\nsubnet = '127.0.0.0/8'", "unicast"),
    ("[networks.a]\nbridge = 'br-a'\nsubnet = '10.90.0.0/24'\ngateway = '10.91.0.1'", "not a host address"),
    ("[networks.a]\nbridge = 'br-a'\nsubnet = '10.88.0.0/16'", "collides with host route"),
    ("[networks.a]\nbridge = 'br-a'\nsubnet = '10.90.0.0/24'\n[networks.b]\nbridge = 'br-a'\nsubnet = '10.91.0.0/24'",
     "same bridge"),
    ("[networks.a]\nbridge = 'br-a'\nsubnet = '10.90.0.0/23'\n[networks.b]\nbridge = 'br-b'\nsubnet = '10.90.1.0/24'",
     "overlapping"),
    ("[ports]\nranges = ['80-70']", "LOW <= HIGH"),
    ("[ports]\nranges = ['http']", "LOW-HIGH"),
    ("[ports]\nranges = []", "non-empty"),
    ("[ports]\nallow_privileged = 'yes'", "must be bool"),
    ("[leases]\nend_on_disconnect = 1", "must be bool"),
    ("[quotas.default]\nmax_interfaces = -1", "negative"),
    ("[quotas.default]\nmax_interfaces = true", "must be int"),
    ("[quotas.users.no-such-user-here]\nmax_ports = 1", "no such user"),
    ("[limits.default]\nmax_cpus = 'two'", "must be float"),
    ("[limits.default]\nmax_memory = 1.5", "must be int"),
    ("state_dir = 'relative'", "absolute"),
    ("[networks", "not valid TOML"),
])
def test_a_bad_file_is_refused_with_its_reason(tmp_path, text, reason):
    with pytest.raises(ConfigError, match=reason):
        load(tmp_path, text)
