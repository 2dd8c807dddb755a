"""Step 3: a filesystem of its own, with mount and IPC namespaces and pivot_root.

Adds CLONE_NEWNS and CLONE_NEWIPC to step 2, and a root filesystem: inside its private mount
namespace the container mounts a /proc of its own PID namespace, a read-only /sys, a
minimal /dev and the /dev/mqueue of its IPC namespace into the rootfs, then pivot_root(2)s
into it and detaches the host's root.
Try: ``sudo .venv/bin/python -m steps.step3_mount --rootfs ROOTFS -- sh``, ROOTFS being
the busybox root filesystem, /var/lib/mycontainer/rootfs/busybox.
"""

from __future__ import annotations

import sys

from runtime import filesystem, namespaces
from steps import common, step2_pid

# workshop TODO: step 2's namespaces, a new mount and a new IPC one: mount_namespaces(7),
#   ipc_namespaces(7)
NAMESPACES = step2_pid.NAMESPACES | namespaces.MOUNT | namespaces.IPC
# workshop end
# docker's default mounts but its view of the cgroups, which step 4 adds.
MOUNTS = [entry for entry in filesystem.DEFAULT_MOUNTS if entry["type"] != "cgroup"]


def setup(hostname: str, rootfs: str) -> None:
    """Step 2's setup, then make the rootfs the container's "/"."""
    step2_pid.setup(hostname)
    # workshop TODO: make `rootfs` the new "/": mount MOUNTS in it (mount(2)), pivot_root(2)
    #   into it, detach the old root (umount2(2), MNT_DETACH)
    filesystem.enter_rootfs(rootfs, MOUNTS)
    # workshop end


def main(argv: list[str] | None = None) -> int:
    options = common.parse_args(__doc__, argv, rootfs=True)
    return common.run(NAMESPACES, lambda: setup(options.hostname, options.rootfs), options.command)


if __name__ == "__main__":
    sys.exit(main())
