"""Which nameservers a container is given."""

import ipaddress

from pyctr_helper import dns

GW = ipaddress.IPv4Address("10.88.0.1")


def test_host_nameservers_are_passed_through(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# c\nsearch example\nnameserver 192.0.2.53\nnameserver ::1\nnameserver 198.51.100.53\n")
    servers = dns.host_nameservers(conf)
    assert dns.container_nameservers(servers, GW) == ["192.0.2.53", "198.51.100.53"]
    assert dns.loopback_resolver(servers) is None


def test_a_loopback_resolver_is_reached_through_the_gateway(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\noptions edns0\n")
    servers = dns.host_nameservers(conf)
    assert dns.loopback_resolver(servers) == ipaddress.IPv4Address("127.0.0.53")
    assert dns.container_nameservers(servers, GW) == ["10.88.0.1"]


def test_no_resolv_conf_gives_no_nameservers(tmp_path):
    assert dns.container_nameservers(dns.host_nameservers(tmp_path / "none"), GW) == []
