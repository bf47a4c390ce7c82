"""iptables rules (python-iptables, legacy xtables), all in pyctr's own chains.

    nat    PREROUTING/OUTPUT -m addrtype --dst-type LOCAL -> PYCTR-DNAT   published ports, DNS
    nat    POSTROUTING -> PYCTR-POSTROUTING   masquerade: outbound, hairpin, localhost
    filter FORWARD -> PYCTR-FORWARD           exactly the leased address and port, replies, outbound
    raw    PREROUTING -> PYCTR-PREROUTING     127/8 arriving from a bridge is dropped

Only these jump rules touch the built-in chains, so other software's rules are never disturbed
and removing pyctr is flushing four chains. Rules are built only from the helper's own typed
values (lease addresses, validated ports); a caller never supplies a rule fragment. Each lease's
rules carry the comment "pyctr:<lease id>".
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator

import iptc

from .config import Network
from .store import Lease, Port

log = logging.getLogger(__name__)

DNAT_CHAIN = "PYCTR-DNAT"
POST_CHAIN = "PYCTR-POSTROUTING"
FORWARD_CHAIN = "PYCTR-FORWARD"
RAW_CHAIN = "PYCTR-PREROUTING"
XTABLES_LOCK = "/run/xtables.lock"
LOOPBACK = "127.0.0.0/8"

# (table, built-in chain, our chain, needs addrtype LOCAL)
_JUMPS = (
    (iptc.Table.NAT, "PREROUTING", DNAT_CHAIN, True),
    (iptc.Table.NAT, "OUTPUT", DNAT_CHAIN, True),
    (iptc.Table.NAT, "POSTROUTING", POST_CHAIN, False),
    (iptc.Table.FILTER, "FORWARD", FORWARD_CHAIN, False),
    (iptc.Table.RAW, "PREROUTING", RAW_CHAIN, False),
)


def _rule(*, src=None, dst=None, in_if=None, out_if=None, proto=None, dport=None,
          ctstate=None, comment=None, target="ACCEPT", to=None, addrtype=None) -> iptc.Rule:
    r = iptc.Rule()
    if src:
        r.src = src
    if dst:
        r.dst = dst
    if in_if:
        r.in_interface = in_if
    if out_if:
        r.out_interface = out_if
    if proto:
        r.protocol = proto
        if dport is not None:
            r.create_match(proto).dport = str(dport)
    if addrtype:
        r.create_match("addrtype").dst_type = addrtype
    if ctstate:
        r.create_match("conntrack").ctstate = ctstate
    if comment:
        r.create_match("comment").comment = comment
    t = r.create_target(target)
    if to:
        t.to_destination = to
    return r


def _dnat(lease: Lease, port: Port) -> iptc.Rule:
    return _rule(dst=f"{port.host_ip}/32" if port.host_ip else None, proto=port.protocol,
                 dport=port.host_port, comment=f"pyctr:{lease.id}", target="DNAT",
                 to=f"{lease.address}:{port.container_port}")


def _forward(lease: Lease, port: Port) -> iptc.Rule:
    return _rule(dst=f"{lease.address}/32", out_if=lease.bridge, proto=port.protocol,
                 dport=port.container_port, ctstate="DNAT", comment=f"pyctr:{lease.id}")


def _network_rules(net: Network, dns_target: str | None) -> dict[tuple[str, str], list[iptc.Rule]]:
    subnet, br = str(net.subnet), net.bridge
    c = f"pyctr-net:{net.name}"
    rules: dict[tuple[str, str], list[iptc.Rule]] = {
        (iptc.Table.NAT, POST_CHAIN): [
            # localhost -> published port: the packet leaves with 127.0.0.1 as source; the
            # container could not answer it, so it leaves with the gateway address instead.
            _rule(src=LOOPBACK, out_if=br, target="MASQUERADE", comment=c),
            # hairpin: a container reaching a published port of its own network.
            _rule(src=subnet, dst=subnet, out_if=br, ctstate="DNAT", target="MASQUERADE", comment=c),
            # outbound: containers reach the world through the host's address.
            _rule(src=subnet, dst="!" + subnet, out_if="!" + br, target="MASQUERADE", comment=c),
        ],
        (iptc.Table.FILTER, FORWARD_CHAIN): [
            _rule(out_if=br, ctstate="RELATED,ESTABLISHED", comment=c),
            _rule(in_if=br, out_if="!" + br, comment=c),
            # Container to container on one network. Only seen here when br_netfilter passes
            # bridged frames through iptables (bridge-nf-call-iptables=1); harmless otherwise.
            _rule(in_if=br, out_if=br, comment=c),
            # Anything else routed into the bridge (someone routing straight to a container
            # address, a port nobody published) is dropped. Published ports are inserted above.
            _rule(out_if=br, target="DROP", comment=c),
        ],
        (iptc.Table.RAW, RAW_CHAIN): [
            # route_localnet is on for this bridge; nothing from the bridge may reach 127/8
            # directly or claim to come from it (CVE-2020-8558).
            _rule(in_if=br, dst=LOOPBACK, target="DROP", comment=c),
            _rule(in_if=br, src=LOOPBACK, target="DROP", comment=c),
        ],
        (iptc.Table.NAT, DNAT_CHAIN): [],
    }
    if dns_target:
        for proto in ("udp", "tcp"):
            rules[(iptc.Table.NAT, DNAT_CHAIN)].append(
                _rule(in_if=br, dst=f"{net.gateway}/32", proto=proto, dport=53, comment=c,
                      target="DNAT", to=f"{dns_target}:53"))
    return rules


class Firewall:
    """pyctr's chains. Not thread-safe: the helper changes rules from its one event loop."""

    @contextmanager
    def _batch(self, *tables: str) -> Iterator[dict[str, iptc.Table]]:
        fd = os.open(XTABLES_LOCK, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # The same lock iptables(8) takes, so we never race an admin's iptables command.
            fcntl.flock(fd, fcntl.LOCK_EX)
            handles = {}
            for name in tables:
                # Fresh state from the kernel (the admin may have changed other rules); with
                # autocommit off, a batch abandoned by an exception is dropped by this refresh.
                t = iptc.Table(name)
                t.autocommit = False
                t.refresh()
                handles[name] = t
            yield handles
            for t in handles.values():
                t.commit()
        finally:
            os.close(fd)

    def install(self, networks: list[Network], dns_targets: dict[str, str | None],
                leases: list[Lease]) -> None:
        """(Re)build every pyctr chain from scratch: network rules, then each live lease's."""
        tables = (iptc.Table.NAT, iptc.Table.FILTER, iptc.Table.RAW)
        with self._batch(*tables) as t:
            for table, builtin, ours, local in _JUMPS:
                chain = iptc.Chain(t[table], ours)
                if not t[table].is_chain(ours):
                    t[table].create_chain(ours)
                chain.flush()
                jump = _rule(target=ours, addrtype="LOCAL" if local else None)
                base = iptc.Chain(t[table], builtin)
                if not any(r.target.name == ours for r in base.rules):
                    base.insert_rule(jump)
            for net in networks:
                for (table, chain), rules in _network_rules(net, dns_targets.get(net.name)).items():
                    for r in rules:
                        iptc.Chain(t[table], chain).append_rule(r)
            for lease in leases:
                self._add_lease(t, lease)

    def uninstall(self) -> None:
        """Remove the jumps and the chains; pyctr leaves no rule behind."""
        tables = (iptc.Table.NAT, iptc.Table.FILTER, iptc.Table.RAW)
        with self._batch(*tables) as t:
            for table, builtin, ours, _ in _JUMPS:
                base = iptc.Chain(t[table], builtin)
                for r in [r for r in base.rules if r.target.name == ours]:
                    base.delete_rule(r)
            for table, _, ours, _ in _JUMPS:
                if t[table].is_chain(ours):
                    iptc.Chain(t[table], ours).flush()
            for table, _, ours, _ in _JUMPS:
                if t[table].is_chain(ours):
                    t[table].delete_chain(ours)

    def _add_lease(self, t: dict[str, iptc.Table], lease: Lease) -> None:
        for port in lease.ports:
            # After the network rules (the gateway's DNS DNAT), which a lease must not shadow.
            iptc.Chain(t[iptc.Table.NAT], DNAT_CHAIN).append_rule(_dnat(lease, port))
            iptc.Chain(t[iptc.Table.FILTER], FORWARD_CHAIN).insert_rule(_forward(lease, port))

    def add_lease(self, lease: Lease) -> None:
        """Insert the lease's rules. The caller pushes the undo at once, then flushes stale
        UDP flows (flush_stale_udp_flows), which must not be able to strand these rules."""
        if not lease.ports:
            return
        with self._batch(iptc.Table.NAT, iptc.Table.FILTER) as t:
            self._add_lease(t, lease)

    def remove_lease(self, lease: Lease) -> None:
        """Remove the lease's rules; rules already gone (after a crash) are fine."""
        if not lease.ports:
            return
        with self._batch(iptc.Table.NAT, iptc.Table.FILTER) as t:
            for port in lease.ports:
                for table, chain, rule in ((iptc.Table.NAT, DNAT_CHAIN, _dnat(lease, port)),
                                           (iptc.Table.FILTER, FORWARD_CHAIN, _forward(lease, port))):
                    try:
                        iptc.Chain(t[table], chain).delete_rule(rule)
                    except iptc.IPTCError:
                        pass  # not there: nothing to remove
        flush_lease_udp_flows(lease)


# UDP conntrack: a long-lived UDP flow keeps its old translation (or lack of one) after a
# mapping changes. Each flush names exactly the flows a mapping concerns, never other host
# flows to a remote port of the same number. Best effort: a failure is logged, not raised, so
# it can never strand rules or an address. Fixed argv, built from typed values only.

def flush_stale_udp_flows(lease: Lease, local: set[ipaddress.IPv4Address]) -> None:
    """A new mapping: forget flows to the host address(es) it publishes on (its host_ip, or
    every local address for a wildcard) at its host port, recorded before the DNAT existed."""
    for port in lease.ports:
        if port.protocol != "udp":
            continue
        targets = [ipaddress.IPv4Address(port.host_ip)] if port.host_ip else sorted(local)
        for address in targets:
            _conntrack_delete(["--orig-dst", str(address),
                               "--orig-port-dst", str(int(port.host_port))])


def flush_lease_udp_flows(lease: Lease) -> None:
    """A mapping ends: forget the flows DNATed to it, which are exactly those whose reply comes
    from the lease's address and container port."""
    for port in lease.ports:
        if port.protocol == "udp":
            _conntrack_delete(["--reply-src", str(ipaddress.IPv4Address(lease.address)),
                               "--reply-port-src", str(int(port.container_port))])


def _conntrack_delete(match: list[str]) -> None:
    tool = shutil.which("conntrack", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if tool is None:
        return
    try:
        # Exit status 1 only says no entry matched.
        subprocess.run([tool, "-D", "-p", "udp", *match], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       close_fds=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("conntrack flush %s failed: %s", " ".join(match), e)
