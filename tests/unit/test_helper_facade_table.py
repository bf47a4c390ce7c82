"""The facade's method table matches the published interface: every method in the XML has an
entry with the XML's input signature, and nothing else of the pyctr interfaces is callable."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pyctr_bus
from pyctr_helper import facade, requests
from pyctr_helper.errors import InvalidArgument

import pytest
from dbus_next import Variant


def _xml_methods() -> dict[tuple[str, str], str]:
    text = re.sub(r"<!DOCTYPE[^>]*>", "", pyctr_bus.interface_xml())
    root = ET.fromstring(text)
    out = {}
    for iface in root.findall("interface"):
        for m in iface.findall("method"):
            sig = "".join(a.get("type") for a in m.findall("arg") if a.get("direction", "in") == "in")
            out[(iface.get("name"), m.get("name"))] = sig
    return out


def test_every_published_method_is_in_the_table_with_its_signature():
    published = _xml_methods()
    ours = {k: m.signature for k, m in facade.METHODS.items()
            if k[0] in (pyctr_bus.NETWORK_INTERFACE, pyctr_bus.RESOURCES_INTERFACE)}
    assert ours == published


def test_every_privileged_method_needs_a_polkit_action():
    for (iface, member), method in facade.METHODS.items():
        if iface.startswith("org.pyctr.") and method.actions is not facade._own_leases:
            assert facade._base_actions(method), f"{iface}.{member} would run unauthorized"


def test_only_detach_and_list_are_authorized_by_lease_ownership():
    """They act on the caller's own leases (manage-all for others'); nothing else may skip polkit."""
    owned = {k for k, m in facade.METHODS.items() if m.actions is facade._own_leases}
    assert owned == {(pyctr_bus.NETWORK_INTERFACE, "Detach"), (pyctr_bus.NETWORK_INTERFACE, "List")}


def test_attach_asks_for_the_port_actions_it_needs():
    plain = requests.attach_request({})
    assert facade._attach_actions(plain) == [pyctr_bus.ACTION_ATTACH]
    ported = requests.attach_request({"ports": Variant("a(sqqs)", [["", 8080, 80, "tcp"]])})
    assert facade._attach_actions(ported) == [pyctr_bus.ACTION_ATTACH, pyctr_bus.ACTION_PUBLISH_PORT]
    low = requests.attach_request({"ports": Variant("a(sqqs)", [["", 80, 80, "tcp"]])})
    assert pyctr_bus.ACTION_PUBLISH_PRIVILEGED_PORT in facade._attach_actions(low)


@pytest.mark.parametrize("options", [
    {"ifname": Variant("s", "")}, {"ifname": Variant("s", "a" * 16)}, {"ifname": Variant("s", "..")},
    {"ifname": Variant("s", "a b")}, {"ifname": Variant("s", "a/b")}, {"ifname": Variant("u", 1)},
    {"address": Variant("s", "10.0.0.256")}, {"extra": Variant("s", "")},
    {"ports": Variant("a(sqqs)", [["", 1, 0, "tcp"]])},
    {"ports": Variant("a(sqqs)", [["::1", 1, 1, "tcp"]])},
    {"ports": Variant("a(sqqs)", [["", 1, 1, "TCP"]])},
    {"ports": Variant("a(sqqs)", [["", 1, 1, "tcp"]] * 65)},
])
def test_attach_options_are_parsed_strictly(options):
    with pytest.raises(InvalidArgument):
        requests.attach_request(options)


def test_lease_ids_are_only_hex():
    assert requests.parse_lease_id("0123456789abcdef") == "0123456789abcdef"
    for bad in ("", "../x", "0123456789ABCDEF", "0" * 17, 5):
        with pytest.raises(InvalidArgument):
            requests.parse_lease_id(bad)
