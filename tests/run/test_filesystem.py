"""The container's filesystem: overlay over ROOTFS, volumes, tmpfs, kernel paths."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from runworld import PYCTR

MASKED = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
          "/proc/latency_stats")
MASKED_DIRS = ("/proc/acpi", "/proc/scsi", "/sys/firmware")
READ_ONLY = ("/proc/sys/kernel/hostname", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus",
             "/proc/fs")


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames + dirnames):
            p = Path(dirpath, name)
            st = p.lstat()
            h.update(f"{p}:{st.st_mode}:{st.st_uid}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def test_rootfs_is_unchanged_after_writes_inside(run_a, rootfs):
    before = _tree_digest(rootfs)
    out = run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    "echo x > /root-was-here && mkdir -p /etc/new && echo y > /tmp/z && "
                    "echo z > /var/www/index.html; rm -f /bin/ls; true")
    assert out.returncode == 0, out.stderr
    assert _tree_digest(rootfs) == before


def test_container_state_is_kept_without_rm_and_removed_with_it(run_a, rootfs):
    assert run_a.run("--network", "none", str(rootfs), "touch", "/kept").returncode == 0
    [cid] = run_a.containers()
    assert (run_a.data_home / "pyctr" / "containers" / cid / "upper" / "kept").exists()
    assert run_a.run("--rm", "--network", "none", str(rootfs), "true").returncode == 0
    assert run_a.containers() == [cid]


def test_rm_removes_files_owned_by_subordinate_ids(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    "mkdir /d && echo x > /d/f && chown -R 1000:1000 /d && chmod 700 /d")
    assert out.returncode == 0, out.stderr
    assert run_a.containers() == []


def test_bind_mount_is_writable_and_visible_on_the_host(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "-v", f"{run_a.scratch}:/data", str(rootfs),
                    "sh", "-c", "echo hello > /data/written")
    assert out.returncode == 0, out.stderr
    assert (run_a.scratch / "written").read_text() == "hello\n"


def test_read_only_bind_mount_refuses_writes(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "-v", f"{run_a.scratch}:/data:ro", str(rootfs),
                    "sh", "-c", "echo hello > /data/written")
    assert out.returncode != 0
    assert "Read-only file system" in out.stderr
    assert not (run_a.scratch / "written").exists()


def test_bind_mount_destination_is_created_when_missing(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "-v", f"{run_a.scratch}:/new/deep/dir",
                    str(rootfs), "sh", "-c", "echo ok > /new/deep/dir/f")
    assert out.returncode == 0, out.stderr
    assert (run_a.scratch / "f").read_text() == "ok\n"


def test_volume_symlink_escaping_the_rootfs_is_refused(run_a, rootfs, marker):
    victim = run_a.scratch / "victim"
    volume = run_a.scratch / "vol"
    for d in (victim, volume):
        d.mkdir()
        os.chown(d, run_a.user.uid, run_a.user.gid)
    # A volume holding a symlink that climbs out of the container's root, then a second
    # volume mounted through it (the CVE-2021-30465 shape).
    os.symlink("../../../../../../../.." + str(victim), volume / "escape")
    out = run_a.run("--rm", "--network", "none", "-v", f"{volume}:/vol",
                    "-v", f"{run_a.scratch}:/vol/escape/x", str(rootfs), "true", marker)
    assert out.returncode == 125
    assert "leads out of the container's root" in out.stderr
    assert list(victim.iterdir()) == []
    run_a.assert_nothing_left(marker)


def test_read_only_root_refuses_writes_but_tmp_is_writable(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "--read-only", "--hostname", "ro1", str(rootfs),
                    "sh", "-c", "touch /tmp/ok && ! touch /nope 2>/dev/null && cat /etc/hostname "
                    "&& grep -c ro1 /etc/hosts && echo done")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ro1\n1\ndone\n"


def test_tmpfs_option_mounts_a_tmpfs(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "--tmpfs", "/scratch", str(rootfs), "sh", "-c",
                    "grep ' /scratch ' /proc/mounts")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("tmpfs /scratch tmpfs")


def test_workdir_option_sets_the_working_directory(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", "-w", "/var/www", str(rootfs), "pwd")
    assert out.stdout == "/var/www\n"


def test_masked_paths_are_unreadable(run_a, rootfs):
    script = "; ".join(f"[ ! -e {p} ] || [ -z \"$(cat {p} 2>/dev/null)\" ] || echo LEAK {p}"
                       for p in MASKED)
    script += "; " + "; ".join(f"[ ! -e {d} ] || [ -z \"$(ls -A {d})\" ] || echo LEAK {d}"
                               for d in MASKED_DIRS)
    out = run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    assert "LEAK" not in out.stdout


def test_read_only_paths_are_not_writable(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    "echo x > /proc/sys/kernel/hostname; echo 'c' > /proc/sysrq-trigger; "
                    "touch /proc/fs/x; awk '$2 ~ \"^/proc/(sys|irq|bus|fs|sysrq-trigger)$\" "
                    "{print $2, substr($4, 1, 2)}' /proc/mounts")
    lines = dict(line.split() for line in out.stdout.splitlines())
    assert lines and set(lines.values()) == {"ro"}
    assert "/proc/sys" in lines
    assert "Read-only file system" in out.stderr


def test_sys_is_read_only(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    "awk '$2 == \"/sys\" {print substr($4, 1, 2)}' /proc/mounts")
    assert out.stdout == "ro\n"


def test_dev_has_the_standard_devices(run_a, rootfs):
    out = run_a.run("--rm", "--network", "none", str(rootfs), "sh", "-c",
                    "ls /dev; echo x > /dev/null; head -c 4 /dev/zero | wc -c; readlink /dev/ptmx")
    assert out.returncode == 0, out.stderr
    names = set(out.stdout.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd",
            "stdin", "stdout", "stderr"} <= names
    assert "pts/ptmx" in out.stdout


def test_ps_lists_kept_containers_and_rm_removes_them(run_a, rootfs):
    out = run_a.run("--network", "none", str(rootfs), "sh", "-c",
                    "mkdir /d && touch /d/f && chown -R 1000:1000 /d && exit 3")
    assert out.returncode == 3, out.stderr
    [cid] = run_a.containers()
    ps = run_a.user.run([PYCTR, "ps"], env=run_a.env())
    assert ps.stdout.split() == [cid[:12], "exited", "3"]
    rm = run_a.user.run([PYCTR, "rm", cid[:12]], env=run_a.env())
    assert rm.returncode == 0, rm.stderr
    assert run_a.containers() == []


def test_concurrent_runs_of_one_user_do_not_collect_each_other(run_a, rootfs):
    procs = [run_a.popen("--rm", "--network", "none", str(rootfs), "sh", "-c", "echo x > /f; cat /f")
             for _ in range(6)]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0] * 6, [r[1] for r in results]
    assert all(r[0] == "x\n" for r in results)
    assert run_a.containers() == []


def test_etc_files_follow_absolute_symlinks_inside_the_rootfs(run_a, rootfs):
    """Distribution images link /etc/resolv.conf into /run: the bind lands inside the rootfs."""
    import shutil

    copy = run_a.scratch / "rootfs"
    shutil.copytree(rootfs, copy, symlinks=True)
    (copy / "etc" / "resolv.conf").unlink(missing_ok=True)
    os.symlink("/run/systemd/resolve/stub-resolv.conf", copy / "etc" / "resolv.conf")
    out = run_a.run("--rm", "--network", "none", str(copy), "sh", "-c",
                    "cat /etc/resolv.conf >/dev/null && ls /run/systemd/resolve")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["stub-resolv.conf"]
    assert not (copy / "run" / "systemd").exists()


def test_rootfs_symlink_climbing_out_is_refused(run_a, rootfs, marker):
    import shutil

    copy = run_a.scratch / "rootfs"
    shutil.copytree(rootfs, copy, symlinks=True)
    (copy / "etc" / "hosts").unlink(missing_ok=True)
    os.symlink("../../../../../../../../tmp/pyctr-escape-target", copy / "etc" / "hosts")
    out = run_a.run("--rm", "--network", "none", str(copy), "true", marker)
    assert out.returncode == 125
    assert "leads out of the container's root" in out.stderr
    assert not os.path.lexists("/tmp/pyctr-escape-target")
    run_a.assert_nothing_left(marker)
