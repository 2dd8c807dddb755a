"""``mycontainer run --init``: a small init as the container's PID 1, in front of the program.

Why a container may need one
----------------------------
PID 1 of a PID namespace has two duties that an ordinary program does not know about
(pid_namespaces(7)):

- **Signals.** The kernel delivers a signal to PID 1 from its own namespace only if PID 1
  has a handler for it; a signal whose action is the default is dropped, even SIGKILL
  (kill(2), "Notes"). A program written as a program, ``sleep`` or a server that relies on
  SIGTERM's default action, ignores ``docker stop`` as PID 1 and gets SIGKILLed after the
  grace period.
- **Orphans.** A process whose parent exits is re-parented to PID 1, and stays a zombie
  (a pid, an entry in the process table) until PID 1 wait(2)s for it. A shell reaps any
  child that exits while it waits; ``sleep``, or a server that forks helpers, reaps none.

docker's ``--init`` runs tini as PID 1 for that: it starts the program as its child and
does both duties. Images have no tini here, nor Python to run this module; but the
container's init already *is* a Python process until it execs the program
(runtime.process). With ``--init`` it forks first: the child execs the program, as PID 2,
and the parent stays PID 1, as this loop:

1. Every signal it forwards, and SIGCHLD, stay blocked, and it waits for them with
   sigwaitinfo(2): a blocked signal is never dropped, not even for PID 1, but stays
   pending until taken (signal(7)); and no code runs in a handler.
2. A signal is passed on to the program with kill(2), to the program alone as tini does
   by default; a shell passes it on to its jobs if it wants. Not the signals the kernel sent
   from a terminal (Ctrl-C, Ctrl-\\, Ctrl-Z, a window resize: ``si_code`` SI_KERNEL): they
   go to the terminal's whole foreground process group, of which the program is a member
   too, so it has them already (termios(3)); forwarded, they would come twice.
3. SIGCHLD: every child that has exited is reaped (waitpid(2) with -1 and WNOHANG, until
   none is left: several exits may make one SIGCHLD). When the program is among them, PID 1
   exits with its exit code, or 128+N if signal N killed it, as tini; the kernel then
   SIGKILLs whatever is left in the namespace.

It runs within the program's boundaries: the init forks only once it has switched to the
program's user and applied its capabilities, no_new_privs and seccomp filter
(runtime.security). What it holds of the host is less than the init held. It closes every
descriptor, stdin, stdout and stderr included: it never uses them, and a pipe or terminal
that the program closes must not stay open in it. It stays non-dumpable (prctl(2)
PR_SET_DUMPABLE), so that no process of the container may read its memory (a copy of the
runtime's) or open /proc/1/exe (the host's Python interpreter: CVE-2019-5736) without
CAP_SYS_PTRACE, which ``--init`` therefore refuses. And its command line, which
/proc/1/cmdline shows to every process, is rewritten from the runtime's to
``mycontainer-init -- PROGRAM...``.

Man pages: https://man7.org/linux/man-pages/man7/pid_namespaces.7.html,
https://man7.org/linux/man-pages/man2/kill.2.html,
https://man7.org/linux/man-pages/man2/sigwaitinfo.2.html,
https://man7.org/linux/man-pages/man2/waitpid.2.html,
https://man7.org/linux/man-pages/man2/sigaction.2.html (``si_code``),
https://man7.org/linux/man-pages/man5/proc.5.html (``/proc/PID/stat``, ``/proc/PID/mem``)
"""

from __future__ import annotations

import gc
import os
import signal

from runtime.capabilities import mask_of
from runtime.syscalls import PR_SET_DUMPABLE, prctl

NAME = "mycontainer-init"  # its command line and comm in the container, as docker's docker-init
EXIT_FAILURE = 125  # the reaper itself failed: docker's code for the runtime's own errors

SI_KERNEL = 0x80  # si_code of a signal the kernel sent (sigaction(2)); kill(2) gives SI_USER
# What a terminal sends its foreground process group (termios(3), tty_ioctl(4)).
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGWINCH)


class ReaperError(OSError):
    """``--init`` cannot run as asked; the message says why and what to do."""


def check_boundaries(security) -> None:
    """Refuse ``--init`` where the container could read the reaper's memory: when its
    boundaries (a runtime.security.Boundaries, or None) leave CAP_SYS_PTRACE in the
    bounding set.

    Non-dumpable, the reaper is out of reach of the container's processes unless they hold
    CAP_SYS_PTRACE (ptrace(2), "Ptrace access mode checking"); with it, /proc/1/mem would show
    the runtime's memory, and /proc/1/exe the host's interpreter, which no process of the
    container can reach without ``--init``.
    """
    sets = security.sets if security is not None else None
    if sets is None or sets["bounding"] & mask_of(["SYS_PTRACE"]):
        raise ReaperError(
            "--init cannot be given CAP_SYS_PTRACE: the container could read mycontainer's "
            "memory through its PID 1; drop one of them"
        )


def rename(argv: list[str]) -> None:
    """Show ``mycontainer-init -- ARGV...`` as this process's /proc/PID/cmdline and comm.

    /proc/PID/cmdline is readable by every process of the PID namespace, and shows the
    memory where execve(2) put the runtime's arguments: its path on the host and its command
    line. That memory is overwritten through /proc/self/mem, from ``arg_start`` to
    ``arg_end`` (fields 48 and 49 of /proc/self/stat, proc(5)), cut to its length. Runs as
    root: /proc/self/mem of a non-dumpable process belongs to root.
    """
    with open("/proc/self/stat", "rb") as file:
        fields = file.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[48 - 3]), int(fields[49 - 3])  # fields[0] is field 3
    title = b"\0".join(os.fsencode(word) for word in [NAME, "--", *argv])[: end - start - 1]
    with open("/proc/self/mem", "r+b", buffering=0) as memory:
        memory.seek(start)
        memory.write(title.ljust(end - start, b"\0"))
    with open("/proc/self/comm", "wb") as file:
        file.write(NAME.encode()[:15])  # TASK_COMM_LEN, as execve(2) would cut it


def fork_program(forwarded: tuple[int, ...]) -> None:
    """Fork: return in the child, which is to exec the program; in this process, become the
    reaper (the module's docstring) and never return.

    ``forwarded``: the signals to pass on (runtime.process.FORWARDED_SIGNALS). They are
    blocked before the fork, so that none that arrives meanwhile is lost; the child unblocks
    them before its execve(2).
    """
    waited = {*forwarded, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        program = os.fork()
    except OSError as error:  # EAGAIN: the container's --pids-limit, say
        raise ReaperError(f"--init cannot start the program: fork: {error.strerror}") from None
    if program == 0:
        return
    try:
        prctl(PR_SET_DUMPABLE, 0)  # a change of user reset it to fs.suid_dumpable (proc(5))
        os.closerange(0, os.sysconf("SC_OPEN_MAX"))
        gc.disable()  # a collection would write to pages shared with the runtime, copying them
        _reap(program, waited)
    finally:
        os._exit(EXIT_FAILURE)


def _reap(program: int, waited: set[int]) -> None:
    """Forward signals to ``program`` and reap children until it exits; exit as it did."""
    while True:
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            if info.si_code == SI_KERNEL and info.si_signo in TERMINAL_SIGNALS:
                continue  # the terminal's: the program has it
            os.kill(program, info.si_signo)  # alive, or a zombie: it is reaped below
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == program:
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)
