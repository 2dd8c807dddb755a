"""Running the learner's step as a user would, where a mistake can do no harm.

A check runs the step's program, ``python -m MODULE ARGS``, from a small shell script that
calls it ``step``, as a learner types it. The script runs as root in new UTS, network and
mount namespaces of its own (unshare(1)): a step that forgets to make a namespace of its
own renames, rewires or mounts these throw-away ones, never the machine's (sethostname(2)
before unshare(2) would rename the host). The sandbox is named ``workshop-host``, and in
there "/" is made shared, as systemd makes it
on most machines (mount_namespaces(7)): a mount that the step leaks spreads as it would on
theirs, where the check can see it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 90  # seconds; a step run takes one or two, more on a loaded VM
SANDBOX = ["unshare", "--uts", "--net", "--mount", "--propagation", "private"]
HOSTNAME = "workshop-host"  # the sandbox's: what a step shows of "the host" is the same anywhere
PRELUDE = (
    f"mount --make-rshared / && hostname {HOSTNAME} || exit 125\n"
    'step() { "$WORKSHOP_PYTHON" -m "$WORKSHOP_MODULE" "$@"; }\n'
)
TRACEBACK = "Traceback (most recent call last):"
STEP_FILE = re.compile(r"step\d+_\w+\.py$")
INFORMATION = r"step \d: |Killed$"  # what a working step writes on stderr too


@dataclass
class Result:
    """What a script printed, and its exit status."""

    code: int
    out: str
    err: str

    def last_line(self) -> str:
        lines = self.out.strip().splitlines()
        return lines[-1].strip() if lines else ""

    def seen(self, what: str) -> str:
        """``what`` was seen instead of the expected; and why the step failed, if it said."""
        why = failure(self.err)
        news = why and not re.match(INFORMATION, why)  # not the steps' reports of progress
        return f"{what}; the step said: {why}" if news else what


class Program:
    """The learner's step: ``python -m module``, with ``env`` added to the environment."""

    def __init__(self, module: str, env: dict[str, str] | None = None):
        self.module = module
        self.env = env or {}

    def _popen(self, script: str, env: dict[str, str]) -> subprocess.Popen:
        environment = dict(os.environ, **self.env, **env)
        environment.update(WORKSHOP_PYTHON=sys.executable, WORKSHOP_MODULE=self.module)
        return subprocess.Popen(
            [*SANDBOX, "sh", "-c", PRELUDE + script],
            cwd=REPO,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",  # whatever bytes the learner's program writes
            start_new_session=True,  # a process group of its own, to end it on a timeout
        )

    def run(self, script: str, timeout: float = TIMEOUT, **env: str) -> Result:
        """Run ``script`` in a sandbox; ``step ARGS`` in it runs the learner's step."""
        process = self._popen(script, env)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process)
            try:
                out, err = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a process of another group holds the pipes
                out, err = "", ""
            return Result(-1, out, f"{err}\nit did not finish within {timeout:.0f} seconds\n")
        except BaseException:  # Ctrl-C: its own session did not get it, so end it here
            stop(process)
            raise
        return Result(process.returncode, out, err)

    def start(self, script: str, **env: str) -> subprocess.Popen:
        """Start ``script`` as :meth:`run` does, without waiting: end it with :func:`stop`."""
        return self._popen(script, env)


def stop(process: subprocess.Popen) -> None:
    """Kill a script started by :class:`Program` and every process it started, whatever
    their group, session or PID namespace (a container's init has its own); reap it."""
    for pid in [process.pid, *descendants(process.pid)]:  # listed before any is killed
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended already
    process.wait()


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` in the process tree, from the parents' pids in
    /proc/PID/stat (proc(5)): a container's processes have host pids there too."""
    children: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as file:
                parent = int(file.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(name))
    found, queue = [], [pid]
    while queue:
        below = children.get(queue.pop(), [])
        found += below
        queue += below
    return found


def descendant(process: subprocess.Popen, name: str, timeout: float) -> int | None:
    """The pid of the first process named ``name`` (/proc/PID/comm) below a script started
    by :meth:`Program.start`, once it runs: a container's, seen from the host. None if the
    script ended, or none came within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for pid in descendants(process.pid):
            try:
                with open(f"/proc/{pid}/comm") as file:
                    if file.read().strip() == name:
                        return pid
            except OSError:
                continue  # gone meanwhile
        time.sleep(0.1)
    return None


def failure(stderr: str) -> str:
    """How a program failed, in one line: for a Python traceback, its exception and the line
    of the learner's code it came from (a stepN_*.py, else any but the library's or
    Python's), else the last line the program wrote on stderr; empty if it wrote nothing."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return ""
    if TRACEBACK not in stderr:
        return lines[-1]
    error = stderr[stderr.rindex(TRACEBACK) :]
    frames = re.findall(r'^ *File "([^"]+)", line (\d+)', error, re.MULTILINE)
    library = (sysconfig.get_paths()["stdlib"], os.path.join(REPO, "runtime"), sys.prefix)
    learners = [frame for frame in frames if not frame[0].startswith(library)]
    steps = [frame for frame in learners if STEP_FILE.match(os.path.basename(frame[0]))]
    place = (steps or learners or frames or [("", "")])[-1]
    exception = [line for line in error.splitlines() if line and not line[0].isspace()][-1]
    if not place[0]:
        return exception
    path = os.path.relpath(place[0], REPO) if place[0].startswith(REPO + os.sep) else place[0]
    return f"{exception} ({path}, line {place[1]})"
