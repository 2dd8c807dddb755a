"""User namespaces: the container's root is root inside, an ordinary user on the host.

A user namespace maps ranges of user and group IDs inside onto ranges outside
(user_namespaces(7)): with ``0 100000 65536`` in its uid_map, the container's uid 0 is the
host's uid 100000. Its processes hold every capability *inside*, over the namespaces it
owns (the mount, PID, network... namespaces created after it), and none over the host: a
file owned by host root is, to the container's root, a stranger's file.

How a container gets one (the order runc and crun use; the intermediate's side is in
runtime.process, ``_intermediate`` and ``_become_root``)::

    intermediate                                      runtime (host root)
    unshare(CLONE_NEWUSER), alone, first  ──"userns"──>  writes /proc/PID/uid_map, gid_map
    setresgid, setgroups, setresuid to 0  <──"mapped"──
    unshare the other namespaces: the new user namespace owns them

The runtime writes the maps, not the process itself: a process may map only its own IDs
into a namespace it made, while a writer holding CAP_SETUID and CAP_SETGID in the parent
namespace may map any range, and need not deny setgroups(2) first (so the container can
still set its supplementary groups). Each map is written once, in one write(2).

Man pages: https://man7.org/linux/man-pages/man7/user_namespaces.7.html,
https://man7.org/linux/man-pages/man2/setresuid.2.html
"""

from __future__ import annotations

import os
import stat


class UserNamespaceError(Exception):
    """The container's root could not be set up in its user namespace; says why."""


def id_map(mappings: list[dict]) -> bytes:
    """The text of a uid_map or gid_map for config.json's ``mappings``: one line per range,
    "ID-inside ID-outside length"."""
    return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in mappings).encode()


def host_id(container_id: int, mappings: list[dict]) -> int | None:
    """The host's ID for ``container_id`` under ``mappings``; None if it is not mapped."""
    for m in mappings:
        if 0 <= container_id - m["containerID"] < m["size"]:
            return m["hostID"] + container_id - m["containerID"]
    return None


def write_maps(pid: int, uid_mappings: list[dict], gid_mappings: list[dict]) -> None:
    """Map the IDs of process ``pid``'s new user namespace (from the parent namespace)."""
    for name, mappings in (("uid_map", uid_mappings), ("gid_map", gid_mappings)):
        path = f"/proc/{pid}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, id_map(mappings))
            finally:
                os.close(fd)
        except OSError as error:
            raise UserNamespaceError(f"cannot write {path}: {error.strerror}") from None


def check_reachable(rootfs: str, uid_mappings: list[dict], gid_mappings: list[dict]) -> None:
    """Raise UserNamespaceError unless the container's root can reach ``rootfs``.

    The container's setup runs as its root, which is an ordinary user to the host's files:
    it gets past a directory by its permission bits, as the owner, the group or anyone
    else, unless the directory's owner and group are both mapped into the namespace (then
    its capabilities apply, capabilities(7)). A 0700 directory of host root on the way
    (/tmp/pytest-of-root, a home) would stop setup at its first mount, with a bare EACCES;
    this says which directory, before anything is made. (ACLs are not read.)
    """
    uid, gid = host_id(0, uid_mappings), host_id(0, gid_mappings)
    path = "/"
    for name in os.path.realpath(rootfs).split("/"):  # "" first: the root
        path = os.path.join(path, name)
        info = os.stat(path)
        if _mapped(info.st_uid, uid_mappings) and _mapped(info.st_gid, gid_mappings):
            continue
        if info.st_uid == uid:
            search = info.st_mode & stat.S_IXUSR
        elif info.st_gid == gid:
            search = info.st_mode & stat.S_IXGRP
        else:
            search = info.st_mode & stat.S_IXOTH
        if not search:
            raise UserNamespaceError(
                f"the container's root (host uid {uid}) cannot reach its rootfs {rootfs}: "
                f"{path} is mode {stat.S_IMODE(info.st_mode):04o}, owner {info.st_uid}:"
                f"{info.st_gid}; move the bundle, or let others search it (chmod o+x)"
            )


def _mapped(host: int, mappings: list[dict]) -> bool:
    """Whether host ID ``host`` is in one of ``mappings``' ranges."""
    return any(0 <= host - m["hostID"] < m["size"] for m in mappings)
