"""User namespace, ids and capabilities inside a `pyctr run` container."""

from __future__ import annotations

import pytest


def _caps(out: str) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split()[1], 16)
            for line in out.splitlines() if line.startswith("Cap")}


DEFAULT_CAPS = 0x800405FB  # podman's 11: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT SETFCAP


def test_maps_put_the_user_at_root_and_subordinate_ids_above(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "cat", "/proc/self/uid_map",
                    "/proc/self/gid_map")
    assert out.returncode == 0, out.stderr
    u = run_a.user
    rows = [line.split() for line in out.stdout.splitlines()]
    assert rows == [["0", str(u.uid), "1"], ["1", "100000", "65536"],
                    ["0", str(u.gid), "1"], ["1", "100000", "65536"]]


def test_keep_id_keeps_the_users_uid_and_gid(run_a, rootfs):
    u = run_a.user
    out = run_a.run("--rm", "--network", "none", "--userns=keep-id", str(rootfs), "sh", "-c",
                    "id -u; id -g; cat /proc/self/uid_map")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == [str(u.uid), str(u.gid)]
    assert [str(u.uid), str(u.uid), "1"] in [l.split() for l in lines[2:]]


def test_keep_id_user_has_a_passwd_entry_and_home(run_a, rootfs):
    u = run_a.user
    out = run_a.run("--rm", "--network", "none", "--userns=keep-id", str(rootfs), "sh", "-c",
                    "whoami; echo $HOME")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [u.name, u.home]


def test_user_without_ranges_gets_a_single_id_map_and_a_note(run_c, rootfs):
    u = run_c.user
    out = run_c.run("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups")
    assert out.returncode == 0, out.stderr
    assert [l.split() for l in out.stdout.splitlines()] == [
        ["0", str(u.uid), "1"], ["0", str(u.gid), "1"], ["deny"]]
    assert len(out.stderr.splitlines()) == 1 and "subordinate" in out.stderr


def test_id_inside_is_root_by_default(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "id")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("uid=0(root) gid=0(root)")


def test_user_option_runs_cmd_as_that_uid_and_gid(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "--user", "1000:1000", str(rootfs), "sh", "-c",
                    "id -u; id -g")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1000", "1000"]


def test_default_capabilities_are_podmans_eleven(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "grep", "^Cap", "/proc/self/status")
    assert out.returncode == 0, out.stderr
    caps = _caps(out.stdout)
    assert caps == {"CapInh": 0, "CapPrm": DEFAULT_CAPS, "CapEff": DEFAULT_CAPS,
                    "CapBnd": DEFAULT_CAPS, "CapAmb": 0}


def test_cap_drop_all_leaves_no_capability(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "--cap-drop", "ALL", str(rootfs), "grep", "^Cap",
                    "/proc/self/status")
    assert out.returncode == 0, out.stderr
    assert set(_caps(out.stdout).values()) == {0}


@pytest.mark.parametrize("spelling", ["net_admin", "CAP_NET_ADMIN", "Cap_Net_Admin"])
def test_cap_add_one_after_drop_all_gives_exactly_that_one(run_a, rootfs, spelling):
    out = run_a.run("--rm", "--network", "none", "--cap-drop", "all", "--cap-add", spelling,
                    str(rootfs), "grep", "^Cap", "/proc/self/status")
    assert out.returncode == 0, out.stderr
    caps = _caps(out.stdout)
    assert caps["CapEff"] == caps["CapBnd"] == caps["CapPrm"] == 1 << 12
    assert caps["CapInh"] == caps["CapAmb"] == 0


def test_non_root_user_keeps_only_added_capabilities(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "--user", "1000", "--cap-add", "NET_RAW",
                    str(rootfs), "grep", "^Cap", "/proc/self/status")
    assert out.returncode == 0, out.stderr
    caps = _caps(out.stdout)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapAmb"] == caps["CapInh"] == 1 << 13
    assert caps["CapBnd"] == DEFAULT_CAPS | 1 << 13


def test_no_new_privs_is_set(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "grep", "NoNewPrivs", "/proc/self/status")
    assert out.stdout.split() == ["NoNewPrivs:", "1"]


def test_default_seccomp_filter_is_on_and_unconfined_turns_it_off(run_a, rootfs):
    on = run_a.run("--rm", "--network", "none", str(rootfs), "grep", "^Seccomp:", "/proc/self/status")
    off = run_a.run("--rm", "--network", "none", "--security-opt", "seccomp=unconfined", str(rootfs),
                    "grep", "^Seccomp:", "/proc/self/status")
    assert on.stdout.split() == ["Seccomp:", "2"]
    assert off.stdout.split() == ["Seccomp:", "0"]
