"""The ``mounts`` of an OCI config.json, attached inside the container's root, in order.

Each entry names a ``destination`` in the container, a ``type`` (proc, sysfs, tmpfs,
devpts, mqueue, cgroup, bind...), a ``source`` and ``options`` as mount(8) spells them
(runtime-spec config.md, "Mounts"; runc's libcontainer/specconv). Mounting one, in the
container's private mount namespace before pivot_root(2):

1. the options become mount(2) flags (``ro``, ``nosuid``, ``bind``...), recursive
   attributes (``rro``, ``rnosuid``...), propagation changes (``rshared``, ``private``...)
   and, for all else, the filesystem's data (``size=64m``, ``newinstance``);
2. the destination is resolved inside the rootfs (``rootpath.open_beneath``): an image's
   symbolic link aimed at the host's /etc leads to the image's /etc, and what is missing is
   created, a directory, or an empty file when a file is bind-mounted;
3. the filesystem is mounted on ``/proc/self/fd/N``, N the descriptor of that resolved
   destination, never on a path string that a link swapped in meanwhile could redirect
   (runc's CVE-2021-30465); a named volume's bind mount (option ``copyup``, mycontainer's
   own) first fills the volume, if empty, with what the rootfs has there (runtime.volumes);
4. a bind mount with flags is remounted (``MS_BIND | MS_REMOUNT``): the kernel ignores the
   flags of the bind itself. The source's own nosuid, nodev, noexec and ro stay unless an
   option clears them: a bind mount must not unlock what the source's mount locked.
5. the recursive attributes are set on the mount and every mount below it
   (mount_setattr(2), AT_RECURSIVE, Linux 5.12+), then the propagation changes are
   applied, in their order.

A ``cgroup`` mount shows the container's own groups, read-only as the options say: on
cgroup v2 one cgroup2 filesystem; on v1 a tmpfs holding one cgroup filesystem per
hierarchy, as runc mounts them. Inside a new cgroup namespace (cgroup_namespaces(7)) each
shows the container's group as its root; without one, the container's group is
bind-mounted over it, so that the host's other groups stay out of sight.

Man pages: https://man7.org/linux/man-pages/man2/mount.2.html,
https://man7.org/linux/man-pages/man2/mount_setattr.2.html,
https://man7.org/linux/man-pages/man8/mount.8.html,
https://man7.org/linux/man-pages/man7/mount_namespaces.7.html
"""

from __future__ import annotations

import errno
import os
import stat

from runtime import rootpath
from runtime.syscalls import (
    AT_EMPTY_PATH,
    AT_RECURSIVE,
    MOUNT_ATTR__ATIME,
    MOUNT_ATTR_NOATIME,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NODIRATIME,
    MOUNT_ATTR_NOEXEC,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_NOSYMFOLLOW,
    MOUNT_ATTR_RDONLY,
    MOUNT_ATTR_RELATIME,
    MOUNT_ATTR_STRICTATIME,
    MS_BIND,
    MS_DIRSYNC,
    MS_LAZYTIME,
    MS_MANDLOCK,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_NOSYMFOLLOW,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
    MS_SYNCHRONOUS,
    MS_UNBINDABLE,
    SyscallError,
    mount,
    mount_setattr,
)

# Option: (flags it sets, flags it clears), as mount(8) and runc read them.
FLAG_OPTIONS = {
    "defaults": (0, 0),
    "ro": (MS_RDONLY, 0),
    "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0),
    "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0),
    "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0),
    "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0),
    "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "remount": (MS_REMOUNT, 0),
    "mand": (MS_MANDLOCK, 0),
    "nomand": (0, MS_MANDLOCK),
    "atime": (0, MS_NOATIME),
    "noatime": (MS_NOATIME, 0),
    "diratime": (0, MS_NODIRATIME),
    "nodiratime": (MS_NODIRATIME, 0),
    "relatime": (MS_RELATIME, 0),
    "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0),
    "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0),
    "nolazytime": (0, MS_LAZYTIME),
    "symfollow": (0, MS_NOSYMFOLLOW),
    "nosymfollow": (MS_NOSYMFOLLOW, 0),
    "bind": (MS_BIND, 0),
    "rbind": (MS_BIND | MS_REC, 0),
}

# mycontainer's own option for a bind mount of a named volume: fill the volume, if empty,
# with what the rootfs has at the destination, as docker does (runtime.volumes.copy_up).
COPY_UP = "copyup"

# Propagation options (and linux.rootfsPropagation's values): mount(2) flags.
PROPAGATION = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}

# Recursive options, as runc and crun take them ("rro": read-only, every mount below too):
# (MOUNT_ATTR_* set, cleared), applied with mount_setattr(2) and AT_RECURSIVE (step 5).
RECURSIVE_OPTIONS = {
    "rro": (MOUNT_ATTR_RDONLY, 0),
    "rrw": (0, MOUNT_ATTR_RDONLY),
    "rnosuid": (MOUNT_ATTR_NOSUID, 0),
    "rsuid": (0, MOUNT_ATTR_NOSUID),
    "rnodev": (MOUNT_ATTR_NODEV, 0),
    "rdev": (0, MOUNT_ATTR_NODEV),
    "rnoexec": (MOUNT_ATTR_NOEXEC, 0),
    "rexec": (0, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (MOUNT_ATTR_NODIRATIME, 0),
    "rdiratime": (0, MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (MOUNT_ATTR_NOSYMFOLLOW, 0),
    "rsymfollow": (0, MOUNT_ATTR_NOSYMFOLLOW),
    # One atime choice replaces the others: clearing the mask, then setting one.
    "rrelatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rnoatime": (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
    "rstrictatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
    "ratime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),  # atime: the default, relatime
    "rnostrictatime": (MOUNT_ATTR_RELATIME, MOUNT_ATTR__ATIME),
    "rnorelatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
}

# statvfs(3) flags and the mount(2) flags they stand for.
_STATVFS_FLAGS = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
_ATIME = MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME


class MountError(OSError):
    """A mount of the config could not be made; the message names it and says why."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class Options:
    """A mount's ``options``, parsed: ``flags`` set, ``cleared`` (named by an option such as
    ``rw`` or ``dev``), ``propagation`` (flags, in order) and ``data`` (all other options,
    for the filesystem, comma-separated)."""

    def __init__(self, options=()) -> None:
        self.flags = self.cleared = self.recursive_set = self.recursive_clear = 0
        self.propagation: list[int] = []
        self.copy_up = False
        data = []
        for option in options:
            if option == COPY_UP:
                self.copy_up = True
            elif option in FLAG_OPTIONS:
                sets, clears = FLAG_OPTIONS[option]
                self.flags = (self.flags | sets) & ~clears
                self.cleared = (self.cleared | clears) & ~sets
            elif option in PROPAGATION:
                self.propagation.append(PROPAGATION[option])
            elif option in RECURSIVE_OPTIONS:
                sets, clears = RECURSIVE_OPTIONS[option]
                self.recursive_set = (self.recursive_set & ~clears) | sets
                self.recursive_clear |= clears  # the kernel clears first, then sets
            else:
                data.append(option)
        self.data = ",".join(data) or None


def apply(root: int, mounts) -> None:
    """Mount each entry of ``mounts`` (config.json's form) inside directory ``root`` (a
    descriptor of the rootfs), in order: this module's steps 1 to 5 for each."""
    for entry in mounts:
        try:
            mount_entry(root, entry)
        except MountError:
            raise
        except OSError as error:
            plain = not isinstance(error, (SyscallError, rootpath.PathError))
            reason = error.strerror if plain and error.strerror else str(error)
            destination = entry.get("destination")
            raise MountError(error.errno, f"cannot mount {destination}: {reason}") from None


def mount_entry(root: int, entry: dict) -> None:
    """Steps 1 to 5 of this module's docstring, for one entry of ``mounts``."""
    options = Options(entry.get("options") or ())
    kind = entry.get("type") or None
    source = entry.get("source") or kind
    destination = entry["destination"]
    if kind == "bind":  # a type of its own to docker and runc, though not to the kernel
        options.flags |= MS_BIND
        kind = None
    if options.flags & MS_BIND:
        if not os.path.exists(source):
            raise OSError(errno.ENOENT, f"its source {source} does not exist")
        create = "directory" if os.path.isdir(source) else "file"
        with _Target(root, destination, create) as target:
            if options.copy_up and create == "directory":
                from runtime import volumes

                volumes.copy_up(target, source)
            mount(source, target, None, options.flags & (MS_BIND | MS_REC))
        if options.flags & ~(MS_BIND | MS_REC | MS_REMOUNT):
            with _Target(root, destination) as target:
                flags = (options.flags & ~(MS_BIND | MS_REC)) | _locked(target, options)
                remount(target, flags, bind=True)
    elif kind == "cgroup":
        mount_cgroup(root, source, destination, options)
    else:
        with _Target(root, destination, "directory") as target:
            try:
                mount(source, target, kind, options.flags, options.data)
            except OSError as error:
                _in_user_namespace(error, root, destination, kind, options)
    if options.recursive_set or options.recursive_clear:
        target = rootpath.open_beneath(root, destination)
        try:
            flags = AT_EMPTY_PATH | AT_RECURSIVE
            mount_setattr(target, "", flags, options.recursive_set, options.recursive_clear)
        finally:
            os.close(target)
    for propagation in options.propagation:
        with _Target(root, destination) as target:
            mount(None, target, None, propagation)


def _in_user_namespace(
    error: OSError, root: int, destination: str, kind: str | None, options: Options
) -> None:
    """Mount what a user namespace's root may not mount as asked (runtime.userns), as
    runc does, or raise ``error``. A sysfs needs a network namespace the user namespace
    owns: without one, the host's /sys is bind-mounted, with the entry's flags. A devpts
    refuses ``gid=`` naming a group the namespace does not map: it goes without it (new
    terminals then get their opener's group)."""
    if kind == "sysfs" and error.errno == errno.EPERM:
        with _Target(root, destination) as target:
            mount("/sys", target, None, MS_BIND | MS_REC)
        with _Target(root, destination) as target:  # the bind mount now, not beneath it
            remount(target, options.flags | mount_flags(target), bind=True)
    elif kind == "devpts" and error.errno == errno.EINVAL and "gid=" in (options.data or ""):
        data = ",".join(o for o in options.data.split(",") if not o.startswith("gid="))
        with _Target(root, destination) as target:
            mount(kind, target, kind, options.flags, data)
    else:
        raise error


def remount(target: str, flags: int, bind: bool = False) -> None:
    """Change the flags of the mount at ``target``; with ``bind``, of that mount alone
    (MS_BIND | MS_REMOUNT), not of its filesystem's every mount."""
    mount(None, target, None, MS_REMOUNT | (MS_BIND if bind else 0) | flags)


def mount_cgroup(root: int, source: str, destination: str, options: Options) -> None:
    """The container's own groups at ``destination``: see this module's docstring."""
    hierarchies = _own_hierarchies()
    if None in hierarchies:  # cgroup v2 alone: one filesystem
        with _Target(root, destination, "directory") as target:
            try:
                mount(source, target, "cgroup2", options.flags, options.data)
            except OSError as error:  # EBUSY: on the host's, come with /sys (see above)
                if error.errno != errno.EBUSY:
                    raise
                mount("tmpfs", target, "tmpfs", options.flags, "size=4k,mode=555")
                mount(source, target, "cgroup2", options.flags, options.data)
        _show_only_own(root, destination, hierarchies[None], options.flags)
        return
    with _Target(root, destination, "directory") as target:  # read-only once filled
        mount("tmpfs", target, "tmpfs", options.flags & ~MS_RDONLY, "mode=755")
    for controllers, own in hierarchies.items():
        name = controllers.removeprefix("name=")
        subsystems = f"none,{controllers}" if name != controllers else controllers
        with _Target(root, f"{destination}/{name}", "directory") as target:
            mount(source, target, "cgroup", options.flags, subsystems)
        _show_only_own(root, f"{destination}/{name}", own, options.flags)
        if "," in name:  # cpu -> cpu,cpuacct, as hosts link them
            directory = rootpath.open_beneath(root, destination)
            try:
                for alias in name.split(","):
                    os.symlink(name, alias, dir_fd=directory)
            finally:
                os.close(directory)
    if options.flags & MS_RDONLY:
        with _Target(root, destination) as target:
            remount(target, options.flags)


def _own_hierarchies(proc_cgroup: str = "/proc/self/cgroup") -> dict:
    """This process's cgroup v1 hierarchies, controllers ("cpu,cpuacct", "name=systemd")
    to its group's path in each; empty on a cgroup v2 host but for its path at key None."""
    hierarchies, unified = {}, "/"
    with open(proc_cgroup) as file:
        for line in file:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            if number == "0":
                unified = path
            elif controllers:
                hierarchies[controllers] = path
    return hierarchies or {None: unified}


def _show_only_own(root: int, destination: str, own: str, flags: int) -> None:
    """Without a cgroup namespace, cover the hierarchy at ``destination`` with the
    container's own group ``own`` in it, so that the host's other groups stay hidden."""
    if own == "/":
        return
    with _Target(root, destination + own) as group, _Target(root, destination) as target:
        mount(group, target, None, MS_BIND)
    if flags & MS_RDONLY:
        with _Target(root, destination) as target:
            remount(target, flags & ~(MS_BIND | MS_REC | MS_REMOUNT), bind=True)


def mount_flags(target: str) -> int:
    """The flags of the mount at ``target`` (statvfs(3)) that a remount must restate:
    ro, nosuid, nodev, noexec and the atime flags."""
    info = os.statvfs(target)
    return sum(ms_flag for st_flag, ms_flag in _STATVFS_FLAGS if info.f_flag & st_flag)


def _locked(target: str, options: Options) -> int:
    """The flags of the source's mount that a bind remount keeps (step 4): those no
    option cleared, and its atime flags when no option names one."""
    flags = mount_flags(target) & ~options.cleared
    return flags & ~_ATIME if (options.flags | options.cleared) & _ATIME else flags


class _Target:
    """``with _Target(root, path, create) as target``: ``target`` is /proc/self/fd/N, N a
    descriptor of ``path`` resolved inside ``root`` (step 2), closed after the block."""

    def __init__(self, root: int, path: str, create: str | None = None) -> None:
        self.fd = rootpath.open_beneath(root, path, create)
        if create and stat.S_ISDIR(os.fstat(self.fd).st_mode) != (create == "directory"):
            os.close(self.fd)
            if create == "directory":
                reason = "is not a directory: it cannot be mounted on"
            else:
                reason = "is a directory: a file cannot be mounted on it"
            raise MountError(errno.ENOTDIR, f"the image's {path} {reason}")

    def __enter__(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc) -> None:
        os.close(self.fd)
