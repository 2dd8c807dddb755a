"""Paths an image supplies, resolved inside the container's root and nowhere else.

Before the container's program runs, the runtime acts on paths the image chose: it makes
and enters the ``WorkingDir``, and reads /etc/passwd and /etc/group to find the ``USER``.
Resolved the ordinary way, such a path can lead out of the root: through /proc's *magic
links* (/proc/self/fd/N is whatever descriptor N is, a host directory if one leaked in:
CVE-2024-21626), or through a symbolic link of the image aimed outside.

openat2(2) (Linux 5.6+) resolves a path as if the directory it starts from were "/"
(``RESOLVE_IN_ROOT``: "..", "/" and absolute links stay inside) and refuses magic links
(``RESOLVE_NO_MAGICLINKS``). Where it is missing, paths are walked one component at a time
without following any symbolic link (openat(2) with O_NOFOLLOW): that refuses more, never
less. Files are opened with O_NONBLOCK (an image's FIFO must not hang the runtime), must be
regular files on the image's own filesystem (a link to /proc/kmsg names a "regular" file
whose reading, with the runtime's capabilities, would drain the host's kernel log), and are
read up to a bound.

Man pages: https://man7.org/linux/man-pages/man2/openat2.2.html,
https://man7.org/linux/man-pages/man7/path_resolution.7.html
"""

from __future__ import annotations

import errno
import os
import stat

from runtime.syscalls import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, openat2

DIRECTORY = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC  # a symbolic link opens as itself
MAX_FILE_SIZE = 4 << 20  # bytes: /etc/passwd of a large image is a few hundred kB
MAX_SYMLINKS = 40  # links followed in one resolution, as the kernel allows (path_resolution(7))

_openat2_missing = False  # ENOSYS once: the kernel predates openat2


class PathError(OSError):
    """An image-supplied path leads outside the root, or to something it must not be."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def open_directory(path: str, create: bool = False) -> int:
    """An O_PATH descriptor of directory ``path`` in the root ("/"); with ``create``, the
    missing components are made (mode 0755, as docker makes a WorkingDir)."""
    names = [name for name in path.split("/") if name not in ("", ".")]
    root = os.open("/", DIRECTORY)
    fd = os.dup(root)
    try:
        for depth in range(len(names)):
            try:
                following = _open(root, fd, names[: depth + 1], DIRECTORY)
            except OSError as error:  # openat2's errors are OSError, never FileNotFoundError
                if error.errno != errno.ENOENT or not create or names[depth] == "..":
                    raise
                os.mkdir(names[depth], 0o755, dir_fd=fd)
                following = _open(root, fd, names[: depth + 1], DIRECTORY)
            os.close(fd)
            fd = following
    except OSError as error:
        os.close(fd)
        raise _refusal(path, error) from None
    finally:
        os.close(root)
    return fd


def read_file(path: str, limit: int = MAX_FILE_SIZE) -> bytes | None:
    """The contents of regular file ``path`` in the root ("/"), or None if it is missing.

    It is first opened with O_PATH, which opens nothing: only a regular file of the root's
    filesystem is then opened for reading (opening a device can act, a FIFO can block).
    """
    names = [name for name in path.split("/") if name not in ("", ".")]
    root = os.open("/", DIRECTORY)
    parent = fd = -1
    try:
        parent = open_directory("/".join(names[:-1]))
        found = _open(root, parent, names, os.O_PATH | os.O_CLOEXEC)
        info = os.fstat(found)
        os.close(found)
        if not stat.S_ISREG(info.st_mode):
            raise PathError(errno.EINVAL, f"refusing {path}: it is not a regular file")
        if info.st_dev != os.fstat(root).st_dev:  # /proc/kmsg is "regular", and reading it acts
            raise PathError(errno.EXDEV, f"refusing {path}: it is not a file of the image")
        fd = _open(root, parent, names, READ)
        data = os.read(fd, limit + 1)
        while len(data) <= limit:
            more = os.read(fd, limit + 1 - len(data))
            if not more:
                return data
            data += more
        raise PathError(errno.EFBIG, f"refusing {path}: it is larger than {limit >> 20} MiB")
    except OSError as error:
        if error.errno == errno.ENOENT:
            return None
        raise _refusal(path, error) from None
    finally:
        for opened in (root, parent, fd):
            if opened != -1:
                os.close(opened)


def open_beneath(root: int, path: str, create: str | None = None) -> int:
    """An O_PATH descriptor of ``path`` resolved inside directory ``root`` (a descriptor).

    Symbolic links are followed, but as ``RESOLVE_IN_ROOT`` would: "/", ".." and absolute
    links stop at ``root``, so a link of the image aimed at the host's /etc lands in the
    image's /etc. The walk opens one name at a time, relative to the descriptor of the
    directory before it, with O_NOFOLLOW: no path string is looked up again later, so a
    link swapped in meanwhile cannot redirect the result (runc's CVE-2021-30465). With
    ``create`` ("directory" or "file"), what is missing is made: directories (0755) on the
    way, and the last name as ``create`` says (an empty file: 0644), even behind a dangling
    link. Unlike openat2(2), this needs no recent kernel, and it can create; so openat2 is
    tried first, in one call (refusing /proc's magic links, which lead out of any root), and
    the walk only does what it cannot: make what is missing, follow a magic link as the text
    it reads, or stand in for it on kernels before 5.6.
    """
    global _openat2_missing
    if not _openat2_missing:
        try:
            resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
            return openat2(root, path, os.O_PATH | os.O_CLOEXEC, resolve)
        except OSError as error:
            if error.errno == errno.ENOSYS:
                _openat2_missing = True
            elif error.errno == errno.ELOOP:
                pass  # a magic link of /proc, or too many links: the walk says which
            elif error.errno != errno.ENOENT or create is None:
                reason = os.strerror(error.errno)
                raise PathError(error.errno, f"{path}: {reason[0].lower()}{reason[1:]}") from None
    names = [name for name in reversed(path.split("/")) if name not in ("", ".")]
    chain = [os.dup(root)]  # the directories walked through, from the root down
    links = 0
    try:
        while names:
            name = names.pop()
            if name == "..":
                if len(chain) > 1:
                    os.close(chain.pop())
                continue
            fd = _open_or_create(chain[-1], name, create and ("directory" if names else create))
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links")
                target = os.readlink(name, dir_fd=chain[-1])
                if target.startswith("/"):
                    while len(chain) > 1:
                        os.close(chain.pop())
                names.extend(part for part in reversed(target.split("/")) if part not in ("", "."))
                continue
            chain.append(fd)
            if names and not stat.S_ISDIR(mode):
                raise OSError(errno.ENOTDIR, "a component of it is not a directory")
        return chain.pop()
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise PathError(error.errno, f"{path}: {reason[0].lower()}{reason[1:]}") from None
    finally:
        for fd in chain:
            os.close(fd)


def _open_or_create(parent: int, name: str, create: str | None) -> int:
    """An O_PATH, O_NOFOLLOW descriptor of ``name`` in directory ``parent``; if it is
    missing and ``create`` says "directory" or "file", made first."""
    try:
        return os.open(name, NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        if create is None:
            raise
    if create == "directory":
        os.mkdir(name, 0o755, dir_fd=parent)
    else:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(name, flags, 0o644, dir_fd=parent))
    return os.open(name, NOFOLLOW, dir_fd=parent)


def _open(root: int, parent: int, names: list[str], flags: int) -> int:
    """Open ``names`` (a path from the root, as components): with openat2 from ``root``,
    else the last component from ``parent`` (the directory its predecessors name)."""
    global _openat2_missing
    if not _openat2_missing:
        try:
            return openat2(root, "/".join(names), flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
        except OSError as error:
            if error.errno != errno.ENOSYS:
                raise
            _openat2_missing = True
    if names[-1] == "..":
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))  # see _refusal
    return os.open(names[-1], flags | os.O_NOFOLLOW, dir_fd=parent)


def _refusal(path: str, error: OSError) -> PathError:
    """``error`` (from resolving ``path``) as one line that says what was refused and why."""
    if isinstance(error, PathError):
        return error
    if _openat2_missing:
        reasons = {
            errno.ELOOP: "it leads through a symbolic link (refused without openat2(2))",
            errno.ENOTDIR: "a component of it is not a directory (or a symbolic link, "
            "refused without openat2(2))",
            errno.EXDEV: '".." needs openat2(2), which this kernel lacks',
        }
    else:
        reasons = {
            errno.ELOOP: "it leads through a magic link of /proc (such as /proc/self/fd/N) "
            "or through too many symbolic links",
            errno.ENOTDIR: "a component of it is not a directory",
            errno.EXDEV: "it leads outside the container's root",
        }
    reasons[errno.EEXIST] = "a component of it is a symbolic link to nothing"
    reason = reasons.get(error.errno) or os.strerror(error.errno or errno.EINVAL)
    return PathError(error.errno, f"refusing {path}: {reason}")
