"""Unpacking one image layer, safely, into a directory of its own.

A layer is a tar archive of the files that changed (OCI image spec, layer.md). Unpacking
one is where container runtimes have had their worst bugs: a tar entry named ``../../etc/
cron.d/x``, or a symbolic link ``etc -> /etc`` followed by a file ``etc/passwd``, writes on
the host. Python's ``tarfile`` filters do not fit either: ``data`` and ``tar`` strip setuid
bits and refuse absolute symlinks, which real root filesystems are full of.

So we write our own policy, and defend in depth:

1. **Refuse** any entry that could reach outside the layer: absolute names, ``..``
   components, parents that are symbolic links (writing *through* a link), hard links to
   such names, malformed whiteouts (``.wh.``, ``.wh..``, ``.wh...``). The error names the entry.
2. **Contain**: the unpacking runs in a child process that has chroot(2)ed into the
   layer's directory, as docker's chrootarchive does; whatever slipped past (1) would still
   resolve inside it. The parent reads nothing the child writes, except one report.

Whiteouts (layer.md, "Whiteouts") become what overlayfs understands, since each layer is
a lower directory of an overlay mount: ``.wh.NAME`` is a character device 0/0 named NAME,
and ``.wh..wh..opq`` an extended attribute ``trusted.overlay.opaque=y`` on its directory
(https://docs.kernel.org/filesystems/overlayfs.html, "whiteouts and opaque directories").

While reading, the child hashes both the compressed blob (its digest in the manifest) and
the uncompressed tar (its diff_id in the config); the caller compares them with what the
image claims, so a tampered or truncated blob is refused and its directory removed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import queue
import shutil
import stat
import tarfile
import threading
import zlib

from runtime.filesystem import remove_tree

try:
    import zstandard  # optional: zstd-compressed layers
except ImportError:
    zstandard = None

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
CHUNK = 1 << 20


class LayerError(Exception):
    """A layer was refused or could not be unpacked; the message names the entry or reason.

    ``digest`` is the sha256 of the whole blob when it could still be read: a blob that
    fails to unpack is often simply not the blob the image names.
    """

    def __init__(self, message: str, digest: str | None = None):
        super().__init__(message)
        self.digest = digest


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes (sha256) everything read through it."""

    def __init__(self, raw):
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        self.sha256.update(data)
        self.size += len(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to the end, so the digest covers every byte (tar stops at its end marker)."""
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


class ReadAhead(io.RawIOBase):
    """A stream that a second thread reads ahead, as ``tar -z`` runs gzip beside it.

    Reading the blob, hashing it, decompressing and hashing again happen in that thread
    (zlib, lzma, zstd and sha256 release the GIL) while this one writes files.
    """

    def __init__(self, source, depth: int = 8):
        self.chunks: queue.Queue = queue.Queue(depth)
        self.current = memoryview(b"")
        self.finished = False
        threading.Thread(target=self._produce, args=(source,), daemon=True).start()

    def _produce(self, source) -> None:
        try:
            while chunk := source.read(CHUNK):
                self.chunks.put(chunk)
            self.chunks.put(b"")
        except BaseException as error:  # raised again in the reading thread
            self.chunks.put(error)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.current and not self.finished:
            chunk = self.chunks.get()
            if isinstance(chunk, BaseException):
                raise chunk
            self.finished = not chunk
            self.current = memoryview(chunk)
        size = min(len(buffer), len(self.current))
        buffer[:size] = self.current[:size]
        self.current = self.current[size:]
        return size


def compression(head: bytes, media_type: str = "") -> str:
    """``gzip``, ``zstd``, ``xz`` or ``none``: by the magic bytes, else by the media type."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"  # root filesystem tarballs; not an OCI layer media type
    if media_type.endswith("+gzip") or media_type.endswith(".gzip"):
        return "gzip"
    if media_type.endswith("+zstd"):
        return "zstd"
    return "none"


def decompressed(stream, kind: str):
    """A stream of the uncompressed bytes of ``stream``."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if kind == "xz":
        return lzma.LZMAFile(stream, mode="rb")
    if kind == "zstd":
        if zstandard is None:
            raise LayerError("the layer is zstd-compressed: install the 'zstandard' package")
        return zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
    return stream


def unpack(blob_fd: int, destination: str, media_type: str = "") -> tuple[str, str]:
    """Unpack the layer blob open at ``blob_fd`` into the new directory ``destination``.

    Returns (digest of the blob, diff_id of the uncompressed tar); raises LayerError, after
    removing ``destination``, if the layer is refused or broken.
    """
    return finish_unpack(start_unpack(blob_fd, destination, media_type), destination)


def start_unpack(blob_fd: int, destination: str, media_type: str = "") -> tuple[int, int]:
    """Start unpacking in a child process (see :func:`unpack`); returns the job to finish.

    Split in two so that several layers can unpack at once, each in its own process.
    """
    os.mkdir(destination, 0o755)
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: chroot into the layer's directory, unpack, report
        os.close(report_read)
        blob = None
        try:
            os.chroot(destination)
            os.chdir("/")
            blob = HashingReader(os.fdopen(blob_fd, "rb", buffering=0))
            digests = _unpack_here(blob, media_type)
            os.write(report_write, ("ok " + " ".join(digests)).encode())
            os._exit(0)
        except BaseException as error:  # report anything, exit, never return to the caller
            report = f"error {_digest_of_the_rest(blob)} {_describe(error)}"
            os.write(report_write, report.encode(errors="replace"))
        finally:
            os._exit(1)
    os.close(report_write)
    return pid, report_read


def finish_unpack(job: tuple[int, int], destination: str) -> tuple[str, str]:
    """Wait for an unpacking child; (digest, diff_id), or LayerError with ``destination`` gone."""
    pid, report_read = job
    with os.fdopen(report_read, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    if not report.startswith("ok "):
        remove_tree(destination)
        _, digest, message = (report.split(" ", 2) + ["", ""])[:3]
        raise LayerError(message or "the unpacking process died", digest.removeprefix("-") or None)
    digest, diff_id = report.split()[1:3]
    return digest, diff_id


def abandon(job: tuple[int, int], destination: str) -> None:
    """Stop an unpacking child and remove what it wrote."""
    pid, report_read = job
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    os.close(report_read)
    if os.path.lexists(destination):
        remove_tree(destination)


def _describe(error: BaseException) -> str:
    if isinstance(error, LayerError):
        return str(error)
    broken = (EOFError, zlib.error, lzma.LZMAError, tarfile.ReadError, gzip.BadGzipFile)
    if isinstance(error, broken):
        return f"the layer is truncated or not a tar archive ({error or type(error).__name__})"
    return f"{type(error).__name__}: {error}"


def _digest_of_the_rest(blob: HashingReader | None) -> str:
    """The blob's digest after reading what is left of it; ``-`` if even that fails."""
    if blob is None:
        return "-"
    try:
        blob.drain()
        return blob.digest()
    except Exception:
        return "-"


def _unpack_here(blob: HashingReader, media_type: str) -> tuple[str, str]:
    """In the chroot: stream the tar, applying each entry under the refusal policy."""
    buffered = io.BufferedReader(blob, CHUNK)
    kind = compression(buffered.peek(6)[:6], media_type)
    tar_stream = HashingReader(decompressed(buffered, kind))
    ahead = io.BufferedReader(ReadAhead(tar_stream), CHUNK)
    directories = []  # (path, TarInfo): their times are set last, after their contents
    with tarfile.open(fileobj=ahead, mode="r|", errorlevel=2) as archive:
        for entry in archive:
            path = _checked_name(entry.name)
            if path is None:  # the layer's root directory itself
                if entry.isdir():
                    _set_metadata(".", entry)
                    directories.append((".", entry))
                continue
            if _apply(archive, entry, path):
                directories.append((path, entry))
    while ahead.read(CHUNK):  # the rest, so that both digests cover every byte
        pass
    blob.drain()
    for path, entry in reversed(directories):
        _set_times(path, entry)
    return blob.digest(), tar_stream.digest()


def _checked_name(name: str, entry_name: str | None = None) -> str | None:
    """The entry's path relative to the layer root, or LayerError if it could escape."""
    what = f"entry {entry_name or name!r}" + (f": link target {name!r}" if entry_name else "")
    if name.startswith("/"):
        raise LayerError(f"{what}: absolute names are refused")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"{what}: '..' is refused")
    return "/".join(parts) or None


# Directories of this layer known to be real ones (not links): checked once, not per entry.
_real_directories: set[str] = set()


def _refuse_links_in_parents(path: str, entry_name: str) -> None:
    """Refuse writing through a symbolic link: every parent must be a real directory."""
    parent = ""
    for part in path.split("/")[:-1]:
        parent = f"{parent}/{part}" if parent else part
        if parent in _real_directories:
            continue
        try:
            mode = os.lstat(parent).st_mode
        except FileNotFoundError:
            return  # created below as a plain directory
        if stat.S_ISLNK(mode):
            raise LayerError(
                f"entry {entry_name!r}: refuses to write through symbolic link {parent!r}"
            )
        if not stat.S_ISDIR(mode):
            raise LayerError(f"entry {entry_name!r}: {parent!r} is not a directory")
        _real_directories.add(parent)


def _apply(archive: tarfile.TarFile, entry: tarfile.TarInfo, path: str) -> bool:
    """Create what ``entry`` describes at ``path``; True if it is a directory."""
    _refuse_links_in_parents(path, entry.name)
    directory, name = os.path.split(path)
    if name.startswith(WHITEOUT_PREFIX):
        _whiteout(directory, name, entry.name)
        return False
    if directory and directory not in _real_directories:
        os.makedirs(directory, 0o755, exist_ok=True)
    if entry.isdir():
        if not os.path.isdir(path) or os.path.islink(path):
            _remove(path)
            os.mkdir(path, 0o700)
    elif entry.isreg():
        with archive.extractfile(entry) as source, _create(path, lambda: open(path, "xb")) as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)
    elif entry.issym():
        _create(path, lambda: os.symlink(entry.linkname, path))  # absolute targets: fine
    elif entry.islnk():
        target = _checked_name(entry.linkname, entry.name)
        if target is None:
            raise LayerError(f"entry {entry.name!r}: a hard link to the root is refused")
        _refuse_links_in_parents(target, entry.name)
        _create(path, lambda: os.link(target, path, follow_symlinks=False))
    elif entry.ischr() or entry.isblk() or entry.isfifo():
        kind = stat.S_IFCHR if entry.ischr() else stat.S_IFBLK if entry.isblk() else stat.S_IFIFO
        device = os.makedev(entry.devmajor, entry.devminor)
        _create(path, lambda: os.mknod(path, kind | 0o600, device))
    else:
        raise LayerError(f"entry {entry.name!r}: unsupported type {entry.type!r}")
    _set_metadata(path, entry)
    return entry.isdir()


def _create(path: str, make):
    """``make()``, which creates ``path``; if something is there already, it is replaced:
    a later entry of a layer wins over an earlier one, a whiteout included. (Trying first
    saves a stat(2) per entry.)"""
    try:
        return make()
    except FileExistsError:
        _remove(path)
        return make()


def _whiteout(directory: str, name: str, entry_name: str) -> None:
    """Translate an OCI whiteout into overlayfs's form (see the module docstring)."""
    if name == OPAQUE_MARKER:
        target_dir = directory or "."
        os.makedirs(target_dir, 0o755, exist_ok=True)
        os.setxattr(target_dir, OPAQUE_XATTR, b"y")
        return
    hidden = name[len(WHITEOUT_PREFIX) :]
    if hidden.strip(".") == "" or "/" in hidden:
        raise LayerError(f"entry {entry_name!r}: malformed whiteout")
    path = os.path.join(directory, hidden)
    if os.path.lexists(path):
        return  # the same layer's own file wins over its whiteout (layer.md)
    if directory:
        os.makedirs(directory, 0o755, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def _set_metadata(path: str, entry: tarfile.TarInfo) -> None:
    """Owner, then mode (chown(2) clears setuid bits), extended attributes, times."""
    os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
    if not entry.issym():
        os.chmod(path, stat.S_IMODE(entry.mode))  # setuid, setgid and sticky kept
    for key, value in entry.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            raw = value.encode("utf-8", "surrogateescape")
            os.setxattr(path, key[len("SCHILY.xattr.") :], raw, follow_symlinks=False)
    if not entry.isdir():
        _set_times(path, entry)


def _set_times(path: str, entry: tarfile.TarInfo) -> None:
    os.utime(path, (entry.mtime, entry.mtime), follow_symlinks=False)


def _remove(path: str) -> None:
    """Remove whatever is at ``path`` (a directory with its contents); nothing is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        remove_tree(path)
        _real_directories.difference_update(
            [known for known in _real_directories if known == path or known.startswith(path + "/")]
        )
    else:
        os.unlink(path)


def copy_layers(layers: list[str], target: str) -> None:
    """What overlayfs would show, as a copy: apply ``layers`` bottom up, whiteouts included."""
    for lower in reversed(layers):
        for directory, subdirectories, files in os.walk(lower):
            relative = os.path.relpath(directory, lower)
            destination = os.path.normpath(os.path.join(target, relative))
            if _is_opaque(directory) and relative != ".":
                _empty(destination)
            for name in subdirectories + files:
                source, copy = os.path.join(directory, name), os.path.join(destination, name)
                status = os.lstat(source)
                if stat.S_ISCHR(status.st_mode) and status.st_rdev == 0:  # a whiteout
                    _remove_any(copy)
                elif stat.S_ISDIR(status.st_mode):
                    if not os.path.isdir(copy) or os.path.islink(copy):
                        _remove_any(copy)
                        os.mkdir(copy)
                    shutil.copystat(source, copy, follow_symlinks=False)
                    os.chown(copy, status.st_uid, status.st_gid, follow_symlinks=False)
                else:
                    _remove_any(copy)
                    _copy_entry(source, copy, status)


def _copy_entry(source: str, copy: str, status: os.stat_result) -> None:
    if stat.S_ISLNK(status.st_mode):
        os.symlink(os.readlink(source), copy)
    elif stat.S_ISREG(status.st_mode):
        shutil.copy2(source, copy)
    else:
        os.mknod(copy, status.st_mode, status.st_rdev)
    os.chown(copy, status.st_uid, status.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(status.st_mode):
        os.chmod(copy, stat.S_IMODE(status.st_mode))  # chown cleared setuid bits


def _is_opaque(directory: str) -> bool:
    try:
        return os.getxattr(directory, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _empty(directory: str) -> None:
    if os.path.isdir(directory) and not os.path.islink(directory):
        for name in os.listdir(directory):
            _remove_any(os.path.join(directory, name))


def _remove_any(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def check_against_lower_layers(directory: str, lowers: list[str]) -> None:
    """Refuse a layer with a directory where the layers below (``lowers``, top first) show
    a symbolic link: unpacked in order into one tree, as the OCI spec describes, its entries
    would be written *through* that link, wherever it points."""
    for root, subdirectories, _files in os.walk(directory):
        for name in subdirectories:
            path = os.path.relpath(os.path.join(root, name), directory)
            if merged_type(path, lowers) == "symlink":
                raise LayerError(
                    f"entry {path!r}: refuses to write through symbolic link {path!r} "
                    "of a lower layer"
                )


def merged_type(path: str, layers: list[str]) -> str | None:
    """What ``path`` is in the overlay of ``layers`` (top first): dir, symlink, file or None.

    Walks one component at a time, and looks deeper only into layers where every shorter
    prefix is a real directory, so no symbolic link is ever followed.
    """
    visible = layers
    prefix = ""
    for part in path.split("/"):
        prefix = os.path.join(prefix, part)
        below = []
        for layer_dir in visible:
            try:
                status = os.lstat(os.path.join(layer_dir, prefix))
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(status.st_mode):
                below.append(layer_dir)
                if _is_opaque(os.path.join(layer_dir, prefix)):
                    break  # hides this directory's contents in the layers below
                continue
            if below:
                break  # a directory above hides whatever this is
            if stat.S_ISCHR(status.st_mode) and status.st_rdev == 0:
                return None  # a whiteout: deleted
            return "symlink" if stat.S_ISLNK(status.st_mode) else "file"
        if not below:
            return None
        visible = below
    return "dir"
