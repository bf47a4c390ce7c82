"""Limits through pyctr-helper: for cgroup v1 hosts and v2 hosts without systemd delegation.

The helper (Resources.Limit, polkit action org.pyctr.resources.limit) checks the admin's
maximums, creates a root-owned cgroup, writes the limits and moves the container in; it
removes the cgroup once the container has exited and our bus connection is gone. So the
connection stays open from apply() to release(): release() first reads the OOM-kill counter,
which the user may read but not write, and only then lets the helper clean up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyctr_bus

from .cgroup_choice import Mounts
from .cgroups import Wanted, oom_note
from .errors import HelperError, PyctrError
from .helper_client import HelperClient

_CGROUP = re.compile(r"^pyctr/\d+-[0-9a-f]{16}$")
_PLACED = re.compile(r"^(?:[^/\0]+/)*pyctr/\d+-[0-9a-f]{16}$")
_UNREACHABLE_PREFIXES = ("org.freedesktop.DBus.Error.ServiceUnknown",
                         "org.freedesktop.DBus.Error.NameHasNoOwner",
                         "org.freedesktop.DBus.Error.NoServer",
                         "org.freedesktop.DBus.Error.Spawn",
                         "org.freedesktop.DBus.Error.UnknownMethod",
                         "org.freedesktop.DBus.Error.UnknownInterface",
                         "org.freedesktop.DBus.Error.UnknownObject")


class HelperPlacement:
    """A helper-made cgroup: where to read the OOM count, and the connection that keeps it."""

    def __init__(self, client: HelperClient, cgroup: str, oom_file: Path | None,
                 wanted: Wanted) -> None:
        self.client, self.cgroup, self.oom_file, self.wanted = client, cgroup, oom_file, wanted

    def oom_kills(self) -> int:
        if self.oom_file is None:
            return 0
        try:
            for line in self.oom_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def release(self) -> str | None:
        try:
            return oom_note(self.oom_kills(), self.wanted)
        finally:
            self.client.close()  # the helper removes the cgroup once we are gone


class HelperCgroups:
    def __init__(self, mounts: Mounts) -> None:
        self.mounts = mounts

    def apply(self, wanted: Wanted, pid: int, pidfd: int) -> HelperPlacement:
        client = HelperClient()
        try:
            result = self._limit(client, wanted, pidfd)
            cgroup = result.get("cgroup")
            if not isinstance(cgroup, str) or not _CGROUP.match(cgroup):
                raise HelperError(pyctr_bus.FAILED,
                                  "pyctr-helper sent a Limit reply pyctr cannot use")
        except BaseException:
            client.close()
            raise
        return HelperPlacement(client, cgroup, self._oom_file(cgroup, result.get("paths")), wanted)

    def _oom_file(self, cgroup: str, paths: object = None) -> Path | None:
        # The helper nests the cgroup under the container's own; "paths" says where it is in
        # each hierarchy (controller -> path from that hierarchy's root, "" on v2).
        if isinstance(paths, dict):
            where = paths.get("memory" if "memory" in self.mounts.v1 else "")
            if isinstance(where, str) and _PLACED.match(where) and ".." not in where.split("/"):
                cgroup = where
        if "memory" in self.mounts.v1:
            return self.mounts.v1["memory"] / cgroup / "memory.oom_control"
        if self.mounts.unified is not None:
            return self.mounts.unified / cgroup / "memory.events"
        return None

    def _limit(self, client: HelperClient, wanted: Wanted, pidfd: int) -> dict[str, Any]:
        """Limit, asking for a password on the terminal only when polkit wants one."""
        from . import polkit_agent

        try:
            return client.limit(pidfd, wanted.wire())
        except HelperError as e:
            if e.name != pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED or not polkit_agent.can_prompt():
                raise _user_error(e) from None
        with polkit_agent.TtyAgent(client.pid):
            try:
                return client.limit(pidfd, wanted.wire(), interactive=True)
            except HelperError as e:
                raise _user_error(e, prompted=True) from None


def _user_error(e: HelperError, prompted: bool = False) -> PyctrError:
    """One line saying the limits cannot be enforced, why, and what would fix it."""
    reason = " ".join("".join(c if c.isprintable() else " " for c in str(e)).split())[:300]
    if e.name in (pyctr_bus.NOT_AUTHORIZED, pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED):
        if e.name == pyctr_bus.INTERACTIVE_AUTHORIZATION_REQUIRED and not prompted:
            reason = "it needs a password, and pyctr asks for one only on a terminal"
        fix = (f"an administrator must grant {pyctr_bus.ACTION_LIMIT_RESOURCES} with a "
               "polkit rule")
        message = f"resource limits refused: not authorized ({reason}); {fix}"
    elif e.name.startswith(_UNREACHABLE_PREFIXES):
        message = (f"resource limits need pyctr-helper on this host (cgroup v1, or v2 without "
                   f"systemd delegation), and it is not reachable: {reason}")
    else:
        message = f"cannot enforce the resource limits: {reason}"
    return HelperError(e.name, message)
