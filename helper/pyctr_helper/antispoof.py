"""Anti-spoofing: frames a container sends carry only its leased IPv4 address and MAC.

Enforced on the ingress of the host-side veth (frames the container sends arrive there), with an
nftables netdev table per lease:
    IPv4 with source MAC = lease MAC and source IP = lease IP          accept
    ARP with Ethernet and sender MAC = lease MAC, sender IP = lease IP  accept
    anything else (other IPs or MACs, IPv6, other ethertypes)         drop (chain policy)

Why a per-interface ingress hook: it needs no global switch. physdev rules in iptables need
br_netfilter, which sends every bridged frame on the host through iptables and changes how
other bridges (docker's, libvirt's) behave; ebtables is a second, global firewall framework.
tc on the veth's ingress would be equivalent, but needs the flower/matchall classifiers and the
gact action, which kernels built without them (like this project's CI VM) lack; the netdev
family is part of nf_tables itself. The table is named after the helper-chosen interface and
removed with the lease (a netdev table outlives its device, so removal is explicit, and start-up
reconciliation removes any left by a crash).

The `nft` binary runs with a fixed argv; the ruleset on its stdin is built only from the
helper's own typed values (the lease's address and MAC, the helper-named interface).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess

NFT = "/usr/sbin/nft"
TABLE_PREFIX = "pyctr-"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def _nft(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([NFT, *argv], input=stdin, text=True, capture_output=True,
                          close_fds=True, env=_ENV)


def table_name(host_ifname: str) -> str:
    return TABLE_PREFIX + host_ifname


def protect(host_ifname: str, address: str, mac: str) -> None:
    ip = ipaddress.IPv4Address(address)  # typed values only, re-checked before use
    if not _MAC.match(mac) or not re.fullmatch(r"[a-z0-9]{1,15}", host_ifname):
        raise ValueError("bad MAC or interface name for anti-spoofing rules")
    ruleset = f"""table netdev {table_name(host_ifname)} {{
    chain ingress {{
        type filter hook ingress device "{host_ifname}" priority filter; policy drop;
        ether saddr {mac} ether type ip ip saddr {ip} accept
        ether saddr {mac} ether type arp arp saddr ether {mac} arp saddr ip {ip} accept
    }}
}}
"""
    result = _nft("-f", "-", stdin=ruleset)
    if result.returncode != 0:
        raise OSError(f"nft failed for {host_ifname}: {result.stderr.strip()}")


def unprotect(host_ifname: str) -> None:
    """Remove the lease's table; already gone is fine."""
    _nft("delete", "table", "netdev", table_name(host_ifname))


def tables() -> set[str]:
    """Host interface names that have a pyctr anti-spoofing table."""
    out = _nft("list", "tables", "netdev").stdout
    return {line.split()[2][len(TABLE_PREFIX):] for line in out.splitlines()
            if line.startswith("table netdev " + TABLE_PREFIX)}
