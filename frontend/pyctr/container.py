"""The container side of `pyctr run`: the two processes forked from pyctr (see launcher.py).

C (`userns_child`) creates the user namespace, waits for its maps, creates the other
namespaces and forks G, then exits. G (`container_main`) is pid 1 of the new pid
namespace: it builds the rootfs, pivots into it, waits for pyctr's go, configures the
network, drops privileges and execs CMD (or, with --init, stays as a tiny init).

Nothing here may import after pivot_root (the host's Python library is gone from view), so
every module this code needs is imported at the top. Errors go to pyctr over the sync
socket as one line and the process exits; pyctr turns them into exit codes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import warnings  # noqa: F401 - os.execvpe imports it lazily, which fails after pivot_root

from . import capabilities, channel, idmap, netconf, rootfs, seccomp
from . import syscalls as sc
from .spec import ContainerSpec

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)


class Paths:
    """The host paths G needs before pivot_root (the state directory's parts)."""

    def __init__(self, state_dir: str, upper: str, work: str, merged: str) -> None:
        self.state_dir = state_dir
        self.upper = upper
        self.work = work
        self.merged = merged


def _fail(sock, kind: str, detail: str, code: int) -> None:
    try:
        channel.send(sock, f"{kind} {detail}")
    finally:
        os._exit(code)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f" ({e.filename})" if e.filename else ""
        return f"{e.strerror}{where}".replace("\n", " ")
    return str(e).replace("\n", " ") or type(e).__name__


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in FORWARDED_SIGNALS + (signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


def userns_child(spec: ContainerSpec, paths: Paths, sock) -> None:
    """Process C. Never returns."""
    try:
        _reset_signals()
        try:
            sc.unshare(sc.CLONE_NEWUSER)
        except OSError as e:
            raise OSError(e.errno, f"cannot create a user namespace ({e.strerror}); check "
                          "user.max_user_namespaces, kernel.unprivileged_userns_clone and "
                          "kernel.apparmor_restrict_unprivileged_userns") from None
        channel.send(sock, "userns")
        if sock.recv(64) != b"maps":
            os._exit(125)
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID
        if spec.network.mode != "host":
            flags |= sc.CLONE_NEWNET
        sc.unshare(flags)
        pid = os.fork()
        if pid == 0:
            container_main(spec, paths, sock)
        channel.send(sock, f"pid {pid}")
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - everything becomes one line for pyctr
        _fail(sock, "error", _describe(e), 125)


def _open_pty(spec: ContainerSpec, sock) -> None:
    """A pty from the container's own devpts; the master goes to pyctr, the slave
    becomes the controlling terminal and CMD's stdio."""
    master, slave = os.openpty()
    # /dev/console is the container's terminal too, as crun and runc set it up.
    console = "/dev/console"
    os.close(os.open(console, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    sc.mount(os.ttyname(slave), console, None, sc.MS_BIND)
    if not spec.init:  # with --init, CMD (not the init) gets the controlling terminal
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    channel.send(sock, "ready", [master])
    os.close(master)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def _parent_gone(sock) -> bool:
    """pyctr never writes after "go": the socket turning readable means pyctr's end closed."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def _drop_privileges(spec: ContainerSpec, last_cap: int) -> None:
    user = spec.user
    capabilities.apply_bounding(spec.capabilities, last_cap)
    if user.uid == 0:
        if not idmap.is_single(spec.gid_map):
            os.setgroups(list(user.additional_gids))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(0, 0, 0)
        capabilities.apply_for_root(spec.capabilities)
    else:
        keep = spec.capabilities & spec.added_capabilities
        capabilities.prepare_for_user(keep, last_cap)
        if not idmap.is_single(spec.gid_map):
            os.setgroups(list(user.additional_gids))
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
        capabilities.apply_for_user(keep)
    if spec.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)


def container_main(spec: ContainerSpec, paths: Paths, sock) -> None:
    """Process G, pid 1 of the container. Never returns."""
    try:
        last_cap = capabilities.last_cap()
        seccomp_program = seccomp.program() if spec.seccomp else b""
        if spec.network.mode != "host":
            netconf.loopback_up()
        rootfs.build(spec, paths.upper, paths.work, paths.merged, paths.state_dir,
                     mapped_tty_gid=idmap.maps_id(spec.gid_map, 5))
        rootfs.protect_kernel_paths()
        sc.sethostname(spec.hostname)
        if spec.tty:
            _open_pty(spec, sock)
        else:
            channel.send(sock, "ready")
            if not spec.interactive:
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.close(null)
        go = sock.recv(512).decode().split()
        if not go or go[0] != "go":
            os._exit(125)
        # Joined the cgroup pyctr set up (if any) by now: make it this namespace's root.
        sc.unshare(sc.CLONE_NEWCGROUP)
        if len(go) == 4:
            netconf.configure(go[1], go[2], go[3])
        # No pyctr descriptor may reach CMD, nor serve as a way out through a working
        # directory like /proc/self/fd/N (CVE-2024-21626): close everything but stdio and
        # the sync socket (close-on-exec; its EOF tells pyctr the exec happened) before
        # the chdir, and check where the chdir landed afterwards.
        os.closerange(3, sock.fileno())
        os.closerange(sock.fileno() + 1, 1 << 20)
        os.chdir(spec.workdir)
        _check_cwd()
        _drop_privileges(spec, last_cap)
        # Credential changes clear the parent-death signal: set it now, then make sure
        # pyctr did not die before it was set (else nothing would ever kill us).
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        if _parent_gone(sock):
            os._exit(125)
        # Last, so none of the steps above runs under it (no_new_privs is already set).
        if seccomp_program:
            seccomp.install(seccomp_program)
    except BaseException as e:  # noqa: BLE001
        _fail(sock, "error", _describe(e), 125)
    if spec.init:
        _run_init(spec, sock)
    _exec(spec, sock)


def _check_cwd() -> None:
    """The working directory must be inside the container's root (CVE-2024-21626)."""
    try:
        cwd = os.getcwd()
    except OSError:
        raise OSError(errno.ENOENT, "the working directory is outside the container") from None
    if not cwd.startswith("/"):
        raise OSError(errno.ENOENT, "the working directory is outside the container")


def _exec(spec: ContainerSpec, sock) -> None:
    # Why CMD cannot overwrite the Python interpreter or pyctr through /proc/self/exe or an
    # inherited descriptor (CVE-2019-5736): until this execve the container has no other
    # process that could open our /proc/<pid>/exe; every pyctr descriptor is closed by now;
    # and even a handle on the interpreter or /opt/pyctr would be useless, since those files
    # belong to host root, which is not mapped in the container's user namespace: the
    # container's root (the user) has no capability over them and no write permission.
    # The same holds for the --init process, which stays a Python process.
    # See docs/runtime-security.md.
    env = dict(spec.env)
    try:
        os.execvpe(spec.command[0], list(spec.command), env)
    except OSError as e:
        code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
        _fail(sock, "exec", f"{e.errno} {spec.command[0]}: {e.strerror}", code)
    except BaseException as e:  # noqa: BLE001
        _fail(sock, "exec", f"{errno.EINVAL} {spec.command[0]}: {_describe(e)}", 126)


def _run_init(spec: ContainerSpec, sock) -> None:
    """--init: stay pid 1, forward signals to CMD, reap every zombie, exit as CMD did."""
    # A signal pyctr forwards before the handlers below exist would be dropped (pid 1
    # ignores what it does not handle): hold them until the handlers are in place.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    child = os.fork()
    if child == 0:
        _reset_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if spec.tty:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        _exec(spec, sock)
    sock.close()

    def forward(signum: int, _frame) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)
