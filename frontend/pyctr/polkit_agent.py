"""A polkit authentication agent on the terminal, for the one call that needs a password.

When the helper answers Attach with InteractiveAuthorizationRequired and pyctr runs on a
terminal, the frontend starts `pkttyagent` for its own process (the one that owns the bus
connection, which is polkit's subject when the helper asks), waits until the agent is
registered, retries the call allowing interactive authorization, and stops the agent.
This is what fwupd's client does: `--notify-fd` tells us when registration is done, so the
retry never races the agent, and `--fallback` leaves an agent that already serves the login
session (a desktop's) in charge.

`--fallback` is only passed when pyctr runs inside a login session. polkitd consults a
fallback agent only after it has found the subject's session (get_authentication_agent_for_
subject in polkitbackendinteractiveauthority.c), so outside a session a fallback agent is never
used and the prompt could not appear. Outside a session there is no session agent to defer to
either, and an agent registered for our own pid serves only our own calls.

The password never passes through pyctr: pkttyagent reads it from the terminal and hands
it to polkit's setuid polkit-agent-helper-1.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

# pkttyagent registers over the system bus; seconds are plenty, and past this we give up
# on the prompt rather than hang before the container starts.
REGISTER_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0


def can_prompt() -> bool:
    """True when a password prompt could reach a human: stdin is a terminal and the
    agent is installed."""
    return os.isatty(0) and shutil.which("pkttyagent") is not None


def _in_login_session() -> bool:
    """Whether polkitd can find a login session for us, asked the way it asks logind
    (sd_pid_get_session reads the process's cgroup: a session-N.scope under systemd, a
    numbered cgroup in elogind's hierarchy). Directories under /run/systemd prove nothing:
    an image may ship them without any logind running."""
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if "name=elogind" in controllers and path.strip("/"):
            return True
        if any(p.startswith("session-") and p.endswith(".scope") for p in path.split("/")):
            return True
    return False


def _process_subject(pid: int) -> str:
    """"PID,START_TIME", the agent's scope exactly as polkitd derives it from our bus name.

    With a bare PID, pkttyagent registers a subject whose start time does not match the one
    polkitd computes for the helper's system-bus-name subject (polkit 122), and the agent is
    never found ("no agent is available"). The start time, field 22 of /proc/PID/stat, also
    pins the scope to this process: a recycled pid cannot inherit it.
    """
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    start_time = stat[stat.rindex(")") + 2:].split()[19]
    return f"{pid},{start_time}"


class TtyAgent:
    """`with TtyAgent(pid):` runs pkttyagent for process `pid` for the block's duration.

    `registered` says whether the agent got as far as registering with polkitd; when it did
    not (polkitd gone, another agent in charge), the caller's interactive call still runs
    and polkit answers for itself.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.proc: subprocess.Popen | None = None
        self.registered = False

    def __enter__(self) -> "TtyAgent":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        agent = shutil.which("pkttyagent")
        if agent is None:
            return
        notify_read, notify_write = os.pipe()
        argv = [agent, "--notify-fd", str(notify_write), "--process", _process_subject(self.pid)]
        if _in_login_session():
            argv.append("--fallback")
        try:
            # stdin, stdout and stderr stay the user's terminal: that is where the prompt goes.
            self.proc = subprocess.Popen(argv, pass_fds=(notify_write,), close_fds=True)
        except OSError:
            os.close(notify_read)
            return
        finally:
            os.close(notify_write)
        try:
            self.registered = self._wait_registered(notify_read)
        finally:
            os.close(notify_read)

    def _wait_registered(self, notify_read: int) -> bool:
        """pkttyagent closes the notify fd once registered; it also closes if it dies."""
        assert self.proc is not None
        deadline = time.monotonic() + REGISTER_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([notify_read], [], [], remaining)
            if ready and os.read(notify_read, 64) == b"":
                break
        # EOF either way: registered, unless the agent exited (it then closed fds too).
        return self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
