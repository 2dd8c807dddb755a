"""Terminals: a pty of the container's devpts, its master sent over --console-socket; the
relay of ``mycontainer run -t``.

The console-socket tests play both sides as they are in production: an engine (conmon,
runc's recvtty) listening on a unix socket path, and a container's init forked into new
mount and PID namespaces, pivoted into the busybox rootfs, that calls
terminal.attach_console before it executes busybox.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import termios
import time

import pytest

from runtime import terminal

from conftest import environment, read_until, running_containers

privileged = pytest.mark.privileged


class Engine:
    """The engine's side of a console socket: listens on a path, accepts the runtime."""

    def __init__(self, path):
        self.path = str(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)

    def receive(self) -> tuple[int, str]:
        connection, _ = self.listener.accept()
        with connection:
            return terminal.receive(connection.fileno())

    def close(self):
        self.listener.close()


@pytest.fixture
def engine(tmp_path):
    listening = Engine(tmp_path / "console.sock")
    yield listening
    listening.close()


def start_init(rootfs, console: int, argv, size=None, before=None) -> tuple[int, int]:
    """Fork a container's init that attaches to the console socket ``console`` and executes
    ``argv``; returns (pid of its parent, which exits with its code; read end of a pipe
    that carries the init's error, if any). ``before()`` runs in the init just before
    attach_console: where a hostile container would have changed its /dev."""
    from runtime import filesystem, namespaces

    errors_read, errors_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 125
        try:
            os.close(errors_read)
            namespaces.enter_new(namespaces.MOUNT | namespaces.PID)
            init = os.fork()
            if init:
                code = os.waitstatus_to_exitcode(os.waitpid(init, 0)[1])
            else:
                filesystem.enter_rootfs(rootfs)
                if before:
                    before()
                terminal.attach_console(console, size)
                os.execve("/bin/sh", argv, {"PATH": "/bin"})
        except BaseException as error:
            os.write(errors_write, f"{error}".encode())
        finally:
            os._exit(code)
    os.close(errors_write)
    os.close(console)
    return pid, errors_read


def finish(pid: int, errors: int) -> tuple[int, str]:
    """(exit code, error text) of a start_init process."""
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    with os.fdopen(errors, "rb") as file:
        return code, file.read().decode()


def refused(engine, rootfs, hostile) -> tuple[int, str]:
    """(exit code, error text) of an init that runs ``tty`` in ``rootfs`` after ``hostile()``
    changed its /dev, once the engine has been sent no terminal."""
    pid, errors = start_init(
        rootfs, terminal.connect(engine.path), ["sh", "-c", "tty"], before=hostile
    )
    with pytest.raises(terminal.TerminalError, match="sent nothing"):
        engine.receive()
    return finish(pid, errors)


def read_to_hangup(master: int, timeout: float = 20) -> bytes:
    """All a terminal's master reads until its slave side is closed everywhere (EIO)."""
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: hung up
            return output
        if not chunk:
            return output
        output += chunk
    raise AssertionError(f"the terminal did not hang up within {timeout} s: {output!r}")


@privileged
def test_console_socket_gets_a_terminal_of_the_containers_devpts(engine, busybox_rootfs):
    """What runc does for conmon: the program's stdio and controlling terminal are the
    slave of a pty of the container's own devpts, /dev/console is it too, its size is
    config.json's consoleSize, and the engine, holding the master, types and reads."""
    script = (
        "tty; stty size; stat -c %t:%T /dev/console; : </dev/tty && echo controlling; "
        'read line; echo "got $line"'
    )
    pid, errors = start_init(
        busybox_rootfs,
        terminal.connect(engine.path),
        ["sh", "-c", script],
        size={"height": 33, "width": 101},
    )
    master, name = engine.receive()
    try:
        assert name == "/dev/pts/ptmx"  # as runc names it
        output = read_until(master, b"controlling")
        os.write(master, b"hello\n")
        output += read_to_hangup(master)
    finally:
        os.close(master)
    assert finish(pid, errors) == (0, "")
    assert b"got hello\r\n" in output
    text = output.decode()
    assert text.splitlines()[:4] == ["/dev/pts/0", "33 101", "88:0", "controlling"], text


@privileged
def test_console_socket_refuses_a_pts_that_is_a_link(engine, busybox_rootfs):
    """A container that made /dev/pts a link to a directory of its own, holding a ptmx
    device node: refused, in one line, and nothing is sent to the engine."""

    def hostile():
        from runtime.syscalls import MNT_DETACH, umount2

        umount2("/dev/pts", MNT_DETACH)
        os.rmdir("/dev/pts")
        os.mkdir("/dev/fake")
        os.mknod("/dev/fake/ptmx", 0o20666, os.makedev(5, 2))
        os.symlink("/dev/fake", "/dev/pts")

    assert refused(engine, busybox_rootfs, hostile) == (
        125,
        "cannot open the container's /dev/pts: it is a symbolic link",
    )


@privileged
def test_console_socket_refuses_a_ptmx_outside_devpts(engine, busybox_rootfs):
    """/dev/pts a plain directory (its devpts unmounted) with a ptmx device node made by
    the container: not a terminal of the container's devpts, refused."""

    def hostile():
        from runtime.syscalls import MNT_DETACH, umount2

        umount2("/dev/pts", MNT_DETACH)
        os.mknod("/dev/pts/ptmx", 0o20666, os.makedev(5, 2))

    code, error = refused(engine, busybox_rootfs, hostile)
    assert code == 125
    assert error.startswith("cannot open the container's /dev/pts/ptmx: "), error


@privileged
def test_console_socket_never_mounts_over_a_link_at_dev_console(engine, busybox_rootfs):
    """/dev/console a link to a file elsewhere: following it would cover that file with the
    terminal (CVE-2025-52565 did so in runc); refused, and the file is left alone."""

    def hostile():
        os.symlink("/etc/passwd", "/dev/console")

    assert refused(engine, busybox_rootfs, hostile) == (
        125,
        "the container's /dev/console is not a file or a device: it cannot be mounted on",
    )


def test_connect_to_a_missing_socket_is_one_line(tmp_path):
    with pytest.raises(terminal.TerminalError) as raised:
        terminal.connect(str(tmp_path / "nobody"))
    assert str(raised.value) == (
        f"cannot connect to console socket {tmp_path / 'nobody'}: No such file or directory"
    )


def test_receive_refuses_a_message_without_a_terminal():
    ours, theirs = terminal.socketpair()
    try:
        os.write(theirs, b"/dev/ptmx")
        with pytest.raises(terminal.TerminalError, match="sent nothing instead of its terminal"):
            terminal.receive(ours)
    finally:
        os.close(ours)
        os.close(theirs)


def test_receive_closes_what_comes_beyond_one_terminal():
    """Two descriptors where one is expected: both closed, none leaks into the runtime."""
    ours, theirs = terminal.socketpair()
    first, second = os.pipe()
    try:
        with socket.socket(fileno=os.dup(theirs)) as sender:
            socket.send_fds(sender, [b"x"], [first, second])
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(terminal.TerminalError, match="sent 2 descriptors"):
            terminal.receive(ours)
        assert set(os.listdir("/proc/self/fd")) <= before
    finally:
        for fd in (ours, theirs, first, second):
            os.close(fd)


def window(fd: int) -> tuple[int, int]:
    rows, columns, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return rows, columns


def test_relay_copies_both_ways_in_raw_mode_and_restores_the_terminal():
    """The user's terminal (a pty here) is raw while relayed and as before afterwards; keys
    reach the container's terminal, its output the user's, window changes follow."""
    user, users_terminal = pty.openpty()  # the user's side, and the runtime's stdin/stdout
    master, slave = pty.openpty()  # the container's terminal
    terminal.resize(user, 40, 120)
    modes = termios.tcgetattr(users_terminal)
    try:
        with terminal.Relay(master, stdin=users_terminal, stdout=users_terminal):
            assert not termios.tcgetattr(users_terminal)[3] & termios.ICANON  # raw
            assert window(slave) == (40, 120)  # copied on entry
            os.write(user, b"echo hi\r")
            assert read_until(slave, b"echo hi\n")  # the container's line discipline: CR->NL
            os.write(slave, b"out\n")
            assert read_until(user, b"out\r\n")  # its ONLCR; ours is raw, adds nothing
            terminal.resize(user, 50, 132)
            os.kill(os.getpid(), signal.SIGWINCH)  # as the kernel sends it to the runtime
            assert window(slave) == (50, 132)
            os.write(slave, b"last words\n")
            os.close(slave)  # the container exits
            slave = -1
        assert read_until(user, b"last words")
        assert termios.tcgetattr(users_terminal) == modes
        assert signal.getsignal(signal.SIGWINCH) == signal.SIG_DFL
    finally:
        for fd in (user, users_terminal, master, slave):
            if fd != -1:
                os.close(fd)


def test_relay_ends_stdin_with_the_terminals_end_of_file():
    """stdin not a terminal (a pipe): relayed without raw mode; its end is the container
    terminal's ^D, so a shell reading it exits as it would at a keyboard."""
    master, slave = pty.openpty()
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    try:
        with terminal.Relay(master, stdin=stdin_read, stdout=stdout_write):
            os.write(stdin_write, b"line\n")
            os.close(stdin_write)
            stdin_write = -1
            assert read_until(slave, b"line\n")
            assert os.read(slave, 100) == b""  # ^D at the start of a line: end of file
            os.close(slave)
            slave = -1
    finally:
        for fd in (master, slave, stdin_read, stdin_write, stdout_read, stdout_write):
            if fd != -1:
                os.close(fd)


def test_relay_restores_the_terminal_when_the_run_fails():
    _user, users_terminal = pty.openpty()
    master, slave = pty.openpty()
    modes = termios.tcgetattr(users_terminal)
    with pytest.raises(RuntimeError), terminal.Relay(master, users_terminal, users_terminal):
        raise RuntimeError("the container could not start")
    assert termios.tcgetattr(users_terminal) == modes
    for fd in (_user, users_terminal, master, slave):
        os.close(fd)


def become_terminal_session():
    """In the child: lead a session whose controlling terminal is stdin, as a login shell."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_on_terminal(background, home, state_root, *args: str, rows=33, columns=101):
    """Start ``mycontainer ARGS`` as typed at a terminal of ``rows`` x ``columns`` (a pty
    whose master the test holds); returns (the Popen, the master)."""
    user, users_terminal = pty.openpty()
    terminal.resize(user, rows, columns)
    try:
        process = background(
            *args,
            env=dict(environment(home, state_root), TERM="dumb"),
            stdin=users_terminal, stdout=users_terminal, stderr=users_terminal,
            preexec_fn=become_terminal_session,
        )  # fmt: skip
    finally:
        os.close(users_terminal)
    return process, user


def read_some(fd: int, timeout: float = 0.2) -> bytes:
    """What ``fd`` has to read within ``timeout`` seconds (maybe nothing)."""
    ready, _, _ = select.select([fd], [], [], timeout)
    try:
        return os.read(fd, 4096) if ready else b""
    except OSError:  # EIO: hung up
        return b""


@privileged
def test_run_t_gives_a_real_terminal_of_the_hosts_size(background, home, state_root):
    """`run -t busybox tty`, the issue's check: the container sees /dev/pts/0, of the size of
    the user's terminal, with the user's TERM; its exit code stands."""
    process, user = run_on_terminal(
        background, home, state_root, "run", "-t", "--net", "none", "busybox",
        "sh", "-c", "tty; stty size; echo TERM=$TERM; exit 3",
    )  # fmt: skip
    try:
        output = read_to_hangup(user)
        assert process.wait(timeout=20) == 3
    finally:
        os.close(user)
    assert output.splitlines() == [b"/dev/pts/0", b"33 101", b"TERM=dumb"], output


@privileged
def test_run_t_follows_the_window_and_ctrl_c_reaches_the_job(background, home, state_root):
    """A window change mid-run reaches the container's terminal; keys go raw, so Ctrl-C is
    the container terminal's to turn into SIGINT for its foreground job."""
    script = (
        "trap 'echo got SIGINT' INT; stty size; "
        'while :; do read x; [ "$x" = end ] && exit 0; stty size; done'
    )
    process, user = run_on_terminal(
        background, home, state_root, "run", "-it", "--net", "none", "busybox", "sh", "-c", script
    )
    try:
        transcript = read_until(user, b"33 101")
        os.write(user, b"\x03")  # Ctrl-C, as typed
        transcript += read_until(user, b"got SIGINT")
        terminal.resize(user, 50, 132)  # the kernel sends mycontainer SIGWINCH
        deadline = time.monotonic() + 20
        while b"50 132" not in transcript:  # the resize and the typing race: type again
            assert time.monotonic() < deadline and process.poll() is None, transcript
            os.write(user, b"\r")
            transcript += read_some(user)
        os.write(user, b"end\r")
        transcript += read_to_hangup(user)
        assert process.wait(timeout=20) == 0, transcript
    finally:
        os.close(user)


@privileged
def test_run_t_restores_the_users_terminal(background, home, state_root):
    """Raw while the container runs, the user's terminal has its modes back afterwards, also
    when the container could not start."""
    for command, code in ((["true"], 0), (["no-such-command"], 127)):
        user, users_terminal = pty.openpty()
        modes = termios.tcgetattr(users_terminal)
        try:
            process = background(
                "run", "-t", "--net", "none", "busybox", *command,
                stdin=users_terminal, stdout=users_terminal, stderr=users_terminal,
                preexec_fn=become_terminal_session,
            )  # fmt: skip
            assert process.wait(timeout=20) == code  # (its few bytes of output wait)
            assert termios.tcgetattr(users_terminal) == modes
        finally:
            os.close(user)
            os.close(users_terminal)


@privileged
def test_run_t_without_a_terminal_still_gives_the_container_one(mycontainer):
    """stdin and stdout pipes, as in CI: -t still gives a pty (docker does), with no raw
    mode to set; stdin's end reaches the container as its terminal's end of file."""
    result = mycontainer(
        "run", "-t", "--net", "none", "busybox", "sh", "-c", "tty; cat; echo done",
        input="typed\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()  # the terminal echoes "typed" whenever it comes
    assert "/dev/pts/0" in lines[:2], result.stdout
    assert lines.count("typed") == 2 and lines[-1] == "done", result.stdout


def interactive(background, home, state_root, *args: str) -> tuple:
    """Start ``mycontainer ARGS`` as typed at a terminal of 33 x 101 (a pty): returns (the
    Popen, the master the test types on and reads, the slave: the user's terminal, kept
    open to check its modes afterwards)."""
    user, users_terminal = pty.openpty()
    terminal.resize(user, 33, 101)
    process = background(
        *args,
        env=dict(environment(home, state_root), TERM="dumb"),
        stdin=users_terminal, stdout=users_terminal, stderr=users_terminal,
        preexec_fn=become_terminal_session,
    )  # fmt: skip
    return process, user, users_terminal


def sleeping(name: str, timeout: float = 20) -> int:
    """The host pid of the process whose command line is ``name``, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-xf", name], capture_output=True, text=True)
        if found.stdout:
            return int(found.stdout.split()[0])
        time.sleep(0.05)
    raise AssertionError(f"{name!r} did not start within {timeout} s")


def running_box(background, state_root) -> dict:
    """A running container without a terminal of its own, to exec into."""
    runtime = background("run", "--net", "none", "busybox", "sleep", "1004")
    return running_containers(state_root, runtimes=[runtime])[0]


@privileged
@pytest.mark.parametrize("command", ["run", "exec"])
def test_it_through_a_real_pseudo_terminal(background, home, state_root, command):
    """``run -it`` and ``exec -it`` driven as a user at a terminal: /dev/pts/0 of the host
    terminal's size, a window change seen inside, Ctrl-C interrupting the shell's job and
    not the shell, its exit code, and the user's terminal as it was afterwards."""
    if command == "exec":
        args = ["exec", "-it", running_box(background, state_root)["id"], "sh"]
    else:
        args = ["run", "-it", "--rm", "--net", "none", "busybox", "sh"]
    process, user, users_terminal = interactive(background, home, state_root, *args)
    modes = termios.tcgetattr(users_terminal)
    try:
        os.write(user, b"tty; stty size\r")
        transcript = read_until(user, b"33 101")
        assert b"/dev/pts/0" in transcript
        assert not termios.tcgetattr(users_terminal)[3] & termios.ICANON  # raw, meanwhile
        os.write(user, b"sleep 1005\r")
        sleeping("sleep 1005")
        os.write(user, b"\x03")  # Ctrl-C, as typed: SIGINT for the job, not the shell
        os.write(user, b"echo alive=$?\r")
        transcript += read_until(user, b"alive=130")
        terminal.resize(user, 50, 132)  # the kernel sends mycontainer SIGWINCH
        deadline = time.monotonic() + 20
        while b"50 132" not in transcript:  # the resize and the typing race: type again
            assert time.monotonic() < deadline and process.poll() is None, transcript
            os.write(user, b"stty size\r")
            transcript += read_some(user, 0.5)
        os.write(user, b"exit 7\r")
        assert process.wait(timeout=20) == 7, transcript
        assert termios.tcgetattr(users_terminal) == modes
    finally:
        os.close(user)
        os.close(users_terminal)


@privileged
@pytest.mark.parametrize("command", ["run", "exec"])
def test_it_restores_the_terminal_when_the_container_is_killed(
    background, home, state_root, command
):
    """SIGKILL of the container's init ends the shell on the terminal (its PID namespace
    goes): mycontainer exits 137, and the user's terminal has its modes back."""
    if command == "exec":
        box = running_box(background, state_root)
        args = ["exec", "-it", box["id"], "sh"]
    else:
        args = ["run", "-it", "--rm", "--net", "none", "busybox", "sh"]
    process, user, users_terminal = interactive(background, home, state_root, *args)
    modes = termios.tcgetattr(users_terminal)
    try:
        os.write(user, b"echo $((6 * 7))ready\r")
        read_until(user, b"42ready")  # the shell's, not the typing's echo
        if command == "run":
            box = running_containers(state_root, runtimes=[process])[0]
        os.kill(box["pid"], signal.SIGKILL)
        assert process.wait(timeout=20) == 137, read_some(user)
        assert termios.tcgetattr(users_terminal) == modes
    finally:
        os.close(user)
        os.close(users_terminal)
