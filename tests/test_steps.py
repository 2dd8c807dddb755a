"""Each step of the lab, run as a learner runs it, checked for what it isolates."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import REPO, host_mounts

pytestmark = pytest.mark.privileged


def step(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"steps.{name}", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_step1_hostname_inside_not_outside():
    before = socket.gethostname()
    result = step("step1_uts", "--hostname", "box", "--", "hostname")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "box\n"
    assert socket.gethostname() == before


def test_step1_shares_the_pid_namespace():
    result = step("step1_uts", "--", "sh", "-c", "echo $$")
    assert int(result.stdout) > 1


def test_step2_shell_is_pid_1():
    result = step("step2_pid", "--", "sh", "-c", "echo $$")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "1\n"


def test_step2_still_sees_host_processes_through_the_hosts_proc():
    """No new /proc yet: the host's processes, this test among them, are listed."""
    result = step("step2_pid", "--", "sh", "-c", f"test -d /proc/{os.getpid()} && echo visible")
    assert result.stdout == "visible\n"


def test_step2_exit_code_passes_through():
    assert step("step2_pid", "--", "sh", "-c", "exit 7").returncode == 7


@pytest.fixture
def own_rootfs(busybox_rootfs, tmp_path):
    """A copy of the busybox rootfs with a file only it has."""
    path = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, path, symlinks=True)
    (path / "only-in-this-rootfs").write_text("marker\n")
    return path


def test_step3_root_is_the_rootfs(own_rootfs):
    result = step("step3_mount", "--rootfs", str(own_rootfs), "--", "cat", "/only-in-this-rootfs")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "marker\n"


def test_step3_proc_shows_only_the_container(own_rootfs):
    script = 'ls /proc | grep "^[0-9]"; exit'
    result = step("step3_mount", "--rootfs", str(own_rootfs), "--", "sh", "-c", script)
    pids = [int(pid) for pid in result.stdout.split()]
    assert 1 in pids and max(pids) < 10


def test_step3_host_mounts_invisible_and_none_left_behind(own_rootfs):
    result = step("step3_mount", "--rootfs", str(own_rootfs), "--", "cat", "/proc/mounts")
    mount_points = sorted(line.split()[1] for line in result.stdout.splitlines())
    assert mount_points == ["/", "/dev", "/dev/mqueue", "/dev/pts", "/dev/shm", "/proc", "/sys"]
    assert host_mounts(own_rootfs) == []


def test_step3_has_its_own_ipc_namespace(own_rootfs):
    result = step("step3_mount", "--rootfs", str(own_rootfs), "--", "readlink", "/proc/1/ns/ipc")
    assert result.stdout.strip() != os.readlink("/proc/self/ns/ipc")


def test_step3_writes_nothing_into_the_rootfs(own_rootfs):
    before = sorted(os.listdir(own_rootfs))
    step("step3_mount", "--rootfs", str(own_rootfs), "--", "true")
    assert sorted(os.listdir(own_rootfs)) == before


def test_step3_missing_rootfs_is_one_clear_line(tmp_path):
    result = step("step3_mount", "--rootfs", str(tmp_path / "none"), "--", "sh")
    assert result.returncode != 0
    assert "not a directory" in result.stderr
    assert result.stderr.count("\n") <= 2  # argparse: usage line + error line


def test_step4_memory_limit_is_enforced_and_its_cgroup_removed(own_rootfs):
    def step4_groups() -> list[str]:
        from runtime import cgroups

        parents = cgroups.Cgroup(cgroups.detect(), "_").parents
        names = [os.path.join(p, n) for p in parents if os.path.isdir(p) for n in os.listdir(p)]
        return [name for name in names if os.path.basename(name).startswith("step4-")]

    before = step4_groups()
    args = ["--rootfs", str(own_rootfs), "--memory", "32m", "--", "tail", "/dev/zero"]
    result = step("step4_cgroups", *args)
    assert result.returncode == 137
    assert "killed by the kernel's OOM killer" in result.stderr
    assert step4_groups() == before


def test_step4_cgroup_namespace_hides_the_host_tree(own_rootfs):
    result = step("step4_cgroups", "--rootfs", str(own_rootfs), "--", "cat", "/proc/self/cgroup")
    assert {line.split(":", 2)[2] for line in result.stdout.splitlines()} == {"/"}


def test_step4_refuses_a_bad_limit_before_creating_anything(own_rootfs):
    result = step("step4_cgroups", "--rootfs", str(own_rootfs), "--memory", "1k", "--", "true")
    assert result.returncode == 2
    assert "--memory must be at least 6m (got 1k)" in result.stderr


def test_step5_runs_an_image_on_an_overlay_and_forgets_its_writes(home):
    env = dict(os.environ, MYCONTAINER_HOME=str(home))
    script = "mount | grep -c '^overlay on / '; echo written > /etc/new; cat /etc/new"
    run = [sys.executable, "-m", "steps.step5_image", "busybox", "--", "sh", "-c", script]
    result = subprocess.run(run, capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["1", "written"]
    again = [sys.executable, "-m", "steps.step5_image", "busybox", "--", "ls", "/etc/new"]
    result = subprocess.run(again, capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert result.returncode != 0  # the first container's write went to its own upper layer
    assert not [name for name in os.listdir(home) if name.startswith(".step5-")]


def test_step5_uses_the_images_command(home):
    env = dict(os.environ, MYCONTAINER_HOME=str(home))
    run = [sys.executable, "-m", "steps.step5_image", "busybox"]  # busybox's Cmd: sh
    result = subprocess.run(
        run, input="echo from the image sh\n", capture_output=True, text=True, cwd=REPO, env=env
    )
    assert result.stdout.splitlines()[-1:] == ["from the image sh"], result.stderr
