"""``mycontainer run``, as a user sees it: isolation, exit codes, signals, a terminal, cleanup.

Every test goes through the ``mycontainer`` fixture, which also checks that the container
left no state directory and no mount on the host.
"""

from __future__ import annotations

import os
import pty
import signal
import socket
import subprocess
import time

import pytest

from runtime import policy

from conftest import environment, mycontainer_command, read_until, running_containers

pytestmark = pytest.mark.privileged


def test_hostname_pid1_and_own_proc(mycontainer):
    script = 'echo $$; hostname; ls /proc | grep -c "^[0-9]"'
    result = mycontainer("run", "busybox", "sh", "-c", script, "--hostname", "t1")
    assert result.returncode == 0, result.stderr
    pid, hostname, count = result.stdout.split()
    assert (pid, hostname) == ("1", "t1")
    assert int(count) <= 3  # sh, ls and grep: no host process is visible
    assert socket.gethostname() != "t1"


def test_default_hostname_is_the_short_id(mycontainer):
    result = mycontainer("run", "busybox", "sh", "-c", 'echo "$(hostname) $HOSTNAME"')
    hostname, variable = result.stdout.split()
    assert len(hostname) == 12 and int(hostname, 16) >= 0
    assert variable == hostname


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_code_round_trips(mycontainer, code):
    assert mycontainer("run", "busybox", "sh", "-c", f"exit {code}").returncode == code


def test_command_not_found_is_127(mycontainer):
    result = mycontainer("run", "busybox", "no-such-command")
    assert result.returncode == 127
    assert result.stderr == (
        "mycontainer: error: cannot run 'no-such-command': executable file not found in $PATH\n"
    )


def test_not_executable_is_126(mycontainer):
    result = mycontainer("run", "busybox", "/etc/passwd")
    assert result.returncode == 126
    assert "mycontainer: error: cannot run '/etc/passwd': Permission denied" in result.stderr


def test_missing_image_is_125(mycontainer, tmp_path):
    result = mycontainer("run", str(tmp_path / "nothing"), "true")
    assert result.returncode == 125
    assert "no such image, file or directory" in result.stderr


def test_rootfs_directory_as_image(mycontainer, busybox_rootfs):
    result = mycontainer("run", busybox_rootfs, "cat", "/etc/group")
    assert result.returncode == 0
    assert result.stdout.startswith("root:x:0:")


def test_every_namespace_is_new(mycontainer):
    kinds = ["uts", "pid", "mnt", "ipc", "net"]
    script = "; ".join(f"readlink /proc/1/ns/{kind}" for kind in kinds)
    inside = mycontainer("run", "busybox", "sh", "-c", script).stdout.split()
    outside = [os.readlink(f"/proc/self/ns/{kind}") for kind in kinds]
    assert len(inside) == len(kinds)
    for kind, ours, theirs in zip(kinds, inside, outside, strict=True):
        assert ours != theirs, f"the container shares the host's {kind} namespace"


def test_only_the_container_mounts_are_visible(mycontainer):
    result = mycontainer("run", "busybox", "cut", "-d", " ", "-f", "2", "/proc/mounts")
    expected = ["/", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/proc", "/sys"]
    expected += ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]  # generated for it
    expected.append("/sys/fs/cgroup")  # its own groups, read-only: on v1, one per hierarchy
    with open("/proc/self/cgroup") as file:
        hierarchies = [line.split(":")[1] for line in file if not line.startswith("0:")]
    expected += [f"/sys/fs/cgroup/{name.removeprefix('name=')}" for name in hierarchies if name]
    # masked and read-only paths of /proc and /sys (runtime.security), those this kernel has
    expected += [p for p in policy.MASKED_PATHS + policy.READONLY_PATHS if os.path.exists(p)]
    assert sorted(result.stdout.split()) == sorted(expected)


def test_dev_holds_only_the_default_devices(mycontainer):
    result = mycontainer("run", "busybox", "ls", "/dev")
    devices = ["full", "null", "random", "tty", "urandom", "zero"]
    links = ["fd", "ptmx", "stderr", "stdin", "stdout"]
    assert sorted(result.stdout.split()) == sorted([*devices, *links, "mqueue", "pts", "shm"])
    # A read-write sysfs refuses new files too, but says "Permission denied"
    sysfs = mycontainer("run", "busybox", "sh", "-c", "echo x > /sys/kernel/x")
    assert sysfs.returncode != 0 and "Read-only file system" in sysfs.stderr, sysfs.stderr


def test_net_none_has_only_loopback_up(mycontainer):
    result = mycontainer("run", "--net", "none", "busybox", "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in result.stdout.splitlines()] == ["lo"]
    assert "UP" in result.stdout
    ping = mycontainer("run", "--net", "none", "busybox", "ping", "-c", "1", "-W", "1", "127.0.0.1")
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_file_in_container_dev_shm_does_not_appear_on_host(mycontainer):
    marker = f"mycontainer-test-{os.getpid()}"
    result = mycontainer("run", "busybox", "sh", "-c", f"touch /dev/shm/{marker} && ls /dev/shm")
    assert result.stdout.split() == [marker]
    assert not os.path.exists(f"/dev/shm/{marker}")


def test_only_standard_descriptors_reach_the_container(mycontainer):
    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)
    try:
        # The shell is PID 1; ls lists the shell's descriptors, not its own.
        script = "ls /proc/1/fd; exit"  # not last, so sh forks ls instead of exec-ing it
        result = mycontainer("run", "busybox", "sh", "-c", script, pass_fds=(read_end,))
    finally:
        os.close(read_end)
        os.close(write_end)
    assert sorted(result.stdout.split()) == ["0", "1", "2"]


def test_environment_is_clean(mycontainer):
    result = mycontainer("run", "busybox", "env")
    names = sorted(line.split("=")[0] for line in result.stdout.splitlines())
    assert names == ["HOME", "HOSTNAME", "PATH"]


def test_stdin_passes_through_with_interactive(mycontainer):
    result = mycontainer("run", "-i", "busybox", "tr", "a-z", "A-Z", input="hello\n")
    assert result.stdout == "HELLO\n"


def test_without_interactive_stdin_is_dev_null(mycontainer):
    """As docker's: what is piped to 'run' without -i is not the container's."""
    result = mycontainer(
        "run", "busybox", "sh", "-c", "cat; readlink /proc/self/fd/0", input="hi\n"
    )
    assert result.stdout == "/dev/null\n"


def test_state_file_while_running(background, state_root):
    process = background("run", "busybox", "sleep", "30")
    [state] = running_containers(state_root, runtimes=[process])
    assert state["id"] and len(state["id"]) == 64
    assert state["config"]["args"] == ["sleep", "30"]
    with open(f"/proc/{state['pid']}/cmdline", "rb") as file:
        assert file.read().split(b"\0")[0] == b"sleep"
    os.kill(state["pid"], signal.SIGKILL)
    assert process.wait(timeout=20) == 137


def test_pid1_killed_from_host_gives_137(background, state_root):
    process = background("run", "busybox", "sleep", "30")
    [state] = running_containers(state_root, runtimes=[process])
    os.kill(state["pid"], signal.SIGKILL)
    assert process.wait(timeout=20) == 137


def test_sigterm_is_forwarded_to_pid1(background):
    script = 'trap "echo got TERM; exit 3" TERM; echo ready; while true; do sleep 0.1; done'
    process = background("run", "busybox", "sh", "-c", script)
    first = read_until(process.stdout.fileno(), b"ready\n")  # the trap is set
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=20)
    assert process.returncode == 3
    assert first.decode() + rest == "ready\ngot TERM\n"


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGALRM,
        signal.SIGVTALRM,
        signal.SIGPROF,
        signal.SIGXCPU,
        signal.SIGPWR,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGRTMIN,
        signal.SIGRTMAX,
    ],
    ids=lambda signum: signal.Signals(signum).name,
)
def test_every_catchable_signal_reaches_the_container(background, signum):
    """As docker's sig-proxy: a signal for the runtime neither kills nor stops it, leaving the
    container orphaned; the container's PID 1 gets it, and its exit code is the run's."""
    number = int(signum)
    script = f'trap "echo got {number}; exit 3" {number}; echo ready; while :; do sleep 0.1; done'
    process = background("run", "--net", "none", "busybox", "sh", "-c", script)
    first = read_until(process.stdout.fileno(), b"ready\n")
    process.send_signal(signum)
    rest, _ = process.communicate(timeout=20)
    assert (process.returncode, first.decode() + rest) == (3, f"ready\ngot {number}\n")


def foreground_job(init: int) -> str | None:
    """The name of the child of ``init`` that is the foreground job of its terminal, if any."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as file:
                stat = file.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        _, parent, group, _, _, foreground = stat[stat.rindex(")") + 2 :].split()[:6]
        if int(parent) == init and int(group) == int(foreground) and int(group) != init:
            return command
    return None


def test_interactive_shell_on_a_terminal(background, home, state_root):
    """From a terminal, `run -i busybox sh` is a usable shell: Ctrl-C stops its job, not it."""
    primary, secondary = pty.openpty()

    def become_terminal_session():
        os.setsid()
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        process = background(
            "run", "-i", "busybox", "sh",
            env=dict(environment(home, state_root), TERM="dumb"),
            stdin=secondary, stdout=secondary, stderr=secondary,
            preexec_fn=become_terminal_session,
        )  # fmt: skip
    finally:
        os.close(secondary)
    try:
        [state] = running_containers(state_root, runtimes=[process])
        transcript = b""

        def type_and_read(line: bytes, expected: bytes) -> None:
            nonlocal transcript
            os.write(primary, line)
            transcript += read_until(primary, expected)  # (typed text is echoed, not its output)

        type_and_read(b"echo $((6 * 7))\n", b"42")
        os.write(primary, b"sleep 60\n")
        deadline = time.monotonic() + 20
        while foreground_job(state["pid"]) != "sleep":
            assert time.monotonic() < deadline, f"sleep never ran in the foreground: {transcript}"
            time.sleep(0.02)
        os.write(primary, b"\x03")  # Ctrl-C, as typed
        # 130: sleep died of SIGINT (the echo of the typed line shows "$?", not "130")
        type_and_read(b"echo status $?\n", b"status 130")
        type_and_read(b"echo still $((1 + 1))\n", b"still 2")
        os.write(primary, b"exit 5\n")
        assert process.wait(timeout=20) == 5
    finally:
        os.close(primary)


@pytest.mark.parametrize("closed", ["0<&-", ">&-", "2>&-", ">&- 2>&-"])
def test_closed_standard_streams_keep_the_exit_code(mycontainer, home, state_root, closed):
    """A caller may close stdin, stdout or stderr (``>&-``): the run's exit code stays the
    command's, with no traceback."""
    command = " ".join(mycontainer_command("run", "--net", "none", "busybox", "sh", "-c"))
    result = subprocess.run(
        ["sh", "-c", f"{command} 'exit 7' {closed}; echo exit=$?"],
        env=environment(home, state_root),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.stdout, result.stderr) == ("exit=7\n", "")
