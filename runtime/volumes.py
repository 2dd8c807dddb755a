"""Named volumes: directories of the store that outlive the containers that mount them.

A container's writable layer goes with the container; what it writes to a *volume* stays,
for the next container to mount (``run -v NAME:/path``). Docker's ``local`` volume driver is
nothing more than a directory, ``<home>/volumes/<NAME>/_data``, bind-mounted into the
container like a host directory of ``-v /host/path:/path``; the difference is who owns it:
the store does, so ``mycontainer volume ls`` finds it, ``volume rm`` removes it, and no
host path has to be chosen. A name follows docker's rule, a container's too
(runtime.state.check_name).

- **Made on first use.** ``run -v NAME:/path`` creates a volume that does not exist yet, as
  ``volume create NAME`` does; naming one that exists is no error. A volume is built under
  a temporary name (``.new-*``: its ``_data`` and its ``volume.json``) and renamed into
  place in one rename(2): two runs creating the same volume at once both succeed, one of
  them renaming it in and the other finding it there, and a killed one leaves no half-made
  volume under its name, only a ``.new-*`` that ``volume prune`` removes.
- **Filled from the image.** A volume that is empty when a container mounts it first gets
  a copy of what the image has at that path, owners, modes and times kept, and the owner
  and mode of the image's directory itself (a database image's data directory belongs to
  its database's user): docker's rule, which ``-v NAME:/path:nocopy`` turns off. The copy
  is made in the container's mount namespace, where its root is assembled, just before the
  mount covers that path (runtime.mounts, the ``copyup`` option), and never follows a
  symbolic link: the image's, or one that a container sharing the volume swaps in.
- **Never removed while used.** A volume is in use while a container in the state root
  names its directory in its mounts, running or stopped. ``volume rm`` and ``volume prune``
  take the store's lock alone (image.StoreLock), which every ``run`` shares from before it
  creates its volumes until its container's state names them: a volume a container is about
  to mount is never removed in between. A volume is renamed away (``.removing-*``) before
  its tree is removed, so that an interrupted removal leaves no half-emptied volume.

Docker's documentation: https://docs.docker.com/engine/storage/volumes/
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time

from runtime.state import check_name, valid_name

DATA = "_data"  # the directory containers mount; beside it, volume.json
RECORD = "volume.json"
TEMPORARY = (".new-", ".removing-")  # prefixes of volumes being made, being removed


class VolumeError(ValueError):
    """A volume command failed; the message says what to do."""


def root() -> str:
    """The store's volumes: ``<home>/volumes`` (MYCONTAINER_HOME, runtime.image.home)."""
    from runtime import image

    return os.path.join(image.home(), "volumes")


def data_directory(name: str) -> str:
    """What a container of volume ``name`` mounts."""
    return os.path.join(root(), name, DATA)


class Volume:
    """A volume of the store; ``inspect()`` is docker's ``volume inspect`` object."""

    def __init__(self, name: str, created: str):
        self.name = name
        self.created = created  # RFC 3339, UTC

    @property
    def mountpoint(self) -> str:
        return data_directory(self.name)

    def inspect(self) -> dict:
        return {
            "CreatedAt": self.created,
            "Driver": "local",
            "Labels": {},
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": {},
            "Scope": "local",
        }


def create(name: str | None = None) -> Volume:
    """Volume ``name`` (a new random one if None), made if missing; see the docstring."""
    name = check_name(name, "volume") if name else os.urandom(32).hex()
    if os.path.exists(os.path.join(root(), name, RECORD)):
        return get(name)
    os.makedirs(root(), 0o700, exist_ok=True)
    staging = os.path.join(root(), f"{TEMPORARY[0]}{os.urandom(8).hex()}")
    os.mkdir(staging, 0o755)
    try:
        os.mkdir(os.path.join(staging, DATA), 0o755)
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with open(os.path.join(staging, RECORD), "x") as file:
            json.dump({"Name": name, "CreatedAt": created}, file)
        try:
            os.rename(staging, os.path.join(root(), name))
            staging = None
        except OSError as error:  # ENOTEMPTY, EEXIST: it exists, made by someone else
            if not os.path.isdir(os.path.join(root(), name)):
                raise VolumeError(f"cannot create volume {name}: {error.strerror}") from None
    finally:
        if staging:
            _remove(staging)
    return get(name)


def get(name: str) -> Volume:
    """Volume ``name``, or VolumeError."""
    if not valid_name(name):
        raise VolumeError(f"no such volume: {name}")
    try:
        with open(os.path.join(root(), name, RECORD)) as file:
            record = json.load(file)
    except FileNotFoundError:
        raise VolumeError(f"no such volume: {name} (see 'mycontainer volume ls')") from None
    except (OSError, ValueError) as error:
        raise VolumeError(f"volume {name}: cannot read its {RECORD}: {error}") from None
    return Volume(name, record.get("CreatedAt", ""))


def list_volumes() -> list[Volume]:
    """The volumes of the store, by name."""
    names = sorted(os.listdir(root())) if os.path.isdir(root()) else []
    return [get(name) for name in names if valid_name(name)]


def remove(name: str, users: dict[str, list[str]]) -> None:
    """Remove volume ``name`` and its data, unless a container mounts it: ``users`` maps
    the sources of the containers' mounts to their ids (runtime.container.mount_sources).
    The caller holds the store's lock alone (see the docstring)."""
    get(name)
    using = users.get(data_directory(name))
    if using:
        raise VolumeError(
            f"volume {name} is in use by container {using[0][:12]}: remove the container first"
        )
    away = os.path.join(root(), f"{TEMPORARY[1]}{os.urandom(8).hex()}")
    os.rename(os.path.join(root(), name), away)
    _remove(away)


def prune(users: dict[str, list[str]]) -> list[tuple[str, int]]:
    """Remove every volume no container mounts (``users``: as for remove()), and what
    interrupted volume commands left; return the (name, bytes on disk) of each volume
    removed. The caller holds the store's lock alone."""
    removed = []
    for volume in list_volumes():
        if not users.get(volume.mountpoint):
            size = disk_usage(volume.mountpoint)
            remove(volume.name, users)
            removed.append((volume.name, size))
    for name in os.listdir(root()) if os.path.isdir(root()) else []:
        if name.startswith(TEMPORARY):
            _remove(os.path.join(root(), name))
    return removed


def disk_usage(path: str) -> int:
    """The bytes the files under ``path`` take on disk (du(1)'s count, in bytes), each
    hard-linked file once; symbolic links and other filesystems' mounts are not entered."""
    seen, total = set(), 0
    for directory, names, files in os.walk(path):
        for name in [*names, *files]:
            info = os.lstat(os.path.join(directory, name))
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def copy_up(image_directory: str, data: str) -> None:
    """Fill volume directory ``data``, if empty, with a copy of directory
    ``image_directory``: the rootfs's at the mount's destination, as /proc/self/fd/N."""
    source = os.open(image_directory, READ_DIRECTORY)
    target = os.open(data, READ_DIRECTORY | os.O_NOFOLLOW)
    try:
        if os.listdir(target):
            return
        _copy_tree(source, target)
        info = os.fstat(source)
        os.fchown(target, info.st_uid, info.st_gid)
        os.fchmod(target, stat.S_IMODE(info.st_mode))
    finally:
        os.close(source)
        os.close(target)


READ_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _copy_tree(source: int, target: int) -> None:
    """Copy what directory ``source`` holds into directory ``target`` (descriptors), by
    names relative to them: symbolic links as links, devices and FIFOs as nodes (sockets
    are no files to copy), each with its owner, mode and times.

    A container already running on the volume (it was empty, and is shared) can swap what
    the copy has just made for a symbolic link to a host file, and the copy runs before
    pivot_root(2), where such a link leads into the host. So nothing here follows a link:
    files and directories get their owner, mode and times through the descriptor that
    made or opened them (:func:`_keep_attributes`), links and nodes by name without
    following one (lchown(2), utimensat(2) and fchmodat(2) with AT_SYMLINK_NOFOLLOW).
    """
    for entry in os.scandir(source):
        info, name = entry.stat(follow_symlinks=False), entry.name
        kind = stat.S_IFMT(info.st_mode)
        if kind == stat.S_IFDIR:
            os.mkdir(name, 0o700, dir_fd=target)
            inner = os.open(name, READ_DIRECTORY | os.O_NOFOLLOW, dir_fd=source)
            try:
                copy = os.open(name, READ_DIRECTORY | os.O_NOFOLLOW, dir_fd=target)
                try:
                    _copy_tree(inner, copy)
                    _keep_attributes(copy, info)
                finally:
                    os.close(copy)
            finally:
                os.close(inner)
            continue
        if kind == stat.S_IFREG:
            _copy_file(source, target, name, info)
            continue
        if kind == stat.S_IFLNK:
            os.symlink(os.readlink(name, dir_fd=source), name, dir_fd=target)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            os.mknod(name, info.st_mode, info.st_rdev, dir_fd=target)
        else:
            continue
        os.chown(name, info.st_uid, info.st_gid, dir_fd=target, follow_symlinks=False)
        if kind != stat.S_IFLNK:  # after chown, which clears set-user-ID bits
            _chmod_node(target, name, stat.S_IMODE(info.st_mode))
        times = (info.st_atime_ns, info.st_mtime_ns)
        os.utime(name, ns=times, dir_fd=target, follow_symlinks=False)


def _keep_attributes(fd: int, info: os.stat_result) -> None:
    """Give the file or directory open as ``fd`` the owner, mode and times of ``info``."""
    os.fchown(fd, info.st_uid, info.st_gid)
    os.fchmod(fd, stat.S_IMODE(info.st_mode))  # after chown, which clears set-user-ID bits
    os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def _chmod_node(directory: int, name: str, mode: int) -> None:
    """chmod a device or FIFO without following a link: a node cannot be opened without
    the side effects of opening it, so by name, with AT_SYMLINK_NOFOLLOW (glibc >= 2.32
    does it through an O_PATH descriptor). If a link stands there now, it fails."""
    try:
        os.chmod(name, mode, dir_fd=directory, follow_symlinks=False)
    except (ValueError, NotImplementedError):  # Python's words for EOPNOTSUPP here
        raise OSError(
            errno.EOPNOTSUPP, f"cannot set the mode of {name} without following a link"
        ) from None


def _copy_file(source: int, target: int, name: str, info: os.stat_result) -> None:
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    reading = os.open(name, os.O_RDONLY | os.O_NONBLOCK | flags, dir_fd=source)
    try:
        writing = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flags, 0o600, dir_fd=target)
        try:
            while os.sendfile(writing, reading, None, 1 << 30):
                pass
            _keep_attributes(writing, info)
        finally:
            os.close(writing)
    finally:
        os.close(reading)


def human_size(size: int) -> str:
    """``12288`` -> ``12.29kB``: docker's way of printing a size (decimal units, 4 digits)."""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    value = float(size)
    while value >= 1000 and len(units) > 1:
        value /= 1000
        units.pop(0)
    return f"{value:.4g}{units[0]}"


def _remove(path: str) -> None:
    from runtime import removal

    try:
        removal.remove_tree(path)
    except OSError as error:
        raise VolumeError(f"{error} (then run 'mycontainer volume prune')") from None
