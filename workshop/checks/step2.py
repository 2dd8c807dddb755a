"""Step 2's checks: the command is PID 1 of its own PID namespace, step 1 still holds, and
the container's exit status is its command's."""

from __future__ import annotations

from workshop.checks import step1
from workshop.checks.check import Check

scene = step1.scene


def pid_1(program, _scene) -> str | None:
    result = program.run("step -- sh -c 'echo $$'")
    if result.code == 0 and result.last_line() == "1":
        return None
    return result.seen(f"the shell's PID inside was {result.last_line() or 'not printed'}, not 1")


def exit_status(program, _scene) -> str | None:
    result = program.run("step -- sh -c 'exit 7'; echo $?")
    if result.last_line() == "7":
        return None
    return result.seen(f"a command that exits 7 made the step exit {result.last_line()}")


CHECKS = [
    Check(
        "pid-1",
        "the command is PID 1 of a PID namespace of its own",
        pid_1,
        (
            "In a new PID namespace, the first process born is PID 1, its init; its children "
            "are numbered 2, 3... (pid_namespaces(7)). The container's command must be that "
            "first process.",
            "unshare(2) with CLONE_NEWPID (runtime.namespaces.PID) puts the caller's *children* "
            "in the new namespace, not the caller: add it to the step's NAMESPACES, and "
            "runtime.process forks the init after unsharing.",
            "At the top of the step, write `NAMESPACES = step1_uts.NAMESPACES | namespaces.PID`.",
        ),
    ),
    Check(
        "hostname-inside",
        "step 1 still holds: the hostname inside is the one given",
        step1.hostname_inside,
        (
            "Each step builds on the one before it: step 2's container still has its own "
            "hostname (uts_namespaces(7)).",
            "Step 2 sets up the inside as step 1 does: its setup is step 1's, which calls "
            "runtime.namespaces.set_hostname(hostname).",
            "The skeleton's `setup = step1_uts.setup` is step 1's setup: if this fails, your "
            "step 1 does (run invoke check 1), or step1_uts is not what step 2 imports.",
        ),
    ),
    Check(
        "exit-status",
        "the step exits with its command's exit status",
        exit_status,
        (
            "A container's exit status is its command's, as with docker run: a script that "
            "runs the container learns from it whether the command worked (wait(2)).",
            "common.run(...) waits for the init and returns its exit code; main() returns it, "
            "and sys.exit(main()) makes it the step's exit status.",
            "The skeleton's main() has `return common.run(NAMESPACES, lambda: "
            "setup(options.hostname), options.command)`: keep the `return`, and let setup() "
            "raise nothing (an exception inside ends the container with 125).",
        ),
    ),
]
