"""Entering a running container: ``mycontainer exec`` (docker exec's shape) and
``mycontainer-oci exec`` (runc's).

A process started by ``exec`` is not a child of the container's init: the runtime forks it
on the host, so it inherits nothing of the container but what it is given. So it is given
all of it, step by step (process.spawn does the forking, this module decides what):

1. **The cgroups.** The intermediate process writes itself to each of the container's
   ``cgroup.procs`` before it joins anything, so the new process counts against the
   container's limits (memory, pids, the device rules) from its birth, and a cgroup
   namespace joined next has the same root as the init's (cgroups(7), cgroup_namespaces(7)).
2. **The namespaces**, every one the init is in and we are not, by their files in
   /proc/PID/ns (setns(2), namespaces(7)): the user namespace first, as it may own the
   others, the mount namespace last, as it changes the root and working directory to the
   container's. Joining a PID namespace moves only the children made afterwards, so the
   intermediate forks once more (pid_namespaces(7)).
3. **The boundaries**, all re-applied, as nothing carries over from the init: the
   capability sets, no_new_privs, the seccomp filter, an AppArmor profile, resource limits,
   the user, from the same place the init got them (container.boundaries).
4. **Nothing of the host's**: no descriptor beyond 0, 1 and 2 (a host directory reachable
   through /proc/self/fd: CVE-2024-21626), a working directory resolved inside the root,
   and the process non-dumpable until it executes the program, so that the container's
   processes cannot ptrace it or open its /proc/PID/exe, the host's interpreter, while it
   still runs our code (CVE-2016-9962, then CVE-2019-5736).
5. **Not the user's terminal**, without ``-t``: as docker's, whose exec'd processes never
   get the terminal docker runs on. The process drops it as its controlling terminal
   (TIOCNOTTY, tty_ioctl(4)), so that no process of the container opens it as /dev/tty;
   and a stream of ours that is a terminal reaches it through a pipe that ``mycontainer
   exec`` copies until the command exits (``relay``), so that a process it leaves behind
   holds no descriptor of the terminal, where it would read what the user types next.
   Streams that are not terminals (an engine's pipes, files) are the command's as they
   are: the caller's to give, and no copying slows them down.

The init is pinned while its namespaces are opened (pidfd_open(2)): if it exited and its
pid were reused by a host process, /proc/PID/ns would be that process's namespaces.

Man pages: https://man7.org/linux/man-pages/man2/setns.2.html,
https://man7.org/linux/man-pages/man2/pidfd_open.2.html,
https://man7.org/linux/man-pages/man4/tty_ioctl.4.html,
https://man7.org/linux/man-pages/man7/namespaces.7.html,
https://docs.docker.com/reference/cli/docker/container/exec/,
https://github.com/opencontainers/runc/blob/main/man/runc-exec.8.md
"""

from __future__ import annotations

import os
import signal
import sys
import time

from runtime import cgroups, process, security, state
from runtime.container import (
    DEFAULT_PATH,
    EXEC_NAMESPACES,
    ContainerError,
    boundaries,
    shown,
    state_root,
)
from runtime.process import ProcessError

NULL_DEVICE = os.makedev(1, 3)
DRAIN = 1.0  # after the command exits: how long what it left behind may still write


def command(
    reference: str,
    argv: list[str],
    *,
    interactive: bool = False,
    tty: bool = False,
    detach: bool = False,
    user: str | None = None,
    workdir: str | None = None,
    env: list[tuple[str, str | None]] = (),
    env_file: list[list[tuple[str, str]]] = (),
) -> int:
    """``mycontainer exec``: run ``argv`` in the running container ``reference`` names, as
    docker's exec does; return its exit code (0 with ``detach``). ``env_file``: the
    variables of each ``--env-file``, which ``env`` (``--env``) overrides, as docker's."""
    if os.geteuid() != 0:
        raise ContainerError("mycontainer exec needs root: use sudo, or the lab VM")
    found = running(state_root(), reference)
    variables = [variable for variables in env_file for variable in variables]
    started = program(found, argv, user=user, cwd=workdir, env=variables + list(env), tty=tty)
    started.adopted = detach  # its parent: the container's init, as docker's exec -d
    # As docker's: a detached command's output goes nowhere; without -i, no input.
    null = (0, 1, 2) if detach else () if interactive else (0,)
    given = () if tty else tuple(fd for fd in (0, 1, 2) if fd not in null)
    relayed = tuple(fd for fd in given if os.isatty(fd))
    return run(
        found,
        started,
        detach=detach,
        tty=tty,
        interactive=interactive,
        null=null,
        relayed=relayed,
        leave_terminal=not tty,
    )[1]


def running(root: str, reference: str) -> state.State:
    """The container ``reference`` names (a name, an id or a unique prefix of one), which
    must be running: a process cannot join a container that has no init, nor one whose
    processes are frozen (it would freeze as it joined)."""
    try:
        found = state.find(root, reference)
    except state.StateError as error:
        raise ContainerError(str(error)) from None
    status = found.status()
    if status == state.PAUSED:
        raise ContainerError(f"container {shown(found)} is paused: unpause it before exec")
    if status != state.RUNNING:
        raise ContainerError(f"container {shown(found)} is not running (it is {status}): start it")
    return found


def program(
    found: state.State,
    argv: list[str],
    *,
    user: str | None = None,
    cwd: str | None = None,
    env: list[tuple[str, str | None]] = (),
    tty: bool = False,
) -> process.Program:
    """The process.Program that docker's ``exec`` runs in container ``found``: ``argv``,
    with the container's environment, user and working directory unless ``env`` (``KEY``,
    value; None: left out), ``user`` (USER[:GROUP], names looked up in the container's
    /etc/passwd and /etc/group) or ``cwd`` say otherwise, and the container's boundaries.

    As docker, the environment is the container's own (PATH, HOSTNAME, the image's and
    ``run -e``'s), TERM with a terminal, then ``env``; HOME is the user's.
    """
    config = found.config
    spec = config.get("spec")
    if spec is not None:  # a bundle's container: its config.json's process, changed
        process_config = dict(spec.get("process") or {})
        environment = dict(item.partition("=")[::2] for item in process_config.get("env", []))
        if user:  # a name to look up, in place of config.json's numbers
            process_config.pop("user", None)
        container_user = None
        container_cwd = process_config.get("cwd", "/")
    else:
        process_config = None
        environment = {"PATH": DEFAULT_PATH, "HOSTNAME": config.get("hostname") or found.id[:12]}
        container_user = config.get("user")
        if not (user or container_user):
            environment["HOME"] = "/root"
        environment.update(config.get("env") or {})
        container_cwd = config.get("cwd") or "/"
    if tty and "TERM" not in environment:
        interactive = sys.stdin is not None and sys.stdin.isatty()
        environment["TERM"] = os.environ.get("TERM", "xterm") if interactive else "xterm"
    environment.update((key, value) for key, value in env if value is not None)
    confinement, settings = boundaries(config, process_config)
    return process.Program(
        list(argv),
        environment,
        cwd or container_cwd,
        user or container_user,
        confinement,
        settings=settings,
    )


def spawn(found: state.State, program: process.Program, setup=None, console=-1) -> process.Init:
    """A process in container ``found``'s cgroups and namespaces that has run ``setup()``
    there and waits at its gate to execute ``program`` (process.spawn; ``console``: the
    end of a console socket that ``setup()`` attaches a terminal to)."""
    joined = _open_namespaces(found)

    def join_cgroups() -> None:
        for group in found.record.get("cgroups", []):
            cgroups.write_file(group, "cgroup.procs", "0")

    try:
        return process.spawn(
            program,
            namespaces=0,
            join=[(flag, f"/proc/self/fd/{fd}") for flag, fd in joined],
            before_unshare=join_cgroups,
            setup=setup,
            console=console,
        )
    finally:
        for _, fd in joined:
            os.close(fd)


def _open_namespaces(found: state.State) -> list[tuple[int, int]]:
    """(CLONE_NEW* flag, open descriptor) of each namespace of container ``found``'s init
    that is not ours, or a ContainerError if the init is gone.

    A pid names the init only while it runs: once it exits, a host process may take the
    pid, and /proc/PID/ns would be the host's. So a pid file descriptor pins the init
    (pidfd_open(2)); it is checked to be the one the state recorded (its start time),
    its namespace files are opened, and then it is checked not to have been reaped
    meanwhile (signal 0 through the pidfd fails with ESRCH, pidfd_send_signal(2)): until
    then its pid is no other process's, so the files opened were the init's.
    """
    stopped = ContainerError(f"container {shown(found)} stopped as exec began: start it")
    try:
        pidfd = os.pidfd_open(found.pid)
    except ProcessLookupError:
        raise stopped from None
    opened = []
    try:
        if not found.init_alive():
            raise stopped
        for name, flag in EXEC_NAMESPACES:
            try:
                fd = os.open(f"/proc/{found.pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, ProcessLookupError):
                raise stopped from None
            opened.append((flag, fd))
            if os.fstat(fd).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                os.close(opened.pop()[1])  # one we are in already
        try:
            signal.pidfd_send_signal(pidfd, 0)
        except ProcessLookupError:
            raise stopped from None
    except BaseException:
        for _, fd in opened:
            os.close(fd)
        raise
    finally:
        os.close(pidfd)
    return opened


def run(
    found: state.State,
    program: process.Program,
    *,
    detach: bool = False,
    tty: bool = False,
    interactive: bool = True,
    console_socket: str | None = None,
    console_size: dict | None = None,
    null: tuple[int, ...] = (),
    relayed: tuple[int, ...] = (),
    leave_terminal: bool = False,
) -> tuple[int, int]:
    """Run ``program`` in running container ``found``; return (its pid, exit code).

    With ``detach`` it is left running and the exit code is 0; else we wait for it, as its
    parent, forwarding signals. Its standard streams are ours (an engine's pipes), but those
    in ``null``, which are the container's /dev/null, and those in ``relayed``, which are
    pipes we copy to and from ours (``relay``). With ``leave_terminal`` it gives up our
    controlling terminal, and is not made its foreground job. With ``tty`` it gets a
    terminal of its own in the container's devpts (runtime.terminal) instead: its master
    goes to ``console_socket`` (an engine's) if given, else it is relayed to ours, and
    without ``interactive`` nothing is typed on it.
    """
    if detach and tty and not console_socket:
        raise ContainerError(
            "exec -d -t: the terminal would hang up as soon as mycontainer returns: "
            "leave out -t (or -d)"
        )
    console, socket = -1, -1
    if tty:
        from runtime import terminal

        try:
            if console_socket:
                console = terminal.connect(console_socket)
            else:
                socket, console = terminal.socketpair()
        except terminal.TerminalError as error:
            raise ContainerError(str(error)) from None
        if console_size is None and not console_socket:
            rows, columns = terminal.window_size(0) or terminal.window_size(1) or (0, 0)
            console_size = {"height": rows, "width": columns}
    pipes = {fd: os.pipe() for fd in relayed}  # (read, write): its stdin's, its outputs'
    theirs = {fd: ends[0] if fd == 0 else ends[1] for fd, ends in pipes.items()}
    ours = {fd: ends[1] if fd == 0 else ends[0] for fd, ends in pipes.items()}
    controlling = _controlling_terminal() if leave_terminal else -1
    if controlling != -1:  # imported here: the new process cannot, once in the container
        import fcntl
        import termios

        program.inherit = (*program.inherit, controlling)
    program.inherit = (*program.inherit, *theirs.values())

    def setup() -> None:
        """In the new process, in the container, before its gate."""
        if console != -1:  # the container's /dev/console is its init's: left alone
            terminal.attach_console(console, console_size, mount_console=False)
            return
        if controlling != -1:  # TIOCNOTTY, tty_ioctl(4): see _controlling_terminal
            fcntl.ioctl(controlling, termios.TIOCNOTTY)
            os.close(controlling)
        for fd, end in theirs.items():
            os.dup2(end, fd)
            os.close(end)
        if null:
            _null_streams(*null)

    master, quiet = -1, (-1, -1)
    try:
        with process.blocking_forwarded_signals():
            try:
                init = spawn(found, program, setup, console)
            finally:
                for fd in (*theirs.values(), controlling):
                    if fd != -1:
                        os.close(fd)
            try:
                if console != -1:
                    os.close(console)
                    console = -1
                if socket != -1:
                    try:
                        master, _ = terminal.receive(socket)
                    except terminal.TerminalError as error:
                        raise ContainerError(str(error)) from None
                if program.settings:
                    program.settings.apply_limits(init.pid)  # rlimits, oomScoreAdj: as root
            except BaseException:
                init.kill()
                init.close()
                raise
            init.start()
            if detach:
                init.close()
                if program.adopted:
                    init.wait()  # it has exited, leaving the program to the container's init
                return init.pid, 0
            with process.forwarding_signals(init.pid):
                if leave_terminal:
                    if ours:
                        relay(init.pid, ours)
                    return init.pid, init.wait()
                with process.terminal_foreground(init.pid):
                    if master == -1:
                        return init.pid, init.wait()
                    if not interactive:  # -t alone: a terminal no one types on, as docker's
                        quiet = os.pipe()
                    with terminal.Relay(master, stdin=0 if interactive else quiet[0]):
                        return init.pid, init.wait()
    except (ProcessError, OSError) as error:
        code = getattr(error, "exit_code", process.EXIT_RUNTIME_ERROR)
        raise ContainerError(str(error), code) from None
    finally:
        for fd in (console, socket, master, *quiet, *ours.values()):
            if fd != -1:
                os.close(fd)


def relay(pid: int, ours: dict[int, int]) -> None:
    """Copy between our standard streams and process ``pid``'s pipes (``ours``: our
    descriptor, 0, 1 or 2 -> our end of its pipe) until it exits, then what it left behind
    writes for at most DRAIN seconds (the pipes of a process that left nothing behind end
    at once); then our ends are closed (by ``run``), so that a process left behind reads
    end-of-file and fails to write (EPIPE). Input is read only while the process runs and
    can take it: what is typed once it exited is for the user's shell."""
    import select  # here: only a terminal's exec needs them

    from runtime import terminal

    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    outputs = {end: fd for fd, end in ours.items() if fd != 0}
    for end in outputs:
        poller.register(end, select.POLLIN)
    stdin, pending = ours.get(0, -1), b""  # its stdin's pipe, and what it has not taken yet
    if stdin != -1:
        os.set_blocking(stdin, False)
        poller.register(0, select.POLLIN)
    deadline = None
    try:
        while deadline is None or outputs:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            events = poller.poll(timeout)
            if not events:
                return  # it exited, and what it left behind holds its pipes but is quiet
            for fd, _ in events:
                if fd == pidfd:
                    poller.unregister(pidfd)
                    deadline = time.monotonic() + DRAIN
                    if stdin != -1:  # no more input
                        poller.unregister(stdin if pending else 0)
                        stdin = -1
                elif fd in outputs:
                    if not _copy(fd, outputs[fd]):
                        poller.unregister(fd)
                        del outputs[fd]
                elif stdin == -1:
                    continue  # input that came with the exit: left unread
                elif fd == 0:  # typed: waits until the pipe takes it, and stdin meanwhile
                    pending = terminal.read_chunk(0)
                    poller.unregister(0)
                    if not pending:  # end of input (^D): it reads end-of-file
                        os.close(ours.pop(0))
                        stdin = -1
                        continue
                    poller.register(stdin, select.POLLOUT)
                else:
                    try:
                        pending = pending[os.write(stdin, pending) :]
                    except BlockingIOError:
                        pass
                    except OSError:  # EPIPE: it closed its stdin; input has nowhere to go
                        pending = b""
                    if not pending:
                        poller.unregister(stdin)
                        poller.register(0, select.POLLIN)
    finally:
        os.close(pidfd)


def _copy(source: int, target: int) -> bool:
    """Copy what ``source`` has to ``target``; False once ``source`` ended."""
    from runtime import terminal  # imported already, by relay

    data = terminal.read_chunk(source)
    if not data:
        return False
    try:
        while data:
            data = data[os.write(target, data) :]
    except OSError:
        pass  # our stream is gone (EPIPE): the process's output goes nowhere, as docker's
    return True


def _controlling_terminal() -> int:
    """A descriptor of our controlling terminal (/dev/tty, tty(4)), or -1 if we have none.

    On it, the new process gives up the terminal (TIOCNOTTY, tty_ioctl(4): not a session
    leader, it alone loses it, and no one is signalled), so that neither it nor its
    children can open it as /dev/tty."""
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return -1


def _null_streams(*fds: int) -> None:
    """Put the container's /dev/null on ``fds``: opened without following a link, and only
    if it is the null device (1:3), as the container's root may have replaced it."""
    found = security.open_in_root("/dev/null")
    try:
        if os.fstat(found).st_rdev != NULL_DEVICE:
            raise OSError("the container's /dev/null is not the null device (1:3)")
        null = os.open(f"/proc/self/fd/{found}", os.O_RDWR)
    finally:
        os.close(found)
    for fd in fds:
        os.dup2(null, fd)
    os.close(null)
