"""The D-Bus names written once in dbus/org.pyctr.Helper1.xml and in pyctr_bus agree."""

import xml.etree.ElementTree as ET

import pyctr_bus


def _interfaces():
    root = ET.fromstring(pyctr_bus.interface_xml())
    return root, {i.get("name"): i for i in root.findall("interface")}


def test_object_path_matches_xml():
    root, _ = _interfaces()
    assert root.get("name") == pyctr_bus.OBJECT_PATH


def test_network_interface_and_methods_match_xml():
    _, ifaces = _interfaces()
    net = ifaces[pyctr_bus.NETWORK_INTERFACE]
    sigs = {m.get("name"): [(a.get("direction"), a.get("type")) for a in m.findall("arg")]
            for m in net.findall("method")}
    assert sigs["Attach"] == [("in", "h"), ("in", "h"), ("in", "a{sv}"), ("out", "a{sv}")]
    assert sigs["Detach"] == [("in", "s")]
    assert sigs["List"] == [("out", "aa{sv}")]


def test_resources_interface_matches_xml():
    _, ifaces = _interfaces()
    res = ifaces[pyctr_bus.RESOURCES_INTERFACE]
    sigs = {m.get("name"): [(a.get("direction"), a.get("type")) for a in m.findall("arg")]
            for m in res.findall("method")}
    assert sigs == {"Limit": [("in", "h"), ("in", "a{sv}"), ("out", "a{sv}")]}


def test_only_read_only_properties():
    _, ifaces = _interfaces()
    for iface in ifaces.values():
        for prop in iface.findall("property"):
            assert prop.get("access") == "read", prop.get("name")


def test_bus_policy_names_the_same_bus_name_and_interface():
    from pathlib import Path

    conf = (Path(pyctr_bus.__file__).with_name("org.pyctr.Helper1.conf")).read_text()
    assert f'own="{pyctr_bus.BUS_NAME}"' in conf
    assert f'send_interface="{pyctr_bus.NETWORK_INTERFACE}"' in conf
    assert f'send_interface="{pyctr_bus.RESOURCES_INTERFACE}"' in conf


def test_polkit_actions_exist_in_policy_file():
    from pathlib import Path

    policy = Path(__file__).resolve().parents[2] / "polkit" / "org.pyctr.policy"
    ids = {a.get("id") for a in ET.parse(policy).getroot().findall("action")}
    assert {pyctr_bus.ACTION_ATTACH, pyctr_bus.ACTION_PUBLISH_PORT,
            pyctr_bus.ACTION_PUBLISH_PRIVILEGED_PORT, pyctr_bus.ACTION_MANAGE_ALL,
            pyctr_bus.ACTION_LIMIT_RESOURCES} <= ids
