"""Which network a container gets when --network is not given."""

from __future__ import annotations

import re

from pyctr import network


def test_default_is_bridge_when_helper_is_installed(tmp_path, monkeypatch, capsys):
    activation = tmp_path / "org.pyctr.Helper1.service"
    activation.write_text("[D-BUS Service]\n")
    monkeypatch.setattr(network, "ACTIVATION_FILE", activation)
    assert network.default_mode() == "bridge"
    assert capsys.readouterr().err == ""


def test_default_falls_back_to_none_with_a_note_without_helper(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(network, "ACTIVATION_FILE", tmp_path / "absent.service")
    assert network.default_mode() == "none"
    [note] = capsys.readouterr().err.splitlines()
    assert "pyctr-helper is not installed" in note and "none" in note


def test_container_without_network_option_gets_the_bridge(user_a, rootfs, bridge, nothing_left):
    out = user_a.pyctr("run", "--rm", str(rootfs), "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert out.returncode == 0, out.stderr
    assert re.search(r"inet \d+\.\d+\.\d+\.\d+/\d+", out.stdout), out.stdout
    nothing_left()
