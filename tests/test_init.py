"""``mycontainer run --init``: a reaper as PID 1 (runtime.reaper), as a user sees it.

PID 1 of a PID namespace gets only the signals it handles and must reap the orphans:
without ``--init`` the program is PID 1 and does neither, with it a reaper does both.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from test_security import oci_image
from test_terminal import read_some, read_to_hangup, run_on_terminal

from runtime import terminal

from conftest import REPO, read_until, running_containers

pytestmark = pytest.mark.privileged

BOUNDARIES = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")


def status_lines(text: str, path: str) -> dict[str, str]:
    """The BOUNDARIES fields that ``grep -H`` printed from ``path``."""
    found = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix(f"{path}:").partition(":")
        if line.startswith(f"{path}:") and name in BOUNDARIES:
            found[name] = value.strip()
    return found


def test_the_reaper_is_pid_1_and_the_program_pid_2(mycontainer):
    script = "echo $$; ps -o pid,comm; tr '\\0' ' ' </proc/1/cmdline"
    result = mycontainer("run", "--init", "--net", "none", "busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "2"
    assert lines[1].split() == ["PID", "COMMAND"]
    assert lines[2].split() == ["1", "mycontainer-ini"]  # comm: 15 characters, as execve's
    assert lines[3].split() == ["2", "sh"]
    # /proc/1/cmdline, readable by every process inside, no longer shows the runtime's
    assert lines[-1].split() == ["mycontainer-init", "--", "sh", "-c", *script.split()]
    assert REPO not in result.stdout and sys.executable not in result.stdout


def test_without_init_the_program_is_pid_1(mycontainer):
    result = mycontainer("run", "--net", "none", "busybox", "sh", "-c", "echo $$")
    assert result.stdout == "1\n"


def find_process(command: str, timeout: float = 20) -> int:
    """The host pid of the one process whose command line is ``command``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as file:
                    if file.read() == command.encode().replace(b" ", b"\0") + b"\0":
                        return int(name)
            except (FileNotFoundError, ProcessLookupError, NotADirectoryError, ValueError):
                continue
        time.sleep(0.02)
    raise AssertionError(f"no process {command!r} within {timeout} s")


def process_state(pid: int) -> str:
    """The state letter of ``pid`` (R, S, Z...), or "" once it is gone (reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


@pytest.mark.parametrize("init", [False, True], ids=["without-init", "with-init"])
def test_an_orphan_stays_a_zombie_unless_the_reaper_reaps_it(background, state_root, init):
    """A shell starts ``sleep 1.31`` in the background and exits: the orphan goes to PID 1.
    As PID 1, ``sleep 1010`` never waits for it, so it ends a zombie; the reaper reaps it."""
    script = 'sh -c "sleep 1.31 &"; exec sleep 1010'
    flags = ["--init"] if init else []
    process = background("run", *flags, "--net", "none", "busybox", "sh", "-c", script)
    running_containers(state_root, runtimes=[process])
    orphan = find_process("sleep 1.31")
    program = find_process("sleep 1010")
    deadline = time.monotonic() + 20
    while process_state(orphan) not in ("Z", ""):
        assert time.monotonic() < deadline, "the orphan's sleep 1.31 did not end"
        time.sleep(0.05)
    time.sleep(0.2)  # what a reaper would need to reap it
    if init:
        assert process_state(orphan) == "", "the reaper left a zombie"
    else:
        assert process_state(orphan) == "Z"
        with open(f"/proc/{orphan}/status") as file:
            parent = next(line for line in file if line.startswith("PPid:")).split()[1]
        assert int(parent) == program  # the container's PID 1, which does not wait
    process.send_signal(signal.SIGKILL if not init else signal.SIGTERM)
    assert process.wait(timeout=20) == (143 if init else -signal.SIGKILL)


def test_sigterm_to_the_runtime_stops_a_program_without_a_handler(background, state_root):
    """Without --init, ``sleep`` as PID 1 ignores the SIGTERM that mycontainer forwards (see
    test_run); behind the reaper it is an ordinary process, which SIGTERM ends: 128+15."""
    process = background("run", "--init", "--net", "none", "busybox", "sleep", "1011")
    running_containers(state_root, runtimes=[process])
    find_process("sleep 1011")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 143


@pytest.mark.parametrize("init", [False, True], ids=["without-init", "with-init"])
def test_a_signal_to_pid_1_from_inside(mycontainer, init):
    """``kill 1`` from inside: PID 1 without a handler drops it (the program is PID 1 without
    --init); the reaper, which blocks and waits for it, forwards it to the program."""
    flags = ["--init"] if init else []
    script = "kill -TERM 1; sleep 2; echo still here"
    result = mycontainer("run", *flags, "--net", "none", "busybox", "sh", "-c", script)
    if init:
        assert (result.returncode, result.stdout) == (143, "")
    else:
        assert (result.returncode, result.stdout) == (0, "still here\n")


@pytest.mark.parametrize(
    "command, code",
    [
        (["sh", "-c", "exit 0"], 0),
        (["sh", "-c", "exit 3"], 3),
        (["sh", "-c", "exit 255"], 255),
        (["sh", "-c", "kill -KILL $$"], 137),
        (["sh", "-c", "kill -USR1 $$"], 128 + signal.SIGUSR1),
        (["no-such-command"], 127),
        (["/etc/passwd"], 126),
    ],
)
def test_the_exit_code_is_the_programs(mycontainer, command, code):
    result = mycontainer("run", "--init", "--net", "none", "busybox", *command)
    assert result.returncode == code, result.stderr
    if code in (126, 127):
        assert result.stderr.startswith(f"mycontainer: error: cannot run '{command[0]}'")
        assert result.stderr.count("\n") == 1


def test_stdin_and_stdout_reach_the_program(mycontainer):
    result = mycontainer("run", "--init", "-i", "--net", "none", "busybox", "cat", input="hi\n")
    assert (result.returncode, result.stdout) == (0, "hi\n")


def test_the_reaper_holds_no_descriptor(background, state_root):
    """Not even stdin, stdout and stderr: the program's closed output is closed, and nothing
    the runtime opened stays with the container."""
    process = background("run", "--init", "--net", "none", "busybox", "sleep", "1012")
    running_containers(state_root, runtimes=[process])
    with open(f"/proc/{find_process('sleep 1012')}/status") as file:
        reaper = int(next(line for line in file if line.startswith("PPid:")).split()[1])
    assert os.listdir(f"/proc/{reaper}/fd") == []
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 143


@pytest.mark.parametrize("flags", [["-it"], ["-i"]], ids=["its-own-terminal", "the-users"])
def test_ctrl_c_comes_once_and_the_window_follows(background, home, state_root, flags):
    """On a terminal, ``run --init -it`` (the container's pty) or ``-i`` (the user's own):
    Ctrl-C reaches the terminal's foreground group, reaper and program, and the reaper does
    not send the program a second one; a window change reaches the program too."""
    script = (
        "n=0; trap 'n=$((n+1)); echo \"SIGINT $n\"' INT; tty; stty size; "
        'while :; do read x; [ "$x" = end ] && exit 5; stty size; done'
    )
    process, user = run_on_terminal(
        background, home, state_root, "run", "--init", *flags, "--net", "none", "busybox",
        "sh", "-c", script,
    )  # fmt: skip
    try:
        transcript = read_until(user, b"33 101")
        assert (b"/dev/pts/0" in transcript) == (flags == ["-it"])
        while flags == ["-i"] and os.tcgetpgrp(user) == process.pid:
            time.sleep(0.01)  # the runtime hands the container the user's terminal at start
        os.write(user, b"\x03")
        transcript += read_until(user, b"SIGINT 1")
        transcript += read_some(user, timeout=1)
        assert b"SIGINT 2" not in transcript
        terminal.resize(user, 50, 132)
        deadline = time.monotonic() + 20
        while b"50 132" not in transcript:  # the resize and the typing race: type again
            assert time.monotonic() < deadline and process.poll() is None, transcript
            os.write(user, b"\r")
            transcript += read_some(user)
        os.write(user, b"end\r")
        transcript += read_to_hangup(user)
        assert process.wait(timeout=20) == 5, transcript
    finally:
        os.close(user)
    assert b"SIGINT 2" not in transcript


def test_an_interactive_shell_behind_the_reaper(background, home, state_root):
    """``run --init -it busybox sh``: the shell takes the terminal for its jobs (job
    control), Ctrl-C interrupts its foreground ``sleep`` and leaves it, and ``exit`` ends
    the run with the shell's code."""
    process, user = run_on_terminal(
        background, home, state_root, "run", "--init", "-it", "--net", "none", "busybox", "sh"
    )
    try:
        os.write(user, b"echo $$\r")
        transcript = read_until(user, b"\n2\r")
        os.write(user, b"sleep 1013\r")
        find_process("sleep 1013")
        os.write(user, b"\x03")
        os.write(user, b"echo back $?\r")
        transcript += read_until(user, b"back 130")
        os.write(user, b"exit 4\r")
        transcript += read_to_hangup(user)
        assert process.wait(timeout=20) == 4, transcript
    finally:
        os.close(user)


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--cap-drop", "ALL", "--cap-add", "KILL"],
        ["--security-opt", "no-new-privileges=false"],
        ["--security-opt", "seccomp=unconfined"],
    ],
    ids=["default", "cap-drop", "new-privileges", "unconfined"],
)
def test_the_reaper_has_the_programs_boundaries(mycontainer, flags):
    script = "grep -H . /proc/1/status /proc/self/status"
    result = mycontainer("run", "--init", *flags, "--net", "none", "busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    reaper = status_lines(result.stdout, "/proc/1/status")
    program = status_lines(result.stdout, "/proc/self/status")
    assert set(reaper) == set(BOUNDARIES)
    assert reaper == program


def test_a_non_root_reaper_has_no_capabilities_either(mycontainer, tmp_path, home):
    image = oci_image(tmp_path / "nobody", str(home / "rootfs" / "busybox"), "nobody")
    script = "id -u; grep -H . /proc/1/status /proc/self/status"
    result = mycontainer("run", "--init", "--net", "none", image, "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "65534"
    reaper = status_lines(result.stdout, "/proc/1/status")
    assert reaper == status_lines(result.stdout, "/proc/self/status")
    assert reaper["CapEff"] == reaper["CapPrm"] == "0" * 16
    assert "/proc/1/status:Uid:\t65534" in result.stdout


def test_the_reaper_is_out_of_reach_of_the_container(mycontainer):
    """Non-dumpable, its executable (the host's Python) and its memory are closed to the
    container's root, which lacks CAP_SYS_PTRACE; and it holds no descriptor."""
    script = (
        "readlink /proc/1/exe || echo no exe; "
        "head -c 1 /proc/1/environ || echo no environ; "
        "head -c 1 /proc/1/mem || echo no mem; "
        "ls /proc/1/fd | wc -l"
    )
    result = mycontainer("run", "--init", "--net", "none", "busybox", "sh", "-c", script)
    assert result.stdout.split() == ["no", "exe", "no", "environ", "no", "mem", "0"]
    assert "Permission denied" in result.stderr


def test_init_refuses_cap_sys_ptrace(mycontainer):
    for cap in ("SYS_PTRACE", "ALL"):
        result = mycontainer("run", "--init", "--cap-add", cap, "--net", "none", "busybox", "true")
        assert result.returncode == 125
        assert result.stderr == (
            "mycontainer: error: --init cannot be given CAP_SYS_PTRACE: the container could "
            "read mycontainer's memory through its PID 1; drop one of them\n"
        )
