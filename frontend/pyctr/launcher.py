"""`pyctr run`: start a container from a ContainerSpec, wait for it, clean up on every path.

Process model (P = this process, the user in the host user namespace):

    P ──fork──> C: unshare(USER) ─ "userns" ─> P writes uid_map/gid_map from outside
                                             (newuidmap/newgidmap, or a one-id map)
                C <─ "maps" ─ P
                C: unshare(NS|UTS|IPC|PID|NET) ──fork──> G (pid 1 of the new pid ns)
                C: "pid G" ─> P, exits; P is a child subreaper, so G becomes P's child
    P: opens /proc/G/ns/net and a pidfd of G, runs the network and cgroup hooks
       (host side, so D-Bus and polkit see the real user) while G builds the rootfs
    G: overlay, /proc, /dev, /sys, volumes, pivot_root, masked paths ─ "ready" ─> P
    P: "go [ifname cidr gateway]" ─> G
    G: network config, caps, no_new_privs, pdeathsig, close fds, exec CMD
       (the close-on-exec sync socket reaching EOF tells P the exec happened; an exec
       error arrives as a line instead: 127 not found, 126 not executable)
    P: forwards SIGINT/SIGTERM/SIGHUP (and relays the pty with -t), waits for G,
       exits with CMD's status (128+N for signal N), releases hooks, removes state.

Why this shape: the maps must be written by a process outside the new user namespace
(newuidmap checks the caller's own ranges), and everything that talks to the helper must
stay in the host user namespace, so P stays outside. P waiting on G directly (subreaper)
gives it G's real exit status with no relay process in between, and one process fewer
than a double-fork-and-relay design. G does its setup while P runs the hooks, so a slow
helper call and the mounts overlap.

If P is killed with SIGKILL, G (and with it the whole pid namespace) gets SIGKILL from
its parent-death signal; the state directory is then collected by the next `pyctr run`.
"""

from __future__ import annotations

import os
import signal
import sys

from . import channel, container, idmap, rootfs, state
from . import syscalls as sc
from .errors import CommandNotExecutable, CommandNotFound, PyctrError
from .spec import ContainerSpec

# network (D-Bus) and cgroups are imported only by the containers that use them: a plain
# `pyctr run --network none` must not pay for dbus-next, asyncio or pyroute2.


class Interrupted(PyctrError):
    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum} while starting the container")
        self.signum = signum
        self.exit_code = 128 + signum


class _Signals:
    """Before the exec, a forwarded signal aborts the start; afterwards it goes to G."""

    def __init__(self) -> None:
        self.target = 0        # G's pid, once known
        self.started = False   # set when "go" is sent: from then on, signals are CMD's

    def handler(self, signum: int, _frame) -> None:
        if self.started and self.target:
            try:
                os.kill(self.target, signum)
            except ProcessLookupError:
                pass
        elif signum != signal.SIGWINCH:
            raise Interrupted(signum)

    def install(self) -> None:
        for sig in container.FORWARDED_SIGNALS:
            signal.signal(sig, self.handler)

    def quiet(self) -> None:
        """Cleanup must run to the end: ignore the forwarded signals while it does."""
        for sig in container.FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _hosts_text(spec: ContainerSpec, address: str = "") -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if address:
        names = dict.fromkeys((spec.hostname, spec.container_id[:12]))  # once each, in order
        lines.append(f"{address}\t{' '.join(names)}")
    elif spec.network.mode == "host":
        try:
            with open("/etc/hosts") as f:
                return f.read() + f"127.0.1.1\t{spec.hostname}\n"
        except OSError:
            pass
    else:
        lines.append(f"127.0.1.1\t{spec.hostname}")
    return "\n".join(lines) + "\n"


def _host_resolv_conf() -> str:
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return ""


def _rootfs_text(spec: ContainerSpec, path: str) -> str:
    """A file of ROOTFS, its symlinks resolved inside ROOTFS (never onto the host's own)."""
    try:
        with open(rootfs.resolve_inside(str(spec.rootfs), path)) as f:
            return f.read()
    except (OSError, PyctrError, UnicodeDecodeError):
        return ""


def _with_line(text: str, key: str, line: str) -> str:
    """`text` plus `line` unless an entry named `key` (first field) is already there."""
    if any(l.split(":", 1)[0] == key for l in text.splitlines()):
        return text
    return text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"


def _keep_id_files(st: state.ContainerState, spec: ContainerSpec) -> None:
    """--userns=keep-id: the user's own passwd and group entries, as podman adds them."""
    import grp  # only with keep-id
    import pwd

    uid, gid = os.getuid(), os.getgid()  # the same numbers inside, with keep-id
    pw = pwd.getpwuid(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = pw.pw_name
    st.write("passwd", _with_line(_rootfs_text(spec, "/etc/passwd"), pw.pw_name,
                                  f"{pw.pw_name}:x:{uid}:{gid}:{pw.pw_gecos}:{pw.pw_dir}:/bin/sh"))
    st.write("group", _with_line(_rootfs_text(spec, "/etc/group"), group, f"{group}:x:{gid}:"))


def _write_etc_files(st: state.ContainerState, spec: ContainerSpec) -> None:
    st.write("hostname", spec.hostname + "\n")
    st.write("hosts", _hosts_text(spec))
    st.write("resolv.conf", _host_resolv_conf())
    if spec.keep_id:
        _keep_id_files(st, spec)


def _raise_for(msg: bytes) -> None:
    """Turn an error line from the container side into the matching exception."""
    text = msg.decode(errors="replace")
    kind, _, detail = text.partition(" ")
    if kind == "exec":
        err, _, what = detail.partition(" ")
        cls = CommandNotFound if err in ("2", "20") else CommandNotExecutable
        raise cls(what)
    if kind == "error":
        raise PyctrError(detail)
    if not msg:
        raise PyctrError("the container's first process died while starting")
    raise PyctrError(f"unexpected message from the container: {text[:80]!r}")


def _recv(sock, expect: str) -> tuple[list[str], list[int]]:
    """One message from the container side, which must be `expect`."""
    msg, fds = channel.recv(sock)
    words = msg.decode(errors="replace").split()
    if words and words[0] == expect:
        return words, fds
    for fd in fds:
        os.close(fd)
    _raise_for(msg)
    raise AssertionError("unreachable")


class Launch:
    """One container run: everything created is recorded here and undone in cleanup()."""

    def __init__(self, spec: ContainerSpec) -> None:
        self.spec = spec
        self.state: state.ContainerState | None = None
        self.sock = None  # pyctr's end of the channel until the exec
        self.pid = 0          # G, host pid
        self.pidfd = -1
        self.setup = None      # network.NetworkSetup, once attached
        self.placement = None  # cgroups.CgroupPlacement, once applied
        self.exec_done = False
        self.tty_master = -1
        self.reaped = False

    def start(self, signals: _Signals) -> None:
        spec = self.spec
        if idmap.is_single(spec.uid_map):
            print(f"pyctr: no subordinate ids for this user in {idmap.SUBUID}: only uid "
                  f"{spec.uid_map[0].inside} exists in the container", file=sys.stderr)
        state.collect_garbage(spec.uid_map, spec.gid_map)
        self.state = st = state.create(spec.container_id)
        _write_etc_files(st, spec)
        paths = container.Paths(st.path, st.upper, st.work, st.merged)
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)
        parent_sock, child_sock = channel.pair()
        self.sock = parent_sock
        c_pid = os.fork()
        if c_pid == 0:
            parent_sock.close()
            container.userns_child(spec, paths, child_sock)
        child_sock.close()
        try:
            _recv(parent_sock, "userns")
            idmap.write(c_pid, spec.uid_map, spec.gid_map)
            parent_sock.send(b"maps")
            words, _ = _recv(parent_sock, "pid")
            self.pid = int(words[1])
        except BaseException:
            parent_sock.close()  # C (and a G whose pid we never learnt) see EOF and exit
            self.sock = None
            raise
        finally:
            os.waitpid(c_pid, 0)  # C exits right after sending G's pid, or on error
        signals.target = self.pid
        self.pidfd = os.pidfd_open(self.pid)
        go = "go"
        if spec.network.mode == "bridge":
            from . import network
            netns = os.open(f"/proc/{self.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                self.setup = network.attach(spec, netns, self.pidfd)
            finally:
                os.close(netns)
            st.write("hosts", _hosts_text(spec, self.setup.address.partition("/")[0]))
            st.write("resolv.conf", "".join(f"nameserver {ns}\n" for ns in self.setup.dns))
            go = f"go {self.setup.ifname} {self.setup.address} {self.setup.gateway}"
        if spec.resources.any:
            from . import cgroups
            self.placement = cgroups.apply(spec.resources, self.pid, self.pidfd)
        _, fds = _recv(parent_sock, "ready")
        if fds:
            from . import terminal  # only with -t
            self.tty_master = fds[0]
            # The size must be right before CMD starts: it may ask at once.
            terminal.copy_winsize(terminal.size_source(), self.tty_master)
        parent_sock.send(go.encode())
        signals.started = True
        # EOF: the exec happened (the socket is close-on-exec); a line: it failed.
        msg = parent_sock.recv(4096)
        if msg:
            _raise_for(msg)
        self.exec_done = True
        parent_sock.close()
        self.sock = None

    def wait(self) -> int:
        if self.tty_master >= 0:
            from . import terminal  # only with -t
            status = terminal.relay(self.tty_master, self.pid, self.spec.interactive)
        else:
            _, status = os.waitpid(self.pid, 0)  # forwarded signals interrupt, PEP 475 resumes
        self.reaped = True
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code

    def cleanup(self, exit_code: int | None) -> None:
        """Undo everything, in reverse order; runs on every path, and a failing step does
        not stop the ones after it."""
        errors: list[str] = []

        def attempt(step, *args) -> object:
            try:
                return step(*args)
            except Exception as e:  # noqa: BLE001 - reported, then the next step runs
                errors.append(str(e) or type(e).__name__)
                return None

        if self.sock is not None:
            attempt(self.sock.close)
        if self.tty_master >= 0:
            attempt(os.close, self.tty_master)
        if self.pid and not self.reaped:
            attempt(_kill_and_reap, self.pid, self.pidfd)
        if self.pidfd >= 0:
            attempt(os.close, self.pidfd)
        if self.placement is not None:
            from . import cgroups
            note = attempt(cgroups.release, self.placement)
            if note:
                print(f"pyctr: {note}", file=sys.stderr)
        if self.setup is not None:
            from . import network
            attempt(network.detach, self.setup)
        st = self.state
        if st is not None:
            if self.spec.remove or not self.exec_done or exit_code is None:
                attempt(state.remove_tree, st.path, self.spec.uid_map, self.spec.gid_map)
            else:
                attempt(st.mark_exited, exit_code)
            attempt(os.close, st.lock_fd)
        for e in errors:
            print(f"pyctr: cleanup: {e}", file=sys.stderr)


def _kill_and_reap(pid: int, pidfd: int) -> None:
    """SIGKILL the container's pid 1 (its whole pid namespace dies with it) and reap it."""
    try:
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def run(spec: ContainerSpec) -> int:
    """Run the container; return pyctr's exit code (CMD's, or 128+N for a signal)."""
    signals = _Signals()
    signals.install()
    launch = Launch(spec)
    code: int | None = None
    try:
        launch.start(signals)
        code = launch.wait()
        return code
    finally:
        signals.quiet()
        launch.cleanup(code)
