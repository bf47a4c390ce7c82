"""-t and -i: a pty from the container's devpts, window size, terminal mode restored."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios

from runworld import PYCTR


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 20) -> None:
    while needle not in seen:
        readable, _, _ = select.select([fd], [], [], timeout)
        assert readable, f"no {needle!r} in {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            chunk = b""
        assert chunk, f"EOF before {needle!r} in {bytes(seen)!r}"
        seen += chunk


def test_tty_gives_a_container_pty_that_follows_the_window_and_restores_the_mode(run_a, rootfs):
    master, slave = os.openpty()
    _set_size(slave, 33, 99)
    mode_before = termios.tcgetattr(slave)
    u = run_a.user
    script = ("tty; stty size; [ -c /dev/console ] && echo console-ok; echo READY; read line; "
              "stty size; echo got $line; exit 3")
    p = subprocess.Popen([PYCTR, "run", "--rm", "--network", "none", "-it", str(rootfs), "sh", "-c",
                          script], stdin=slave, stdout=slave, stderr=slave, user=u.uid, group=u.gid,
                         extra_groups=[], env=run_a.env(u.env()), start_new_session=True,
                         cwd=u.home)
    seen = bytearray()
    try:
        _read_until(master, b"READY", seen)
        assert b"/dev/pts/0" in seen and b"33 99" in seen and b"console-ok" in seen
        _set_size(slave, 44, 111)
        os.kill(p.pid, signal.SIGWINCH)
        os.write(master, b"hello\n")
        _read_until(master, b"got hello", seen)
        assert p.wait(timeout=20) == 3
        assert b"44 111" in seen
        assert termios.tcgetattr(slave) == mode_before
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)


def test_interactive_passes_stdin_through(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "-i", str(rootfs), "tr", "a-z", "A-Z", input="hello\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "HELLO\n"


def test_without_interactive_stdin_is_empty(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "cat", input="should not arrive\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""


def test_tty_sets_term(run_a, rootfs):
    master, slave = os.openpty()
    try:
        u = run_a.user
        p = subprocess.run([PYCTR, "run", "--rm", "--network", "none", "-t", str(rootfs), "sh", "-c",
                            "echo TERM=$TERM"], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                           user=u.uid, group=u.gid, extra_groups=[], env=run_a.env(u.env()),
                           cwd=u.home, timeout=30)
        seen = bytearray()
        _read_until(master, b"TERM=xterm", seen)
        assert p.returncode == 0
    finally:
        os.close(master)
        os.close(slave)


def test_tty_with_init_gives_cmd_the_terminal(run_a, rootfs):
    master, slave = os.openpty()
    try:
        u = run_a.user
        p = subprocess.run([PYCTR, "run", "--rm", "--network", "none", "-t", "--init", str(rootfs),
                            "sh", "-c", "tty; echo pid=$$"], stdin=subprocess.DEVNULL,
                           stdout=slave, stderr=slave, user=u.uid, group=u.gid, extra_groups=[],
                           env=run_a.env(u.env()), cwd=u.home, timeout=30)
        seen = bytearray()
        _read_until(master, b"pid=2", seen)
        assert b"/dev/pts/0" in seen
        assert p.returncode == 0
    finally:
        os.close(master)
        os.close(slave)
