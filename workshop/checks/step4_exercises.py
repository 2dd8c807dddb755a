"""The checks of step 4's exercises (docs/step4-cgroups.md), ``invoke check 4 --exercise K``.

Exercise 5 (``--cpus``) is read where the kernel keeps it: the group of the container's
process, from its /proc/PID/cgroup (seen from the host, outside its cgroup namespace), and
there cpu.max on cgroup v2 or cpu.cfs_quota_us and cpu.cfs_period_us on v1 (cgroups(7)).
Only the files are checked, not the CPU time a busy loop gets: on a shared machine that is
a timing, which no checker can hold to "about 2 s".

Exercise 4 changes the runtime (Container.create): its checker runs ``mycontainer``,
``python -m runtime``, and passes while the join is late, as the exercise asks; put the
line back after.

Exercises 1, 3 and 6 run ``mycontainer`` and read the kernel's log or write a live group by
hand: nothing of the learner's to observe. Exercise 2 needs swap, which a checker would
have to add to the machine.
"""

from __future__ import annotations

import os
import shlex
import signal

from runtime import cgroups
from workshop.checks import sandbox, scenes
from workshop.checks.check import Check, Exercise

WAIT = 20  # seconds for the container to start


def cpu_files(pid: int) -> dict[str, str]:
    """The CPU quota files of the group process ``pid`` is in, by name."""
    layout = cgroups.detect()
    if layout.uses_v2:
        directory = layout.v2_mount + cgroups.own_v2_path(f"/proc/{pid}/cgroup")
        names = ["cpu.max"]
    else:
        directory = layout.v1_mounts["cpu"] + cgroups.own_v1_path("cpu", f"/proc/{pid}/cgroup")
        names = ["cpu.cfs_quota_us", "cpu.cfs_period_us"]
    files = {}
    for name in names:
        with open(os.path.join(directory, name)) as file:
            files[name] = file.read().strip()
    return files


def quota_written(program, rootfs) -> str | None:
    process = program.start(f"step --rootfs {shlex.quote(rootfs)} --cpus 0.5 -- sleep 300")
    try:
        pid = sandbox.descendant(process, "sleep", WAIT)
        if pid is None:
            process.wait(timeout=30)
            _, err = process.communicate()
            return sandbox.Result(1, "", err).seen("your step 4 did not run 'sleep 300'")
        files = cpu_files(pid)
        os.kill(pid, signal.SIGKILL)  # the container's end: the step removes its group
        process.communicate(timeout=sandbox.TIMEOUT)
    finally:
        if process.poll() is None:  # it hung: end what is left of it
            sandbox.stop(process)
    if list(files.values()) in (["50000 100000"], ["50000", "100000"]):
        return None
    shown = ", ".join(f"{name} {value!r}" for name, value in files.items())
    return f"with --cpus 0.5, the container's group has {shown}, not 50000 in 100000"


A_HARD_CAP = Exercise(
    [
        Check(
            "ex5-cpu-quota",
            "--cpus 0.5 writes a quota of 50000 in each period of 100000 in the container's group",
            quota_written,
            (
                "A CPU quota caps a group: it may run its quota of microseconds in each period, "
                "then waits for the next, even on an idle machine (cpu.max on cgroup v2, "
                "cpu.cfs_quota_us and cpu.cfs_period_us on v1: cgroups(7)).",
                "A --cpus option in add_limit_options, parsed by runtime.cgroups.parse_cpus; "
                "its value passed on to cgroups.docker_resources as the fourth argument, "
                "where step 4 makes its group.",
                'Write `parser.add_argument("--cpus", type=common.checked(cgroups.parse_cpus), '
                'help="e.g. 0.5")` and '
                "`group.create(cgroups.docker_resources(memory, cpu_weight, pids_limit, cpus))`.",
            ),
        )
    ],
    scene=scenes.rootfs_copy,
)


def late_join_seen(program, _scene) -> str | None:
    result = program.run("step run --rm --net none busybox cat /proc/self/cgroup")
    paths = [line.split(":", 2)[2] for line in result.out.splitlines() if line.count(":") >= 2]
    if result.code == 0 and any("mycontainer" in path for path in paths):
        return None
    if result.code == 0 and paths and set(paths) == {"/"}:
        return "the container sees its groups as /: the init still joins before it unshares"
    return result.seen("the container's /proc/self/cgroup could not be read")


A_LATE_JOIN = Exercise(
    [
        Check(
            "ex4-late-join-seen",
            "with the late join, the container's /proc/self/cgroup names mycontainer/<id>",
            late_join_seen,
            (
                "A cgroup namespace takes the group its creator is in as its root "
                "(cgroup_namespaces(7)): made before the init is moved, its root is the "
                "runtime's group, and the container's own group shows as a path below it.",
                "In Container.create (runtime/container.py), drop process.spawn's "
                "before_unshare=self.cgroup.join and, right after spawn returns, write the "
                "init's pid to cgroup.procs in each of self.cgroup.directories.",
                "Drop `before_unshare=self.cgroup.join,` and, after `process.spawn`, write "
                "`f.write(str(self._init.pid))` to each directory's cgroup.procs; put it back "
                "after.",
            ),
        )
    ],
    module="runtime",
)

EXERCISES = {4: A_LATE_JOIN, 5: A_HARD_CAP}
