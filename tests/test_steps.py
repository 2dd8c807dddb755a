"""Each step of the lab, run as a learner runs it, checked for what it isolates."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_network import world  # noqa: F401 (a fixture: a host and an internet of its own)

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


@pytest.fixture
def step7_container(home):
    """A container of step 7 (busybox, 32m of memory) running ``sleep``: its init's pid.

    Killed and waited for afterwards; step 7 then removes its cgroup and storage.
    """
    env = dict(os.environ, MYCONTAINER_HOME=str(home))
    duration = str(86400 + os.getpid() % 1000)  # unusual: found by its command line alone
    argv = ["steps.step7_security", "--memory", "32m", "busybox", "--", "sleep", duration]
    step7 = subprocess.Popen(
        [sys.executable, "-m", *argv], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not (pid := _process_running(["sleep", duration])):
            assert step7.poll() is None, step7.stderr.read()
            assert time.monotonic() < deadline, "step 7's container did not start"
            time.sleep(0.05)
        yield pid
    finally:
        if pid := _process_running(["sleep", duration]):
            os.kill(pid, signal.SIGKILL)  # its PID 1 ignores SIGTERM, as every PID 1 does
        step7.wait(timeout=20)
        step7.stderr.close()


def _process_running(argv: list[str]) -> int | None:
    """The pid of the process whose command line is ``argv``, if one runs."""
    wanted = "\0".join(argv).encode() + b"\0"
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as file:
                if file.read() == wanted:
                    return int(name)
        except OSError:
            pass  # gone meanwhile
    return None


def step8(pid: int, *command: str, options=(), **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steps.step8_exec", *options, str(pid), "--", *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        **kwargs,
    )


def test_step8_entries_at_once_all_run(step7_container):
    """The step and its child both put the command in a process group of its own; when the
    command has exec'd first, the step's setpgid(2) fails (EACCES), which must not fail the
    entry. Thirty at once make that order likely (9 of 60 failed before)."""
    argv = [sys.executable, "-m", "steps.step8_exec", "--no-boundaries", "--no-cgroup"]
    entries = [
        subprocess.Popen(
            [*argv, str(step7_container), "--", "true"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(30)
    ]
    failed = [entry.communicate(timeout=120)[1] for entry in entries if entry.wait(timeout=120)]
    assert failed == []


def test_step8_joins_every_namespace_of_the_container(step7_container):
    names = ("cgroup", "ipc", "mnt", "pid", "uts")
    script = "for n in " + " ".join(names) + "; do readlink /proc/self/ns/$n; done; echo $$"
    result = step8(step7_container, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    *links, pid = result.stdout.split()
    assert links == [os.readlink(f"/proc/{step7_container}/ns/{name}") for name in names]
    assert 1 < int(pid) < 10  # a number of the container's PID namespace: the fork's
    inside = step8(step7_container, "sh", "-c", "hostname; cat /proc/1/comm; pwd; ls /")
    hostname, init, cwd, *root = inside.stdout.split("\n")
    assert (hostname, init, cwd) == ("container", "sleep", "/")
    assert "work" not in root and "bin" in root


def test_step8_joins_the_cgroup_and_its_memory_limit(step7_container):
    # tail keeps all of /dev/zero, which has no newline; ulimit -v bounds it at 96 MiB
    eat = "ulimit -v 98304; tail /dev/zero; echo $?; cut -d: -f3 /proc/self/cgroup | sort -u"
    inside = step8(step7_container, "sh", "-c", eat)
    assert inside.stdout.split() == ["137", "/"]  # tail was killed at 32 MiB
    assert "Killed" in inside.stderr
    outside = step8(step7_container, "sh", "-c", eat, options=["--no-cgroup"])
    assert outside.stdout.split()[0] == "1"  # it ran out of its own 96 MiB instead
    assert "tail: out of memory" in outside.stderr
    assert any(path.startswith("/..") for path in outside.stdout.split()[1:])


def test_step8_applies_the_boundaries_of_the_init(step7_container):
    fields = "^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):"
    with open(f"/proc/{step7_container}/status") as file:
        init = [line for line in file.read().splitlines() if re.match(fields, line)]
    script = f"grep -E '{fields}' /proc/self/status; unshare -U true"
    result = step8(step7_container, "sh", "-c", script)
    assert result.stdout.splitlines() == init
    assert init[2] == f"CapEff:\t{0xA80425FB:016x}" and init[-1] == "Seccomp:\t2"
    assert "unshare(0x10000000): Operation not permitted" in result.stderr
    lifted = step8(step7_container, "sh", "-c", script, options=["--no-boundaries"])
    assert "Seccomp:\t0" in lifted.stdout and lifted.returncode == 0
    assert "step 8: no boundaries" in lifted.stderr


def test_step8_lets_no_descriptor_of_the_host_in(step7_container):
    leak = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)  # the host's, handed to the step
    try:
        result = step8(step7_container, "ls", "/proc/self/fd", pass_fds=[leak])
    finally:
        os.close(leak)
    assert result.stdout.split() == ["0", "1", "2", "3"]  # 3: the one ls reads


def test_step8_refuses_the_interpreter_it_runs_on(step7_container):
    """/proc/self/exe of the entering process is the host's Python until it executes the
    command: run, the container could keep it open and overwrite it (CVE-2019-5736)."""
    result = step8(step7_container, "/proc/self/exe", "-c", "print('escaped')")
    assert result.returncode == 126
    assert "escaped" not in result.stdout
    assert "CVE-2019-5736" in result.stderr


def test_step8_without_the_mount_namespace_sees_the_hosts_files(step7_container):
    script = f"test -d /proc/{os.getpid()} && echo host /proc; pwd"
    result = step8(step7_container, "sh", "-c", script, options=["--skip", "mnt"])
    assert result.stdout.split("\n")[:2] == ["host /proc", REPO]


def test_step8_exit_codes_and_errors(step7_container):
    assert step8(step7_container, "sh", "-c", "exit 7").returncode == 7
    missing = step8(step7_container, "no-such-command")
    assert missing.returncode == 127
    assert missing.stderr.splitlines()[-1] == (
        "error: cannot run 'no-such-command': executable file not found in $PATH"
    )
    gone = step8(2**22 + 1, "true")  # above any pid_max
    assert gone.returncode == 125
    assert gone.stderr.startswith("error: no process 4194305: give the PID")
    assert gone.stderr.count("\n") == 1
    zombie = os.fork()
    if zombie == 0:
        os._exit(0)
    try:
        # Exited, left unreaped: its /proc/PID stays, without namespaces.
        os.waitid(os.P_PID, zombie, os.WEXITED | os.WNOWAIT)
        exited = step8(zombie, "true")
    finally:
        os.waitpid(zombie, 0)
    assert exited.returncode == 125
    assert exited.stderr == (
        f"error: cannot read /proc/{zombie}/ns/cgroup: No such file or directory (has it exited?)\n"
    )


def test_step7_builds_on_step6_with_only_lo_by_default(home):
    """Step 7 adds its boundaries to step 6: a network namespace of its own, with ``lo``
    up and nothing else (``--net none``), so that it leaves the host's network alone."""
    env = dict(os.environ, MYCONTAINER_HOME=str(home))
    script = "readlink /proc/self/ns/net; ip -o link | cut -d' ' -f2,3"
    result = subprocess.run(
        [sys.executable, "-m", "steps.step7_security", "busybox", "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    namespace, *links = result.stdout.splitlines()
    assert namespace != os.readlink("/proc/self/ns/net")
    assert links == ["lo: <LOOPBACK,UP,LOWER_UP>"]
    assert "step 6" not in result.stderr


def test_step7_refuses_to_publish_without_a_bridge():
    result = step("step7_security", "-p", "8080:80", "busybox", "--", "true")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith("error: --publish needs --net bridge")


def test_step7_net_bridge_is_step6s_network(world):  # noqa: F811
    script = "ip -4 -o addr show eth0; ip route | grep default"
    step7 = [sys.executable, "-m", "steps.step7_security", "--net", "bridge", "busybox"]
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{world.host}", *step7, "--", "sh", "-c", script],
        env=world.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert " eth0 " in result.stdout and "default via 10.199.0.1" in result.stdout
    assert "step 6: eth0 will be" in result.stderr
    assert world.links() == ["lo", "mycontainer0", "up0"] and world.leases() == []


def test_steps_take_explicit_values_not_an_options_object():
    """Each step's setup names what it needs (a hostname, a rootfs, layers...): no argparse
    namespace carries state from one step to the next."""
    for name in STEPS[:7]:
        setup = importlib.import_module(f"steps.{name}").setup
        assert "options" not in inspect.signature(setup).parameters, name


def test_steps_name_their_exit_codes():
    """125, 137 and the others are the runtime's named constants (runtime.process, EXIT_*),
    never bare numbers in a step's code."""
    for name in STEPS:
        tree = ast.parse(Path(REPO, "steps", f"{name}.py").read_text())
        codes = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in (125, 126, 127, 137)
        ]
        assert codes == [], name


STEPS = [
    "step1_uts",
    "step2_pid",
    "step3_mount",
    "step4_cgroups",
    "step5_image",
    "step6_veth",
    "step7_security",
    "step8_exec",
]
