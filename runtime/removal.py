"""Removing a directory tree that someone else built: a container's writable layer, a layer.

A container writes what it likes into its writable layer, and the runtime, as root, must
remove all of it afterwards. So removal treats the tree as hostile input, like ``rm -rf``
and more carefully than a recursive walk:

1. **Unmount first.** Whatever is mounted at or below the tree (``/proc/self/mountinfo``) is
   unmounted (umount2(2), ``MNT_DETACH``), deepest first. A bind mount of another directory
   of the same filesystem looks like any directory, and recursing into it would empty its
   source. What stays mounted is never entered, and is reported.
2. **Any depth, any path length.** The walk holds one directory descriptor and works with
   names relative to it (openat(2), unlinkat(2) through ``dir_fd``), so neither Python's
   recursion limit nor PATH_MAX (4096 bytes) applies. It climbs back up through ``..``,
   checking that it lands on the directory it came from.
3. **Never through a symbolic link, never into another filesystem.** Directories are opened
   with ``O_NOFOLLOW``; one whose device differs from the tree's is a mount point: reported.
4. **Immutable and append-only files** (chattr(1), ioctl_iflags(2)) cannot be unlinked, nor
   can anything in such a directory, even by root: their flags are cleared, then the
   removal is tried again.
5. **One line for what is left.** Failures do not stop the walk; at the end,
   :class:`RemovalError` names how many entries stayed and the first of them with its reason.

(Not shutil.rmtree: it recurses, and importing shutil costs every ``mycontainer run``
milliseconds.)
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys

from runtime.syscalls import MNT_DETACH, umount2

# ioctl_iflags(2): FS_IOC_GETFLAGS/SETFLAGS, _IOR/_IOW('f', 1/2, long) in the generic ioctl
# encoding that x86_64 and aarch64 share; the kernel reads and writes an int.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010
FS_APPEND_FL = 0x00000020
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RemovalError(OSError):
    """Part of a tree could not be removed; the message names the first part and why."""


def mounts_under(path: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The mount points at or below ``path`` in this mount namespace, deepest first.

    None where there is no /proc to tell (the layer unpacker's chroot, which mounts nothing):
    the walk still enters no other filesystem.
    """
    prefix = path.rstrip("/") + "/"
    found = []
    try:
        with open(mountinfo) as file:
            lines = file.readlines()
    except FileNotFoundError:
        return []
    for line in lines:
        # Field 5 is the mount point, with spaces and the like escaped in octal (proc(5)).
        point = _unescape(line.split(" ", 5)[4])
        if point == path or point.startswith(prefix):
            found.append(point)
    return sorted(found, key=lambda point: point.count("/"), reverse=True)


def remove_tree(path: str) -> None:
    """Remove the directory tree at ``path``, steps 1 to 5 of this module's docstring.

    A missing ``path`` is fine. Raises RemovalError if anything is left.
    """
    _Removal(os.path.abspath(path)).run()


class _Removal:
    """One removal: the walk's state, and what could not be removed (``left``)."""

    def __init__(self, path: str):
        self.path = path
        self.left: list[str] = []  # "path: reason" of each entry that stayed
        # One level per directory on the way down: (its inode, its name, the names left in it).
        self.levels: list[tuple[int, str, list[str]]] = []

    def run(self) -> None:
        still_mounted = self._unmount()
        try:
            fd = os.open(self.path, DIRECTORY_FLAGS)
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self._remove(None, self.path, directory=False)  # a file or a symbolic link
        else:
            try:
                fd = self._empty(fd, still_mounted)
            finally:
                os.close(fd)
            if not self.left:
                self._remove(None, self.path, directory=True)
        if self.left:
            more = f" (and {len(self.left) - 1} more)" if len(self.left) > 1 else ""
            raise RemovalError(f"could not remove all of {self.path}: {self.left[0]}{more}")

    def _unmount(self) -> set[tuple[int, int]]:
        """Step 1: unmount what is mounted at or below the tree; return (device, inode) of
        the mount points that stayed mounted, which the walk must not enter."""
        stayed = set()
        for point in mounts_under(self.path):
            try:
                umount2(point, MNT_DETACH)
            except OSError as error:
                self.left.append(f"{point}: still mounted ({error.strerror or error})")
                try:
                    info = os.stat(point)
                    stayed.add((info.st_dev, info.st_ino))
                except OSError:
                    pass
        return stayed

    def _empty(self, fd: int, still_mounted: set) -> int:
        """Steps 2 to 4: remove everything inside the directory open at ``fd`` (the tree).

        Returns the descriptor it ends on, the tree's again, for the caller to close.
        """
        top = os.fstat(fd)
        self.levels.append((top.st_ino, "", os.listdir(fd)))
        while True:
            _inode, name, names = self.levels[-1]
            if not names:  # this directory is empty (or holds what stayed): climb back up
                self.levels.pop()
                if not self.levels:
                    return fd
                fd = self._climb(fd, top.st_dev)
                self._remove(fd, name, directory=True)
                continue
            entry = names.pop()
            try:
                info = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(info.st_mode):
                self._remove(fd, entry, directory=False)
            elif info.st_dev != top.st_dev or (info.st_dev, info.st_ino) in still_mounted:
                self.left.append(f"{self._where(entry)}: a mount point, not entered")
            else:
                child = os.open(entry, DIRECTORY_FLAGS, dir_fd=fd)
                if os.fstat(child).st_ino != info.st_ino:  # replaced between stat and open
                    os.close(child)
                    raise RemovalError(f"{self._where(entry)} changed during its removal")
                os.close(fd)
                fd = child
                self.levels.append((info.st_ino, entry, os.listdir(fd)))

    def _climb(self, fd: int, device: int) -> int:
        """Open ``..`` of the directory at ``fd``; check it is the one we came down from."""
        parent = os.open("..", DIRECTORY_FLAGS, dir_fd=fd)
        info = os.fstat(parent)
        os.close(fd)
        if (info.st_ino, info.st_dev) != (self.levels[-1][0], device):
            os.close(parent)
            raise RemovalError(f"a directory under {self.path} moved during its removal")
        return parent

    def _remove(self, dir_fd: int | None, name: str, directory: bool) -> None:
        """rmdir or unlink ``name`` in ``dir_fd`` (a path when dir_fd is None); on EPERM,
        clear the immutable and append-only flags of it and its directory, and try again."""
        remove = os.rmdir if directory else os.unlink
        for attempt in (1, 2):
            try:
                remove(name, dir_fd=dir_fd)
                return
            except FileNotFoundError:
                return
            except OSError as error:
                if error.errno != errno.EPERM or attempt == 2:
                    if not (directory and error.errno == errno.ENOTEMPTY and self.left):
                        self.left.append(f"{self._where(name)}: {error.strerror or error}")
                    return
            _clear_flags(name, dir_fd)
            parent = os.open(os.path.dirname(name), DIRECTORY_FLAGS) if dir_fd is None else dir_fd
            try:
                _clear_flags_of(parent)
            finally:
                if dir_fd is None:
                    os.close(parent)

    def _where(self, name: str) -> str:
        """The whole path of ``name`` in the current directory, for reports only: joining
        the names of a deep tree at every entry would cost quadratic time."""
        if os.path.isabs(name):
            return name
        return os.path.join(self.path, *(level[1] for level in self.levels[1:]), name)


def _clear_flags(name: str, dir_fd: int | None) -> None:
    """Clear the immutable and append-only flags of a regular file or directory ``name``.

    Other kinds are left alone: opening a device node or a FIFO can have effects of its own.
    """
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            return
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except OSError:
        return
    try:
        _clear_flags_of(fd)
    finally:
        os.close(fd)


def _clear_flags_of(fd: int) -> None:
    """ioctl_iflags(2) on an open file: drop FS_IMMUTABLE_FL and FS_APPEND_FL if set."""
    try:
        flags = int.from_bytes(
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(4)), sys.byteorder, signed=True
        )
        if flags & (FS_IMMUTABLE_FL | FS_APPEND_FL):
            cleared = flags & ~(FS_IMMUTABLE_FL | FS_APPEND_FL)
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, cleared.to_bytes(4, sys.byteorder, signed=True))
    except OSError:
        pass  # a filesystem without these flags (tmpfs without them, procfs...)


def _unescape(text: str) -> str:
    r"""Undo mountinfo's octal escapes (``\040`` is a space)."""
    if "\\" not in text:
        return text
    return text.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")
