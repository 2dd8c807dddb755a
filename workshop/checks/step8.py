"""Step 8's checks: a command run with the step enters a running container: its namespaces,
its cgroup (and memory limit), its boundaries.

The container is the solution's step 7 (so that these checks test step 8 alone), running
``sleep`` in a sandbox of its own; it is killed afterwards, and step 7 removes what it made.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from workshop.checks import sandbox, scenes, step4
from workshop.checks.check import Check, Unprepared

HOSTNAME = "workshop-entered"
BOUNDARIES = ("CapBnd", "CapEff", "NoNewPrivs", "Seccomp")


def process_running(argv: list[str]) -> int | None:
    """The pid of the process whose command line is ``argv``, if one runs."""
    wanted = "\0".join(argv).encode() + b"\0"
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as file:
                if file.read() == wanted:
                    return int(name)
        except OSError:
            pass  # gone meanwhile
    return None


@contextlib.contextmanager
def scene():
    """Start step 7's container (``--memory 32m``, sleeping); yield its init's pid."""
    scenes.busybox_rootfs()  # says what to do if it is not built
    sleep = ["sleep", str(200000 + os.getpid())]  # unusual: found by its command line
    solution = sandbox.Program("steps.step7_security")
    command = f"step --hostname {HOSTNAME} --memory 32m busybox -- {' '.join(sleep)}"
    step7 = solution.start(command)
    try:
        deadline = time.monotonic() + 60
        while not (pid := process_running(sleep)):
            if step7.poll() is not None or time.monotonic() > deadline:
                why = sandbox.failure(step7.stderr.read() if step7.poll() is not None else "")
                raise Unprepared(f"step 7's container, to enter, did not start: {why}")
            time.sleep(0.05)
        yield pid
    finally:
        if pid := process_running(sleep):
            os.kill(pid, signal.SIGKILL)  # its PID 1: step 7 then removes its cgroup, storage
        try:
            step7.communicate(timeout=30)
        except Exception:
            sandbox.stop(step7)


def enter(pid: int, command: str) -> str:
    return f"step {pid} -- {command}"


def joins_namespaces(program, pid) -> str | None:
    result = program.run(enter(pid, "sh -c 'hostname; cat /proc/1/comm'"))
    seen = result.out.split()
    if result.code == 0 and seen == [HOSTNAME, "sleep"]:
        return None
    if len(seen) == 2:
        wanted = (("the hostname", HOSTNAME), ("PID 1", "sleep"))
        pairs = zip(wanted, seen, strict=True)
        differ = [f"{what} was {got!r}, not the container's {want!r}"
                  for (what, want), got in pairs if got != want]  # fmt: skip
        return "inside, " + " and ".join(differ)
    return result.seen("the command could not print its hostname and PID 1")


def joins_cgroup(program, pid) -> str | None:
    result = program.run(enter(pid, step4.HOG))  # bounded: see step 4's checks
    return step4.killed(result, "in a container limited to 32m: it was not in its cgroup")


def same_boundaries(program, pid) -> str | None:
    with open(f"/proc/{pid}/status") as file:
        fields = (line.partition(":") for line in file.read().splitlines())
        init = {name: value.strip() for name, _, value in fields if name in BOUNDARIES}
    result = program.run(enter(pid, "cat /proc/self/status"))
    fields = (line.partition(":") for line in result.out.splitlines())
    entered = {name: value.strip() for name, _, value in fields if name in BOUNDARIES}
    if result.code == 0 and entered == init:
        return None
    if not entered:
        return result.seen("the command could not read its /proc/self/status")
    differ = [f"{name} {entered.get(name)} (the init's: {init[name]})" for name in BOUNDARIES
              if entered.get(name) != init[name]]  # fmt: skip
    return "the command's " + ", ".join(differ)


CHECKS = [
    Check(
        "joins-namespaces",
        "the command runs in the container's namespaces: its hostname, its PID 1",
        joins_namespaces,
        (
            "A process joins an existing namespace with setns(2), given a descriptor of "
            "/proc/PID/ns/NAME of a process in it (namespaces(7)); joining a PID namespace "
            "puts the caller's children in it, not the caller: fork after.",
            "Target(pid) opens the init's /proc/PID/ns/* files; in enter(), "
            "runtime.syscalls.setns(fd, flag) joins each, user first, mnt last, then "
            "os.fork() makes the process that runs the command.",
            "In enter(), in the loop `for _name, flag, fd in target.namespaces:`, write "
            "`setns(fd, flag)` (then close fd).",
        ),
    ),
    Check(
        "joins-cgroup",
        "the command is in the container's cgroup: its memory limit holds",
        joins_cgroup,
        (
            "A process is moved into a cgroup by writing its pid to the group's cgroup.procs "
            "(cgroups(7)); children are born in their parent's group. Entered without it, a "
            "command escapes the container's limits.",
            "cgroup_directories() finds the init's group in each hierarchy from "
            "/proc/PID/cgroup; enter() writes 0 (itself) to cgroup.procs there, first, "
            "before setns and fork.",
            "In enter(), write "
            '`cgroups.write_file(directory, "cgroup.procs", "0")` for each directory in '
            "target.cgroups.",
        ),
    ),
    Check(
        "same-boundaries",
        "the command has the init's capabilities, no_new_privs and seccomp filter",
        same_boundaries,
        (
            "Namespaces alone are not the container: a command entered as the host's root "
            "with all capabilities and no filter can undo them. docker exec applies the "
            "container's boundaries too (capabilities(7), seccomp(2)).",
            "boundaries_of() reads the init's sets, no_new_privs and seccomp mode from "
            "/proc/PID/status; execute() applies them with runtime.security.Boundaries: "
            "before_user_switch(), then after_user_switch().",
            "In execute(), write `target.boundaries.before_user_switch()` before the switch "
            "of user and `target.boundaries.after_user_switch()` after it.",
        ),
    ),
]
