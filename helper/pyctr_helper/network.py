"""Network leases: the logic behind Attach, Detach and List (no D-Bus here).

A lease is everything one Attach made: a reserved host port per published port, a veth pair
(the host end in the bridge, the peer in the caller's netns), anti-spoofing filters, DNAT and
FORWARD rules. It ends on exactly one path, end(), whatever the reason: the container exited,
its owner detached, the owner's bus connection dropped, or the helper stops.

Decision: the helper does not enter the container's network namespace. It creates the peer
directly inside it (IFLA_NET_NS_FD) and returns address, gateway and DNS; the frontend, which
holds CAP_NET_ADMIN in its own user namespace, configures eth0, lo and the default route. The
helper thus never runs code in, or inherits anything from, a namespace a user controls.
"""

from __future__ import annotations

import errno
import logging
import secrets

from pyroute2.netlink.exceptions import NetlinkError

from . import antispoof, dns, ipam, ports
from .audit import SYSTEM, Caller
from .config import Network
from .errors import InvalidArgument, NoSuchLease, QuotaExceeded
from .fdcheck import Process
from .firewall import Firewall, flush_stale_udp_flows
from .lifetime import Watch
from .links import (Links, enable_forwarding, host_ifname, is_helper_ifname,
                    restore_forwarding)
from .requests import AttachRequest
from .rollback import UndoStack, checkpoint
from .services import Services
from .store import ACTIVE, Lease, LeaseStore

log = logging.getLogger(__name__)


class NetworkService:
    """Runs on the act thread (Services.act), except start() and shutdown(), which run there
    too or before/after the loop."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config, self.audit, self.exits = services.config, services.audit, services.exits
        self.store = LeaseStore(self.config.state_dir)
        self._links: Links | None = None
        self.firewall = Firewall()
        self.reservations: dict[str, list[ports.Reservation]] = {}
        self.watches: dict[str, Watch] = {}
        servers = dns.host_nameservers()
        self.dns_target = dns.loopback_resolver(servers)
        self.dns_servers = servers

    # --- start and stop -------------------------------------------------------------------

    def start(self) -> None:
        """Reconcile the store with the kernel: keep live leases (re-watch their process,
        re-bind their ports), remove everything of dead or pending ones, rebuild the chains."""
        self.store.open()
        with self.store.locked():
            for lease in list(self.store.leases.values()):
                if not self._revive(lease):
                    self._remove_objects(lease)
                    self.store.remove(lease.id)
                    self.audit.record(SYSTEM, "reconcile", "ok", lease=lease.id,
                                      uid_owner=lease.owner_uid, removed="stale lease")
            known = {l.host_ifname for l in self.store.leases.values()}
            for name in self.links.names():
                if is_helper_ifname(name) and name not in known:
                    self.links.delete(name)
            antispoof.install((l.host_ifname, l.address, l.mac) for l in self.store.leases.values())
            for net in self.config.networks.values():
                if not self.store.on_network(net.name):
                    self.links.remove_bridge(net)
            if self.store.leases:
                enable_forwarding(self.config.state_dir)
            else:
                restore_forwarding(self.config.state_dir)  # e.g. after a crash with leases
            self.firewall.install(list(self.config.networks.values()), self._dns_targets(),
                                  list(self.store.leases.values()))

    @property
    def links(self) -> Links:
        # Created on the act thread that uses it: pyroute2's sync API runs its own event loop.
        if self._links is None:
            self._links = Links()
        return self._links

    def _on_exit(self, lease_id: str):
        """Exit callbacks run on the loop; the lease ends on the act thread."""
        return lambda: self.services.submit(self.end, lease_id, "process exited")

    def _dns_targets(self) -> dict[str, str | None]:
        target = str(self.dns_target) if self.dns_target else None
        return {name: target for name in self.config.networks}

    def _revive(self, lease: Lease) -> bool:
        if lease.state != ACTIVE or lease.network not in self.config.networks:
            return False
        if self.links.index(lease.host_ifname) is None:
            return False
        watch = self.exits.watch_pid(lease.pid, lease.pid_start, self._on_exit(lease.id))
        if watch is None:
            return False
        held = []
        try:
            for port in lease.ports:
                held.append(ports.reserve_exact(port))
        except Exception as e:
            log.warning("lease %s: cannot re-reserve its ports (%s); ending it", lease.id, e)
            watch.cancel()
            for r in held:
                r.release()
            return False
        self.watches[lease.id] = watch
        self.reservations[lease.id] = held
        return True

    def shutdown(self) -> None:
        """SIGTERM: end every lease and remove chains and bridges, leaving the host as it was
        (scripts/uninstall-host.sh relies on this). Containers lose their network."""
        for lease_id in list(self.store.leases):
            self.end(lease_id, "helper stopped")
        self.firewall.uninstall()
        antispoof.uninstall()
        for net in self.config.networks.values():
            self.links.remove_bridge(net)
        restore_forwarding(self.config.state_dir)
        self.links.close()

    # --- the methods ----------------------------------------------------------------------

    def attach(self, caller: Caller, req: AttachRequest, netns_fd: int, pidfd: int,
               process: Process) -> Lease:
        net = self.config.networks.get(req.network)
        if net is None:
            raise InvalidArgument(f"no network named {req.network!r}")
        local = self.links.local_addresses()
        bridges = tuple(n.subnet for n in self.config.networks.values())
        for p in req.ports:
            ports.check_request(p, self.config.ports, local, bridges)
        with self.store.locked(), UndoStack() as undo:
            self._check_quota(caller.uid, len(req.ports))
            leases = list(self.store.leases.values())
            address = ipam.allocate(net, leases, req.address)
            lease_id = secrets.token_hex(8)
            while lease_id in self.store.leases:
                lease_id = secrets.token_hex(8)
            held: list[ports.Reservation] = []
            for p in req.ports:
                r = ports.reserve(p, self.config.ports)
                held.append(r)
                undo.push("reserve-port", r.release)
            lease = Lease(
                id=lease_id, owner_uid=caller.uid, bus_name=caller.bus_name, network=net.name,
                bridge=net.bridge, address=str(address), prefixlen=net.subnet.prefixlen,
                gateway=str(net.gateway), mac=ipam.random_mac({l.mac for l in leases}),
                host_ifname=host_ifname(lease_id), ifname=req.ifname,
                ports=tuple(r.port for r in held),
                dns=tuple(dns.container_nameservers(self.dns_servers, net.gateway)))
            # Pending before any kernel change: a crash from here on is recognisable at start.
            self.store.put(lease)
            undo.push("record-pending", lambda: self.store.remove(lease.id))
            bridge = self.links.ensure_bridge(net)
            undo.push("bridge", lambda: self._remove_bridge_if_unused(net, lease.id))
            try:
                idx = self.links.create_veth(lease.host_ifname, req.ifname, netns_fd, lease.mac, bridge)
            except NetlinkError as e:
                if e.code == errno.EEXIST:
                    raise InvalidArgument(f"an interface named {req.ifname} already exists in the namespace")
                raise
            undo.push("veth", lambda: self.links.delete(lease.host_ifname))
            # Filters go on before the veth joins the bridge: no unfiltered frame ever passes.
            antispoof.protect(lease.host_ifname, lease.address, lease.mac)
            undo.push("antispoof", lambda: antispoof.unprotect(lease.host_ifname, lease.address, lease.mac))
            self.links.enslave(idx, bridge)
            checkpoint("enslave")
            # Everything the caller sent has been accepted: only now is forwarding turned on
            # (a refused attach leaves it alone); the last bridge's removal restores it.
            enable_forwarding(self.config.state_dir)
            self.firewall.add_lease(lease)
            # The undo first: nothing that can fail may come between the rules and their undo.
            undo.push("rules", lambda: self.firewall.remove_lease(lease))
            flush_stale_udp_flows(lease, local)  # best effort, never raises
            lease = lease.activated(process.pid, process.start_time)
            self.store.put(lease)
            checkpoint("active")
            watch = self.exits.watch(pidfd, self._on_exit(lease.id))
            undo.commit()
        self.watches[lease.id] = watch
        self.reservations[lease.id] = held
        return lease

    def _check_quota(self, uid: int, new_ports: int) -> None:
        quota = self.config.quota_for(uid)
        mine = self.store.owned_by(uid)
        if quota.max_interfaces is not None and len(mine) + 1 > quota.max_interfaces:
            raise QuotaExceeded(f"you may hold at most {quota.max_interfaces} interfaces")
        used = sum(len(l.ports) for l in mine)
        if quota.max_ports is not None and used + new_ports > quota.max_ports:
            raise QuotaExceeded(f"you may publish at most {quota.max_ports} ports")

    def lease_for(self, caller: Caller, lease_id: str, manage_all: bool) -> Lease:
        lease = self.store.leases.get(lease_id)
        if lease is None or (lease.owner_uid != caller.uid and not manage_all):
            # The same answer whether the lease does not exist or is someone else's.
            raise NoSuchLease(f"no lease {lease_id}")
        return lease

    def owner_of(self, lease_id: str) -> int | None:
        lease = self.store.leases.get(lease_id)
        return lease.owner_uid if lease else None

    def detach(self, caller: Caller, lease_id: str, manage_all: bool) -> Lease:
        lease = self.lease_for(caller, lease_id, manage_all)
        self.end(lease.id, f"detached by uid {caller.uid}", caller)
        return lease

    def list(self, caller: Caller) -> list[Lease]:
        return [l for l in self.store.owned_by(caller.uid) if l.state == ACTIVE]

    def on_disconnect(self, bus_name: str) -> None:
        """The caller's bus connection dropped: end its leases if the admin configured so."""
        if not self.config.end_on_disconnect:
            return
        for lease in list(self.store.leases.values()):
            if lease.bus_name == bus_name:
                self.end(lease.id, "owner left the bus")

    # --- the one way a lease ends ---------------------------------------------------------

    def end(self, lease_id: str, reason: str, caller: Caller = SYSTEM) -> None:
        lease = self.store.leases.get(lease_id)
        if lease is None:
            return
        watch = self.watches.pop(lease_id, None)
        if watch:
            watch.cancel()
        self._remove_objects(lease)
        for r in self.reservations.pop(lease_id, []):
            r.release()
        with self.store.locked():
            self.store.remove(lease_id)
            net = self.config.networks.get(lease.network)
            if net is not None:
                self._remove_bridge_if_unused(net, lease_id)
        self.audit.record(caller, "detach", "ok", lease=lease.id, owner=lease.owner_uid,
                          veth=lease.host_ifname, address=lease.address, reason=reason)

    def _remove_objects(self, lease: Lease) -> None:
        for what, step in (("rules", lambda: self.firewall.remove_lease(lease)),
                           ("veth", lambda: self.links.delete(lease.host_ifname)),
                           ("anti-spoofing elements",
                            lambda: antispoof.unprotect(lease.host_ifname, lease.address, lease.mac))):
            try:
                step()
            except Exception:
                log.exception("lease %s: removing its %s failed", lease.id, what)

    def _remove_bridge_if_unused(self, net: Network, ending: str) -> None:
        """A bridge lives while a lease uses it, so an idle host carries no pyctr interface."""
        if not any(l.id != ending for l in self.store.on_network(net.name)):
            try:
                self.links.remove_bridge(net)
            except Exception:
                log.exception("removing bridge %s failed", net.bridge)
            if not any(l.id != ending for l in self.store.leases.values()):
                try:
                    restore_forwarding(self.config.state_dir)  # the last pyctr bridge went
                except OSError:
                    log.exception("restoring net.ipv4.ip_forward failed")


def lease_wire(lease: Lease) -> dict[str, tuple[str, object]]:
    """A lease as Attach returns it and List lists it: field -> (signature, value)."""
    return {
        "lease": ("s", lease.id),
        "network": ("s", lease.network),
        "address": ("s", f"{lease.address}/{lease.prefixlen}"),
        "gateway": ("s", lease.gateway),
        "mac": ("s", lease.mac),
        "dns": ("as", list(lease.dns)),
        "ports": ("a(sqqs)", [p.wire() for p in lease.ports]),
        "host_ifname": ("s", lease.host_ifname),
    }
