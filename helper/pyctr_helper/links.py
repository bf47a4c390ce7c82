"""Bridges and veths, through rtnetlink (pyroute2). Host interface names are always the
helper's own; the only caller-chosen name is the peer's, inside the caller's netns."""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .config import Network

HOST_IFNAME_PREFIX = "pc"


def host_ifname(lease_id: str) -> str:
    """'pc' + 12 hex digits of a hash of the lease id: 14 characters, never caller-chosen."""
    return HOST_IFNAME_PREFIX + hashlib.blake2b(lease_id.encode(), digest_size=6).hexdigest()


def is_helper_ifname(name: str) -> bool:
    return (len(name) == 14 and name.startswith(HOST_IFNAME_PREFIX)
            and all(c in "0123456789abcdef" for c in name[2:]))


def bridge_mac(bridge: str) -> str:
    """A stable, locally administered MAC for the bridge: without it a bridge takes the lowest
    port's MAC and changes it as veths come and go, which breaks the containers' ARP caches."""
    digest = hashlib.blake2b(b"pyctr-bridge:" + bridge.encode(), digest_size=5).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest)


def _sysctl(path: str, value: str) -> None:
    p = Path("/proc/sys/net") / path
    if p.read_text().strip() != value:
        p.write_text(value)


IP_FORWARD = "ipv4/ip_forward"
IP_FORWARD_SAVED = "ip_forward.before"  # in the state dir: survives a helper crash


def enable_forwarding(state_dir: Path) -> None:
    """net.ipv4.ip_forward = 1 while pyctr bridges exist (containers reach out through the
    host). The value found first is saved in the state dir, written before the change so a
    crash cannot lose it; restore_forwarding puts it back when the last bridge goes."""
    saved = state_dir / IP_FORWARD_SAVED
    if not saved.exists():
        before = (Path("/proc/sys/net") / IP_FORWARD).read_text().strip()
        if before not in ("0", "1"):
            before = "1"  # not a value we understand: leave what we set
        tmp = saved.with_suffix(".tmp")
        tmp.write_text(before + "\n")
        os.replace(tmp, saved)
    _sysctl(IP_FORWARD, "1")


def restore_forwarding(state_dir: Path) -> None:
    """Put net.ipv4.ip_forward back to what it was before the first bridge (if we changed it)."""
    saved = state_dir / IP_FORWARD_SAVED
    try:
        before = saved.read_text().strip()
    except FileNotFoundError:
        return
    if before in ("0", "1"):
        _sysctl(IP_FORWARD, before)
    saved.unlink()


class Links:
    def __init__(self) -> None:
        self.ipr = IPRoute()
        self._ready: set[str] = set()  # bridges set up by this process and still present

    def close(self) -> None:
        self.ipr.close()

    def index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def names(self) -> set[str]:
        return {l.get_attr("IFLA_IFNAME") for l in self.ipr.get_links()}

    def ensure_bridge(self, net: Network) -> int:
        """The network's bridge, created if missing: up, pinned MAC, the gateway address,
        route_localnet on it alone (so DNAT to loopback works for this bridge and nowhere else).
        ip_forward is the caller's (enable_forwarding), once the attach is validated."""
        idx = self.index(net.bridge)
        if idx is not None and net.bridge in self._ready:
            return idx
        if idx is None:
            try:
                self.ipr.link("add", ifname=net.bridge, kind="bridge", address=bridge_mac(net.bridge))
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
            idx = self.index(net.bridge)
        link = self.ipr.get_links(idx)[0]
        if link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") != "bridge":
            raise OSError(errno.EEXIST, f"{net.bridge} exists and is not a bridge")
        addrs = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in self.ipr.get_addr(index=idx, family=2)}
        if (str(net.gateway), net.subnet.prefixlen) not in addrs:
            self.ipr.addr("add", index=idx, address=str(net.gateway), prefixlen=net.subnet.prefixlen)
        self.ipr.link("set", index=idx, state="up")
        _sysctl(f"ipv4/conf/{net.bridge}/route_localnet", "1")
        self._ready.add(net.bridge)
        return idx

    def remove_bridge(self, net: Network) -> None:
        self._ready.discard(net.bridge)
        idx = self.index(net.bridge)
        if idx is not None:
            self.delete(idx)

    def bridge_mtu(self, bridge_idx: int) -> int:
        return self.ipr.get_links(bridge_idx)[0].get_attr("IFLA_MTU")

    def create_veth(self, host: str, peer: str, netns_fd: int, mac: str, bridge_idx: int) -> int:
        """The veth pair, its peer created directly inside the caller's netns (IFLA_NET_NS_FD on
        the fd we validated; never a path) with the lease's MAC and the bridge's MTU. The host end
        stays down and outside the bridge until enslave(). Returns the host end's index."""
        mtu = self.bridge_mtu(bridge_idx)
        self.ipr.link("add", ifname=host, kind="veth", mtu=mtu,
                      peer={"ifname": peer, "net_ns_fd": int(netns_fd), "address": mac, "mtu": mtu})
        return self.index(host)

    def enslave(self, idx: int, bridge_idx: int) -> None:
        self.ipr.link("set", index=idx, master=bridge_idx, state="up")
        # Hairpin: where br_netfilter is loaded, a container's packet to its own published
        # port is DNATed inside the bridge and must go back out the port it came in on.
        self.ipr.brport("set", index=idx, mode=1)

    def delete(self, index_or_name: int | str) -> None:
        """Delete a link; gone already is fine."""
        idx = index_or_name if isinstance(index_or_name, int) else self.index(index_or_name)
        if idx is None:
            return
        try:
            self.ipr.link("del", index=idx)
        except NetlinkError as e:
            if e.code != errno.ENODEV:
                raise

    def routes(self) -> list[tuple[ipaddress.IPv4Network, str]]:
        """Host IPv4 routes and address networks, with their device names."""
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in self.ipr.get_links()}
        out = []
        for r in self.ipr.get_routes(family=2, table=254):
            dst = r.get_attr("RTA_DST")
            if dst:
                out.append((ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False),
                            names.get(r.get_attr("RTA_OIF"), "")))
        for a in self.ipr.get_addr(family=2):
            out.append((ipaddress.IPv4Network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False),
                        names.get(a["index"], "")))
        return out

    def local_addresses(self) -> set[ipaddress.IPv4Address]:
        return {ipaddress.IPv4Address(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"))
                for a in self.ipr.get_addr(family=2)}
