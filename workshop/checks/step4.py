"""Step 4's checks: the memory limit kills a hog, the step says so with docker's 137, and
the container sees its cgroup as "/".

The hog is ``tail /dev/zero``: tail keeps the last lines, and /dev/zero has no newline, so
it grows until something stops it. ``ulimit -v`` bounds it (RLIMIT_AS, getrlimit(2)): a step
without a limit costs the machine 96 MiB for a moment, never all its memory, and tail then
exits 1, "out of memory", instead of 137, killed. One process in the group, and the shell
that reports its status: with a pipe, a second OOM kill could strike the reader too."""

from __future__ import annotations

import shlex

from workshop.checks import scenes
from workshop.checks.check import Check

scene = scenes.rootfs_copy
HOG = "sh -c 'ulimit -v 98304; tail /dev/zero; echo tail: $?'"
KILLED = "tail: 137"  # 128 + SIGKILL


def step(rootfs: str, command: str) -> str:
    return f"step --rootfs {shlex.quote(rootfs)} --memory 32m -- {command}"


def hog_killed(program, rootfs) -> str | None:
    return killed(program.run(step(rootfs, HOG)), "under --memory 32m, and was not killed")


def killed(result, unlimited: str) -> str | None:
    """None if the hog was killed; else what was seen, ``unlimited`` if nothing stopped it."""
    status = result.out.strip().splitlines()[:1]
    if status == [KILLED]:
        return None
    if status == ["tail: 1"]:
        return f"tail ran out of its own 96 MiB {unlimited}"
    return result.seen(f"the hog's status was not seen (it printed {result.out.strip()!r})")


def oom_reported(program, rootfs) -> str | None:
    result = program.run(f"{step(rootfs, HOG)} >/dev/null; echo $?")  # the shell exits 0
    if result.last_line() == "137":
        return None
    return result.seen(f"the step exited {result.last_line() or '?'}, not 137")


def cgroup_root(program, rootfs) -> str | None:
    result = program.run(f"step --rootfs {shlex.quote(rootfs)} -- cat /proc/self/cgroup")
    paths = {line.split(":", 2)[2] for line in result.out.splitlines() if line.count(":") >= 2}
    if result.code == 0 and paths == {"/"}:
        return None
    if not paths:
        return result.seen("the container's /proc/self/cgroup could not be read")
    return f"the container sees where the host put it: {sorted(paths - {'/'})[0]}"


CHECKS = [
    Check(
        "memory-limit",
        "a process that goes over --memory 32m is killed",
        hog_killed,
        (
            "A control group limits what its processes use together; over its memory limit, "
            "the kernel's OOM killer kills one of them (cgroups(7); memory.max on cgroup v2, "
            "memory.limit_in_bytes on v1). The container's processes must be born in a group "
            "that has the limit.",
            "In cgroup(), runtime.cgroups.Cgroup(layout, name).create(resources) makes the "
            "group with the limits of cgroups.docker_resources(memory, cpu_weight, pids_limit); "
            "in run(), its join(), run in the child before it unshares (common.run's "
            "before_unshare), puts the container in it.",
            "In cgroup(), write "
            "`group.create(cgroups.docker_resources(memory, cpu_weight, pids_limit))`; in run(), "
            "`code = common.run(flags, setup_inside, command, before_unshare=group.join, "
            "ready=ready)`.",
        ),
    ),
    Check(
        "oom-reported",
        "after an OOM kill inside, the step says so and exits 137, as docker does",
        oom_reported,
        (
            "The command may survive an OOM kill of one of its processes and exit 0; a user "
            "still wants to know. The group counts the kills (memory.events on cgroup v2, "
            "memory.oom_control on v1), and docker then exits 137, 128 + SIGKILL.",
            "After common.run returns, group.oom_kills() is the number of processes the OOM "
            "killer killed in the group: if it is not 0, say so and return 137.",
            "In run(), after common.run, write `if group.oom_kills():`, print that the OOM "
            "killer struck, and `return EXIT_OOM` (137).",
        ),
    ),
    Check(
        "cgroup-root",
        'the container sees its own cgroup as "/"',
        cgroup_root,
        (
            'A cgroup namespace shows its creator\'s group as the root, "/": the container '
            "does not see where on the host it was put (cgroup_namespaces(7)).",
            "CLONE_NEWCGROUP (runtime.namespaces.CGROUP) among the step's NAMESPACES, "
            "unshared after the child joined the group.",
            "At the top of the step, write "
            "`NAMESPACES = step3_mount.NAMESPACES | namespaces.CGROUP`.",
        ),
    ),
]
