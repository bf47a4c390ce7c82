"""The audit trail: one line per privileged act and per refusal, to syslog (the journal where
present) and to the helper's log file. Who (uid, bus name, pid), what (action, objects), outcome."""

from __future__ import annotations

import logging
import syslog
from dataclasses import dataclass

log = logging.getLogger("pyctr_helper.audit")


@dataclass(frozen=True)
class Caller:
    """The identity of a D-Bus caller, as the bus daemon vouches for it (never from arguments)."""

    bus_name: str
    uid: int
    pid: int


SYSTEM = Caller(bus_name="(helper)", uid=0, pid=0)


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in " \"=\n"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class Audit:
    def __init__(self) -> None:
        syslog.openlog("pyctr-helper", syslog.LOG_PID, syslog.LOG_AUTHPRIV)

    def record(self, caller: Caller, action: str, outcome: str, **objects: object) -> None:
        """`outcome` is "ok", "denied", "refused" or "failed"; `objects` name what was touched."""
        fields = [f"uid={caller.uid}", f"bus={_quote(caller.bus_name)}", f"pid={caller.pid}",
                  f"action={_quote(action)}"]
        fields += [f"{k}={_quote(v)}" for k, v in objects.items() if v is not None]
        fields.append(f"outcome={_quote(outcome)}")
        line = " ".join(fields)
        priority = syslog.LOG_INFO if outcome == "ok" else syslog.LOG_NOTICE
        syslog.syslog(priority, line)
        log.info("audit: %s", line)
