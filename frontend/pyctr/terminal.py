"""`-t`: relay between the user's terminal and the container's pty master.

The pty comes from the container's own devpts instance (G opened it and passed the master
over the sync socket), so CMD sees /dev/pts/0 inside. Here pyctr puts the user's terminal
in raw mode (restored on every exit path), copies bytes both ways, and copies the window
size to the pty at start and on every SIGWINCH.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import tty


def size_source() -> int:
    """The user's terminal to take the window size from: stdout, else stdin."""
    return 1 if os.isatty(1) else 0


def copy_winsize(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def relay(master: int, pid: int, interactive: bool) -> int:
    """Relay until the container's pid 1 exits; returns its wait status."""
    stdin, stdout = 0, 1
    winsize_source = size_source()
    saved = None
    if interactive and os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        tty.setraw(stdin)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    old_chld = signal.signal(signal.SIGCHLD, lambda *_: None)
    old_winch = signal.getsignal(signal.SIGWINCH)

    def on_winch(signum, frame) -> None:
        copy_winsize(winsize_source, master)

    signal.signal(signal.SIGWINCH, on_winch)
    status = None
    reading_stdin = interactive
    try:
        while True:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                break
            fds = [master, wake_r] + ([stdin] if reading_stdin else [])
            try:
                readable, _, _ = select.select(fds, [], [])
            except InterruptedError:
                continue
            if wake_r in readable:
                try:
                    os.read(wake_r, 512)
                except BlockingIOError:
                    pass
            if master in readable:
                try:
                    data = os.read(master, 65536)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    _write_all(stdout, data)
                else:
                    _, status = os.waitpid(pid, 0)  # the pty closed: CMD is gone
                    break
            if reading_stdin and stdin in readable:
                data = os.read(stdin, 65536)
                if data:
                    _write_all(master, data)
                else:
                    reading_stdin = False
                    _write_all(master, b"\x04")  # EOF on the user's side: ^D to the pty
        # Whatever CMD wrote just before exiting is still in the pty: drain it.
        while select.select([master], [], [], 0)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            _write_all(stdout, data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, old_winch)
        signal.signal(signal.SIGCHLD, old_chld)
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
    return status
