"""Anti-spoofing: frames a container sends carry only its leased IPv4 address and MAC.

One nftables table of the bridge family, hooked at bridge prerouting (every frame entering a
bridge port, whether it is then bridged or delivered to the host):

    table bridge pyctr
      set ports   { ifname }                                  the helper's veths
      set ip_ok   { ifname . MAC . IPv4 }                     per lease
      set arp_ok  { ifname . MAC . sender MAC . sender IPv4 } per lease
      chain prerouting (policy accept)
        iifname not in @ports           accept   other bridges and ports: untouched
        IPv4 matching @ip_ok            accept
        ARP matching @arp_ok            accept
        anything else                   drop     other IPs or MACs, IPv6, other ethertypes

Why this and not the alternatives: iptables physdev rules need br_netfilter, a global switch
that sends every bridged frame on the host through iptables and changes how other bridges
(docker's, libvirt's) behave; ebtables is a second, global framework. tc on each veth's
ingress would be per interface too, but needs the flower/matchall classifiers and the gact
action, which kernels built without them (this project's CI VM) lack. A netdev table per veth
works everywhere nf_tables does, but the nft tool reloads its whole cache for each change, so
with 500 leases each attach paid ~200 ms; here a lease is three set elements, added and removed
in a few milliseconds whatever the count (bench/helper_attach.py).

A lease's elements go in before its veth joins the bridge, so no unfiltered frame ever passes,
and come out when it ends. Start-up rebuilds the table from the live leases; SIGTERM removes it.
The `nft` binary runs with a fixed argv; the ruleset on its stdin is built only from the
helper's own typed values (a lease's address and MAC, the helper-named interface).
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from typing import Iterable

NFT = "/usr/sbin/nft"
TABLE = "pyctr"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[a-z0-9]{1,15}$")
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

_TABLE_DEF = f"""table bridge {TABLE} {{
    set ports {{ type ifname; }}
    set ip_ok {{ type ifname . ether_addr . ipv4_addr; }}
    set arp_ok {{ type ifname . ether_addr . ether_addr . ipv4_addr; }}
    chain prerouting {{
        type filter hook prerouting priority -300; policy accept;
        iifname != @ports accept
        ether type ip iifname . ether saddr . ip saddr @ip_ok accept
        ether type arp iifname . ether saddr . arp saddr ether . arp saddr ip @arp_ok accept
        drop
    }}
}}
"""


def _nft(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([NFT, "-f", "-"], input=script, text=True, capture_output=True,
                          close_fds=True, env=_ENV)


def _elements(verb: str, host_ifname: str, address: str, mac: str) -> str:
    ip = ipaddress.IPv4Address(address)  # typed values only, re-checked before use
    if not _MAC.match(mac) or not _IFNAME.match(host_ifname):
        raise ValueError("bad MAC or interface name for anti-spoofing rules")
    name = f'"{host_ifname}"'
    return (f"{verb} element bridge {TABLE} ip_ok {{ {name} . {mac} . {ip} }}\n"
            f"{verb} element bridge {TABLE} arp_ok {{ {name} . {mac} . {mac} . {ip} }}\n"
            f"{verb} element bridge {TABLE} ports {{ {name} }}\n")


def install(leases: Iterable[tuple[str, str, str]]) -> None:
    """(Re)create the table with the elements of the live leases (host_ifname, address, mac)."""
    script = f"add table bridge {TABLE}\ndelete table bridge {TABLE}\n" + _TABLE_DEF
    script += "".join(_elements("add", *lease) for lease in leases)
    result = _nft(script)
    if result.returncode != 0:
        raise OSError(f"nft: {result.stderr.strip()}")


def uninstall() -> None:
    _nft(f"add table bridge {TABLE}\ndelete table bridge {TABLE}\n")


def protect(host_ifname: str, address: str, mac: str) -> None:
    result = _nft(_elements("add", host_ifname, address, mac))
    if result.returncode != 0:
        raise OSError(f"nft failed for {host_ifname}: {result.stderr.strip()}")


def unprotect(host_ifname: str, address: str, mac: str) -> None:
    """Remove the lease's elements; already gone is fine. nft applies a script all or nothing,
    so if one element is missing (a crash half-way), the others go one by one."""
    script = _elements("delete", host_ifname, address, mac)
    if _nft(script).returncode != 0:
        for line in script.splitlines():
            _nft(line + "\n")
