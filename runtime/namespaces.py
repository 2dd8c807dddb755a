"""Namespaces: what a container sees of the machine.

A namespace wraps one global resource so that the processes inside get their own copy of it
(namespaces(7)). A container is, first of all, a process in a fresh set of them:

========  ================  ============================================================
kind      flag              what the container gets its own copy of
========  ================  ============================================================
uts       CLONE_NEWUTS      hostname (uts_namespaces(7))
pid       CLONE_NEWPID      process ids: its first process is PID 1 (pid_namespaces(7))
mnt       CLONE_NEWNS       the mount table (mount_namespaces(7))
ipc       CLONE_NEWIPC      System V IPC and POSIX message queues (ipc_namespaces(7))
net       CLONE_NEWNET      network interfaces, routes, ports (network_namespaces(7))
cgroup    CLONE_NEWCGROUP   the root of the cgroup tree it sees (cgroup_namespaces(7))
user      CLONE_NEWUSER     user and group IDs, and capabilities over the namespaces it owns
                            (user_namespaces(7); only when a bundle asks: runtime.userns)
========  ================  ============================================================

Man page: https://man7.org/linux/man-pages/man7/namespaces.7.html
"""

from __future__ import annotations

from runtime.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
    MS_PRIVATE,
    MS_REC,
    mount,
    sethostname,
    unshare,
)

# The namespaces every mycontainer container gets, in the order the steps add them.
UTS = CLONE_NEWUTS
PID = CLONE_NEWPID
MOUNT = CLONE_NEWNS
IPC = CLONE_NEWIPC
NET = CLONE_NEWNET
CGROUP = CLONE_NEWCGROUP
CONTAINER = UTS | PID | MOUNT | IPC | NET | CGROUP
USER = CLONE_NEWUSER  # a bundle's choice: it needs ID mappings (runtime.userns)

HOSTNAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def enter_new(kinds: int) -> None:
    """Move the calling process into new namespaces of ``kinds`` (unshare(2)), isolated at once.

    A new mount namespace starts as a *copy* of the caller's mount table, and the copy of a
    *shared* mount is a peer of the original: whatever is mounted or unmounted under it in one
    namespace happens in the other too (mount_namespaces(7), "Shared subtrees"). systemd makes
    every mount shared at boot, so on most machines a fresh mount namespace is not yet
    isolated at all. Its mounts are therefore made private (``MS_REC | MS_PRIVATE``) right
    here, before anything else runs in it: no mount the container makes (overlay, bind mounts,
    /proc...) can reach the host, whatever the host's propagation, and none of the host's
    later mounts reaches the container.
    """
    unshare(kinds)
    if kinds & MOUNT:
        mount(None, "/", None, MS_REC | MS_PRIVATE)


def check_hostname(name: str) -> str:
    """Return ``name`` if it is a valid host name label, else raise ValueError saying why.

    RFC 1123 section 2.1: letters, digits and hyphens, 1 to 63 of them, neither first nor last
    a hyphen.
    """
    valid = 0 < len(name) <= 63 and HOSTNAME_CHARACTERS.issuperset(name)
    if not valid or name.startswith("-") or name.endswith("-"):
        raise ValueError(
            "--hostname takes 1 to 63 letters, digits or hyphens, not starting or ending "
            f"with a hyphen (got {name!r})"
        )
    return name


def set_hostname(name: str) -> None:
    """Set the hostname of the UTS namespace this process is in (sethostname(2)).

    Only safe after ``unshare(CLONE_NEWUTS)``: before it, this renames the host.
    """
    sethostname(check_hostname(name))
