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
