"""The bus surface: introspection and the Version property are public and read-only; nothing
outside the method table answers."""

from __future__ import annotations

import pyctr_bus


def test_introspect_serves_the_published_interface(client_a, polkit):
    out = client_a.call("Introspect", interface="org.freedesktop.DBus.Introspectable")
    assert out == {"body": [pyctr_bus.interface_xml()]}


def test_version_is_the_only_property_and_is_read_only(client_a, polkit):
    props = "org.freedesktop.DBus.Properties"
    assert client_a.call("Get", "ss", [pyctr_bus.NETWORK_INTERFACE, "Version"],
                         interface=props) == {"body": [pyctr_bus.VERSION]}
    assert client_a.call("GetAll", "s", [pyctr_bus.NETWORK_INTERFACE],
                         interface=props) == {"body": [{"Version": pyctr_bus.VERSION}]}
    out = client_a.call("Get", "ss", [pyctr_bus.NETWORK_INTERFACE, "Leases"], interface=props)
    assert out["error"] == "org.freedesktop.DBus.Error.UnknownProperty"
    out = client_a.call("Set", "ssv", [pyctr_bus.NETWORK_INTERFACE, "Version", {"__v__": ["s", "9"]}],
                        interface=props)
    assert out["error"] == "org.freedesktop.DBus.Error.AccessDenied"  # the bus policy stops it


def test_a_method_outside_the_table_is_unknown(client_a, polkit):
    out = client_a.call("Shell", "s", ["id"])
    assert out["error"] == "org.freedesktop.DBus.Error.UnknownMethod"


def _caps(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Cap"):
                key, value = line.split(":")
                out[key] = int(value, 16)
    return out


def test_helper_keeps_only_the_network_capabilities(helper):
    # CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13)
    wanted = (1 << 10) | (1 << 12) | (1 << 13)
    caps = _caps(helper.pid)
    assert caps["CapEff"] == wanted and caps["CapPrm"] == wanted
    assert caps["CapBnd"] == wanted and caps["CapInh"] == 0 and caps["CapAmb"] == 0


def test_every_refusal_is_audited_with_who_and_what(client_a, helper, polkit):
    polkit.set("allow")
    out = client_a.detach("0123456789abcdef")
    assert out["error"] == pyctr_bus.NO_SUCH_LEASE
    line = [l for l in helper.log_tail(20).splitlines() if "audit:" in l and "0123456789abcdef" in l][-1]
    assert f"uid={client_a.user.uid}" in line and "bus=:" in line and "pid=" in line
    assert "action=detach" in line and "outcome=refused" in line and "NoSuchLease" in line
