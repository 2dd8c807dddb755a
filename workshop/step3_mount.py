# Step 3, for you to write: the TODOs say what to do and which man page to read.
# (skeleton adcc565464f1, made from steps/step3_mount.py by python -m workshop.make)
# ruff: noqa: F401, F841 (what the TODOs need is imported; some of it is yet unused)
"""Step 3: a filesystem of its own, with mount and IPC namespaces and pivot_root.

Adds CLONE_NEWNS and CLONE_NEWIPC to step 2, and a root filesystem: inside its private mount
namespace the container mounts a /proc of its own PID namespace, a read-only /sys, a
minimal /dev and the /dev/mqueue of its IPC namespace into the rootfs, then pivot_root(2)s
into it and detaches the host's root.
Try: ``sudo .venv/bin/python -m workshop.step3_mount --rootfs ROOTFS -- sh``, ROOTFS being
the busybox root filesystem, /var/lib/mycontainer/rootfs/busybox.
"""

from __future__ import annotations

import sys

import workshop
from runtime import filesystem, namespaces
from steps import common

step2_pid = workshop.previous("step2_pid")  # yours, or the solution's

NAMESPACES = workshop.Todo(
    "TODO step 3: step 2's namespaces, a new mount and a new IPC one: mount_namespaces(7), "
    "ipc_namespaces(7)"
)
# docker's default mounts but its view of the cgroups, which step 4 adds.
MOUNTS = [entry for entry in filesystem.DEFAULT_MOUNTS if entry["type"] != "cgroup"]


def setup(hostname: str, rootfs: str) -> None:
    """Step 2's setup, then make the rootfs the container's "/"."""
    step2_pid.setup(hostname)
    raise NotImplementedError(
        'TODO step 3: make `rootfs` the new "/": mount MOUNTS in it (mount(2)), pivot_root(2) into '
        "it, detach the old root (umount2(2), MNT_DETACH)"
    )


def main(argv: list[str] | None = None) -> int:
    options = common.parse_args(__doc__, argv, rootfs=True)
    return common.run(NAMESPACES, lambda: setup(options.hostname, options.rootfs), options.command)


if __name__ == "__main__":
    sys.exit(main())
