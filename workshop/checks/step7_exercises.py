"""The checks of step 7's exercises (docs/step7-security.md), ``invoke check 7 --exercise K``.

Exercise 4 moves the runtime's seccomp.install after capset(2): its checker runs
``mycontainer`` (``python -m runtime``) with no_new_privs off, which must then fail as the
chapter shows, while the default run still works; it passes while the lines are moved, as
the exercise asks (put them back after).

Exercises 1 and 3 are reading (bit masks, capabilities(7)); 2 and 6 ask which check refuses
what, with files of the learner's own making; 5's rule changes nothing a container shows
by default (it holds NET_RAW), and its observable form, a rule that always refuses, is a
second edit: no checker for these.
"""

from __future__ import annotations

from workshop.checks.check import Check, Exercise

RUN = "step run --rm --net none"


def filter_refused(program, _scene) -> str | None:
    result = program.run(
        f'{RUN} --security-opt no-new-privileges=false busybox echo hello; echo "exit $?"'
    )
    if result.last_line() == "exit 125" and "Permission denied" in result.err:
        return None
    if "hello" in result.out.split():
        return "with no-new-privileges=false the container ran: the filter still goes in first"
    return result.seen(f"the run ended with {result.last_line()!r}, not a refused filter")


def default_runs(program, _scene) -> str | None:
    result = program.run(f"{RUN} busybox echo hello")
    if result.code == 0 and result.last_line() == "hello":
        return None
    return result.seen("the default run (no_new_privs on) did not print hello")


FILTER_ORDER = Exercise(
    [
        Check(
            "ex4-filter-refused",
            "with the filter installed after capset, a run with no-new-privileges=false fails "
            "(EACCES)",
            filter_refused,
            (
                "seccomp(2) lets a process install a filter only if it has no_new_privs set or "
                "CAP_SYS_ADMIN in its effective set; after capset(2) the container's set has "
                "no SYS_ADMIN.",
                "In runtime/security.py, move the seccomp.install of before_user_switch (the "
                "case of no_new_privs off) into after_user_switch, after the ambient loop.",
                "Delete `if self.seccomp and not self.no_new_privileges: "
                "seccomp.install(self.seccomp)` from `before_user_switch` and add it to "
                "`after_user_switch`; put it back after.",
            ),
        ),
        Check(
            "ex4-default-runs",
            "the default run (no_new_privs on) still works",
            default_runs,
            (
                "With no_new_privs on, the filter goes in last, after prctl(PR_SET_NO_NEW_PRIVS): "
                "the move changes nothing for it (prctl(2), seccomp(2)).",
                "after_user_switch's own seccomp.install, under if self.no_new_privileges, "
                "stays as it is.",
                "Keep the lines under `after_user_switch` as they were; move only the two of "
                "`before_user_switch`.",
            ),
        ),
    ],
    module="runtime",
)

EXERCISES = {4: FILTER_ORDER}
