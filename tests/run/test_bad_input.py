"""Bad input: one line on stderr, docker's exit code, and nothing left behind."""

from __future__ import annotations

import pytest


def _cases(rootfs: str, scratch: str) -> list[tuple[str, list[str], int]]:
    return [
        ("missing ROOTFS", ["/no/such/rootfs", "true"], 125),
        ("CMD missing from the rootfs", [rootfs, "/bin/no-such-cmd"], 127),
        ("CMD not executable", [rootfs, "/etc/passwd"], 126),
        ("-v source missing", ["-v", "/no/such/src:/data", rootfs, "true"], 125),
        ("-v without destination", ["-v", scratch, rootfs, "true"], 125),
        ("-v relative destination", ["-v", f"{scratch}:data", rootfs, "true"], 125),
        ("-v onto the root", ["-v", f"{scratch}:/", rootfs, "true"], 125),
        ("-v unknown option", ["-v", f"{scratch}:/data:rx", rootfs, "true"], 125),
        ("-v onto a file with a directory", ["-v", f"{scratch}:/etc/passwd", rootfs, "true"], 125),
        ("-e without a name", ["-e", "=value", rootfs, "true"], 125),
        ("--env-file missing", ["--env-file", "/no/such/envfile", rootfs, "true"], 125),
        ("unknown --cap-add", ["--cap-add", "CAP_FLY", rootfs, "true"], 125),
        ("unknown --cap-drop", ["--cap-drop", "teleport", rootfs, "true"], 125),
        ("--user unknown name", ["--user", "nobody-here", rootfs, "true"], 125),
        ("--user unmapped uid", ["--user", "70000", rootfs, "true"], 125),
        ("--user empty group", ["--user", "0:", rootfs, "true"], 125),
        ("-p with --network none", ["-p", "8080:80", rootfs, "true"], 125),
        ("unknown option", ["--frobnicate", rootfs, "true"], 125),
    ]


CASE_IDS = [c[0] for c in _cases("R", "S")]


@pytest.mark.parametrize("index", range(len(CASE_IDS)), ids=CASE_IDS)
def test_bad_input_is_one_line_and_leaves_nothing(run_a, rootfs, marker, index):
    name, args, code = _cases(str(rootfs), str(run_a.scratch))[index]
    # The marker rides along as an extra argument so leftover processes can be found.
    out = run_a.run("--network", "none", *args, marker)
    assert out.returncode == code, out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("pyctr: ")
    assert "Traceback" not in out.stderr
    run_a.assert_nothing_left(marker)


def test_limits_without_a_way_to_enforce_them_fail_cleanly(run_a, rootfs, marker):
    """Whatever the host offers, a limit is enforced or the run fails with 125 and no trace."""
    out = run_a.run("--network", "none", "--rm", "--pids-limit", "50", str(rootfs), "sh", "-c",
                    "true", marker)
    if out.returncode == 0:
        pytest.skip("this host can enforce limits for the test user (issue 6 tests that path)")
    assert out.returncode == 125
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr
    run_a.assert_nothing_left(marker)
