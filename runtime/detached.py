"""``mycontainer run -d`` and ``mycontainer start``: containers that run on in the background.

A foreground ``run`` is its container's watcher: the init is its child, so it relays the
container's output, waits for its exit code and cleans up. A detached run must return at
once, yet someone must still do all that. So it forks; the child creates and starts the
container (becoming the init's parent), tells the parent the id, and then replaces itself
with the container's monitor (runtime.monitor), a small program that logs the output,
records the exit code and runs ``mycontainer cleanup``::

    mycontainer run -d ──fork──> child: setsid; pipes on 0, 1, 2; create; start
         │                          │   "ok ID" on the report pipe
         prints ID, exits           └─execve──> monitor (pid unchanged): log, wait, cleanup
                                                  └─ init: the container's PID 1

The child leaves the user's session (setsid(2)), so that closing the terminal (SIGHUP)
or Ctrl-C there does not reach the container. Its stdin is /dev/null, unless ``-i``: then
a pipe whose other end the monitor holds open, so that a shell reading it waits. With
``-t``, the container's terminal is the one it makes for itself (runtime.terminal), and the
monitor holds its master.

Man pages: https://man7.org/linux/man-pages/man2/fork.2.html,
https://man7.org/linux/man-pages/man2/setsid.2.html, https://man7.org/linux/man-pages/man2/execve.2.html
"""

from __future__ import annotations

import os
import signal
import sys
import time

from runtime import cgroups, state
from runtime.container import (
    Config,
    Container,
    ContainerError,
    log_path,
    release_stopped,
    shown,
    watcher_alive,
)
from runtime.process import EXIT_RUNTIME_ERROR

CLEANUP_WAIT = 30  # seconds a start waits for the last run's watcher to finish cleaning up

# The monitor is imported, not run as a script, so that its compiled bytecode is used: a
# script is compiled at every start, and that memory would stay in every monitor.
MONITOR = "import sys; sys.path.append(sys.argv.pop(1)); import monitor; monitor.main(sys.argv)"
HERE = os.path.dirname(os.path.abspath(__file__))


def run(
    config: Config,
    name: str | None,
    remove: bool,
    interactive: bool,
    on_created=None,
    **restart,
) -> str:
    """Create and start a container that runs on after we return; return its id.

    ``on_created()`` runs (in the child) once the container exists: the caller's store
    lock goes then, as for a foreground run. ``restart``: ``container_id``, ``created``
    and ``state_lock``, when a stopped container starts again (:func:`restart`).
    """
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_read)
        try:
            _become_monitor(config, name, remove, interactive, on_created, report_write, restart)
        except BaseException as error:  # noqa: BLE001 - all goes to the parent, as one line
            code = getattr(error, "exit_code", EXIT_RUNTIME_ERROR)
            os.write(report_write, f"error {code} {error}".encode())
        os._exit(EXIT_RUNTIME_ERROR)
    os.close(report_write)
    with os.fdopen(report_read, "rb") as report:
        answer = report.read().decode(errors="replace")
    verdict, _, rest = answer.partition(" ")
    if verdict == "ok":
        return rest
    os.waitpid(pid, 0)
    if verdict == "error":
        code, _, message = rest.partition(" ")
        raise ContainerError(message, int(code))
    raise ContainerError("the container's monitor died before the container started")


def _become_monitor(
    config: Config,
    name: str | None,
    remove: bool,
    interactive: bool,
    on_created,
    report: int,
    restart: dict,
) -> None:
    """In the forked child: make the container with our 0, 1 and 2 as its stdio, start it,
    report its id, and exec the monitor."""
    os.setsid()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # the monitor starts with none blocked
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    if config.tty:
        streams = (null, null, null)
        keep: list[int] = []
    else:
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        in_read, in_write = os.pipe() if interactive else (null, -1)
        streams = (in_read, out_write, err_write)
        keep = [out_read, err_read, in_write]
    for fd, stream in enumerate(streams):
        os.dup2(stream, fd)  # inherited by the init: its stdin, stdout, stderr
    box = Container(config, autoremove=False, name=name, remove=remove, **restart)
    box.create()
    if on_created:
        on_created()
    box.state.record["interactive"] = interactive
    box.start()
    pid = box.pid
    master = box.detach()
    if master != -1:
        keep = [master, -1, -1]
    for fd in range(3):
        os.dup2(null, fd)  # the container's ends go: its output reaches EOF when it ends
    for fd in streams:
        if fd > 2 and fd != null:
            os.close(fd)
    for fd in keep:
        if fd != -1:
            os.set_inheritable(fd, True)
    log = log_path(box.state)
    cleanup = [sys.executable, "-m", "runtime", "cleanup", *(["--rm"] * remove), box.id]
    # The monitor holds no directory of the user's; and -m, which looks in the current
    # directory first, then finds no 'runtime' there but root's own.
    os.chdir("/")
    os.write(report, f"ok {box.id}".encode())
    os.close(report)
    os.execv(
        sys.executable,
        [sys.executable, "-I", "-S", "-c", MONITOR, HERE]
        + [str(pid), box.state.path(state.EXIT_FILE), log]
        + [str(fd) for fd in keep]
        + ["--", *cleanup],
    )


def restart(root: str, found: state.State) -> None:
    """``mycontainer start``: run a stopped container again, detached, with its
    configuration, name and writable layer; its log goes on where it stopped.

    The last run's watcher (its monitor, or a foreground run) records the exit code, then
    cleans up (container.cleanup): until it is gone, a start would find the lock held, or
    see the new run's processes killed by that cleanup. So it is waited for, as ``docker
    stop x; docker start x`` expects.

    The lock is held from the check that the container is stopped until its new run is
    created in the same state directory (state.renew): an ``rm`` or a ``container prune``
    at the same time either removes it first, and this start fails, or waits, and finds
    it running.
    """
    deadline = time.monotonic() + CLEANUP_WAIT
    while not found.init_alive() and watcher_alive(found):
        if time.monotonic() > deadline:
            raise ContainerError(
                f"container {shown(found)} is still being cleaned up after its last run: "
                "try again in a moment"
            )
        time.sleep(0.02)
    lock = state.lock(found, wait=False)
    try:
        found = state.load(root, found.id)  # as it is now: another start may have run it
        status = found.status()
        if status != state.STOPPED:
            raise ContainerError(f"container {shown(found)} is {status}")
        release_stopped(cgroups.detect(), found)
        run(
            Config(**found.config),
            found.name or None,
            found.record.get("rm", False),
            found.record.get("interactive", False),
            container_id=found.id,
            created=found.record.get("created"),
            state_lock=lock,
        )
    finally:
        os.close(lock)
