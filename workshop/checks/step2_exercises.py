"""The checks of step 2's exercises (docs/step2-pid.md), ``invoke check 2 --exercise K``.

Exercise 1 reads the NSpid line of /proc/PID/status (proc(5)) for a sleep in the learner's
step 2; exercises 3 and 4 break runtime/process.py as they ask, and pass while it is broken
so: a learner who put the line back passes ``invoke check 2`` again. Exercises 2 and 5 run
util-linux's unshare(1), not the learner's code: a checker would test the kernel, and
could not fail on their work, so they have none.
"""

from __future__ import annotations

from workshop.checks.check import Check, Exercise

WAIT = 20  # seconds for the container to start; polled every 0.1
# The sleep's argument, unique to this sandbox's shell ($$), finds it among the host's.
NSPID = f"""f=$(mktemp); nap="59.$$"
step -- sh -c "sleep $nap >/dev/null 2>&1 & echo \\$! >$f; wait" >/dev/null &
tries=0
while [ ! -s "$f" ] && kill -0 $! 2>/dev/null && [ $tries -lt {WAIT * 10} ]; do
  sleep 0.1; tries=$((tries + 1))
done
inside=$(cat "$f"); rm -f "$f"; [ -n "$inside" ] || exit 1
host=$(pgrep -fx "sleep $nap"); [ -n "$host" ] || exit 1
echo "inside $inside host $host"; grep NSpid /proc/$host/status; kill $host
"""


def nspid(program, _scene) -> str | None:
    result = program.run(NSPID)
    words = result.out.split()
    if len(words) < 5 or words[:1] != ["inside"] or words[4] != "NSpid:":
        return result.seen("your step 2 did not start a sleep in the background (sleep & echo $!)")
    inside, host, numbers = words[1], words[3], words[5:]
    if numbers == [host, inside]:
        return None
    if numbers == [host]:
        return f"the sleep's NSpid line has one number, {host}: it is in the host's namespace only"
    return f"the sleep's NSpid line is {' '.join(numbers)}; inside, echo $! printed {inside}"


TWO_PIDS = Exercise(
    [
        Check(
            "ex1-nspid",
            "a sleep started in your step 2 has two PIDs in its NSpid line, the inner one last",
            nspid,
            (
                "A process in a nested PID namespace has a PID in each namespace from its own "
                "up to the host's; /proc/PID/status lists them in its NSpid line, outermost "
                "first (pid_namespaces(7), proc(5)).",
                "Your step 2's NAMESPACES must add runtime.namespaces.PID (CLONE_NEWPID) to "
                "step 1's, so that the command is born in a new PID namespace.",
                "At the top of your step 2, write "
                "`NAMESPACES = step1_uts.NAMESPACES | namespaces.PID`, then read the sleep's "
                "NSpid line again.",
            ),
        )
    ]
)


def pid_not_1(program, _scene) -> str | None:
    result = program.run("step -- sh -c 'echo $$'")
    pid = result.last_line()
    if result.code == 0 and pid.isdigit() and pid != "1":
        return None
    if pid == "1":
        return "'echo $$' printed 1: the intermediate still forks the init (process.py unchanged)"
    return result.seen(f"'echo $$' printed {pid!r}")


def second_fork_refused(program, _scene) -> str | None:
    result = program.run("step -- sh -c '/bin/true; /bin/true; echo done'; echo \"exit $?\"")
    if "done" not in result.out.split() and result.last_line() not in ("exit 0", ""):
        return None
    if "done" in result.out.split():
        return "'/bin/true; /bin/true; echo done' printed done: the namespace still has its init"
    return result.seen("the step did not run")


SKIP_THE_SECOND_FORK = Exercise(
    [
        Check(
            "ex3-pid-not-1",
            "with `if False:` in _intermediate, 'echo $$' prints the host's PID of sh, not 1",
            pid_not_1,
            (
                "unshare(CLONE_NEWPID) moves the caller's children, not the caller: a process "
                "that unshared and then execs keeps its PID, as 'unshare --pid' without --fork "
                "(pid_namespaces(7)). The exercise makes the intermediate the command itself.",
                "In _intermediate (runtime/process.py), the condition before the second fork: "
                "replace it with False, so the intermediate execs the command itself.",
                "In _intermediate, write `if False:` in place of `if namespaces & CLONE_NEWPID "
                "or any(...):`; put it back after (git checkout runtime/process.py).",
            ),
        ),
        Check(
            "ex3-second-fork-refused",
            "the namespace loses its init with the first /bin/true: the next fork fails",
            second_fork_refused,
            (
                "The first process born in a PID namespace is its init; when it exits, the "
                "kernel refuses any further fork(2) in the namespace (ENOMEM, "
                "pid_namespaces(7)).",
                "With the second fork gone, sh keeps its host PID and its first child, "
                "/bin/true, becomes PID 1: after it, sh cannot fork again.",
                "In _intermediate, write `if False:` in place of the condition.",
            ),
        ),
    ]
)


def orphan_unwaited(program, _scene) -> str | None:
    result = program.run("step -- sh -c 'echo hi'; echo \"exit $?\"")
    if "ChildProcessError" in result.err and result.last_line() != "exit 0":
        return None
    if result.last_line() == "exit 0":
        return "the step waited for its init and exited 0: it is still the init's subreaper"
    return result.seen(f"the step ended with {result.last_line()!r} but no ChildProcessError")


NO_SUBREAPER = Exercise(
    [
        Check(
            "ex4-orphan-unwaited",
            "without the subreaper, the step cannot wait for its init: ChildProcessError",
            orphan_unwaited,
            (
                "When the intermediate exits, its child, the init, is re-parented to the "
                "nearest subreaper above it, or the host's init (prctl(2) "
                "PR_SET_CHILD_SUBREAPER); a process may only wait(2) for its own children.",
                "Comment out the prctl(PR_SET_CHILD_SUBREAPER, 1) call in runtime/process.py: "
                "os.waitpid then fails with ECHILD; put it back after.",
                "In runtime/process.py, comment out the line `prctl(PR_SET_CHILD_SUBREAPER, 1)`.",
            ),
        )
    ]
)

EXERCISES = {1: TWO_PIDS, 3: SKIP_THE_SECOND_FORK, 4: NO_SUBREAPER}
