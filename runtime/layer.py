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
   resolve inside it. The parent takes one report from the child, and looks at what it
   wrote only with lstat(2), which never follows a link.

Whiteouts (layer.md, "Whiteouts") become what overlayfs understands, since each layer is
a lower directory of an overlay mount: ``.wh.NAME`` is a character device 0/0 named NAME,
and ``.wh..wh..opq`` an extended attribute ``trusted.overlay.opaque=y`` on its directory
(https://docs.kernel.org/filesystems/overlayfs.html, "whiteouts and opaque directories").

The child works as ``tar -xzf`` does, on two cores: one thread reads the blob, hashes it
(its digest in the manifest) and decompresses it, while the other hashes the tar (its
diff_id in the config), parses it and writes the files. The caller compares both digests
with what the image claims, so a tampered or truncated blob is refused and its directory
removed.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator

from runtime.removal import remove_tree

try:
    import zstandard  # optional: zstd-compressed layers
except ImportError:
    zstandard = None
try:  # optional (the "fast" extra): ISA-L's inflate, twice as fast as zlib's, same interface
    from isal import isal_zlib as inflate_library
except ImportError:
    inflate_library = zlib

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# A layer's extended attributes are restored, except overlayfs's own: what overlayfs does
# with a layer (redirects, metacopy, origins) comes from whiteouts only, never from the tar.
XATTR_RECORD = "SCHILY.xattr."  # a pax record, as GNU tar and docker write them
OVERLAY_XATTRS = "trusted.overlay."
READ_SIZE = 256 << 10  # compressed bytes read at a time
CHUNK = 1 << 20  # uncompressed bytes at most at a time, so that a "gzip bomb"...
CHUNKS_AHEAD = 16  # ...and decompression may run only this far ahead of the writing
LARGEST_READ = 16 << 20  # tarfile reads a pax or long-name header whole: no larger than this
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


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

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        self.sha256.update(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to the end, so the digest covers every byte (tar stops at its end marker)."""
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


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


def uncompressed_chunks(blob, media_type: str) -> Iterator[bytes]:
    """The uncompressed bytes of ``blob``, at most CHUNK at a time."""
    stream = io.BufferedReader(blob, READ_SIZE)
    kind = compression(stream.peek(6)[:6], media_type)
    if kind == "gzip":
        yield from _gunzip(stream)
        return
    source = decompressed(stream, kind)
    while chunk := source.read(CHUNK):
        yield chunk


def _gunzip(stream) -> Iterator[bytes]:
    """Inflate a gzip stream (RFC 1952) as ``gzip -d`` does: its members one after another,
    zero bytes between them skipped. zlib (or ISA-L) directly, in large reads:
    ``gzip.GzipFile`` reads 8 KB at a time and computes a second CRC."""
    inflater = None  # while inside a member
    pending = b""
    while True:
        if not pending and not (pending := stream.read(READ_SIZE)):
            break
        if inflater is None:
            pending = pending.lstrip(b"\0")
            if not pending:
                continue
            inflater = inflate_library.decompressobj(16 + zlib.MAX_WBITS)  # 16+: gzip's header
        chunk = inflater.decompress(pending, CHUNK)
        pending = inflater.unconsumed_tail
        if inflater.eof:
            pending, inflater = inflater.unused_data, None
        if chunk:
            yield chunk
    if inflater is not None:
        raise EOFError("the compressed stream ends before its end marker")


class TarStream:
    """The layer's uncompressed tar, read as ``tarfile`` wants, decompressed by a second thread.

    The producer thread reads the blob (hashing it), decompresses it and queues the chunks,
    while this thread hashes the tar, parses it and writes the files. Reading, hashing,
    decompressing and writing all release the GIL, so the two threads keep two cores busy.
    Reading is forward only (``seek`` skips ahead); a file's bytes go from the chunk to its
    descriptor uncopied.
    """

    def __init__(self, blob: HashingReader, media_type: str):
        self.blob = blob
        self.blob_digest: str | None = None  # once the producer has read every byte
        self.tar_sha256 = hashlib.sha256()
        self.last_block = b""  # of tarfile's reads, the last of one block: a header
        self._chunks: queue.Queue = queue.Queue(CHUNKS_AHEAD)
        self._chunk = memoryview(b"")
        self._position = 0  # in the current chunk
        self._start = 0  # of the current chunk, in the tar
        self._end: bytes | BaseException | None = None  # once reached: b"" or the error
        self._stopping = False
        threading.Thread(target=self._produce, args=(media_type,), daemon=True).start()

    def _produce(self, media_type: str) -> None:
        """The producer thread. Whatever happens, its last item is b"" or the first error
        (raised again in the reading thread), and the blob has been read to its end."""
        errors = []
        try:
            for chunk in uncompressed_chunks(self.blob, media_type):
                if self._stopping:
                    break
                self._chunks.put(chunk)
        except BaseException as error:
            errors.append(error)
        try:
            self.blob.drain()  # the digest covers every byte, also of a broken stream
            self.blob_digest = self.blob.digest()
        except BaseException as error:
            errors.append(error)
        self._chunks.put(errors[0] if errors else b"")

    def stop(self) -> None:
        """Decompress no further (the layer is refused): the blob is only read to its end,
        for its digest, however large the rest would inflate to."""
        self._stopping = True

    def _next_chunk(self) -> bool:
        """Move on to the next chunk; False at the end; the producer's error, if it had one."""
        if self._end is None:
            chunk = self._chunks.get()
            if chunk and not isinstance(chunk, BaseException):
                self.tar_sha256.update(chunk)
                self._start += len(self._chunk)
                self._chunk, self._position = memoryview(chunk), 0
                return True
            self._end = chunk
        if self._end:
            raise self._end
        return False

    def _take(self, size: int) -> memoryview:
        """Up to ``size`` next bytes, from one chunk; empty at the end."""
        if self._position == len(self._chunk) and not self._next_chunk():
            return memoryview(b"")
        piece = self._chunk[self._position : self._position + size]
        self._position += len(piece)
        return piece

    def tell(self) -> int:
        return self._start + self._position

    def read(self, size: int) -> bytes:
        if size > LARGEST_READ:
            raise LayerError(f"a tar header of {size} bytes (pax or long name) is refused")
        pieces = []
        left = size
        while left > 0 and (piece := self._take(left)):
            pieces.append(piece)
            left -= len(piece)
        data = b"".join(pieces)
        if size == tarfile.BLOCKSIZE:
            self.last_block = data
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Skip ahead to ``offset``: ``tarfile`` seeks over the data of what it skips."""
        if whence != os.SEEK_SET or offset < self.tell():
            raise io.UnsupportedOperation("a layer is read forward only")
        while self.tell() < offset and self._take(offset - self.tell()):
            pass
        return self.tell()

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next ``size`` bytes to ``fd``."""
        while size > 0:
            piece = self._take(size)
            if not piece:
                raise EOFError("the layer ends inside a file")
            size -= len(piece)
            _write_all(fd, piece)

    def finish(self) -> tuple[str | None, str]:
        """Read to the end, so both digests cover every byte: (digest, diff_id)."""
        while self._next_chunk():
            pass
        return self.blob_digest, "sha256:" + self.tar_sha256.hexdigest()


def _write_all(fd: int, data) -> None:
    while data:
        data = data[os.write(fd, data) :]


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
    try:
        pid = os.fork()
    except OSError:
        os.close(report_read)
        os.close(report_write)
        raise
    if pid == 0:  # the child: chroot into the layer's directory, unpack, report
        os.close(report_read)
        stream = None
        try:
            os.chroot(destination)
            os.chdir("/")
            stream = TarStream(HashingReader(os.fdopen(blob_fd, "rb", buffering=0)), media_type)
            Unpacker(stream).unpack()
            digest, diff_id = stream.finish()
            os.write(report_write, f"ok {digest} {diff_id}".encode())
            os._exit(0)
        except BaseException as error:  # report anything, exit, never return to the caller
            report = f"error {_digest_of_the_rest(stream)} {_describe(error)}"
            os.write(report_write, report.encode(errors="replace"))
        finally:
            os._exit(1)
    os.close(report_write)
    return pid, report_read


def finish_unpack(job: tuple[int, int], destination: str) -> tuple[str, str]:
    """Wait for an unpacking child; (digest, diff_id), or LayerError with ``destination`` gone.

    Interrupted (Ctrl-C, SIGTERM), it stops the child before it lets the interruption go on.
    """
    pid, report_read = job
    try:
        with os.fdopen(report_read, "rb") as pipe:
            report = pipe.read().decode(errors="replace")
        os.waitpid(pid, 0)
    except BaseException:
        _kill(pid)
        raise
    if not report.startswith("ok "):
        remove_tree(destination)
        _, digest, message = (report.split(" ", 2) + ["", ""])[:3]
        raise LayerError(message or "the unpacking process died", digest.removeprefix("-") or None)
    digest, diff_id = report.split()[1:3]
    return digest, diff_id


def abandon(job: tuple[int, int], destination: str) -> None:
    """Stop an unpacking child (not yet waited for) and remove what it wrote."""
    pid, report_read = job
    _kill(pid)
    os.close(report_read)
    if os.path.lexists(destination):
        remove_tree(destination)


def _kill(pid: int) -> None:
    """SIGKILL our child and reap it (until reaped, its pid cannot be anybody else's)."""
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _describe(error: BaseException) -> str:
    if isinstance(error, LayerError):
        return str(error)
    broken = (EOFError, zlib.error, inflate_library.error, lzma.LZMAError, tarfile.ReadError)
    broken += (io.UnsupportedOperation,) + ((zstandard.ZstdError,) if zstandard else ())
    if isinstance(error, broken):
        return f"the layer is truncated or not a tar archive ({error or type(error).__name__})"
    return f"{type(error).__name__}: {error}"


def _digest_of_the_rest(stream: TarStream | None) -> str:
    """The blob's digest, once the producer has read all of it; ``-`` if it could not."""
    if stream is None:
        return "-"
    stream.stop()
    with contextlib.suppress(Exception):
        stream.finish()
    return stream.blob_digest or "-"


def _checked_name(name: str, entry_name: str | None = None) -> str | None:
    """The entry's path relative to the layer root, or LayerError if it could escape."""
    what = f"entry {entry_name or name!r}" + (f": link target {name!r}" if entry_name else "")
    if name.startswith("/"):
        raise LayerError(f"{what}: absolute names are refused")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"{what}: '..' is refused")
    return "/".join(parts) or None


class Unpacker:
    """Applies a layer's entries, in order, in the chroot, under the refusal policy."""

    def __init__(self, stream: TarStream):
        self.stream = stream
        self.archive = tarfile.TarFile(fileobj=stream, mode="r")
        # Directories of this layer known to be real ones, not links: checked once, not
        # for every entry below them.
        self.real_directories: set[str] = set()
        self.directories: list[tuple[str, tarfile.TarInfo]] = []  # their times: set last

    def unpack(self) -> None:
        for entry in self.archive:
            path = _checked_name(entry.name)
            if path is None:  # the layer's root directory itself
                if entry.isdir():
                    _set_metadata(".", entry)
                    self.directories.append((".", entry))
                continue
            self.apply(entry, path)
        if any(self.stream.last_block):  # tarfile stops quietly at a header it cannot read
            raise LayerError(
                f"the layer is truncated or not a tar archive (a broken header at byte "
                f"{self.archive.offset})"
            )
        for path, entry in reversed(self.directories):
            _set_times(path, entry)

    def apply(self, entry: tarfile.TarInfo, path: str) -> None:
        """Create what ``entry`` describes at ``path``; a later entry replaces an earlier one."""
        self._real_parents(path, entry.name, make=True)
        directory, _, name = path.rpartition("/")
        if name.startswith(WHITEOUT_PREFIX):
            _whiteout(directory, name, entry.name)
        elif entry.isdir():
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    self._replace_with_directory(path, 0o700)
            self.real_directories.add(path)
            self.directories.append((path, entry))
            _set_metadata(path, entry)
        elif entry.isreg():
            self._write_file(entry, path)
        elif entry.islnk():
            target = _checked_name(entry.linkname, entry.name)
            if target is None:
                raise LayerError(f"entry {entry.name!r}: a hard link to the root is refused")
            self._real_parents(target, entry.name, make=False)
            self._create(path, lambda: os.link(target, path, follow_symlinks=False))
            # No metadata: the link *is* its target, whose own entry set it. (And chmod(2)
            # would follow the link if its target is a symbolic link, as tar does not.)
        else:
            self._create(path, lambda: _make_special(entry, path))
            _set_metadata(path, entry)

    def _write_file(self, entry: tarfile.TarInfo, path: str) -> None:
        fd = self._create(path, lambda: os.open(path, NEW_FILE, 0o600))
        try:
            if entry.issparse():  # tarfile knows where its holes are
                with self.archive.extractfile(entry) as source:
                    while chunk := source.read(CHUNK):
                        _write_all(fd, chunk)
            else:
                self.stream.seek(entry.offset_data)
                self.stream.copy_to(fd, entry.size)
            _set_metadata(fd, entry)
        finally:
            os.close(fd)

    def _real_parents(self, path: str, entry_name: str, make: bool) -> None:
        """Refuse writing through a symbolic link: every parent must be a real directory.
        With ``make``, missing ones are made (as tar does)."""
        parent = ""
        for part in path.split("/")[:-1]:
            parent = f"{parent}/{part}" if parent else part
            if parent in self.real_directories:
                continue
            if part.startswith(WHITEOUT_PREFIX):
                raise LayerError(f"entry {entry_name!r}: malformed whiteout {parent!r}")
            try:
                status = os.lstat(parent)
            except FileNotFoundError:
                if not make:
                    return  # the link's target is missing: link(2) will say so
                os.mkdir(parent, 0o755)
            else:
                if stat.S_ISLNK(status.st_mode):
                    raise LayerError(
                        f"entry {entry_name!r}: refuses to write through symbolic link {parent!r}"
                    )
                if make and is_whiteout(status):  # ``.wh.a``, then ``a/x``: a new, empty ``a``
                    self._replace_with_directory(parent, 0o755)
                elif not stat.S_ISDIR(status.st_mode):
                    raise LayerError(f"entry {entry_name!r}: {parent!r} is not a directory")
            self.real_directories.add(parent)

    def _create(self, path: str, make):
        """``make()``, which creates ``path``; if something is there already, it is replaced.
        (Trying first saves a stat(2) per entry.)"""
        try:
            return make()
        except FileExistsError:
            self._remove(path)
            return make()

    def _replace_with_directory(self, path: str, mode: int) -> None:
        """Replace what is at ``path`` with an empty directory; if that was a whiteout of
        this layer, the directory is opaque: the lower layers' one is deleted (layer.md:
        a whiteout applies to the layers below, not to entries of its own layer)."""
        opaque = is_whiteout(os.lstat(path))
        self._remove(path)
        os.mkdir(path, mode)
        if opaque:
            os.setxattr(path, OPAQUE_XATTR, b"y")

    def _remove(self, path: str) -> None:
        """Remove whatever is at ``path``, a directory with its contents (which this layer
        then no longer knows, nor sets the times of)."""
        if stat.S_ISDIR(os.lstat(path).st_mode):
            remove_tree(path)
            below = path + "/"
            self.real_directories = {
                known
                for known in self.real_directories
                if known != path and not known.startswith(below)
            }
            self.directories = [
                (known, entry)
                for known, entry in self.directories
                if known != path and not known.startswith(below)
            ]
        else:
            os.unlink(path)


def _make_special(entry: tarfile.TarInfo, path: str) -> None:
    """A symbolic link (absolute targets are fine: they resolve in the container), a device
    node or a FIFO."""
    if entry.issym():
        os.symlink(entry.linkname, path)
    elif entry.ischr() or entry.isblk() or entry.isfifo():
        kind = stat.S_IFCHR if entry.ischr() else stat.S_IFBLK if entry.isblk() else stat.S_IFIFO
        os.mknod(path, kind | 0o600, os.makedev(entry.devmajor, entry.devminor))
    else:
        raise LayerError(f"entry {entry.name!r}: unsupported type {entry.type!r}")


def _whiteout(directory: str, name: str, entry_name: str) -> None:
    """Translate an OCI whiteout into overlayfs's form (see the module docstring)."""
    if name == OPAQUE_MARKER:
        os.setxattr(directory or ".", OPAQUE_XATTR, b"y")
        return
    hidden = name[len(WHITEOUT_PREFIX) :]
    if hidden.strip(".") == "" or "/" in hidden or hidden.startswith(WHITEOUT_PREFIX):
        raise LayerError(f"entry {entry_name!r}: malformed whiteout")
    path = os.path.join(directory, hidden)
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        return
    # The same layer's own entry wins over its whiteout (layer.md), which deletes only what
    # the layers below have there: a directory of this layer hides theirs.
    if stat.S_ISDIR(status.st_mode):
        os.setxattr(path, OPAQUE_XATTR, b"y")


def is_whiteout(status: os.stat_result) -> bool:
    """overlayfs's whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(status.st_mode) and status.st_rdev == 0


def _set_metadata(target: str | int, entry: tarfile.TarInfo) -> None:
    """Owner, then mode (chown(2) clears setuid bits), extended attributes, times: of a path,
    never following a link, or of an open file."""
    no_follow = {"follow_symlinks": False} if isinstance(target, str) else {}
    os.chown(target, entry.uid, entry.gid, **no_follow)
    if not entry.issym():
        os.chmod(target, stat.S_IMODE(entry.mode))  # setuid, setgid and sticky kept
    for key, value in entry.pax_headers.items():
        name = key.removeprefix(XATTR_RECORD)
        if name != key and not name.startswith(OVERLAY_XATTRS):
            os.setxattr(target, name, value.encode("utf-8", "surrogateescape"), **no_follow)
    if not entry.isdir():
        os.utime(target, (entry.mtime, entry.mtime), **no_follow)


def _set_times(path: str, entry: tarfile.TarInfo) -> None:
    os.utime(path, (entry.mtime, entry.mtime), follow_symlinks=False)


def copy_layers(layers: list[str], target: str) -> None:
    """What overlayfs would show, as a copy: apply ``layers`` bottom up, whiteouts included."""
    for lower in reversed(layers):
        for directory, subdirectories, files in walk(lower):
            relative = os.path.relpath(directory, lower)
            destination = os.path.normpath(os.path.join(target, relative))
            if _is_opaque(directory) and relative != ".":
                _empty(destination)
            for name in subdirectories + files:
                source, copy = os.path.join(directory, name), os.path.join(destination, name)
                status = os.lstat(source)
                if is_whiteout(status):
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
        return os.getxattr(directory, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _empty(directory: str) -> None:
    if os.path.isdir(directory) and not os.path.islink(directory):
        for name in os.listdir(directory):
            _remove_any(os.path.join(directory, name))


def _remove_any(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def check_against_lower_layers(directory: str, lowers: list[str]) -> None:
    """Refuse a layer with a directory where the layers below (``lowers``, top first) show
    a symbolic link: unpacked in order into one tree, as the OCI spec describes, its entries
    would be written *through* that link, wherever it points."""
    try:
        for root, subdirectories, _files in walk(directory):
            for name in subdirectories:
                path = os.path.relpath(os.path.join(root, name), directory)
                if merged_type(path, lowers) == "symlink":
                    raise LayerError(
                        f"entry {path!r}: refuses to write through symbolic link {path!r} "
                        "of a lower layer"
                    )
    except OSError as error:  # a path deeper than the host's PATH_MAX, say
        raise LayerError(
            f"refusing a layer whose entries cannot be checked: {error.strerror}"
        ) from None


def walk(top: str):
    """os.walk(top), top-down, without following links, without recursion: before Python
    3.12, os.walk recursed once per level, and a layer 1,000 directories deep raised
    RecursionError."""
    stack = [top]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        subdirectories = [name for name, is_directory in names if is_directory]
        yield directory, subdirectories, [name for name, is_directory in names if not is_directory]
        stack.extend(os.path.join(directory, name) for name in reversed(subdirectories))


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
            if is_whiteout(status):
                return None  # a whiteout: deleted
            return "symlink" if stat.S_ISLNK(status.st_mode) else "file"
        if not below:
            return None
        visible = below
    return "dir"
