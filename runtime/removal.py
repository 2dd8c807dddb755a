"""Removing a directory tree that someone else built: a container's writable layer, a layer.

A container writes what it likes into its writable layer, and the runtime, as root, must
remove all of it afterwards. So removal treats the tree as hostile input, like ``rm -rf``
and more carefully than a recursive walk:

1. **Unmount first.** Whatever is mounted at or below the tree (``/proc/self/mountinfo``,
   matched against the tree's real path) is unmounted, each topmost mount made private
   (``MS_REC | MS_PRIVATE``) before it is detached (umount2(2), ``MNT_DETACH``): on a host
   whose ``/`` is shared, detaching a recursive bind of, say, ``/dev`` would otherwise
   propagate and unmount the host's own ``/dev/pts``. A bind mount of another directory
   looks like any directory, and recursing into it would empty its source: what stays
   mounted is never entered, and is reported.
2. **Any depth, any path length.** The walk holds one directory descriptor and works with
   names relative to it (openat(2), unlinkat(2) through ``dir_fd``), so neither Python's
   recursion limit nor PATH_MAX (4096 bytes) applies. It climbs back up through ``..``,
   checking that it lands on the directory it came from.
3. **Never through a symbolic link, never into another mount.** Directories are opened with
   ``O_NOFOLLOW``; one on another mount (its device, or its mount id in
   ``/proc/self/fdinfo``, differs from the tree's) is reported, not entered.
4. **Immutable and append-only files** (chattr(1), ioctl_iflags(2)) cannot be unlinked, nor
   can anything in such a directory, even by root: their flags are cleared, then the
   removal is tried again.
5. **One line for what is left.** Failures do not stop the walk; at the end,
   :class:`RemovalError` names how many entries stayed and the first of them with its reason,
   control characters escaped (a name is the container's to choose).

(Not shutil.rmtree: it recurses, and importing shutil costs every ``mycontainer run``
milliseconds.)
"""

import errno
import fcntl
import os
import stat
import sys

from runtime.syscalls import MNT_DETACH, MS_PRIVATE, MS_REC, mount, umount2

# ioctl_iflags(2): FS_IOC_GETFLAGS/SETFLAGS, _IOR/_IOW('f', 1/2, long) in the generic ioctl
# encoding that x86_64 and aarch64 share; the kernel reads and writes an int.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010
FS_APPEND_FL = 0x00000020
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RemovalError(OSError):
    """Part of a tree could not be removed; the message names the first part and why."""


def mounts_under(path: str, mountinfo: str = "/proc/self/mountinfo") -> list[bytes]:
    """The mount points at or below ``path`` (its real path) in this mount namespace.

    Bytes, as the kernel has them: a mount point anywhere on the host may have a name that
    is not UTF-8. Nothing where there is no /proc to tell (the layer unpacker's chroot, which
    mounts nothing): the walk still enters no other filesystem.
    """
    target = os.fsencode(os.path.realpath(path))
    prefix = target.rstrip(b"/") + b"/"
    try:
        with open(mountinfo, "rb") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return []
    # Field 5 is the mount point, with spaces and the like escaped in octal (proc(5)).
    points = (_unescape(line.split(b" ", 5)[4]) for line in lines)
    return [point for point in points if point == target or point.startswith(prefix)]


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
        self.fd = -1  # the directory the walk is in
        # One level per directory on the way down: (its inode, its name, the names left in it).
        self.levels: list[tuple[int, str, list[str]]] = []

    def run(self) -> None:
        still_mounted = self._unmount()
        try:
            self.fd = os.open(self.path, DIRECTORY_FLAGS)
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self._remove(None, self.path, directory=False)  # a file or a symbolic link
        else:
            try:
                self._empty(still_mounted)
            finally:
                os.close(self.fd)
                self.fd = -1
            if not self.left:
                self._remove(None, self.path, directory=True)
        if self.left:
            more = f" (and {len(self.left) - 1} more)" if len(self.left) > 1 else ""
            raise RemovalError(f"could not remove all of {self.path}: {self.left[0]}{more}")

    def _unmount(self) -> set[tuple[int, int]]:
        """Step 1: unmount what is mounted at or below the tree; return (device, inode) of
        the mount points that stayed mounted, which the walk must not enter."""
        points = mounts_under(self.path)
        for point in points:
            if any(point.startswith(other.rstrip(b"/") + b"/") for other in points):
                continue  # below another one: detached with it
            try:
                mount(None, point, None, MS_REC | MS_PRIVATE)  # so that nothing propagates
                umount2(point, MNT_DETACH)
            except OSError:
                pass  # what stays mounted is read again below
        stayed = set()
        for point in mounts_under(self.path):
            self.left.append(f"{_printable(os.fsdecode(point))}: still mounted")
            try:
                info = os.stat(point)
                stayed.add((info.st_dev, info.st_ino))
            except OSError:
                pass
        return stayed

    def _empty(self, still_mounted: set) -> None:
        """Steps 2 to 4: remove everything inside the tree, whose directory is open at
        ``self.fd``; the walk ends there again."""
        top = os.fstat(self.fd)
        top_mount = _mount_id(self.fd)
        self.levels.append((top.st_ino, "", os.listdir(self.fd)))
        while True:
            _inode, name, names = self.levels[-1]
            if not names:  # this directory is empty (or holds what stayed): climb back up
                self.levels.pop()
                if not self.levels:
                    return
                if not self._climb(top.st_dev):
                    return  # removed under us, by another removal of the same tree
                self._remove(self.fd, name, directory=True)
                continue
            entry = names.pop()
            try:
                info = os.stat(entry, dir_fd=self.fd, follow_symlinks=False)
                if not stat.S_ISDIR(info.st_mode):
                    self._remove(self.fd, entry, directory=False)
                    continue
                if info.st_dev != top.st_dev or (info.st_dev, info.st_ino) in still_mounted:
                    self.left.append(f"{self._where(entry)}: a mount point, not entered")
                    continue
                child = os.open(entry, DIRECTORY_FLAGS, dir_fd=self.fd)
            except FileNotFoundError:
                continue  # gone meanwhile
            if os.fstat(child).st_ino != info.st_ino or _mount_id(child) != top_mount:
                os.close(child)  # a mount of the same filesystem, or replaced since stat
                self.left.append(f"{self._where(entry)}: a mount point, not entered")
                continue
            os.close(self.fd)
            self.fd = child
            self.levels.append((info.st_ino, entry, os.listdir(self.fd)))

    def _climb(self, device: int) -> bool:
        """Move ``self.fd`` to ``..``, checking it is the directory we came down from;
        False if that directory is gone."""
        try:
            parent = os.open("..", DIRECTORY_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        os.close(self.fd)
        self.fd = parent
        info = os.fstat(parent)
        if (info.st_ino, info.st_dev) != (self.levels[-1][0], device):
            raise RemovalError(f"a directory under {self.path} moved during its removal")
        return True

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
                        self.left.append(f"{self._where(name)}: {error.strerror}")
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
        if not os.path.isabs(name):
            name = os.path.join(self.path, *(level[1] for level in self.levels[1:]), name)
        return _printable(name)


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


def _mount_id(fd: int) -> int | None:
    """The id of the mount that the open file ``fd`` is on (proc(5), /proc/self/fdinfo);
    None without /proc. A bind mount of the same filesystem keeps the device number, not
    the mount id."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as file:
            for line in file:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


def _printable(text: str) -> str:
    """``text`` with control characters and undecodable bytes escaped, for a one-line report."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _unescape(field: bytes) -> bytes:
    r"""Undo mountinfo's octal escapes (``\040`` is a space) in a field, as bytes."""
    parts = field.split(b"\\")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:3]
        if len(code) == 3 and code.isdigit():
            out.append(bytes([int(code, 8) & 0xFF]) + part[3:])
        else:
            out.append(b"\\" + part)
    return b"".join(out)
