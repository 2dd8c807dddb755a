"""The checks of step 8's exercises (docs/step8-exec.md), ``invoke check 8 --exercise K``.

Exercise 5 changes the learner's step 8 to join the mount namespace first and open each
namespace file after it: its checker enters step 8's checks' container (the solution's step
7, running) with it, which must then fail as the chapter shows, ENOENT on a /proc/PID/ns
path; it passes while the step is changed so (undo it after: ``invoke check 8`` passes).

Exercise 7 asks for a script, pidfd_enter.py in the repository's top directory, that joins
the container's namespaces in one setns(2) call on a pidfd (pidfd_open(2)): its checker
runs it on the same container, as the chapter does, and sees the command inside (the
container's hostname, its PID 1), then runs it under strace(1) and counts the setns calls.
The atomicity itself shows no difference from outside; one call on a pidfd is what gives it.

Exercise 6 makes the learner's step 8 dumpable and pause (STEP8_PAUSE) after the
boundaries: its checker starts such an entry, and from a second one reads the link
/proc/PID/exe of the paused process (PID 2 in the chapter), which names the host's
Python while the process is dumpable (ptrace(2), "Ptrace access mode checking"); it
passes while the step is changed so.

Exercises 1 to 4 compare what nsenter(1) or the step's --skip and --no-* options show, and
ask why: nothing of the learner's changes.
"""

from __future__ import annotations

import os
import re
import shutil
import sys

from workshop.checks import step8
from workshop.checks.check import Check, Exercise


def late_open_fails(program, pid) -> str | None:
    result = program.run(f'{step8.enter(pid, "hostname")}; echo "exit $?"')
    said = result.err
    if result.last_line() == "exit 125" and "No such file or directory" in said and "/ns/" in said:
        return None
    if step8.HOSTNAME in result.out.split():
        return "your step 8 entered the container: it still opens every file before it joins"
    return result.seen(f"the step ended with {result.last_line()!r}, not ENOENT on a ns file")


ORDER = Exercise(
    [
        Check(
            "ex5-late-open-fails",
            "with mnt joined first and the files opened after it, step 8 fails: ENOENT on "
            "/proc/PID/ns/...",
            late_open_fails,
            (
                "setns(2) with CLONE_NEWNS changes every later path lookup: /proc is then the "
                "container's, which numbers processes in its PID namespace, where the host's "
                "PID of the init means nothing (mount_namespaces(7), proc(5)).",
                "In enter(), join mnt first (sort target.namespaces with mnt first), close "
                "Target's descriptors, and os.open each /proc/PID/ns/NAME just before its setns.",
                "Write `order = sorted(target.namespaces, key=lambda entry: entry[0] != "
                '"mnt")` and, in the loop, '
                '`fd = os.open(f"/proc/{target.pid}/ns/{name}", os.O_RDONLY)`; undo it after.',
            ),
        )
    ],
    scene=step8.scene,
)

WAIT = 15  # seconds for the paused entry to pass its boundaries, well within its pause


def paused_entry(pid: int) -> str:
    """The script: an entry paused with STEP8_PAUSE; its process inside is found from the
    host (the step's child with two PIDs in its NSpid line, proc(5)), and a second entry
    polls its /proc/PID/exe. It prints "exe TARGET", "ended" (no pause), or "no target".
    (The subshell execs the step, so that $! is the step's pid.)"""
    return f"""(export STEP8_PAUSE=1; exec "$WORKSHOP_PYTHON" -m "$WORKSHOP_MODULE" {pid} -- true \\
  >/dev/null 2>&1) & paused=$!
deadline=$(($(date +%s) + {WAIT}))  # seconds, not tries: each try runs the step
until [ -n "$inner" ] && seen=$(step {pid} -- readlink /proc/$inner/exe 2>/dev/null); do
  kill -0 $paused 2>/dev/null || {{ echo "ended"; exit; }}
  [ "$(date +%s)" -ge $deadline ] && {{ echo "no target"; exit; }}
  inner=$(for child in $(pgrep -P $paused); do
    awk '/^NSpid:/ && NF > 2 {{ print $NF }}' /proc/$child/status 2>/dev/null; done)
  sleep 0.2
done
echo "exe $seen"
"""


def host_exe_seen(program, pid) -> str | None:
    result = program.run(paused_entry(pid))
    seen = result.last_line()
    interpreter = os.path.realpath(sys.executable)
    if seen == f"exe {interpreter}":
        return None
    if seen == "ended":
        return "your step 8 with STEP8_PAUSE=1 entered and ended at once: it did not pause"
    if seen == "no target":
        return "the paused process's /proc/PID/exe showed no target: it is still non-dumpable"
    if seen.startswith("exe "):
        return f"its /proc/PID/exe named {seen[4:]}, not the host's Python, {interpreter}"
    return result.seen("a second entry could not look at the paused one's /proc/PID/exe")


DUMPABLE = Exercise(
    [
        Check(
            "ex6-host-exe-seen",
            "with PR_SET_DUMPABLE left out and a pause after the boundaries, a second entry "
            "reads the paused process's /proc/PID/exe: the host's Python",
            host_exe_seen,
            (
                "The links of /proc/PID (exe, fd/*) of a dumpable process are open to a "
                'process of the same user and capabilities (ptrace(2), "Ptrace access mode '
                'checking"); prctl(2) PR_SET_DUMPABLE 0 closes them until execve(2).',
                "In your step 8: comment out prctl(PR_SET_DUMPABLE, 0) in enter(), and in "
                "execute(), after the boundaries, sleep 30 seconds when STEP8_PAUSE is set.",
                'Write `if os.environ.get("STEP8_PAUSE"):` and `time.sleep(30)` right before '
                "`process.default_signals()`, and comment out `prctl(PR_SET_DUMPABLE, 0)`; "
                "undo both after.",
            ),
        )
    ],
    scene=step8.scene,
)

SCRIPT = "pidfd_enter"
INSIDE = "sh -c 'hostname; cat /proc/1/comm'"  # the container's name and its PID 1


def script_enters(program, pid) -> str | None:
    result = program.run(f'step {pid} /bin/{INSIDE}; echo "exit $?"')
    seen = result.out.split()
    if seen == [step8.HOSTNAME, "sleep", "exit", "0"]:
        return None
    if len(seen) == 4 and seen[2:] == ["exit", "0"]:
        return (
            f"inside, the hostname was {seen[0]!r} and PID 1 {seen[1]!r}, not the container's "
            f"{step8.HOSTNAME!r} and 'sleep'"
        )
    return result.seen(f"'python3 {SCRIPT}.py PID /bin/sh -c ...' did not run the command inside")


SETNS = re.compile(r"^(?:\d+ +)?setns\((\d+)<([^>]*)>, ([^)]*)\) += (-?\d+)", re.MULTILINE)


def one_setns(program, pid) -> str | None:
    if not shutil.which("strace"):
        return "strace is not installed: install it (apt install strace), then check again"
    result = program.run(  # the sandbox's /tmp is the host's: a log of its own, removed
        'log=$(mktemp) && strace -f -y -qq -e trace=setns -e signal=none -o "$log" '
        f'"$WORKSHOP_PYTHON" -m "$WORKSHOP_MODULE" {pid} /bin/true; cat "$log"; rm -f "$log"'
    )
    calls = SETNS.findall(result.out)
    if not calls:
        return result.seen(f"strace recorded no setns call of {SCRIPT}.py")
    if len(calls) > 1:
        return f"strace recorded {len(calls)} setns calls, one per namespace: the loop, not one"
    _fd, what, flags, code = calls[0]
    if code != "0":
        return f"its setns({what}, {flags}) failed: {code}"
    if "pidfd" not in what:
        return f"its one setns was given {what}, not a pidfd (pidfd_open)"
    missing = [name for name in ("NEWNS", "NEWPID", "NEWUTS") if f"CLONE_{name}" not in flags]
    if missing:
        return f"its one setns joins {flags}, without " + ", ".join(f"CLONE_{m}" for m in missing)
    return None


ONE_CALL = Exercise(
    [
        Check(
            "ex7-script-enters",
            f"python3 {SCRIPT}.py PID /bin/sh -c ... runs the command in the container",
            script_enters,
            (
                "setns(2) accepts a pidfd (pidfd_open(2)) and a set of CLONE_NEW* flags: the "
                "caller joins all those namespaces of that process at once (Linux 5.8). A new "
                "PID namespace takes the caller's children only: fork, then exec. Write "
                f"{SCRIPT}.py in the repository's top directory.",
                "os.pidfd_open(pid), then runtime.syscalls.setns(pidfd, CLONE_NEWCGROUP | "
                "CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID | CLONE_NEWNS), then os.fork() and, "
                "in the child, os.execv(command[0], command); the parent waits.",
                "Write `setns(pidfd, CLONE_NEWCGROUP | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID "
                "| CLONE_NEWNS)` after `pidfd = os.pidfd_open(pid)`, then fork and "
                "`os.execv(command[0], command)` in the child.",
            ),
        ),
        Check(
            "ex7-one-setns",
            "under strace -f, it joins them in one setns call, on a pidfd",
            one_setns,
            (
                "One setns(2) with several CLONE_NEW* flags is atomic: the caller enters every "
                "namespace named, or none. Only a pidfd can name several namespaces; a "
                "/proc/PID/ns file names one.",
                "Replace any loop over /proc/PID/ns files with os.pidfd_open(pid) and a single "
                "runtime.syscalls.setns(pidfd, flags), the flags OR-ed together.",
                "Write `pidfd = os.pidfd_open(pid)` and one "
                "`setns(pidfd, CLONE_NEWCGROUP | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID | "
                "CLONE_NEWNS)`.",
            ),
        ),
    ],
    module=SCRIPT,
    scene=step8.scene,
)

EXERCISES = {5: ORDER, 6: DUMPABLE, 7: ONE_CALL}
