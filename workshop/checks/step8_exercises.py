"""The checks of step 8's exercises (docs/step8-exec.md), ``invoke check 8 --exercise K``.

Exercise 5 changes the learner's step 8 to join the mount namespace first and open each
namespace file after it: its checker enters step 8's checks' container (the solution's step
7, running) with it, which must then fail as the chapter shows, ENOENT on a /proc/PID/ns
path; it passes while the step is changed so (undo it after: ``invoke check 8`` passes).

Exercises 1 to 4 compare what nsenter(1) or the step's --skip and --no-* options show, and
ask why; 6 needs a second shell inside while a step waits, and 7 is a rewrite whose
guarantee (one atomic setns) shows no difference from outside: no checker for these.
"""

from __future__ import annotations

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

EXERCISES = {5: ORDER}
