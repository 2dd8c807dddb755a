"""The container's first process: born in new namespaces, held at a gate, then exec'd.

How a process gets into new namespaces
--------------------------------------
clone(2) can create a child directly in new namespaces (``CLONE_NEWUTS | CLONE_NEWPID | ...``).
Python has no safe clone(), so we use its two halves, which the kernel documents as
equivalent: fork(2), then unshare(2) in the child. One subtlety: unshare(CLONE_NEWPID) does
not move the caller into the new PID namespace (its PID cannot change); only the children it
forks afterwards are born there, the first of them as PID 1. So::

    runtime (host)                       pid_namespaces(7), unshare(2), fork(2)
     └─ fork ─> intermediate: close inherited fds; join cgroup; join namespaces by path;
                  |           [new user namespace: see runtime.userns]; unshare;
                  |           fork; report pid; exit
                  └─ fork ─> init: PID 1 inside; setup(); "ready"; wait at the gate; execve
                               [--init: fork first; execve in the child, PID 2, while
                                the init stays PID 1 as its reaper: runtime.reaper]

The intermediate exits at once. Because the runtime marked itself a *child subreaper*
(prctl(2) PR_SET_CHILD_SUBREAPER), the orphaned init is re-parented to the runtime, which
can then waitpid(2) it like its own child and read its real exit status.

Create, then start
------------------
The init does all its setup (mounts, hostname...) and then blocks reading a *gate*.
That splits the lifecycle the way the OCI runtime spec does: after ``create`` everything
exists but the user's program has not run; ``start`` writes to the gate and the init execs
it. The gate is an anonymous pipe, or a named FIFO (``gate=PATH``) that a later process can
open by its name: runtime.state's ``exec.fifo``, so that a container outlives the command
that created it. A *sync* pipe carries the init's reports back, one line each: ``pid N``,
``ready``, or ``error CODE MESSAGE`` with the exit code the user should see (and ``userns``:
the intermediate's new user namespace awaits its maps, which the runtime writes, then answers
on a pipe of their own). The sync pipe is
close-on-exec, so EOF on it means execve succeeded. While the runtime waits for those
reports, SIGINT, SIGTERM, SIGHUP and SIGQUIT end the run (Interrupted): a stalled setup
must not make it deaf to them.

This module sits on the hot path of ``mycontainer run``; it imports no more than it must
(no typing or contextlib, which tests/test_imports.py keeps out of every run; no json,
which only the state needs).
"""

from __future__ import annotations

# The functions of signal wrap those of _signal, its C half, to return enums: a mask one
# per signal in it (~50 µs a call with the forwarded signals blocked), a handler one each
# time. A run calls them some 150 times, and needs none of them: it calls _signal's, which
# take _signal.SIG_DFL and SIG_IGN (plain numbers), not signal's enums.
import _signal
import errno
import os
import signal

from runtime import rootpath, users
from runtime.namespaces import enter_new
from runtime.syscalls import (
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    prctl,
    setns,
)

# Exit codes, as docker and the shells use them.
EXIT_RUNTIME_ERROR = 125  # the runtime itself failed
EXIT_CANNOT_EXECUTE = 126  # the command exists but cannot be executed
EXIT_NOT_FOUND = 127  # no such command
EXIT_SIGNAL_BASE = 128  # killed by signal N: 128 + N

# Signals that reach the runtime and are meant for the container: every one a process can
# catch, as docker's sig-proxy forwards them, but those about the runtime itself: a child's
# exit, a closed pipe, urgent socket data (docker keeps these three too), and the faults
# its own code would raise (a Python handler cannot return from a real SIGSEGV). Left to
# their default action, SIGALRM or SIGTSTP would kill or stop the runtime and orphan the
# container.
FORWARDED_SIGNALS = tuple(
    sorted(
        signal.valid_signals()
        - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGURG}
        - {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP}
    )
)

# Of those, the ones that end a run whose program has not started yet: forwarded to a
# program that may never run (or, as PID 1, ignore them), they would hang the runtime.
STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class ProcessError(Exception):
    """The container's process could not be set up or executed; ``exit_code`` says how."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(ProcessError):
    """A STOPPING_SIGNALS signal reached the runtime before the container's program ran."""

    def __init__(self, signum: int):
        name = signal.Signals(signum).name
        super().__init__(f"{name} before the container started", EXIT_SIGNAL_BASE + signum)
        self.signum = signum


class Init:
    """The runtime's handle on a container's first process (its PID 1)."""

    def __init__(self, sync: int, gate: int):
        self.pid = 0  # as seen from the host; known once the intermediate reports it
        self._sync = os.fdopen(sync, "rb")  # reports from the init, one line each
        self._gate = gate  # the gate's write end (pipe or FIFO); closed by start()

    def start(self) -> None:
        """Open the gate and wait until execve(2) succeeded or the init reported why not.

        A stopping signal (STOPPING_SIGNALS), pending or arriving meanwhile, kills the init
        and raises Interrupted: its program does not run, or is not left running unwatched.
        """
        try:
            with stopping_on_signals():
                os.write(self._gate, b"0")
                self._close_gate()
                report = self._sync.readline()
        except Interrupted as interrupted:
            if not self._executed():
                self.kill()
                raise
            os.kill(self.pid, interrupted.signum)  # it came as the program began: the program's
            report = b""
        self._sync.close()
        if report:
            self.wait()  # it exits right after reporting; reap it
            raise _reported_error(report)

    def wait(self) -> int:
        """Wait for the init to exit; return its status the way a shell shows it."""
        _, status = os.waitpid(self.pid, 0)
        return exit_code_from_wait_status(status)

    def kill(self) -> None:
        """SIGKILL the init, which takes every other process of its PID namespace with it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass  # already gone, or already reaped

    def close(self) -> None:
        """Release the pipes (an init still at a pipe gate then reads EOF and exits; one at a
        FIFO gate holds the FIFO open itself, and waits for a start or a kill)."""
        self._close_gate()
        self._sync.close()

    def _executed(self) -> bool:
        """Whether execve(2) has succeeded: the sync pipe, close-on-exec, is at its end."""
        fd = self._sync.fileno()
        os.set_blocking(fd, False)
        try:
            return os.read(fd, 1) == b""
        except BlockingIOError:
            return False
        finally:
            os.set_blocking(fd, True)

    def _close_gate(self) -> None:
        if self._gate != -1:
            os.close(self._gate)
            self._gate = -1


class Program:
    """What the container's PID 1 executes, and how: arguments, environment, directory, user,
    and the security boundaries it runs within (a runtime.security.Boundaries; None: none)."""

    def __init__(
        self,
        argv: list[str],
        env=None,
        cwd: str = "/",
        user: str | None = None,
        security=None,
        inherit: tuple[int, ...] = (),
        settings=None,
        adopted: bool = False,
        init: bool = False,
    ):
        self.argv = argv
        self.inherit = inherit  # descriptors beyond 0-2 it gets, as runc's --preserve-fds
        self.env = env if env is not None else dict(os.environ)
        self.cwd = cwd
        self.user = user  # USER[:GROUP] as the image's config gives it; None: stay root
        self.security = security
        self.settings = settings  # a runtime.process_settings.ProcessSettings, or None
        # Left to the container (exec -d): past the gate, the process forks once more and
        # exits, so that the program's parent is the PID namespace's init, which reaps it
        # (pid_namespaces(7)); else it would be the runtime's, then, once the runtime
        # exits, a subreaper's of the host that may never reap it, and the container's
        # init, when it dies, waits for every process of its namespace to be reaped.
        self.adopted = adopted
        self.init = init  # run behind a reaper as PID 1 (runtime.reaper: --init)


def spawn(
    program: Program,
    *,
    namespaces: int,
    setup=None,
    before_unshare=None,
    gate: str | None = None,
    join: list[tuple[int, str]] = (),
    console: int = -1,
    id_mappings: tuple[list[dict], list[dict]] | None = None,
) -> Init:
    """Create a process in new ``namespaces`` that has run ``setup()`` and waits to exec
    ``program``.

    ``before_unshare()`` runs in the intermediate before it unshares: the place to join the
    container's cgroup, so that every process of the container is born in it and a new cgroup
    namespace is rooted at it. ``gate``: the path of a FIFO to wait on (see above; default:
    a pipe). ``join``: (CLONE_NEW* flag, path) of existing namespaces to enter (setns(2)),
    such as another container's /proc/PID/ns/net; they are opened here, so a wrong path
    fails before anything is made. A user namespace among them is joined first, then the
    others, so that those it owns can be joined. ``id_mappings``: (uidMappings,
    gidMappings) as config.json gives them, for a new user namespace in ``namespaces``.
    ``console``: the init's end of a console socket
    (runtime.terminal), kept open for ``setup()`` to attach a terminal to; the init then
    leads a session of its own (setsid(2)), as a terminal's controlling process must,
    instead of a process group. Returns once the process is ready, or raises
    ProcessError with what went wrong inside, or Interrupted if a stopping signal came first
    (the process is killed then).
    Marks the calling process a child subreaper (see above).
    """
    if program.init:  # imported here, by the runtime: after pivot_root, the init could not
        from runtime import reaper

        try:
            reaper.check_boundaries(program.security)
        except reaper.ReaperError as error:
            raise ProcessError(str(error)) from None
    sync_read, sync_write = os.pipe()  # both ends close-on-exec (PEP 446)
    if gate:  # read and write: opening a FIFO so never blocks (fifo(7)), and never reads EOF
        gate_read = os.open(gate, os.O_RDWR | os.O_CLOEXEC)
        gate_write = os.dup(gate_read)
    else:
        gate_read, gate_write = os.pipe()
    mapped_read, mapped_write = os.pipe() if namespaces & CLONE_NEWUSER else (-1, -1)
    joined = []
    try:
        for flag, path in sorted(join, key=lambda entry: entry[0] != CLONE_NEWUSER):
            joined.append((flag, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as error:
        for _, fd in joined:
            os.close(fd)
        for fd in (sync_read, sync_write, gate_read, gate_write, mapped_read, mapped_write):
            if fd != -1:
                os.close(fd)
        raise ProcessError(f"cannot join namespace {error.filename}: {error.strerror}") from None
    interpreter = _identity(os.stat("/proc/self/exe"))  # read here: the init has pivoted
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    intermediate = os.fork()
    if intermediate == 0:
        os.close(sync_read)
        os.close(gate_write)
        if mapped_write != -1:
            os.close(mapped_write)
        _intermediate(
            program,
            namespaces,
            joined,
            before_unshare,
            setup,
            (sync_write, gate_read, console, mapped_read),
            interpreter,
        )
    os.close(sync_write)
    os.close(gate_read)
    for _, fd in joined:
        os.close(fd)
    if mapped_read != -1:
        os.close(mapped_read)
    init = Init(sync_read, gate_write)
    try:
        with stopping_on_signals():
            _await_ready(init, intermediate, id_mappings, mapped_write)
    except BaseException:
        if init.pid:
            init.kill()
        else:  # the intermediate has not reported: it may be stuck before its fork
            _kill_and_reap(intermediate)
        init.close()
        raise
    finally:
        if mapped_write != -1:
            os.close(mapped_write)
    return init


def _await_ready(init: Init, intermediate: int, id_mappings, mapped: int) -> None:
    """Read the reports of a new init until it is ready; raise what went wrong if not.

    Two reports come, in either order: "pid N" from the intermediate, "ready" from the init;
    or an error from either. Before them, from an intermediate in a new user namespace,
    "userns": its maps are written (by us: runtime.userns), then it is told on ``mapped``.
    """
    ready = False
    while not (init.pid and ready):
        report = init._sync.readline()
        if report == b"userns\n":
            from runtime import userns  # only for a user namespace: off the hot path

            try:
                userns.write_maps(intermediate, *id_mappings)
            except userns.UserNamespaceError as error:
                raise ProcessError(str(error)) from None
            os.write(mapped, b"1")
        elif report.startswith(b"pid "):
            init.pid = int(report.split()[1])
            if init.pid != intermediate:  # without a new PID namespace, it is the init
                os.waitpid(intermediate, 0)  # from here on, the init is our child
        elif report == b"ready\n":
            ready = True
        else:
            raise _reported_error(report)  # spawn() reaps whoever reported it


def _kill_and_reap(pid: int) -> None:
    """SIGKILL our child ``pid`` (still unreaped, so the number is still its) and reap it."""
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def exit_code_from_wait_status(status: int) -> int:
    """Map a waitpid(2) status to a shell's exit code: the code, or 128 + signal number."""
    code = os.waitstatus_to_exitcode(status)
    return EXIT_SIGNAL_BASE - code if code < 0 else code


class blocking_forwarded_signals:
    """While in this context, FORWARDED_SIGNALS wait (blocked, pending) instead of acting.

    Between fork and the moment the runtime can forward them, a Ctrl-C or a SIGTERM would
    kill the runtime and orphan a half-made container. Blocked, they stay pending until
    ``forwarding_signals`` is in place (sigprocmask(2)); the init unblocks them for itself.
    The stopping ones do not wait that long: see stopping_on_signals.
    """

    def __enter__(self) -> None:
        _signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)

    def __exit__(self, *exc_info) -> None:
        _signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)


class stopping_on_signals:
    """While in this context, a STOPPING_SIGNALS signal raises Interrupted, including one
    that arrived earlier and waits, blocked (see blocking_forwarded_signals).

    For the runtime's waits on a container that is not running yet (its setup, its
    execve): a stalled one must not make the runtime deaf to Ctrl-C and SIGTERM. Outside
    these waits the signals stay blocked, so that Interrupted never cuts a step in half.
    """

    def __enter__(self) -> None:
        self.previous = {sig: _signal.signal(sig, _interrupt) for sig in STOPPING_SIGNALS}
        self.mask = _signal.pthread_sigmask(signal.SIG_BLOCK, ())
        try:
            _signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING_SIGNALS)  # pending: raises
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc_info) -> None:
        try:
            _signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        finally:
            for sig, handler in self.previous.items():
                _signal.signal(sig, handler)


def _interrupt(signum: int, _frame) -> None:
    raise Interrupted(signum)


class forwarding_signals:
    """While in this context, pass FORWARDED_SIGNALS that reach us on to process ``pid``.

    Signals that were pending (blocked) arrive as soon as the handlers are in place. On the
    way out, the signal mask is restored before the handlers: under blocking_forwarded_signals
    a late SIGTERM then waits until the container is deleted, instead of killing the runtime
    (the default action) halfway through the deletion.
    """

    def __init__(self, pid: int):
        self.pid = pid
        self.previous = {}
        self.mask = set()

    def __enter__(self) -> None:
        for sig in FORWARDED_SIGNALS:
            self.previous[sig] = _signal.signal(sig, self._forward)
        self.mask = _signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)

    def __exit__(self, *exc_info) -> None:
        _signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        for sig, handler in self.previous.items():
            _signal.signal(sig, handler)

    def _forward(self, signum: int, _frame) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass  # it just exited; waitpid will tell


class terminal_foreground:
    """While in this context, process group ``pgid`` is the terminal's foreground job.

    Then Ctrl-C, Ctrl-Z and Ctrl-\\ reach the container (and only the container), and its
    shell may read the terminal, just as a shell runs a job (tcsetpgrp(3), credentials(7)).
    Does nothing when stdin is not a terminal of which we are the foreground job.
    """

    def __init__(self, pgid: int):
        self.pgid = pgid
        self.ours = -1

    def __enter__(self) -> None:
        try:
            if os.tcgetpgrp(0) == os.getpgrp():
                self.ours = os.getpgrp()
        except OSError:
            return  # stdin is not a terminal
        if self.ours != -1:
            self._hand_terminal_to(self.pgid)

    def __exit__(self, *exc_info) -> None:
        if self.ours != -1:
            self._hand_terminal_to(self.ours)

    @staticmethod
    def _hand_terminal_to(pgid: int) -> None:
        # Whoever calls tcsetpgrp from the background gets SIGTTOU: ignore it meanwhile.
        previous = _signal.signal(signal.SIGTTOU, _signal.SIG_IGN)
        try:
            os.tcsetpgrp(0, pgid)
        except OSError:
            pass  # the terminal went away
        finally:
            _signal.signal(signal.SIGTTOU, previous)


def _reported_error(report: bytes) -> ProcessError:
    """Turn an ``error CODE MESSAGE`` line from the init into a ProcessError."""
    if not report.startswith(b"error "):
        return ProcessError("the container's init exited before it was ready")
    _, code, message = report.decode(errors="replace").rstrip("\n").split(" ", 2)
    return ProcessError(message, int(code))


def _send(fd: int, line: str) -> bool:
    """Report one line to the runtime; False if it is gone (EPIPE): no one to tell."""
    try:
        os.write(fd, line.replace("\n", " ").encode() + b"\n")
    except OSError:
        return False
    return True


def _tell_stderr(message: str) -> None:
    """Say why the program did not run on the container's stderr, where its engine reads."""
    try:
        os.write(2, f"mycontainer: error: {message}\n".encode())
    except OSError:
        pass


def _intermediate(program, namespaces, joined, before_unshare, setup, fds, interpreter):
    """Runs in the first child: join and unshare namespaces, fork the init, report its pid,
    exit.

    A user namespace comes first, joined (``joined`` lists it first) or new: the namespaces
    made after it are its own, so its root may mount, set the hostname... in them. A new
    one is made alone, before the others, and its maps are the runtime's to write: we ask
    and wait (runtime.userns).

    ``fds``: the sync pipe's and the gate's ends, the console socket (or -1) and the pipe
    on which the runtime says a new user namespace's maps are written (or -1);
    ``interpreter``: (device, inode) of the runtime's executable (see
    refuse_the_interpreter). Never returns, whatever happens: a forked child that raised
    back into the caller would go on running the runtime's own code (the ``finally``).
    """
    sync, gate, console, mapped = fds
    try:
        # First of all, before anything resolves a path: only stdin, stdout and stderr may
        # reach the container; an inherited descriptor of a host directory is a way out
        # through /proc/self/fd/N (CVE-2024-21626).
        keep = (sync, gate, console, mapped, *program.inherit, *(fd for _, fd in joined))
        close_descriptors(keep=keep)
        # Until it execs the program, this process (and the init it forks) runs the host's
        # Python interpreter. Non-dumpable, no process of the container can open its
        # /proc/PID/exe, a way to the interpreter's file (CVE-2019-5736; ptrace(2), "access
        # mode checking"); execve(2) makes the program dumpable again.
        prctl(PR_SET_DUMPABLE, 0)
        if before_unshare:
            before_unshare()
        for flag, fd in joined:
            setns(fd, flag)
            os.close(fd)
        if namespaces & CLONE_NEWUSER:
            enter_new(CLONE_NEWUSER)
            _send(sync, "userns")
            if os.read(mapped, 1) != b"1":  # EOF: the runtime gave up on us
                os._exit(EXIT_RUNTIME_ERROR)
            os.close(mapped)
        if namespaces & CLONE_NEWUSER or any(flag == CLONE_NEWUSER for flag, _ in joined):
            _become_root()
        enter_new(namespaces & ~CLONE_NEWUSER)  # a new mount namespace is made private at once
        if namespaces & CLONE_NEWPID or any(flag == CLONE_NEWPID for flag, _ in joined):
            pid = os.fork()
            if pid:
                _send(sync, f"pid {pid}")
                os._exit(0)
        else:
            _send(sync, f"pid {os.getpid()}")
        # a mount namespace joined has processes already, which could swap the program's
        # name between its check and its execution (runtime.execution)
        pin = any(flag == CLONE_NEWNS for flag, _ in joined)
        _init(program, setup, fds[:3], interpreter, pin)
    except BaseException as error:
        _send(sync, f"error {EXIT_RUNTIME_ERROR} {error}")
    finally:
        os._exit(EXIT_RUNTIME_ERROR)


def _become_root() -> None:
    """Take the user namespace's root IDs, as real, effective and saved IDs, with no
    supplementary groups (runtime.userns).

    Right after unshare(2) or setns(2), a process keeps its IDs from the host, which the
    namespace may not map (they read 65534, the overflow ID, inside): files it made would
    belong to nobody. The capability sets survive the change: the kernel clears them only
    when the IDs leave the *namespace's* root (credentials(7), capabilities(7)). Here, not
    in runtime.userns: by now a mount namespace joined by path may hide this checkout.
    """
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)


def _init(program: Program, setup, fds: tuple[int, int, int], interpreter, pin: bool) -> None:
    """Runs as the container's PID 1: set up, report ready, wait at the gate, execve."""
    sync, gate, console = fds
    try:
        # The runtime blocks the signals it forwards while it creates us (see
        # blocking_forwarded_signals); the mask survives execve(2), so unblock them.
        _signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        if console == -1:
            os.setpgid(0, 0)  # its own process group, so it can be the terminal's foreground job
        else:
            os.setsid()  # a session of its own, whose controlling terminal setup() attaches
        if setup:
            setup()
        if program.init:
            from runtime import reaper  # imported by spawn() already

            reaper.rename(program.argv)  # as root, with /proc mounted: see its docstring
        # Enter the working directory as root, resolved inside the root only (runc too
        # enters it before the user switch, so a directory closed to the user still works).
        cwd = rootpath.open_directory(program.cwd)
        os.fchdir(cwd)
        os.close(cwd)
        check_cwd_inside_root(program.cwd)
        found = find_program(program.argv[0], program.env)  # "not found": create's error
        executable = open_program(found, interpreter, pin)
        _send(sync, "ready")
        if os.read(gate, 1) != b"0":  # EOF: the runtime gave up on us
            os._exit(EXIT_RUNTIME_ERROR)
        if program.adopted and os.fork():
            os._exit(0)
        # and any that setup() left open (``executable`` is close-on-exec: the program has
        # none of ours)
        close_descriptors(keep=(sync, executable, *program.inherit))
        if program.security:  # capabilities, no_new_privs, seccomp: see runtime.security
            program.security.before_user_switch()
        if program.user:  # names looked up in the container's files: before config.json's
            home = users.switch_to(program.user)
            if home and "HOME" not in program.env:
                program.env["HOME"] = home
        elif program.settings:
            program.settings.switch_user()
        if program.security:
            program.security.after_user_switch()
        if program.init:  # within every boundary of the program: the reaper gets them too
            reaper.fork_program(FORWARDED_SIGNALS)  # returns in the child only, PID 2
    except BaseException as error:
        code = getattr(error, "exit_code", EXIT_RUNTIME_ERROR)
        if not _send(sync, f"error {code} {error}"):
            _tell_stderr(str(error))
        os._exit(code)
    code = EXIT_RUNTIME_ERROR
    try:
        default_signals()
        if executable != -1:
            execute_checked(executable, found, program.argv, program.env)
        execvpe(program.argv, program.env)
    except OSError as error:
        command = program.argv[0]
        code, reason = _exec_failure(command, error)
        if not _send(sync, f"error {code} cannot run {command!r}: {reason}"):
            _tell_stderr(f"cannot run {command!r}: {reason}")  # started by a runtime long gone
    finally:
        os._exit(code)


def close_descriptors(keep: tuple[int, ...]) -> None:
    """Close every descriptor but 0, 1, 2 and those in ``keep``, whatever their numbers.

    The list comes from /proc/self/fd (the container's own /proc by now), not from
    ``range(RLIMIT_NOFILE)``: a descriptor opened before the limit was lowered lies above
    it, and would slip through. (-1 in ``keep`` stands for none.)
    """
    keep = tuple(fd for fd in keep if fd > 2)
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except FileNotFoundError:  # no /proc (the early steps may lack one): the usual range
        start = 3
        for fd in [*sorted(keep), os.sysconf("SC_OPEN_MAX")]:
            os.closerange(start, fd)
            start = fd + 1
        return
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the descriptor listdir itself used, already closed


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` -> 9; ValueError for anything else."""
    if text.isdigit():
        number = int(text)
        if number in {int(s) for s in signal.valid_signals()}:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise ValueError(f"unknown signal {text!r}: use a name such as TERM or KILL, or a number")


def default_signals() -> None:
    """Every signal's disposition back to SIG_DFL and the signal mask empty, as a program
    expects to start (what docker and runc give it: ``SigIgn: 0``, ``SigBlk: 0``).

    execve(2) keeps ignored signals ignored and the mask as it is (signal(7)), and Python
    ignores SIGPIPE and SIGXFSZ: inherited, they make ``yes | head -1`` spin forever.
    Python knows every disposition (it reads them all at startup, and every change since
    went through it), so only those not at SIG_DFL cost a sigaction(2) call.
    """
    for sig in range(1, signal.NSIG):  # plain numbers: valid_signals() makes enums, slowly
        if (
            sig not in (signal.SIGKILL, signal.SIGSTOP)
            and _signal.getsignal(sig) != _signal.SIG_DFL
        ):
            try:
                _signal.signal(sig, _signal.SIG_DFL)
            except OSError:
                pass  # one the C library keeps for itself (32 and 33 under glibc)
    _signal.pthread_sigmask(signal.SIG_SETMASK, ())


def check_cwd_inside_root(cwd: str) -> None:
    """Refuse a working directory outside the container's root (CVE-2024-21626).

    A cwd such as /proc/self/fd/7, with descriptor 7 a leaked host directory, lands outside
    the root; getcwd(3) then fails (ENOENT) or names no absolute path.
    """
    try:
        where = os.getcwd()
    except OSError:
        where = ""
    if not where.startswith("/"):
        raise ProcessError(f"working directory {cwd!r} is outside the container's root")


def find_program(command: str, env: dict[str, str]) -> str:
    """The file ``command`` names, here or in the PATH of ``env``; ProcessError (127) if none.

    Checked before the gate, so that ``create`` reports it, as runc does: after ``start``,
    whoever created the container may be long gone. Whether the file can be executed is
    execve(2)'s to say, as the user the program runs as.
    """
    if "/" in command:
        candidates = [command]
    else:
        candidates = [os.path.join(d or ".", command) for d in env.get("PATH", "").split(":")]
    for path in candidates:
        if os.path.exists(path):
            return path
    code, reason = _exec_failure(command, FileNotFoundError(errno.ENOENT, "not found"))
    raise ProcessError(f"cannot run {command!r}: {reason}", code)


def _identity(found: os.stat_result) -> tuple[int, int]:
    return found.st_dev, found.st_ino


def refuse_the_interpreter(path: str, ours: tuple[int, int]) -> None:
    """Refuse a program that is, or whose ``#!`` interpreters lead to, this very process's
    executable: the host's Python interpreter, which /proc/self/exe reaches from inside.

    Run, it would give the container a process whose /proc/self/exe is the host's file;
    kept open (O_PATH) and reopened for writing once no process runs the interpreter, as
    after ``mycontainer-oci create`` none does, it would let the container overwrite it
    (CVE-2019-5736; runc executes a sealed copy of itself instead). Compared by device and
    inode, so no name or link hides it; the kernel follows four ``#!`` levels, so do we.
    """
    for _ in range(5):
        try:
            found = os.stat(path)
            with open(path, "rb") as file:
                head = file.read(256)
        except OSError:
            return  # execve(2) will say why
        if _identity(found) == ours:
            raise _interpreter_refused(path)
        if not head.startswith(b"#!"):
            return
        words = head[2:].split(b"\n", 1)[0].split()
        if not words:
            return
        path = os.fsdecode(words[0])


def open_program(path: str, ours: tuple[int, int], pin: bool) -> int:
    """Check the program at ``path`` (refuse_the_interpreter); with ``pin``, return an
    O_PATH descriptor of the very file checked, else (and for a script) -1: it runs by
    its path.

    Between the check and execve(2), a process of a running container (``exec`` enters
    one) could swap what ``path`` names for a link to /proc/self/exe: execute_checked runs
    the file checked. Only then: a new container has no process that could swap anything.
    A script cannot be pinned: the kernel would give its interpreter a /dev/fd/N path for
    it (and its ``$0``), and resolves the ``#!`` interpreters anew anyway, so a script
    that the container can rewrite keeps that window (runc closes it by executing a sealed
    copy of itself).
    """
    if not pin:
        refuse_the_interpreter(path, ours)
        return -1
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return -1  # execve(2) will say why
    try:
        if _identity(os.fstat(fd)) == ours:
            raise _interpreter_refused(path)
        with open(f"/proc/self/fd/{fd}", "rb") as file:
            script = file.read(2) == b"#!"
    except OSError:
        script = False  # unreadable (execute-only): not a script the kernel could read
    except BaseException:
        os.close(fd)
        raise
    if script:
        os.close(fd)
        refuse_the_interpreter(path, ours)
        return -1
    return fd


def execute_checked(fd: int, path: str, argv: list[str], env: dict[str, str]) -> None:
    """Execute the file that open_program checked and pinned as ``fd``.

    Through the descriptor (fexecve(3)), it is that file whatever ``path`` names by now.
    But the kernel names a process (/proc/PID/comm: what pgrep, top and busybox's ps show)
    after the file it executes: through a descriptor, after the file a link leads to, so
    busybox's ``sleep`` would be ``busybox``. So a program named by a link runs by its
    path, once ``path`` is checked again to lead to the file pinned (else it is refused):
    the window left is that of one stat(2).
    """
    if not os.path.islink(path):
        os.execve(fd, argv, env)
    try:
        same = _identity(os.stat(path)) == _identity(os.fstat(fd))
    except OSError:
        same = False
    if not same:
        raise OSError(errno.EACCES, "it changed since it was checked")
    os.execve(path, argv, env)


def _interpreter_refused(path: str) -> ProcessError:
    return ProcessError(
        f"refusing to run {path!r}: it is mycontainer's own interpreter, which the "
        "container could overwrite (CVE-2019-5736)",
        EXIT_CANNOT_EXECUTE,
    )


def execvpe(argv: list[str], env: dict[str, str]) -> None:
    """Execute ``argv[0]``, searching the PATH in ``env`` as execvp(3) does.

    Not ``os.execvpe``: it imports the warnings module on the way, and after pivot_root the
    host's Python library is no longer there to import from.
    """
    if "/" in argv[0]:
        os.execve(argv[0], argv, env)
    not_found = FileNotFoundError(2, "No such file or directory")
    denied = None  # execvp(3): EACCES on one PATH entry is reported if none works
    for directory in env.get("PATH", "").split(":"):
        try:
            os.execve(os.path.join(directory or ".", argv[0]), argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as error:
            denied = error
    raise denied or not_found


def _exec_failure(command: str, error: OSError) -> tuple[int, str]:
    """The exit code and reason docker gives when execve(2) fails with ``error``."""
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        if "/" in command:
            return EXIT_NOT_FOUND, "no such file or directory"
        return EXIT_NOT_FOUND, "executable file not found in $PATH"
    return EXIT_CANNOT_EXECUTE, error.strerror or str(error)
