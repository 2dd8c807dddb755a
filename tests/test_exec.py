"""``mycontainer exec``: a process entering a running container, as docker's exec.

Each test runs a real container (``mycontainer run ... sleep``, in the background) and
enters it as a user would, then looks from inside at what the runc exec CVEs were about:
the namespaces and cgroups joined, the boundaries (capabilities, no_new_privs, seccomp)
equal to the init's, no descriptor of the host's, a working directory inside the root, and
the host's interpreter out of reach. The terminal (``exec -it``) is tests/test_terminal.py's.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from conftest import (
    REPO,
    bundle_maker,
    environment,
    oci_runner,
    read_until,
    running_containers,
)

pytestmark = pytest.mark.privileged

SLEEP = ["sleep", "1001"]  # the containers' init: an unusual duration, found by pgrep alone


@pytest.fixture
def start(mycontainer, background, state_root):
    """``start(*run_options)`` -> the state (id, pid...) of a new running container of
    ``mycontainer run --net none OPTIONS busybox sleep 1001``, ended at teardown."""
    seen = []

    def start_container(*options: str) -> dict:
        runtime = background("run", "--net", "none", *options, "busybox", *SLEEP)
        found = running_containers(state_root, runtimes=[runtime], ignore=seen)[0]
        seen.append(found["id"])
        return found

    return start_container


def status_lines(text: str, *names: str) -> list[str]:
    """The lines of a /proc/PID/status text that start with one of ``names``."""
    return [line for line in text.splitlines() if line.startswith(names)]


BOUNDARIES = ("Cap", "NoNewPrivs", "Seccomp")


@pytest.mark.parametrize(
    "options",
    [
        (),  # docker's defaults: 14 capabilities, no_new_privs, seccomp
        ("--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined"),
        ("--cap-add", "SYS_ADMIN", "--security-opt", "no-new-privileges=false"),
    ],
)
def test_exec_has_the_boundaries_of_the_containers_init(mycontainer, start, options):
    """All five capability sets, no_new_privs and seccomp: as the init's, not the host's
    root's (a process forked by the runtime inherits nothing of the container's)."""
    box = start(*options)
    with open(f"/proc/{box['pid']}/status") as file:
        init = status_lines(file.read(), *BOUNDARIES)
    result = mycontainer("exec", box["id"], "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    assert status_lines(result.stdout, *BOUNDARIES) == init
    assert len(init) == 8  # CapInh, CapPrm, CapEff, CapBnd, CapAmb, NoNewPrivs, Seccomp(_filters)


def test_exec_joins_every_namespace_and_the_cgroups_of_the_container(mycontainer, start):
    """Every namespace of PID 1 (inside: the container's init), and its cgroups: /proc/1 is
    the container's sleep, and the hostname its short id."""
    box = start()
    script = (
        "for n in mnt uts ipc net pid cgroup user; do "
        '[ "$(readlink /proc/1/ns/$n)" = "$(readlink /proc/self/ns/$n)" ] || echo other $n; done; '
        "cmp -s /proc/1/cgroup /proc/self/cgroup || echo other cgroups; "
        "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname"
    )
    result = mycontainer("exec", box["id"], "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [" ".join(SLEEP) + " ", box["id"][:12]]


def test_exec_finds_the_container_by_a_prefix_of_its_id(mycontainer, start):
    box = start()
    result = mycontainer("exec", box["id"][:6], "sh", "-c", "exit 3")
    assert (result.returncode, result.stderr) == (3, "")


def test_exec_into_a_detached_container_by_its_name(mycontainer):
    started = mycontainer("run", "-d", "--name", "web", "--net", "none", "busybox", *SLEEP)
    assert started.returncode == 0, started.stderr
    result = mycontainer("exec", "web", "sh", "-c", "cat /proc/1/cmdline; exit 4")
    assert (result.returncode, result.stdout) == (4, "\0".join(SLEEP) + "\0")
    assert mycontainer("rm", "-f", "web").returncode == 0


def test_exec_has_no_descriptor_of_the_host(mycontainer, start, tmp_path):
    """Only 0, 1 and 2, whatever mycontainer inherited (CVE-2024-21626: a host directory
    left open is a way out through /proc/self/fd/N); and no working directory through one."""
    box = start()
    leaked = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = mycontainer("exec", box["id"], "sh", "-c", "ls /proc/$$/fd; :", pass_fds=[leaked])
        assert (result.returncode, result.stdout.split()) == (0, ["0", "1", "2"]), result.stderr
        result = mycontainer(
            "exec", "-w", f"/proc/self/fd/{leaked}", box["id"], "touch", "escaped",
            pass_fds=[leaked],
        )  # fmt: skip
        assert result.returncode == 125
        assert "refusing" in result.stderr and len(result.stderr.splitlines()) == 1
        assert not (tmp_path / "escaped").exists()
    finally:
        os.close(leaked)


def test_exec_never_runs_the_hosts_interpreter(mycontainer, start):
    """/proc/self/exe, before execve, is mycontainer's interpreter: refused, as any path to
    it (CVE-2019-5736); what runs has the container's busybox as its /proc/self/exe."""
    box = start()
    result = mycontainer("exec", box["id"], "/proc/self/exe", "-c", "print('escaped')")
    assert result.returncode == 126
    assert "CVE-2019-5736" in result.stderr and "escaped" not in result.stdout
    result = mycontainer("exec", box["id"], "sh", "-c", "readlink /proc/$$/exe; pwd")
    assert result.stdout.splitlines() == ["/bin/busybox", "/"]


def test_exec_is_not_dumpable_until_it_executes_the_program(mycontainer, start, state_root):
    """Until execve(2), the entering process runs the host's interpreter, in the container's
    PID namespace: non-dumpable, so the container's root (without CAP_SYS_PTRACE) can
    neither open its /proc/PID/exe nor read its memory or environment (CVE-2016-9962, then
    CVE-2019-5736). Seen from inside while it waits at its gate; what it then executes is
    dumpable as any program."""
    from runtime import execution, process, state

    box = start()
    found = state.find(str(state_root), box["id"])
    waiting = execution.spawn(found, process.Program(["/bin/true"], {}))
    try:
        with open(f"/proc/{waiting.pid}/status") as file:
            inside = [line.split()[-1] for line in file if line.startswith("NSpid:")][0]
        script = f"readlink /proc/{inside}/exe || echo no exe; cat /proc/{inside}/environ"
        result = mycontainer("exec", box["id"], "sh", "-c", script)
        assert result.stdout == "no exe\n", result.stdout
        assert "Permission denied" in result.stderr, result.stderr
    finally:
        waiting.kill()
        waiting.close()
    result = mycontainer("exec", box["id"], "sh", "-c", "readlink /proc/$$/exe")
    assert result.stdout == "/bin/busybox\n", result.stderr


def test_exec_takes_the_containers_user_environment_and_directory(mycontainer, start):
    box = start("--env", "FROM_RUN=1", "--hostname", "web")
    result = mycontainer("exec", box["id"], "sh", "-c", "id -u; pwd; env | sort")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["0", "/"]
    assert {"FROM_RUN=1", "HOSTNAME=web", "HOME=/root"} <= set(lines), lines
    assert any(line.startswith("PATH=/") for line in lines) and "TERM" not in result.stdout


def test_exec_u_w_e_as_docker(mycontainer, start):
    """-u a name of the container's /etc/passwd (its home, no capabilities left, as docker
    gives a non-root user), -w a directory, -e a variable (over the container's)."""
    box = start("--env", "A=run")
    result = mycontainer(
        "exec", "-u", "nobody", "-w", "/tmp", "-e", "A=exec", "--env=B=2", box["id"],
        "sh", "-c", 'id -un; pwd; echo "$A $B $HOME"; grep CapEff /proc/self/status',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "nobody", "/tmp", "exec 2 /nonexistent", "CapEff:\t0000000000000000",
    ]  # fmt: skip
    result = mycontainer("exec", "-u", "1000:1001", box["id"], "id")
    assert result.stdout.startswith("uid=1000 gid=1001"), result.stdout


def test_exec_env_file_then_env_as_docker(mycontainer, start, tmp_path):
    box = start()
    variables = tmp_path / "variables"
    variables.write_text("# comment\nA=file\nB=file with spaces\n")
    result = mycontainer(
        "exec", "--env-file", str(variables), "-e", "A=arg", box["id"],
        "sh", "-c", 'echo "$A|$B"',
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "arg|file with spaces\n"), result.stderr
    result = mycontainer("exec", "--env-file", str(tmp_path / "missing"), box["id"], "true")
    assert result.returncode == 125 and "--env-file" in result.stderr, result.stderr


def test_exec_i_keeps_stdin_and_without_it_stdin_is_dev_null(mycontainer, start):
    box = start()
    result = mycontainer("exec", "-i", box["id"], "cat", input="hi\n")
    assert (result.returncode, result.stdout) == (0, "hi\n")
    result = mycontainer("exec", box["id"], "sh", "-c", "cat; readlink /proc/$$/fd/0", input="hi\n")
    assert (result.returncode, result.stdout) == (0, "/dev/null\n")


def test_exec_d_leaves_the_command_running_and_returns(mycontainer, start):
    """docker's exec -d: at once, exit code 0, no output; the command runs on, its streams
    on the container's /dev/null (so no pipe of ours waits for it), as a child of the
    container's init, which reaps it, not of a process of the host."""
    box = start()
    result = mycontainer("exec", "-d", box["id"], "sleep", "1002")
    assert result.returncode == 0, result.stderr
    result = mycontainer("exec", box["id"], "sh", "-c", "ps -o ppid,args | grep 'sleep 1002$'")
    assert result.stdout.split()[0] == "1", result.stdout
    began = time.monotonic()
    result = mycontainer(
        "exec", "-d", box["id"], "sh", "-c", "echo out; sleep 2; touch /tmp/done", timeout=10
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert time.monotonic() - began < 2
    for _ in range(100):
        if mycontainer("exec", box["id"], "test", "-e", "/tmp/done").returncode == 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the detached command did not run on")


def exec_on_terminal(background, home, state_root, *args: str):
    """``mycontainer exec ARGS`` as typed at a user's terminal (a pty whose master the test
    holds, the controlling terminal of mycontainer's session); returns (Popen, master)."""
    user, users_terminal = pty.openpty()

    def lead_the_terminals_session():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        process = background(
            "exec", *args,
            env=environment(home, state_root),
            stdin=users_terminal, stdout=users_terminal, stderr=users_terminal,
            preexec_fn=lead_the_terminals_session,
        )  # fmt: skip
    finally:
        os.close(users_terminal)
    return process, user


def test_exec_without_t_never_gives_the_container_the_users_terminal(
    mycontainer, start, background, home, state_root
):
    """As docker's: on a terminal, a plain exec's stdout and stderr are pipes that
    mycontainer copies to it, and the terminal is not its controlling terminal (no
    /dev/tty); so a process it leaves behind cannot read what the user types next."""
    box = start()
    script = (
        "(sleep 2; head -c 12 <&1 >/stolen-by-fd; head -c 12 <&2 >/stolen-by-fd2) & "
        "(sleep 2; head -c 12 </dev/tty >/stolen-by-tty) 2>/dev/null & "
        "for fd in 1 2; do readlink /proc/$$/fd/$fd | cut -d[ -f1; done; "
        "(: </dev/tty) 2>/dev/null && echo has a terminal; echo done"
    )
    process, user = exec_on_terminal(background, home, state_root, box["id"], "sh", "-c", script)
    try:
        output = read_until(user, b"done")
        assert process.wait(timeout=20) == 0
        os.write(user, b"secret-password\n")  # typed once exec returned: for the user's shell
        time.sleep(3)
    finally:
        os.close(user)
    stolen = mycontainer("exec", box["id"], "sh", "-c", "cat /stolen-by-* 2>/dev/null; :")
    assert "secret" not in stolen.stdout, stolen.stdout
    assert output.replace(b"\r", b"").split(b"\n")[:3] == [b"pipe:", b"pipe:", b"done"], output


def test_exec_without_t_has_no_controlling_terminal_even_with_its_output_piped(
    start, background, home, state_root
):
    """Run from a terminal with its output piped (``| less``), exec has nothing to relay,
    but the command still gives up the terminal: no /dev/tty to read the user's typing."""
    box = start()
    script = "(: </dev/tty) 2>/dev/null && echo has a terminal; echo done"
    user, users_terminal = pty.openpty()
    try:
        process = background(
            "exec", box["id"], "sh", "-c", script,
            env=environment(home, state_root), stdin=users_terminal,
            preexec_fn=lambda: (os.setsid(), fcntl.ioctl(0, termios.TIOCSCTTY, 0)),
        )  # fmt: skip
        output, errors = process.communicate(timeout=20)
    finally:
        os.close(user)
        os.close(users_terminal)
    assert (process.returncode, output, errors) == (0, "done\n", "")


def test_exec_i_on_a_terminal_relays_the_typing_to_the_end(background, start, home, state_root):
    """``exec -i`` on a terminal: what is typed reaches the command through a pipe (no
    terminal of the user's in the container), the end of input (^D) is its end-of-file,
    and its output and exit code come back."""
    box = start()
    script = "readlink /proc/$$/fd/0 | cut -d[ -f1; echo ready; cat; echo eof; exit 3"
    process, user = exec_on_terminal(
        background, home, state_root, "-i", box["id"], "sh", "-c", script
    )
    try:
        transcript = read_until(user, b"ready")
        os.write(user, b"typed line\n")
        typed = b""
        while typed.count(b"typed line") < 2:  # echoed, and cat's (in either order)
            typed += read_until(user, b"typed line")
        transcript += typed
        os.write(user, b"\x04")  # ^D
        transcript += read_until(user, b"eof")
        assert process.wait(timeout=20) == 3, transcript
    finally:
        os.close(user)
    assert transcript.startswith(b"pipe:"), transcript


def test_exec_refuses_an_init_that_is_not_the_recorded_one(start, state_root):
    """Should the init exit and a host process take its pid, /proc/PID/ns would be the
    host's: a pid whose start time is not the state's is refused, in one line, before
    anything joins or enters anything."""
    from runtime import execution, process, state
    from runtime.container import ContainerError

    box = start()
    found = state.find(str(state_root), box["id"])
    found.record["start_time"] += 1  # as a process that took the init's pid
    groups = found.record.get("cgroups", [])
    members = [Path(group, "cgroup.procs").read_text() for group in groups]
    try:
        entered = execution.spawn(found, process.Program(["/bin/true"], {}))
    except ContainerError as error:
        assert "stopped" in str(error) and len(str(error).splitlines()) == 1, error
    else:
        entered.kill()
        entered.close()
        pytest.fail("exec joined the namespaces of a pid that is not the container's init")
    assert [Path(group, "cgroup.procs").read_text() for group in groups] == members


@pytest.mark.parametrize(
    "command, code, message",
    [
        (["no-such-command"], 127, "executable file not found in $PATH"),
        (["/etc/passwd"], 126, "Permission denied"),
        (["-w", "/no/such/dir", "_", "true"], 125, "/no/such/dir"),
        (["-u", "nosuchuser", "_", "true"], 125, "nosuchuser"),
    ],
)
def test_exec_failures_have_dockers_codes(mycontainer, start, command, code, message):
    box = start()
    if "_" in command:  # options go before CONTAINER
        command = [box["id"] if word == "_" else word for word in command]
    else:
        command = [box["id"], *command]
    result = mycontainer("exec", *command)
    assert result.returncode == code
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_exec_into_no_such_container_is_one_line(mycontainer, state_root):
    result = mycontainer("exec", "nosuch", "true")
    assert result.returncode == 125
    assert result.stderr == "mycontainer: error: no such container: nosuch\n"


@pytest.fixture
def oci(state_root, tmp_path):
    with oci_runner(state_root) as run:
        yield run


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    return bundle_maker(tmp_path, busybox_rootfs)


def test_exec_into_a_created_or_stopped_container_is_one_line(mycontainer, oci, bundle):
    assert oci("create", "--bundle", bundle(["true"]), "box").returncode == 0
    result = mycontainer("exec", "box", "true")
    assert result.returncode == 125
    assert (
        result.stderr
        == "mycontainer: error: container box is not running (it is created): start it\n"
    )
    assert oci("start", "box").returncode == 0
    for _ in range(100):
        if json.loads(oci("state", "box").stdout)["status"] == "stopped":
            break
        time.sleep(0.05)
    result = mycontainer("exec", "box", "true")
    assert (
        result.stderr
        == "mycontainer: error: container box is not running (it is stopped): start it\n"
    )
    assert oci("delete", "box").returncode == 0


def test_exec_into_a_paused_container_is_one_line(mycontainer, oci, bundle):
    """A frozen container's processes cannot run: one joining it would freeze too."""
    assert oci("run", "--detach", "--bundle", bundle(SLEEP), "box").returncode == 0
    assert oci("pause", "box").returncode == 0
    result = mycontainer("exec", "box", "true")
    assert result.returncode == 125
    assert result.stderr == "mycontainer: error: container box is paused: unpause it before exec\n"
    assert oci("resume", "box").returncode == 0
    assert oci("kill", "box", "KILL").returncode == 0


def test_exec_of_a_bundle_applies_its_rlimits_and_user(mycontainer, oci, bundle):
    """A bundle's container: config.json's process as exec's (its rlimits, set on the new
    process as on the init, and its user), and -u names a user of its /etc/passwd."""

    def edit(config):
        config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]
        config["process"]["user"] = {"uid": 1000, "gid": 1000}

    assert oci("create", "--bundle", bundle(SLEEP, edit=edit), "box").returncode == 0
    assert oci("start", "box").returncode == 0
    script = "ulimit -n; ulimit -Hn; id -u"
    result = oci("exec", "box", "sh", "-c", script)
    assert result.stdout.split() == ["321", "654", "1000"], result.stderr
    result = mycontainer("exec", "box", "sh", "-c", script)
    assert result.stdout.split() == ["321", "654", "1000"], result.stderr
    result = mycontainer("exec", "-u", "nobody", "box", "id", "-un")
    assert result.stdout == "nobody\n", result.stderr
    assert oci("kill", "box", "KILL").returncode == 0


def test_oci_exec_into_a_container_of_run_gets_its_boundaries(start, state_root):
    """``mycontainer-oci exec`` of a container that ``mycontainer run`` made (no config.json
    of its own): docker's exec, with the init's boundaries."""
    box = start()
    with open(f"/proc/{box['pid']}/status") as file:
        init = status_lines(file.read(), *BOUNDARIES)
    result = subprocess.run(
        [sys.executable, "-m", "runtime.ocicli", "--root", str(state_root), "exec", box["id"]]
        + ["cat", "/proc/self/status"],
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert status_lines(result.stdout, *BOUNDARIES) == init


def test_exec_options_go_before_the_container(mycontainer, start):
    """As docker's: after CONTAINER, all is the command's, ``-e`` and ``--help`` included."""
    box = start()
    result = mycontainer("exec", box["id"], "echo", "x", "-e", "--help", "-it")
    assert (result.returncode, result.stdout) == (0, "x -e --help -it\n")


@pytest.mark.parametrize(
    "args, message",
    [
        (["exec", "-w", "relative", "c", "true"], "--workdir must be an absolute path"),
        (["exec", "-u", "a:", "c", "true"], "--user takes USER[:GROUP]"),
        (["exec", "c"], "Missing argument 'COMMAND...'"),
        (["exec", "--nope", "c", "true"], "No such option"),
    ],
)
def test_bad_exec_command_lines_are_one_line(mycontainer, args, message):
    result = mycontainer(*args)
    assert result.returncode == 125
    assert message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr


def test_a_plain_exec_is_parsed_without_click(start, home, state_root):
    """As a plain run: click's import alone would cost more than runc's whole exec."""
    box = start()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runtime", "exec", "-i", box["id"], "true"],
        env=environment(home, state_root),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "import time:" in result.stderr and "click" not in result.stderr


@pytest.mark.parametrize(
    "args, parsed",
    [
        (["-it", "c", "sh"], ({"interactive": True, "tty": True}, "c", ["sh"])),
        (["-d", "-uapp:staff", "c", "x"], ({"detach": True, "user": "app:staff"}, "c", ["x"])),
        (["--user=1", "--workdir", "/w", "c", "x"], ({"user": "1", "workdir": "/w"}, "c", ["x"])),
        (["-e", "A=1", "--env=B=2", "c", "x"], ({"env": [("A", "1"), ("B", "2")]}, "c", ["x"])),
        (["--", "-c", "x", "-i"], ({}, "-c", ["x", "-i"])),
        (["c", "ls", "-l", "--user", "u"], ({}, "c", ["ls", "-l", "--user", "u"])),
    ],
)
def test_exec_command_lines_of_the_fast_path(args, parsed):
    from runtime.execoptions import parse_exec_args

    assert parse_exec_args(args) == parsed


@pytest.mark.parametrize(
    "args", [["--help", "c", "x"], ["-h"], ["-x", "c", "y"], ["-u"], ["c"], ["-w", "rel", "c", "x"]]
)
def test_exec_command_lines_left_to_click(args):
    """Help, an unknown option, a missing value or COMMAND, a bad value: click explains."""
    from runtime.execoptions import parse_exec_args

    with pytest.raises(ValueError):
        parse_exec_args(args)
