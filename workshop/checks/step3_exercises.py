"""The checks of step 3's exercises (docs/step3-mount.md), ``invoke check 3 --exercise K``.

Exercises 1, 2, 3 and 5 break the step as they ask (a line of runtime/ or of step 3), and
pass while it is broken so, seen as the chapter's solution sees it: the mounts that leak to
the sandbox's shared "/", the step's exit status, the mount table of the container's
namespace (proc(5) mountinfo, entered with nsenter(1)), the segments of
/proc/sysvipc/shm. Put the line back after: ``invoke check 3`` passes again.

Exercise 4 needs ``mycontainer run``, not the learner's code, to differ, and exercise 6
attaches a loop device, which belongs to the whole machine: no checker for either.
"""

from __future__ import annotations

import shlex
import subprocess

from workshop.checks import sandbox, scenes
from workshop.checks.check import Check, Exercise

WAIT = 20  # seconds for the container to start


def step(rootfs: str, command: str) -> str:
    return f'step --rootfs {shlex.quote(rootfs)} -- {command}; echo "exit $?"'


def leaked(program, rootfs) -> str | None:
    result = program.run(f"{step(rootfs, 'true')}; grep -cF ' {rootfs}' /proc/self/mounts")
    count = result.last_line()
    if count.isdigit() and int(count) > 0:
        return None
    return result.seen("no mount of the step reached the (shared) host")


def refused(program, rootfs) -> str | None:
    result = program.run(step(rootfs, "true"))
    lines = result.out.split("\n")
    if "exit 125" in lines and "pivot_root" in result.err:
        return None
    status = [line for line in lines if line.startswith("exit ")]
    return result.seen(
        f"the step ended with {status[-1] if status else '?'}, not a refused pivot_root"
    )


PROPAGATION = Exercise(
    [
        Check(
            "ex1-mounts-leak",
            "without the line that makes the new namespace private, the step's mounts reach "
            "the host (the checker's throw-away one, its / shared as systemd makes it)",
            leaked,
            (
                "A new mount namespace starts as a copy whose shared mounts are peers of the "
                "host's: a mount under them happens on both sides (mount_namespaces(7), "
                '"Shared subtrees"). runtime.namespaces.enter_new makes them private first.',
                "In runtime/namespaces.py, enter_new: the mount(2) call with MS_REC | "
                'MS_PRIVATE on "/" right after unshare. Replace it with pass for the '
                "exercise.",
                'In enter_new, replace `mount(None, "/", ...)` with `pass`; put it back after '
                "(`git checkout runtime/namespaces.py`).",
            ),
        ),
        Check(
            "ex1-pivot-refused",
            "pivot_root then refuses: the step exits 125",
            refused,
            (
                "pivot_root(2) refuses a new root whose parent mount is shared (EINVAL), so "
                "that a pivot never propagates to another namespace.",
                "With the namespace's mounts still shared, filesystem.enter_rootfs's "
                "pivot_into fails, and the step reports it with exit status 125.",
                'In enter_new, replace `mount(None, "/", ...)` with `pass`.',
            ),
        ),
    ],
    scene=scenes.rootfs_copy,
)


def none_leaked(program, rootfs) -> str | None:
    result = program.run(f"{step(rootfs, 'true')}; grep -cF ' {rootfs}' /proc/self/mounts")
    if result.last_line() == "0":
        return None
    return f"{result.last_line()} mounts of the step reached the host: is enter_new's line back?"


NO_BIND_MOUNT = Exercise(
    [
        Check(
            "ex2-pivot-refused",
            "without the bind mount of the rootfs onto itself, pivot_root fails: exit 125",
            refused,
            (
                "pivot_root(2): new_root must be a mount point; a path that is not one can be "
                "made one by bind mounting it onto itself.",
                "In runtime/filesystem.py, enter_rootfs begins with the bind mount of the "
                "rootfs onto itself (MS_BIND | MS_REC): replace it with pass for the exercise.",
                "In enter_rootfs, replace `mount(rootfs, rootfs, None, MS_BIND | MS_REC)` with "
                "`pass`; put it back after.",
            ),
        ),
        Check(
            "ex2-nothing-leaked",
            "the mounts made before the failed pivot stay in the container's namespace",
            none_leaked,
            (
                "The namespace is private (runtime.namespaces.enter_new): a failed pivot "
                "leaves its mounts in a namespace that dies with the container "
                "(mount_namespaces(7)).",
                'Only the bind mount goes: enter_new\'s mount(2) of "/" with MS_REC | '
                "MS_PRIVATE stays.",
                "Keep enter_new as it is; replace only "
                "`mount(rootfs, rootfs, None, MS_BIND | MS_REC)` with `pass`.",
            ),
        ),
    ],
    scene=scenes.rootfs_copy,
)


def namespace_holds_more(program, rootfs) -> str | None:
    process = program.start(f"step --rootfs {shlex.quote(rootfs)} -- sleep 300")
    try:
        pid = sandbox.descendant(process, "sleep", WAIT)
        if pid is None:
            process.wait(timeout=5)
            _, err = process.communicate()
            return sandbox.Result(1, "", err).seen("your step 3 did not run 'sleep 300'")
        with open(f"/proc/{pid}/mountinfo") as file:
            seen = len(file.read().splitlines())
        inside = subprocess.run(
            ["nsenter", "--mount", "--pid", "--target", str(pid), "sh", "-c",
             "wc -l < /proc/self/mountinfo"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()  # fmt: skip
    finally:
        sandbox.stop(process)
    if not inside.isdigit():
        return "nsenter could not count the mounts of the container's namespace"
    if int(inside) > seen:
        return None
    return f"the sleep's namespace holds {inside} mounts, the {seen} it sees: pivot_root still"


CHROOT_INSTEAD = Exercise(
    [
        Check(
            "ex3-host-mounts-kept",
            "with chroot, the container's namespace still holds the host's mounts, out of sight",
            namespace_holds_more,
            (
                "chroot(2) changes where path resolution starts, nothing else: the host's "
                "mounts stay in the namespace, and /proc/PID/mountinfo lists only those below "
                "the process's root. pivot_root(2) and the detach remove them.",
                "In runtime/filesystem.py, enter_rootfs: replace the call to pivot_into with "
                'os.chroot(rootfs) and os.chdir("/"); count with nsenter --mount --pid.',
                "In enter_rootfs, replace `pivot_into(rootfs)` with os.chroot(rootfs) and "
                'os.chdir("/"); put it back after.',
            ),
        )
    ],
    scene=scenes.rootfs_copy,
)


def segment_seen(program, rootfs) -> str | None:
    inner = (
        "ipcmk -M 4096 >/dev/null && "
        f'"$WORKSHOP_PYTHON" -m "$WORKSHOP_MODULE" --rootfs {shlex.quote(rootfs)} '
        "-- cat /proc/sysvipc/shm"
    )
    result = program.run(f"unshare --ipc sh -c {shlex.quote(inner)}")
    rows = [line.split() for line in result.out.splitlines()[1:]]
    if result.code == 0 and any(len(row) > 3 and row[3] == "4096" for row in rows):
        return None
    if result.code == 0:
        return "the step's /proc/sysvipc/shm lists no segment: it has an IPC namespace of its own"
    return result.seen("the step's /proc/sysvipc/shm could not be read")


IPC = Exercise(
    [
        Check(
            "ex5-segment-seen",
            "without namespaces.IPC, the container sees the host's shared memory segment "
            "(the checker's, in an IPC namespace of its own)",
            segment_seen,
            (
                "System V IPC objects belong to an IPC namespace; /proc/sysvipc shows the "
                "reader's, whatever /proc it reads (ipc_namespaces(7)). Without CLONE_NEWIPC, "
                "the container shares the host's.",
                "Remove runtime.namespaces.IPC from your step 3's NAMESPACES for the "
                "exercise: the container then lists the segment the checker made outside.",
                "Write your step 3's NAMESPACES without `| namespaces.IPC`; put it back after.",
            ),
        )
    ],
    scene=scenes.rootfs_copy,
)

EXERCISES = {1: PROPAGATION, 2: NO_BIND_MOUNT, 3: CHROOT_INSTEAD, 5: IPC}
