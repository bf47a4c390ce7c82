"""polkit's answers as the user sees them: a password prompt on a terminal, a clear refusal
without one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from networld import PYCTR, wait_for

PASSWORD = "pyctr-test-a-pw"
# Sorts before the polkit fixture's 10-pyctr-test.rules, so this rule answers first.
PROMPT_RULES = Path("/etc/polkit-1/rules.d/05-pyctr-network-prompt.rules")


def _pkcheck(user) -> int:
    # pkcheck exits 0 authorized, 1 not authorized, 2 "authentication would help".
    return user.run(["sh", "-c", "exec pkcheck --action-id org.pyctr.network.attach --process $$"],
                    timeout=15).returncode


@pytest.fixture
def admin_password_rule(polkit, user_a) -> Iterator[Callable[[], None]]:
    """Attaching needs an administrator's password, and pyctr-test-a is the administrator.
    Yields a function that removes the rule again (List, which nothing_left asks, needs
    the plain grant back)."""

    def remove() -> None:
        if PROMPT_RULES.exists():
            PROMPT_RULES.unlink()
            wait_for(lambda: _pkcheck(user_a) == 0, what="polkitd to drop the admin rule")

    polkit.set("allow")
    PROMPT_RULES.write_text(
        "// Written by tests/network/test_authorization.py; removed when it ends.\n"
        'polkit.addAdminRule(function(action, subject) { return ["unix-user:pyctr-test-a"]; });\n'
        "polkit.addRule(function(action, subject) {\n"
        '    if (action.id.indexOf("org.pyctr.network.") == 0 && subject.user == "pyctr-test-a") {\n'
        "        return polkit.Result.AUTH_ADMIN;\n"
        "    }\n"
        "});\n")
    PROMPT_RULES.chmod(0o644)
    try:
        wait_for(lambda: _pkcheck(user_a) == 2, what="polkitd to load the admin rule")
        yield remove
    finally:
        remove()


def _in_terminal(user, rootfs: Path, password: str) -> subprocess.CompletedProcess:
    """`pyctr run` on a pty (expect), answering the password prompt with `password`.

    pkttyagent prints "Password: " and then turns echo off with TCSAFLUSH, which discards
    anything typed in between; a person never types that fast, expect can. So the answer is
    typed again until pkttyagent reports an outcome.
    """
    script = f"""
        set timeout 60
        spawn {PYCTR} run --rm --network bridge {rootfs} sh -c "ip -4 -o addr show dev eth0; echo NETWORK-UP"
        expect {{
            -re {{[Pp]assword: ?$}} {{ }}
            timeout {{ puts "NO-PROMPT"; exit 90 }}
            eof {{ puts "NO-PROMPT"; exit 91 }}
        }}
        set timeout 3
        set tries 0
        send -- "{password}\r"
        expect {{
            "==== AUTHENTICATION" {{ }}
            timeout {{
                incr tries
                if {{$tries > 10}} {{ puts "NO-OUTCOME"; exit 92 }}
                send -- "{password}\r"
                exp_continue
            }}
        }}
        set timeout 60
        expect eof
        set result [wait]
        exit [lindex $result 3]
    """
    return user.run(["expect", "-c", script], timeout=150)


def _lines(out: subprocess.CompletedProcess) -> list[str]:
    """The pty's output lines (the first echoes the spawned command line)."""
    return [line.strip() for line in out.stdout.splitlines()]


def test_password_prompt_on_terminal_authorizes_attach(user_a, rootfs, bridge,
                                                       admin_password_rule, nothing_left):
    out = _in_terminal(user_a, rootfs, PASSWORD)
    assert out.returncode == 0, out.stdout
    assert re.search(r"inet \d+\.\d+\.\d+\.\d+/\d+", out.stdout), out.stdout
    assert "NETWORK-UP" in _lines(out)
    admin_password_rule()
    nothing_left()


def test_wrong_password_is_a_clean_refusal(user_a, rootfs, bridge, admin_password_rule,
                                           nothing_left):
    out = _in_terminal(user_a, rootfs, "not-the-password")
    assert out.returncode == 125, out.stdout
    assert "NETWORK-UP" not in _lines(out)
    # pkttyagent ends its banner with a colour reset and no newline: search, not startswith.
    refusal = [line for line in out.stdout.splitlines() if "pyctr: " in line]
    assert len(refusal) == 1, out.stdout
    assert "org.pyctr.network.attach" in refusal[0] and "authentication failed" in refusal[0]
    admin_password_rule()
    nothing_left()


@pytest.mark.parametrize("answer", ["deny", "auth_admin"])
def test_refusal_without_terminal_names_action_and_group(answer, user_a, rootfs, bridge,
                                                         polkit, nothing_left):
    polkit.set(answer)
    out = user_a.pyctr("run", "--rm", "--network", "bridge", str(rootfs), "true")
    assert out.returncode == 125
    [line] = out.stderr.strip().splitlines()
    assert "org.pyctr.network.attach" in line
    assert "'pyctr' group" in line
    if answer == "auth_admin":
        assert "password" in line
    polkit.set("allow")  # List, which nothing_left asks, needs the grant too
    nothing_left()
