"""Entry point of pyctr-helper: read the config, reconcile, drop capabilities, serve the bus.

    pyctr-helper [--config PATH] [--log PATH]

Runs as root (D-Bus activation or the service manager starts it). A bad config is logged and
the helper exits 1 without taking its bus name, rather than serve half-configured. SIGTERM or
SIGINT: every lease ends, pyctr's chains and bridges are removed, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import resource
import signal
import sys
from pathlib import Path

import pyctr_bus
from dbus_next import BusType, Message, MessageType
from dbus_next.aio import MessageBus
from dbus_next.constants import NameFlag, RequestNameReply

from . import config as config_mod
from . import privileges, resources, rollback
from .audit import SYSTEM, Audit
from .errors import ConfigError
from .facade import Facade
from .fdcheck import ForbiddenNamespaces
from .lifetime import ExitWatcher
from .links import Links
from .network import NetworkService
from .services import Services

log = logging.getLogger("pyctr_helper")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pyctr-helper", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="admin configuration (default /etc/pyctr/helper.toml)")
    p.add_argument("--log", type=Path, help="also write the log (and audit lines) to this file")
    p.add_argument("--exit-when-idle", type=float, metavar="SECONDS",
                   help="exit after SECONDS with no lease, no watched process and no call "
                        "(for D-Bus activation: the next call starts a fresh helper)")
    p.add_argument("--crash-at", metavar="STEP", help=argparse.SUPPRESS)  # fault injection for tests
    return p.parse_args(argv)


def _setup_logging(path: Path | None) -> None:
    if path is None:
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(path)]
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s pyctr-helper[%(process)d] %(levelname)s %(message)s")


class NameTaken(Exception):
    """Another helper owns the bus name: leave everything to it."""


def _instance_lock(state_dir: Path) -> int | None:
    """One helper per state dir: a second instance must never reconcile or tear down the
    first one's leases."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state_dir / "helper.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def _idle_watch(facade: Facade, services: Services, network: NetworkService,
                      idle: float, stop: asyncio.Event) -> None:
    """Exit when nothing depends on the helper: no lease, no watched process (cgroups use the
    same watcher), no call in flight, for `idle` seconds."""
    quiet_since = asyncio.get_running_loop().time()
    while not stop.is_set():
        await asyncio.sleep(min(idle, 1.0))
        now = asyncio.get_running_loop().time()
        if facade.tasks or services.exits.watches or network.store.leases:
            quiet_since = now
        elif now - quiet_since >= idle:
            log.info("idle for %.0fs: exiting", idle)
            stop.set()


async def _serve(services: Services, forbidden: ForbiddenNamespaces, idle: float | None) -> None:
    bus = await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True).connect()
    network = NetworkService(services)
    # The handler is in place before the name is ours, but serves nothing until ready.
    facade = Facade(bus, services, network, forbidden)
    if services.config.end_on_disconnect:
        await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=["type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                  "member='NameOwnerChanged',arg2=''"]))
    # Leave everything to a helper that already serves, before touching any state.
    owner = await bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="NameHasOwner", signature="s",
        body=[pyctr_bus.BUS_NAME]))
    if owner.message_type == MessageType.METHOD_RETURN and owner.body[0]:
        bus.disconnect()
        raise NameTaken(f"{pyctr_bus.BUS_NAME} is already served")
    lock = _instance_lock(services.config.state_dir)
    if lock is None:
        bus.disconnect()
        raise NameTaken(f"another helper holds {services.config.state_dir}/helper.lock")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Reconcile, then take the name: whoever sees the name owned sees a reconciled host.
    try:
        await services.act(network.start)
        await services.act(resources.start, services)  # cgroups: remove what a crash left
    except BaseException:
        await services.act(network.shutdown)
        raise
    reply = await bus.request_name(pyctr_bus.BUS_NAME, NameFlag.DO_NOT_QUEUE)
    if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
        # Lost a start-up race to another helper on another state dir: leave its rules be.
        bus.disconnect()
        raise NameTaken(f"{pyctr_bus.BUS_NAME} is owned by another process ({reply.name})")
    try:
        services.audit.record(SYSTEM, "start", "ok", networks=",".join(
            f"{n.name}={n.bridge}:{n.subnet}" for n in services.config.networks.values()),
            leases=len(network.store.leases), capabilities=hex(privileges.effective()))
        facade.ready.set()
        log.info("serving %s %s", pyctr_bus.BUS_NAME, pyctr_bus.VERSION)
        if idle:
            loop.create_task(_idle_watch(facade, services, network, idle, stop))
        disconnected = loop.create_task(bus.wait_for_disconnect())
        stopping = loop.create_task(stop.wait())
        await asyncio.wait({disconnected, stopping}, return_when=asyncio.FIRST_COMPLETED)
        log.info("stopping: ending every lease")
    finally:
        for task in list(facade.tasks):
            task.cancel()
        for hook in services.shutdown_hooks:
            try:
                await services.act(hook)
            except Exception:
                log.exception("shutdown hook failed")
        await services.act(network.shutdown)
        services.exits.close()
        services.audit.record(SYSTEM, "stop", "ok")
        bus.disconnect()
        os.close(lock)


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: calls waiting on polkit hold the fds they
    brought (capped per caller in the facade), and a default soft limit of 1024 would let a
    few callers starve everyone else. (Raising the hard limit is the service file's job.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit to %s: %s", hard, e)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    _setup_logging(args.log)
    if os.geteuid() != 0:
        log.error("pyctr-helper must run as root (it is started by D-Bus activation)")
        sys.exit(1)
    _raise_fd_limit()
    rollback.CRASH_AT = args.crash_at
    if args.crash_at:
        log.warning("fault injection: the helper will SIGKILL itself at step %s", args.crash_at)
    links = Links()
    try:
        config = config_mod.load(args.config, links.routes())
    except ConfigError as e:
        log.error("refusing to serve: bad configuration: %s", e)
        sys.exit(1)
    finally:
        links.close()
    # Read while the helper may still look at /proc/1, then drop capabilities before any
    # thread exists (capset changes the calling thread only; threads inherit at creation).
    forbidden = ForbiddenNamespaces.read()
    privileges.drop_to()
    audit = Audit()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    services = Services(config=config, audit=audit, exits=ExitWatcher(loop))
    try:
        loop.run_until_complete(_serve(services, forbidden, args.exit_when_idle))
    except NameTaken as e:
        log.error("not serving: %s", e)
        sys.exit(1)
    except Exception:
        log.exception("the helper failed")
        sys.exit(1)
    finally:
        services.worker.shutdown(wait=True)
    sys.exit(0)
