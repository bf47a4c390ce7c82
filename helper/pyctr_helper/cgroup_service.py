"""Resources.Limit: put a caller's container into a root-owned cgroup with the limits it asked for.

The facade has authorized the caller (org.pyctr.resources.limit) before `limit` runs; here the
method reads as the contract's remaining steps:
    validate  the a{sv}, the admin's maximums, what this host can enforce, the pidfd's process;
    act       create the cgroup(s) with the limits written, move the process in (undone on failure);
    record    an audit line, and a watch that removes the cgroup once the process is gone.

Lifetime. The cgroup outlives the container's last process briefly, on purpose: the frontend
reads the OOM-kill counter after the container exits, to tell the user it ran out of memory.
So removal waits until the container has exited and either the calling pyctr process has
exited too or REMOVE_GRACE seconds have passed, whichever comes first; then rmdir is retried
until the exiting tasks have left. At start, `reconcile` removes what an earlier helper
left behind and watches what still holds processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .audit import SYSTEM, Audit, Caller
from .cgroup_limits import LimitError, LimitRequest, parse_limits, with_maximums
from .cgroup_target import Target, TargetRefused, resolve, still_same
from .cgroup_tree import SUBTREE, CgroupBackend, detect, new_name, owner_of, procs
from .errors import Failed, HelperError, InvalidArgument, QuotaExceeded
from .lifetime import ExitWatcher, Watch
from .rollback import UndoStack

log = logging.getLogger(__name__)

ACTION = "resources.limit"
REMOVE_GRACE = 30.0     # at most this long after the exit while the caller still runs
RMDIR_RETRY = 0.05      # seconds between rmdir attempts while the last tasks leave
RMDIR_GIVE_UP = 20.0    # then the cgroup is left for the next reconcile, and the log says so
MAX_PER_USER = 64       # live limited containers per user: bounds the helper's own state


@dataclass
class Placement:
    name: str
    caller: Caller
    dirs: list[Path]
    watch: Watch | None = None        # the container's exit
    owner_watch: Watch | None = None  # the calling pyctr's exit
    pending: set[Watch] = field(default_factory=set)  # after a restart: every process inside
    exited: bool = False
    owner_gone: bool = False
    removing: bool = False
    oom_kills: int = 0


def _refusal(e: LimitError) -> HelperError:
    if e.kind == "invalid":
        return InvalidArgument(str(e))
    if e.kind == "quota":
        return QuotaExceeded(str(e))
    return Failed(str(e))  # unsupported here, or a kernel refusal: the message says which


class CgroupService:
    def __init__(self, config: Any, audit: Audit, watcher: ExitWatcher,
                 backend: CgroupBackend | None = None,
                 submit: Callable[..., None] | None = None) -> None:
        """`submit(fn, *args)` runs fn on the thread that calls limit() (the helper's act
        thread); None runs it at once, for a caller with a single thread."""
        self.config = config
        self.audit = audit
        self.watcher = watcher
        self.submit = submit
        self._backend = backend
        self.placements: dict[str, Placement] = {}

    @property
    def backend(self) -> CgroupBackend:
        if self._backend is None:
            self._backend = detect()
        return self._backend

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.watcher.loop

    # --- Resources.Limit ------------------------------------------------------------------

    def limit(self, caller: Caller, pidfd: int, values: dict[str, object]) -> dict[str, tuple[str, object]]:
        """Validate, act, record. `values` has the LIMIT_OPTIONS keys with their exact D-Bus
        types (the facade checked them); `pidfd` stays the facade's, which closes it."""
        try:
            request, target = self._validate(caller, pidfd, values)
            placement = self._act(caller, pidfd, request, target)
        except LimitError as e:
            raise _refusal(e) from None  # the facade records the refusal
        cgroup = f"{SUBTREE}/{placement.name}"
        self.audit.record(caller, ACTION, "ok", cgroup=cgroup, container_pid=target.pid,
                          limits=request.describe())
        # "cgroup" names it; "paths" says where it is in each hierarchy (nested under the
        # process's own cgroups, so no longer the same path everywhere).
        return {"cgroup": ("s", cgroup),
                "controllers": ("as", self.backend.controllers(placement.dirs)),
                "paths": ("a{ss}", self.backend.paths(placement.dirs))}

    def _validate(self, caller: Caller, pidfd: int, values: dict[str, object]) -> tuple[LimitRequest, Target]:
        # Every configured maximum is written, asked for or not (cgroup_limits.with_maximums).
        request = with_maximums(parse_limits(values), self.config.limits_for(caller.uid),
                                self.backend.accounts_swap())
        mine = sum(1 for p in self.placements.values() if p.caller.uid == caller.uid)
        if mine >= MAX_PER_USER:
            raise QuotaExceeded(f"at most {MAX_PER_USER} limited containers per user at once")
        self.backend.check(request)
        target = resolve(pidfd, caller.uid)
        return request, target

    def _act(self, caller: Caller, pidfd: int, request: LimitRequest, target: Target) -> Placement:
        backend = self.backend
        name = new_name(caller.uid)
        with UndoStack() as undo:
            # Nested under the cgroups the process is in now, so it stays under their limits;
            # a failed create() leaves nothing behind.
            dirs = backend.create(name, request, target.cgroups)
            undo.push("cgroup-create", lambda: backend.remove(dirs))
            # Pushed before the move: a move that failed halfway is undone too.
            undo.push("cgroup-move", lambda: self._move_back(name, caller, dirs, pidfd, target))
            for d in dirs:
                # The pid is only written while the pidfd still names it: the target may have
                # died and its pid been reused since resolve() (or since the last write).
                if not still_same(pidfd, target):
                    raise TargetRefused()
                backend.move([d], target.pid)
            # It can still die between the check and the write: the undo then leaves whatever
            # we moved where it is (see _move_back), and we refuse.
            if not still_same(pidfd, target):
                raise TargetRefused()
            placement = Placement(name, caller, dirs)
            placement.watch = self.watcher.watch(pidfd, lambda: self._submit(self._exited, name))
            undo.commit()
        self.placements[name] = placement
        placement.owner_watch = self._watch_owner(
            caller, lambda: self._submit(self._owner_left, name))
        return placement

    def _move_back(self, name: str, caller: Caller, dirs: list[Path], pidfd: int,
                   target: Target) -> None:
        """Undo of the move. While the pidfd still names the target, put it back where it was.
        Otherwise the pid we moved may be an unknown process that reused it: it must not go
        into the target's old cgroup (which may be the caller's to write), so it stays in ours,
        with every limit lifted, and the cgroup is removed once its processes are gone."""
        inside = set().union(*(procs(d) for d in dirs))
        if still_same(pidfd, target):
            for pid in inside:
                self.backend.restore(pid, target.cgroups)
            return
        if not inside:
            return
        self.backend.unlimit(dirs)
        log.warning("cgroup %s/%s: pid %d was reused while it was moved; pids %s left in it "
                    "with no limits until they exit", SUBTREE, name, target.pid, sorted(inside))
        self.audit.record(caller, "resources.limit", "failed", cgroup=f"{SUBTREE}/{name}",
                          reason="pid reused during the move; its process was left in place "
                          "with no limits")
        self._adopt(name, caller, dirs)

    def _watch_owner(self, caller: Caller, callback: Callable[[], None]) -> Watch | None:
        """Watch the calling process (pyctr), which reads the OOM counter before it exits.

        The pid comes from the bus (GetConnectionCredentials) and the process is blocked in
        this very call, so pidfd_open gets the caller, not a later process with its pid. It
        only decides when a cgroup of the caller's goes away, never what anyone may do."""
        if caller.pid <= 0:
            return None
        try:
            fd = os.pidfd_open(caller.pid)
        except OSError:
            return None
        try:
            return self.watcher.watch(fd, callback)
        finally:
            os.close(fd)

    # --- lifetime -------------------------------------------------------------------------
    # Exit callbacks and timers fire on the asyncio loop; what they decide runs where limit()
    # runs (the helper's act thread), so the placements and the cgroupfs have one writer.

    def _submit(self, fn: Callable[..., None], *args: object) -> None:
        if self.submit is None:
            fn(*args)
        else:
            self.submit(fn, *args)

    def _after(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        """Run fn(*args) on the act thread `delay` seconds from now (callable from any thread)."""
        self.loop.call_soon_threadsafe(self.loop.call_later, delay, self._submit, fn, *args)

    def _exited(self, name: str) -> None:
        placement = self.placements.get(name)
        if placement is None:
            return
        placement.exited = True
        if placement.owner_gone:
            self._remove(name)
        else:
            self._after(REMOVE_GRACE, self._remove, name)  # a no-op if removed by then

    def _owner_left(self, name: str) -> None:
        placement = self.placements.get(name)
        if placement is None:
            return
        placement.owner_gone = True
        if placement.exited:
            self._remove(name)

    def _remove(self, name: str, deadline: float | None = None) -> None:
        placement = self.placements.get(name)
        if placement is None:
            return
        if deadline is None:
            if placement.removing:
                return
            placement.removing = True
            deadline = self.loop.time() + RMDIR_GIVE_UP
            for watch in (placement.watch, placement.owner_watch, *placement.pending):
                if watch is not None:
                    watch.cancel()
        # For the audit line; a partly removed cgroup reads 0, so keep the highest count.
        placement.oom_kills = max(placement.oom_kills, self.backend.oom_kills(placement.dirs))
        if self.backend.remove(placement.dirs, attempts=1):
            del self.placements[name]
            self.audit.record(placement.caller, "resources.release", "ok",
                              cgroup=f"{SUBTREE}/{name}", oom_kills=placement.oom_kills)
        elif self.loop.time() < deadline:
            self._after(RMDIR_RETRY, self._remove, name, deadline)
        else:
            del self.placements[name]
            self.audit.record(placement.caller, "resources.release", "failed",
                              cgroup=f"{SUBTREE}/{name}", reason="tasks still inside; left "
                              "for the next reconcile")

    # --- start and stop -------------------------------------------------------------------

    def reconcile(self) -> None:
        """At start: remove empty pyctr cgroups left by an earlier helper; watch populated ones."""
        try:
            found = self.backend.existing()
        except LimitError as e:
            log.info("no cgroups to reconcile: %s", e)
            return
        for name, dirs in found.items():
            if name in self.placements:
                continue
            uid = owner_of(name)
            caller = Caller(bus_name="(reconcile)", uid=uid if uid is not None else -1, pid=0)
            if self._adopt(name, caller, dirs):
                self.audit.record(SYSTEM, "resources.reconcile", "ok", cgroup=f"{SUBTREE}/{name}",
                                  kept="live processes")

    def _adopt(self, name: str, caller: Caller, dirs: list[Path]) -> bool:
        """A cgroup of ours without a live Limit call behind it (left by an earlier helper, or
        holding a process that reused a pid mid-move): watch every process in it and remove it
        after the last one (none: remove it now). True if processes were found."""
        placement = Placement(name, caller, dirs, exited=True, owner_gone=True)
        self.placements[name] = placement
        for pid in set().union(*(procs(d) for d in dirs)):
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # gone already
            try:
                # The callback gets the list, read on the act thread once this loop is done.
                holder: list[Watch] = []
                holder.append(self.watcher.watch(
                    fd, lambda n=name, h=holder: self._submit(self._reconciled_exit, n, h)))
                placement.pending.add(holder[0])
            finally:
                os.close(fd)
        if not placement.pending:
            self._remove(name)
        return bool(placement.pending)

    def _reconciled_exit(self, name: str, holder: list[Watch]) -> None:
        placement = self.placements.get(name)
        if placement is None:
            return
        placement.pending.discard(holder[0])
        if not placement.pending:
            self._remove(name)

    def close(self) -> None:
        """Helper shutdown: stop watching; live cgroups stay, the next start reconciles them."""
        for placement in self.placements.values():
            for watch in (placement.watch, placement.owner_watch, *placement.pending):
                if watch is not None:
                    watch.cancel()
        self.placements.clear()
