"""Step 3's checks: "/" is the rootfs, the host's root is gone, /proc is the container's,
and no mount is left behind."""

from __future__ import annotations

import shlex

from workshop.checks import scenes
from workshop.checks.check import Check

scene = scenes.rootfs_copy
# What the container's /proc/mounts lists: its root and docker's default mounts, no more.
MOUNT_POINTS = {"/", "/dev", "/dev/mqueue", "/dev/pts", "/dev/shm", "/proc", "/sys"}


def step(rootfs: str, command: str) -> str:
    return f"step --rootfs {shlex.quote(rootfs)} -- {command}"


def new_root(program, rootfs) -> str | None:
    result = program.run(step(rootfs, f"cat /{scenes.MARKER}"))
    if result.code == 0 and result.last_line() == "the rootfs of the check":
        return None
    return result.seen(f"/{scenes.MARKER}, a file only the rootfs has, was not found inside")


def old_root_gone(program, rootfs) -> str | None:
    result = program.run(step(rootfs, "cat /proc/mounts"))
    seen = {line.split()[1] for line in result.out.splitlines() if len(line.split()) > 2}
    if result.code == 0 and "/" in seen and seen <= MOUNT_POINTS:
        return None
    if result.code != 0 or not seen:
        return result.seen("the container's /proc/mounts could not be read")
    extra = sorted(seen - MOUNT_POINTS)
    shown = ", ".join(extra[:4]) + (f" and {len(extra) - 4} more" if len(extra) > 4 else "")
    return f"the host's mounts are still there inside: {shown}"


def own_proc(program, rootfs) -> str | None:
    result = program.run(step(rootfs, "sh -c 'ls /proc | grep \"^[0-9]\"'"))
    pids = [int(word) for word in result.out.split() if word.isdigit()]
    if result.code == 0 and 1 in pids and max(pids) < 10:
        return None
    if not pids:
        return result.seen("no process was listed in the container's /proc")
    return result.seen(f"the container's /proc lists {len(pids)} processes, the host's")


def own_ipc(program, rootfs) -> str | None:
    result = program.run(
        f"readlink /proc/self/ns/ipc; {step(rootfs, 'readlink /proc/self/ns/ipc')}"
    )
    seen = result.out.split()
    if result.code == 0 and len(seen) == 2 and seen[0] != seen[1]:
        return None
    if result.code == 0 and len(seen) == 2:
        return (
            "the container shares the host's IPC namespace: its message queues, its shared memory"
        )
    return result.seen("the container's IPC namespace could not be read")


def nothing_left_mounted(program, rootfs) -> str | None:
    script = f"{step(rootfs, 'true')}; grep -F ' {rootfs}' /proc/self/mounts"
    result = program.run(script)
    left = [line.split()[1] for line in result.out.splitlines() if len(line.split()) > 2]
    if not left:
        return None
    return result.seen(f"after the step, {len(left)} mounts stayed on the host, {left[0]} first")


CHECKS = [
    Check(
        "new-root",
        '"/" inside is the rootfs given with --rootfs',
        new_root,
        (
            'A mount namespace of its own lets the container change what "/" is without '
            "changing the host's: its root becomes the rootfs directory "
            "(mount_namespaces(7), pivot_root(2)).",
            "runtime.filesystem.enter_rootfs(rootfs, mounts) does it, in setup(): it "
            "bind-mounts the rootfs on itself, mounts /proc, /sys and /dev in it, then "
            "pivot_root(2)s into it.",
            "In setup(hostname, rootfs), after step 2's setup, write "
            "`filesystem.enter_rootfs(rootfs, MOUNTS)`.",
        ),
    ),
    Check(
        "old-root-gone",
        "the host's root is gone: the container sees only its own mounts",
        old_root_gone,
        (
            'chroot(2) changes "/" for path lookups only: the host\'s mounts stay in the '
            "namespace, a way out. pivot_root(2) puts the old root aside, and a lazy unmount "
            "removes it (pivot_root(2), umount2(2)).",
            'runtime.filesystem.pivot_into(rootfs): chdir(rootfs), pivot_root(".", "."), '
            'umount2(".", MNT_DETACH), chdir("/"); enter_rootfs calls it after the mounts.',
            "In setup(hostname, rootfs), write `filesystem.enter_rootfs(rootfs, MOUNTS)` "
            "(not a chroot).",
        ),
    ),
    Check(
        "own-proc",
        "/proc inside lists the container's processes only",
        own_proc,
        (
            "ps and top read /proc, and a proc filesystem shows the processes of the PID "
            "namespace that mounted it (proc(5), pid_namespaces(7)): the container needs a "
            "/proc of its own, mounted from inside its PID namespace.",
            "MOUNTS, docker's default mounts, has a proc mount at /proc; "
            "filesystem.enter_rootfs(rootfs, MOUNTS) mounts them in the rootfs.",
            "In setup(hostname, rootfs), write `filesystem.enter_rootfs(rootfs, MOUNTS)`, with "
            "MOUNTS as the step defines it.",
        ),
    ),
    Check(
        "own-ipc",
        "the container has IPC of its own: message queues, shared memory, semaphores",
        own_ipc,
        (
            "System V IPC objects and POSIX message queues belong to an IPC namespace: in the "
            "host's, the container could read and write the host's shared memory and queues "
            "(ipc_namespaces(7)); its /dev/mqueue mount shows its own namespace's queues.",
            "CLONE_NEWIPC (runtime.namespaces.IPC) among the step's NAMESPACES, with the mount "
            "namespace: unshare(2) makes both.",
            "At the top of the step, write "
            "`NAMESPACES = step2_pid.NAMESPACES | namespaces.MOUNT | namespaces.IPC`.",
        ),
    ),
    Check(
        "nothing-left-mounted",
        "no mount is left on the host afterwards",
        nothing_left_mounted,
        (
            "Mounts made in a mount namespace of the container's own end with it; made in the "
            'host\'s, they stay, and where "/" is shared (systemd) they spread '
            "(mount_namespaces(7)).",
            "CLONE_NEWNS (runtime.namespaces.MOUNT) among the step's NAMESPACES gives the "
            "container its own; CLONE_NEWIPC (namespaces.IPC) its own /dev/mqueue.",
            "At the top of the step, write "
            "`NAMESPACES = step2_pid.NAMESPACES | namespaces.MOUNT | namespaces.IPC`.",
        ),
    ),
]
