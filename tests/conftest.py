"""Fixtures for a real test world: test users, the system bus, polkitd, the helper, a rootfs.

Everything here acts on the real machine as root (scripts/test.sh sets it up); tests drive
pyctr as the unprivileged users pyctr-test-a and pyctr-test-b. Nothing is mocked.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from waiting import wait_until  # noqa: F401 - fixtures and tests import it from here too

TEST_ROOT = Path(os.environ.get("PYCTR_TEST_ROOT", "/var/lib/pyctr-test"))
PREFIX = Path(os.environ.get("PYCTR_PREFIX", "/opt/pyctr"))
PYCTR = str(PREFIX / "bin" / "pyctr")
HELPER = str(PREFIX / "bin" / "pyctr-helper")
HELPER_PATTERN = r"bin/pyctr-helper( |$)"
REPO = Path(__file__).resolve().parent.parent
TEST_RULES = Path("/etc/polkit-1/rules.d/10-pyctr-test.rules")
USERS = ("pyctr-test-a", "pyctr-test-b")


@dataclass(frozen=True)
class TestUser:
    """An unprivileged account the tests run pyctr as, with a clean environment."""

    name: str
    uid: int
    gid: int
    home: str

    __test__ = False  # not a test class, despite the name

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "LANG": "C.UTF-8",
        }
        env.update(extra or {})
        return env

    def popen(self, argv: Sequence[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        return subprocess.Popen(list(argv), user=self.uid, group=self.gid, extra_groups=[],
                                env=self.env(env), cwd=self.home, **kw)

    def run(self, argv: Sequence[str], timeout: float = 60, env: dict[str, str] | None = None,
            input: str | None = None, **kw) -> subprocess.CompletedProcess:
        if input is not None:
            kw["stdin"] = subprocess.PIPE
        with self.popen(argv, env=env, **kw) as proc:
            try:
                out, err = proc.communicate(input=input, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                raise AssertionError(f"{argv} timed out after {timeout}s; stderr: {err}")
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def pyctr(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run([PYCTR, *args], **kw)

    def pyctr_popen(self, *args: str, **kw) -> subprocess.Popen:
        return self.popen([PYCTR, *args], **kw)


def _user(name: str) -> TestUser:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"test user {name} missing: run scripts/test.sh")
    return TestUser(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def _forget_containers(user: TestUser) -> Iterator[TestUser]:
    yield user
    # Tests that SIGKILL pyctr leave its state dir for the next run to collect (as podman
    # does); the suite is that next run: remove whatever the user's containers left.
    if Path(PYCTR).exists():
        user.pyctr("rm", "--all")


@pytest.fixture(scope="session")
def user_a() -> Iterator[TestUser]:
    yield from _forget_containers(_user(USERS[0]))


@pytest.fixture(scope="session")
def user_b() -> Iterator[TestUser]:
    yield from _forget_containers(_user(USERS[1]))


@pytest.fixture(scope="session")
def rootfs() -> Path:
    """The busybox rootfs scripts/mkrootfs.sh built; read-only for the tests."""
    path = TEST_ROOT / "rootfs"
    if not (path / "bin" / "busybox").exists():
        pytest.skip(f"{path} missing: run scripts/test.sh")
    return path


def _bus_alive() -> bool:
    return subprocess.run(
        ["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus", "/",
         "org.freedesktop.DBus.GetId"], capture_output=True).returncode == 0


def _name_has_owner(name: str) -> bool:
    out = subprocess.run(
        ["dbus-send", "--system", "--print-reply", "--dest=org.freedesktop.DBus", "/",
         "org.freedesktop.DBus.NameHasOwner", f"string:{name}"], capture_output=True, text=True)
    return "boolean true" in out.stdout


@pytest.fixture(scope="session")
def system_bus() -> None:
    """The real system dbus-daemon and polkitd, with pyctr's bus policy and polkit actions."""
    if not (_bus_alive() and _name_has_owner("org.freedesktop.PolicyKit1")):
        subprocess.run(["bash", "-c", f". {REPO}/scripts/lib.sh && start_services"], check=True)
    assert Path("/etc/dbus-1/system.d/org.pyctr.Helper1.conf").exists(), "run scripts/install-host.sh"


class PolkitRules:
    """Switches a rules.d file between allow, deny and auth_admin for the test users.

    polkitd re-reads rules.d on inotify; `set` waits until pkcheck, run as the first
    test user, sees the new answer, so a test never races the reload.
    """

    def __init__(self, probe_user: TestUser) -> None:
        self.probe_user = probe_user
        self.mode: str | None = None

    def set(self, mode: str, actions: Sequence[str] | None = None,
            users: Sequence[str] = USERS) -> None:
        result = {"allow": "YES", "deny": "NO", "auth_admin": "AUTH_ADMIN",
                  "auth_self": "AUTH_SELF"}[mode]
        action_test = ("true" if actions is None else
                       " || ".join(f'action.id == "{a}"' for a in actions))
        user_test = " || ".join(f'subject.user == "{u}"' for u in users)
        TEST_RULES.write_text(
            "// Written by pyctr's tests; removed when they end.\n"
            "polkit.addRule(function(action, subject) {\n"
            f'    if (action.id.indexOf("org.pyctr.") == 0 && ({action_test}) && ({user_test})) {{\n'
            f"        return polkit.Result.{result};\n"
            "    }\n"
            "});\n")
        TEST_RULES.chmod(0o644)
        self.mode = mode
        probe_action = actions[0] if actions else "org.pyctr.network.attach"
        expected = {"allow": 0, "deny": 1, "auth_admin": 2, "auth_self": 2}[mode]
        if self.probe_user.name in users:
            wait_until(lambda: self._pkcheck(probe_action) == expected, timeout=15,
                       what=f"polkitd to load the '{mode}' rule")

    def _pkcheck(self, action: str) -> int:
        # pkcheck exits 0 authorized, 1 not authorized, 2 "authentication would help".
        script = f"exec pkcheck --action-id {action} --process $$"
        return self.probe_user.run(["sh", "-c", script], timeout=15).returncode

    def remove(self) -> None:
        TEST_RULES.unlink(missing_ok=True)


# The helper, its bus name and the polkit rules file are one per machine: test sessions
# (and bench/run.sh) that use them take this lock, so two runs never fight over them.
WORLD_LOCK = Path("/run/pyctr-tests.lock")


@pytest.fixture(scope="session")
def polkit_session(system_bus, user_a) -> Iterator[PolkitRules]:
    with open(WORLD_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rules = PolkitRules(user_a)
        yield rules
        rules.remove()


@pytest.fixture
def polkit(polkit_session) -> Iterator[PolkitRules]:
    """Polkit rules for the test users; a test sets the mode it needs, allow afterwards."""
    yield polkit_session
    if polkit_session.mode != "allow":
        polkit_session.set("allow")


class Helper:
    """pyctr-helper, started by the tests as root (the way D-Bus activation would)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.log_path = log_dir / "helper.log"
        self.config: Path | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, config: Path | None = None) -> None:
        self.stop()
        # Also a helper D-Bus started on someone's call (its argv names /usr/local/bin/...).
        subprocess.run(["pkill", "-TERM", "-f", HELPER_PATTERN], capture_output=True)
        wait_until(lambda: not _name_has_owner("org.pyctr.Helper1"), timeout=15,
                   what="the old helper to leave the bus")
        self.config = config
        argv = [HELPER, "--log", str(self.log_path)]
        if config is not None:
            argv += ["--config", str(config)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, "a"))
        wait_until(lambda: _name_has_owner("org.pyctr.Helper1") or self.proc.poll() is not None,
                   timeout=15, what="the helper to own its bus name")
        if self.proc.poll() is not None:
            raise AssertionError(f"helper exited {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, config: Path | None = None) -> None:
        self.start(config)

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no helper log)"

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


_helpers: list[Helper] = []


@pytest.fixture(scope="session")
def helper(system_bus, polkit_session, tmp_path_factory) -> Iterator[Helper]:
    """A fresh helper for the session, its log captured and shown when a test fails."""
    h = Helper(tmp_path_factory.mktemp("helper"))
    polkit_session.set("allow")
    h.start()
    _helpers.append(h)
    yield h
    h.stop()
    _helpers.remove(h)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "helper" in item.fixturenames:
        for h in _helpers:
            report.sections.append(("pyctr-helper log", h.log_tail()))


@dataclass(frozen=True)
class HostState:
    """What pyctr may create on the host, read from the kernel: compare before and after."""

    links: frozenset[str]
    nat_rules: frozenset[str]
    filter_rules: frozenset[str]
    mounts: frozenset[str]


def _lines(argv: list[str]) -> frozenset[str]:
    out = subprocess.run(argv, capture_output=True, text=True)
    return frozenset(line for line in out.stdout.splitlines() if line.strip())


def host_state() -> HostState:
    links = _lines(["ip", "-o", "link", "show"])
    return HostState(
        links=frozenset(l.split(":")[1].strip().split("@")[0] for l in links),
        nat_rules=_lines(["iptables-legacy", "-t", "nat", "-S"]),
        filter_rules=_lines(["iptables-legacy", "-t", "filter", "-S"]),
        mounts=frozenset(l for l in Path("/proc/mounts").read_text().splitlines() if "pyctr" in l),
    )


@pytest.fixture
def unchanged_host() -> Iterator[Callable[[], None]]:
    """Call the returned function to assert the host holds what it held before the test."""
    before = host_state()

    def check() -> None:
        try:
            wait_until(lambda: host_state() == before, timeout=5,
                       what="the host to return to its state before the test")
        except AssertionError:
            assert host_state() == before  # pytest shows what differs

    yield check
