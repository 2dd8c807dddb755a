"""Images: importing OCI and docker images into a local store, and finding them again.

An OCI image (https://github.com/opencontainers/image-spec) is a tree of content-addressed
blobs: an *index* lists *manifests* (one per platform); a manifest names a *config* (the
command, environment, working directory, user, and the *diff_ids*: digests of the
uncompressed layers) and the *layers* (tar archives, usually gzip-compressed). Every blob is
named by the sha256 of its bytes, so reading one is also checking it.

What ``mycontainer run IMAGE`` and ``mycontainer load FILE`` accept, told apart by content:

- an OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/``), or the same
  as a ``.tar``/``.tar.gz`` archive;
- a ``docker save`` archive: ``manifest.json`` with layer tars (Docker 25 and later also put
  an OCI layout in the same archive);
- a plain root filesystem tarball (``.tar``, ``.tar.gz``, ``.tar.xz``): one layer, no config;
- a root filesystem directory, run as it is (not imported).

The store, under ``home()`` (``/var/lib/mycontainer``, or ``$MYCONTAINER_HOME``)::

    layers/<hex of diff_id>/     one directory per layer, unpacked once, shared by images
    layers/.by-blob/<hex>        the diff_id of a root filesystem tarball of that sha256,
                                 which has no config to say it
    images/<name>.json           name, config and the diff_ids of its layers, bottom first;
                                 its id (the config's digest), when it was created, and for
                                 a pulled image the digest of its manifest in the registry
    rootfs/busybox/              the busybox root filesystem that steps 3 and 4 use
    lock                         the store's lock (see StoreLock)
    layers/.claim-<hex>          locked by the import unpacking that layer now (_Claims)

An import changes the store all at once or not at all: layers unpack under temporary names
(``.unpacking-*``, unique to each import), the record is written to a ``.tmp-*`` file, and
only then are they renamed into place, together, with the signals that end a command held
back. Whatever is left under a temporary name, a killed import left: ``prune`` removes it.
"""

from __future__ import annotations

import json
import os
import signal

from runtime.imagespec import (
    ImageError,
    config_problem,
    digest_hex,
    escaped_name,
    is_digest,
    name_problem,
    normalize,
    tag_problem,
)
from runtime.removal import remove_tree

DEFAULT_HOME = "/var/lib/mycontainer"
RECORD_DETAILS = ("id", "created", "digest")  # what a record may hold besides (Image.details)
PIPE_SIZE = 1 << 20  # bytes a layer's pipe holds while its unpacking catches up (pull)
TEMPORARY_PREFIXES = (".unpacking-", ".staging-", ".busybox-oci-", ".tmp-", ".claim-")
# The signals that end a command: an import holds them back while it moves its work in.
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def home() -> str:
    """Where mycontainer keeps images; ``MYCONTAINER_HOME`` overrides it (empty: unset)."""
    path = os.environ.get("MYCONTAINER_HOME") or DEFAULT_HOME
    if not os.path.isabs(path):  # else the store would be wherever the command ran
        raise ImageError(f"MYCONTAINER_HOME must be an absolute path (got {path!r})")
    return path


def built_in_rootfs(name: str) -> str:
    """The directory that holds the locally built root filesystem ``name``."""
    return os.path.join(home(), "rootfs", name)


def layers_root() -> str:
    return os.path.join(home(), "layers")


def _by_blob_root() -> str:
    return os.path.join(layers_root(), ".by-blob")


class StoreLock:
    """The store's lock, flock(2) on ``<home>/lock``: held from ``with`` to :meth:`release`.

    Importers, and ``run`` from finding its image until its container's state names the
    layers, share it; ``rmi`` and ``prune``, which remove what no image or container uses,
    take it alone (``exclusive``). So they never remove a layer that an import has moved in
    and not yet named in its record, nor one that a starting container has found and not
    yet written in its state, nor the temporary files of a running import. The kernel drops
    the lock of a killed holder with its last descriptor.
    """

    def __init__(self, exclusive: bool = False):
        self.exclusive = exclusive
        self.fd = -1

    def __enter__(self) -> StoreLock:
        import fcntl

        path = os.path.join(home(), "lock")
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            self.fd = os.open(path, flags, 0o600)
        except FileNotFoundError:  # no store yet
            os.makedirs(home(), exist_ok=True)
            self.fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
        except BaseException:  # interrupted while waiting
            self.release()
            raise
        return self

    def __exit__(self, *_exception) -> None:
        self.release()

    def release(self) -> None:
        if self.fd != -1:
            os.close(self.fd)
            self.fd = -1


class Image:
    """An image in the store (or a root filesystem directory run as it is)."""

    def __init__(
        self,
        name: str,
        config: dict,
        layers: list[str],
        directory: str | None = None,
        details: dict | None = None,
    ):
        self.name = name if directory else normalize(name)
        self.config = config  # the "config" object of the OCI image config: Cmd, Env...
        self.layers = layers  # diff_ids, bottom layer first
        self.directory = directory  # set for a plain root filesystem directory
        # What ``images`` shows (RECORD_DETAILS): "id", the digest of the image's config;
        # "created", its RFC 3339 time; "digest", its manifest's in the registry it came from
        self.details = details or {}

    @property
    def id(self) -> str:
        """The image's id, as docker's: the digest of its config. A root filesystem tarball
        has none, nor had the records of older versions: then the digest of the record."""
        if self.details.get("id"):
            return self.details["id"]
        import hashlib

        text = json.dumps({"config": self.config, "layers": self.layers}, sort_keys=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def lower_directories(self) -> list[str]:
        """The directories an overlay mount stacks, *top* layer first (overlayfs's order)."""
        if self.directory:
            return [self.directory]
        return [
            os.path.join(layers_root(), digest_hex(diff_id)) for diff_id in reversed(self.layers)
        ]

    def command_line(self, command: list[str], entrypoint: str | None = None) -> list[str]:
        """What to execute, composed as docker does: ENTRYPOINT followed by CMD.

        A COMMAND on the command line replaces the image's Cmd; ``--entrypoint`` replaces its
        Entrypoint, and then the image's Cmd is not used; ``--entrypoint ''`` clears it.
        """
        if entrypoint is None:
            head, default = self.config.get("Entrypoint") or [], self.config.get("Cmd") or []
        else:
            head, default = ([entrypoint] if entrypoint else []), []
        args = head + (command or default)
        if not args:
            raise ImageError(f"image {self.name} has no command: give one after the image name")
        if not args[0]:  # execve(2) of "" fails; say so as docker does, before creating anything
            raise ImageError("cannot run '': executable file not found in $PATH", 127)
        return args

    def environment(self) -> dict[str, str]:
        """The image's Env (``KEY=value`` strings) as a dict."""
        pairs = (entry.partition("=") for entry in self.config.get("Env") or [])
        return {key: value for key, _, value in pairs if key}

    def record(self) -> dict:
        record = {"name": self.name, "config": self.config, "layers": self.layers}
        record.update((key, value) for key, value in self.details.items() if value)
        return record


def resolve(reference: str, progress=None, pull: str = "never", pulling=None) -> Image:
    """The image ``reference`` names: a stored name, else a file or directory to import,
    else an image to pull from its registry.

    A locally stored image of that name wins; then an image file or OCI layout (imported on
    the fly, then stored); then a plain root filesystem directory; then, as docker's
    ``--pull`` says (``missing``, ``always``: before all else; ``never``), the image that
    ``pulling(reference)`` pulls from its registry (runtime.pull.for_run).
    """
    if pull == "always" and not os.path.exists(split_reference(reference)[0]):
        return pulling(reference)
    name = normalize(reference)
    stored = None if name_problem(name) else _read_record(name)  # else never a stored name
    if stored:
        return stored
    path, _tag = split_reference(reference)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "oci-layout")):
        return Image(os.path.realpath(path), {}, [], directory=os.path.realpath(path))
    if os.path.isdir(path) or os.path.isfile(path):
        return load(reference, progress)
    if os.path.exists(path):
        raise ImageError(f"{path} is neither an image file nor a directory")
    if reference.split(":")[0] == "busybox":
        raise ImageError("image 'busybox' is not built yet: run 'invoke rootfs'")
    if pull == "missing" and pulling:
        return pulling(reference)
    raise ImageError(f"no such image, file or directory: {reference}")


def split_reference(reference: str) -> tuple[str, str | None]:
    """``FILE:TAG`` -> (FILE, TAG) if FILE exists and the whole does not, else (reference, None)."""
    if not os.path.exists(reference) and ":" in reference:
        path, tag = reference.rsplit(":", 1)
        if os.path.exists(path):
            return path, tag
    return reference, None


def list_images() -> list[Image]:
    directory = os.path.join(home(), "images")
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    return [image for name in names if (image := _read_record_file(os.path.join(directory, name)))]


def prune_partial() -> list[str]:
    """Remove what killed imports left in the store: whatever has a temporary name.

    Call it with the store locked exclusively (StoreLock): no import is running then.
    """
    removed = []
    for parent in (home(), layers_root(), _by_blob_root(), os.path.join(home(), "images")):
        for name in os.listdir(parent) if os.path.isdir(parent) else []:
            if name.startswith(TEMPORARY_PREFIXES):
                _remove_any(os.path.join(parent, name))
                removed.append(name)
    return removed


def _remove_any(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        remove_tree(path)
    else:
        os.unlink(path)


def matching(name: str) -> list[Image]:
    """The stored images that ``name`` designates, as docker's ``rmi`` reads it: a name
    (``alpine``, ``alpine:3.20``, ``docker.io/library/alpine:3.20``), ``REPOSITORY@DIGEST``
    (the image pulled with that manifest digest, whatever its tag), or an image id or the
    start of one (``sha256:`` optional). ImageError if none."""
    normalized = normalize(name)
    if not name_problem(normalized) and os.path.exists(_record_path(normalized)):
        try:
            return [_read_record(normalized)]
        except ImageError:  # a broken record: rmi removes it, as its message says to
            return [Image(normalized, {}, [])]
    repository, at, digest = normalized.partition("@")
    if at:
        found = [
            i
            for i in list_images()
            if i.details.get("digest") == digest and _repository(i) == repository
        ]
    else:
        start = name.removeprefix("sha256:")
        hexdigits = 0 < len(start) <= 64 and all(c in "0123456789abcdef" for c in start)
        found = [i for i in list_images() if hexdigits and digest_hex(i.id).startswith(start)]
    if not found:
        raise ImageError(f"no such image: {name}")
    return found


def _repository(image: Image) -> str:
    """``alpine`` of ``alpine:3.20`` or of ``alpine@sha256:...``."""
    if "@" in image.name:
        return image.name.partition("@")[0]
    return image.name.rpartition(":")[0]


def remove(name: str) -> None:
    """Remove the image stored as ``name`` (Image.name); its layers stay for
    :func:`remove_unused_layers`. (With the store locked exclusively, as rmi does.)"""
    path = _record_path(normalize(name))
    if not os.path.exists(path):
        raise ImageError(f"no such image: {name}")
    os.unlink(path)


def remove_unused_layers(in_use: set[str]) -> list[str]:
    """Remove the layers no image uses (say, after an image was loaded again under its
    name) and no container stacks (``in_use``: their directories); return their diff_ids.

    Call it with the store locked exclusively (StoreLock), ``in_use`` read under that lock:
    otherwise an import or a starting container may be about to name a layer it removes.
    """
    used = {diff_id for image in list_images() for diff_id in image.layers}
    removed = []
    for entry in os.listdir(layers_root()) if os.path.isdir(layers_root()) else []:
        directory = os.path.join(layers_root(), entry)
        if entry.startswith(".") or f"sha256:{entry}" in used or directory in in_use:
            continue
        remove_tree(directory)
        removed.append(f"sha256:{entry}")
    for rootfs_digest in os.listdir(_by_blob_root()) if os.path.isdir(_by_blob_root()) else []:
        diff_id = _diff_id_seen(rootfs_digest)
        if not (diff_id and os.path.isdir(os.path.join(layers_root(), digest_hex(diff_id)))):
            os.unlink(os.path.join(_by_blob_root(), rootfs_digest))
    return removed


# --- importing -------------------------------------------------------------------------------


def load(reference: str, progress=None) -> Image:
    """Import the image file or OCI layout ``reference`` (``FILE[:TAG]``) into the store.

    Every field of the image's metadata and its name are checked before anything is
    unpacked. Layers already in the store are not unpacked again. The store changes all at
    once, or, on any failure or interruption, not at all. ``progress(done, total)``, if
    given, is told every tenth of a second how many bytes of the layer blobs the unpacking
    has read, and (total, total) at the end.
    """
    from runtime import imagesource

    path, tag = split_reference(reference)
    problem = tag_problem(tag) if tag is not None and not {"/", ":"} & set(tag) else None
    if problem:  # (a TAG with '/' or ':' is a whole name: checked with the image's)
        raise ImageError(f"invalid tag {tag[:60]!r}: {problem}")
    if not (os.path.isdir(path) or os.path.isfile(path)):
        raise ImageError(f"no such image file or directory: {path}")
    with StoreLock(), imagesource.open_source(path, home()) as source:
        try:
            manifest = source.select(tag)
        except imagesource.Malformed as error:
            raise ImageError(f"{path}: malformed image metadata: {error}") from None
        except (KeyError, IndexError, TypeError, AttributeError) as error:  # what select missed
            detail = f"no {error} field" if isinstance(error, KeyError) else str(error)
            raise ImageError(f"{path}: malformed image metadata ({detail})") from None
        with _Claims(_missing_layers(manifest)):  # the same layer, imported at once: once
            staged, diff_ids = _unpack_layers(source, manifest, progress)
            # (a rootfs tarball's diff_id is known only once it is unpacked)
            image = Image(manifest.name, manifest.config, diff_ids, details=manifest.details)
            _move_in(image, staged, None if manifest.diff_ids else manifest.layers)
    return image


def _missing_layers(manifest) -> list[str]:
    """The names of the claims (_Claims) on the image's layers that the store lacks: the
    hex of each one's diff_id, or of its blob for a rootfs tarball the store has not seen."""
    missing = []
    for index, blob in enumerate(manifest.layers):
        if manifest.diff_ids:
            diff_id = manifest.diff_ids[index]
        else:
            diff_id = _diff_id_seen(digest_hex(blob.digest)) if blob.digest else None
        if diff_id and os.path.isdir(os.path.join(layers_root(), digest_hex(diff_id))):
            continue
        if diff_id or blob.digest:
            missing.append(digest_hex(diff_id or blob.digest))
    return missing


class _Claims:
    """Claims on the layers an import is about to unpack, held until it has moved them in:
    flock(2) on a file ``layers/.claim-<hex>``, one per layer, taken in sorted order (two
    imports never wait for each other in a circle).

    Twenty ``mycontainer run image.tar`` started at once on a store without the image would
    otherwise unpack it twenty times, each into a directory of its own (disk space twenty
    times over), and keep one. With the claims, one unpacks each layer; the others wait,
    then find it stored. The holder removes the lock file before it lets go, so a waiter
    whose file has no links left knows that the layer's import is over (moved in, or
    failed: then it claims a new file and unpacks the layer itself). What a killed import
    left, ``prune`` removes with the other temporary names.
    """

    def __init__(self, names: list[str]):
        self.names = sorted(set(names))
        self.held: list[tuple[int, str]] = []

    def __enter__(self) -> _Claims:
        import fcntl

        if self.names:
            os.makedirs(layers_root(), 0o700, exist_ok=True)
        try:
            for name in self.names:
                path = os.path.join(layers_root(), f".claim-{name}")
                while True:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX)
                    except BaseException:  # interrupted while waiting
                        os.close(fd)
                        raise
                    if os.fstat(fd).st_nlink:
                        self.held.append((fd, path))
                        break
                    os.close(fd)  # its last holder is done with it
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *_exception) -> None:
        self.release()

    def release(self) -> None:
        for fd, path in self.held:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            os.close(fd)
        self.held = []


def _move_in(image: Image, staged: dict[int, str], rootfs_blobs) -> None:
    """Rename the unpacked layers and the image's record into place, all together: the
    signals that end a command wait meanwhile. A staged layer that another import has moved
    in meanwhile is dropped for that one. ``rootfs_blobs``: a rootfs tarball's, whose
    diff_id the store then remembers. Whatever happens, no staged layer is left."""
    record = ""
    try:
        record = _write_new(os.path.join(home(), "images"), json.dumps(image.record(), indent=2))
        with _Uninterrupted():
            for index, staging in staged.items():
                final = os.path.join(layers_root(), digest_hex(image.layers[index]))
                try:
                    os.rename(staging, final)
                except OSError:
                    if not os.path.isdir(final):
                        raise
                    # else another import moved the same layer in meanwhile: keep that one
            for index, blob in enumerate(rootfs_blobs or []):
                _remember_diff_id(digest_hex(blob.digest), image.layers[index])
            os.replace(record, _record_path(image.name))
    finally:
        for staging in staged.values():
            if os.path.lexists(staging):
                remove_tree(staging)
        if record and os.path.lexists(record):
            os.unlink(record)


class _Uninterrupted:
    """Hold back the signals that end a command (sigprocmask(2)) for the ``with`` block:
    they are delivered, and raise, once it is over."""

    def __enter__(self) -> None:
        self.previous = signal.pthread_sigmask(signal.SIG_BLOCK, ENDING_SIGNALS)

    def __exit__(self, *_exception) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self.previous)


def _write_new(directory: str, text: str) -> str:
    """Write ``text`` to a new file of a name of its own in ``directory`` (``.tmp-*``, for
    whoever renames it into place); returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        with open(fd, "w") as file:
            file.write(text)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _unpack_layers(source, manifest, progress) -> tuple[dict[int, str], list[str]]:
    """Unpack the missing layers, several at once, into temporary directories; check them.

    Returns those directories (by layer index) and the diff_ids, bottom layer first. On any
    failure nothing of this import remains.
    """
    from runtime import layer

    # Only root may enter: the layers hold set-user-ID programs and device nodes, which
    # another user of this machine could otherwise run or open (as /var/lib/docker is).
    os.makedirs(layers_root(), 0o700, exist_ok=True)
    os.chmod(layers_root(), 0o700)
    count = len(manifest.layers)
    directories: list[str] = [""] * count  # where each layer is: in the store, or staged
    diff_ids: list[str] = [""] * count
    blobs: dict[int, int] = {}  # the open blob of each layer to unpack
    staged: dict[int, str] = {}
    running: list[tuple[int, tuple]] = []
    meter = None
    try:
        for index, blob in enumerate(manifest.layers):
            if manifest.diff_ids:
                expected = manifest.diff_ids[index]
            else:  # a rootfs tarball: no config names its diff_id, but the store may know it
                expected = _diff_id_seen(digest_hex(blob.digest))
            stored = os.path.join(layers_root(), digest_hex(expected)) if expected else ""
            if stored and os.path.isdir(stored):
                directories[index], diff_ids[index] = stored, expected
                continue
            try:
                blobs[index] = source.open_blob(blob)
            except FileNotFoundError:
                blob_name = _blob_name(manifest, index)
                raise ImageError(f"image {manifest.name}: blob {blob_name} is missing") from None
        meter = _Meter(blobs, progress)
        unique = f"{os.getpid()}-{os.urandom(6).hex()}"  # a pid alone may be a dead import's
        for index, fd in blobs.items():
            staged[index] = os.path.join(layers_root(), f".unpacking-{unique}-{index}")
            running.append(
                (index, layer.start_unpack(fd, staged[index], manifest.layers[index].media_type))
            )
            if len(running) >= max(1, os.cpu_count() or 1):
                meter.wait(running[0][1])
                _finish(*running.pop(0), manifest, staged, directories, diff_ids)
        while running:
            meter.wait(running[0][1])
            _finish(*running.pop(0), manifest, staged, directories, diff_ids)
        _check_against_lower_layers(manifest, directories)
    except BaseException:
        for index, job in running:
            layer.abandon(job, staged[index])
        for staging in staged.values():
            if os.path.lexists(staging):
                remove_tree(staging)
        raise
    finally:
        if meter:
            meter.close()
        for fd in blobs.values():
            os.close(fd)
    return staged, diff_ids


def _check_against_lower_layers(manifest, directories: list[str]) -> None:
    """No layer may write through a symbolic link of a layer below it (layer.py says why)."""
    from runtime import layer  # imported already by the import that calls this

    for index in range(1, len(directories)):
        try:
            layer.check_against_lower_layers(directories[index], directories[:index][::-1])
        except layer.LayerError as error:
            blob = _blob_name(manifest, index)
            raise ImageError(f"image {manifest.name}: blob {blob}: {error}") from None


def _diff_id_seen(rootfs_digest: str) -> str | None:
    """The diff_id of the rootfs tarball whose sha256 is ``rootfs_digest``, if the store has
    imported it before: so that running the same file again unpacks nothing (hashing a
    file is much cheaper than unpacking it)."""
    try:
        with open(os.path.join(_by_blob_root(), rootfs_digest)) as file:
            diff_id = file.read()
        digest_hex(diff_id)
        return diff_id
    except (FileNotFoundError, ImageError):  # not seen, or a record cut short
        return None


def _remember_diff_id(rootfs_digest: str, diff_id: str) -> None:
    os.makedirs(_by_blob_root(), 0o700, exist_ok=True)
    path = _write_new(_by_blob_root(), diff_id)
    os.replace(path, os.path.join(_by_blob_root(), rootfs_digest))


class _Meter:
    """Tells ``progress(done, total)`` how many bytes of the layer blobs the unpacking
    children have read: the sum of their read offsets, which parent and children share
    (fork(2): the child's descriptors refer to the same open file descriptions)."""

    def __init__(self, blobs: dict[int, int], progress):
        self.blobs = blobs
        self.progress = progress
        self.total = sum(os.fstat(fd).st_size for fd in blobs.values())
        if progress and blobs:  # shown from the start, however soon the layers are done
            progress(0, self.total)

    def wait(self, job: tuple[int, int]) -> None:
        """Until ``job``'s child has reported, showing progress every tenth of a second."""
        if not self.progress:
            return
        import select

        _pid, report = job
        while True:
            read = sum(os.lseek(fd, 0, os.SEEK_CUR) for fd in self.blobs.values())
            self.progress(read, self.total)
            if select.select([report], [], [], 0.1)[0]:
                return

    def close(self) -> None:
        """Done, or failed: the bar goes (an error message may follow on its line)."""
        if self.progress and self.blobs:
            self.progress(self.total, self.total)


def _blob_name(manifest, index: int) -> str:
    """How errors name a layer: by digest, or by file for a rootfs tarball (or docker's
    legacy ``<hex>/layer.tar``), whose own digest no config names."""
    blob = manifest.layers[index]
    return blob.digest if blob.digest and manifest.diff_ids else blob.path


def _finish(index: int, job, manifest, staged, directories, diff_ids) -> None:
    """Wait for layer ``index`` to unpack, and check its digests against the image's."""
    from runtime import layer

    name = _blob_name(manifest, index)
    blob = manifest.layers[index]
    try:
        digest, diff_id = layer.finish_unpack(job, staged[index])
    except layer.LayerError as error:
        if blob.digest and error.digest and error.digest != blob.digest:  # the real cause
            error = f"its content has digest {error.digest}"
        raise ImageError(f"image {manifest.name}: blob {name}: {error}") from None
    expected = manifest.diff_ids[index] if manifest.diff_ids else None
    if blob.digest and digest != blob.digest:
        raise ImageError(f"image {manifest.name}: blob {name}: its content has digest {digest}")
    if expected and diff_id != expected:
        raise ImageError(
            f"image {manifest.name}: blob {name}: its uncompressed content has digest "
            f"{diff_id}, not the config's {expected}"
        )
    directories[index], diff_ids[index] = staged[index], diff_id


# --- the records ---------------------------------------------------------------------------


def _record_path(name: str) -> str:
    """images/<name>.json, with '/' and other unsafe characters %-escaped."""
    return os.path.join(home(), "images", f"{escaped_name(name)}.json")


def _read_record(name: str) -> Image | None:
    return _read_record_file(_record_path(name))


def _read_record_file(path: str) -> Image | None:
    """The image recorded in ``path``; None if there is none; ImageError if the record is
    not one that load writes (say, edited by hand): what to do about it."""
    if not path.endswith(".json"):
        return None
    try:
        with open(path, "rb") as file:
            record = json.loads(file.read())
    except FileNotFoundError:
        return None
    except ValueError:
        record = None
    try:
        if not (isinstance(record, dict) and isinstance(record.get("name"), str)):
            raise ValueError("no name")
        problem = config_problem(record.get("config"))
        if problem:
            raise ValueError(f"config field {problem[0]!r} must be {problem[1]}")
        layers = record.get("layers")
        if not (isinstance(layers, list) and all(isinstance(d, str) for d in layers)):
            raise ValueError("layers must be a list of digests")
        for diff_id in layers:
            digest_hex(diff_id)
        details = {key: record[key] for key in RECORD_DETAILS if record.get(key) is not None}
        for key, value in details.items():
            if not isinstance(value, str) or (key != "created" and not is_digest(value)):
                raise ValueError(f"{key} must be a " + ("string" if key == "created" else "digest"))
    except (ValueError, ImageError) as error:
        raise ImageError(
            f"the store's record {path} is broken ({error}): remove the image with "
            "'mycontainer rmi', then load it again"
        ) from None
    return Image(record["name"], record["config"], layers, details=details)


# --- importing streams (a pull) --------------------------------------------------------------


def import_streams(manifest, fetch, parallel: int, report=None) -> Image:
    """Import an image whose layer blobs arrive as streams (runtime.pull): each missing
    layer is unpacked *while* it arrives, ``parallel`` at a time; the store changes all at
    once or not at all, as with :func:`load`.

    ``fetch(index, blob, write)`` passes the bytes of layer ``index`` to ``write``, in order,
    and returns when they are all there (raising if they cannot be had); it runs in a thread
    of its own. ``report(index, event)``, if given, is told ``"exists"``, ``"unpacking"``
    (the bytes flow), ``"verifying"`` (all received) and ``"done"``.
    """
    with StoreLock(), _Claims(_missing_layers(manifest)):
        staged, diff_ids = _unpack_streams(manifest, fetch, parallel, report or _no_report)
        image = Image(manifest.name, manifest.config, diff_ids, details=manifest.details)
        _move_in(image, staged, None)
    return image


def _no_report(_index: int, _event: str) -> None:
    pass


class _Download:
    """A thread passing one layer's bytes from ``fetch`` into a pipe whose other end an
    unpacking child reads (runtime.layer.start_unpack)."""

    # The write ends of the pipes being fed: a child forked meanwhile (the next layer's
    # unpacking) closes them, or a layer's reader would see no end of its pipe until all
    # the children forked after it are gone.
    feeding: set[int] = set()
    hooked = False

    def __init__(self, fetch, index: int, blob):
        import threading

        if not _Download.hooked:
            os.register_at_fork(after_in_child=_close_fed_pipes)
            _Download.hooked = True
        import fcntl

        self.read_fd, self.write_fd = os.pipe()
        try:  # 1 MiB, not 64 KiB (pipe(7)): fewer, larger reads and writes, both ends
            fcntl.fcntl(self.write_fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # over /proc/sys/fs/pipe-max-size for a user without the capability
            pass
        _Download.feeding.add(self.write_fd)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fetch, index, blob), daemon=True)

    def _run(self, fetch, index: int, blob) -> None:
        try:
            fetch(index, blob, self._write)
        except BaseException as error:  # handed to the waiter, which says it
            self.error = error
        finally:
            _Download.feeding.discard(self.write_fd)
            os.close(self.write_fd)

    def _write(self, data) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.write_fd, view) :]

    def wait(self) -> BaseException | None:
        """Until all the bytes are passed on, or could not be: the error, if any."""
        while self.thread.is_alive():
            self.thread.join(0.5)  # (a plain join() would hold back Ctrl-C)
        return self.error


def _close_fed_pipes() -> None:
    for fd in list(_Download.feeding):
        try:
            os.close(fd)
        except OSError:
            pass


def _unpack_streams(manifest, fetch, parallel: int, report) -> tuple[dict[int, str], list[str]]:
    """As _unpack_layers, for layers that arrive through ``fetch`` (see import_streams)."""
    from runtime import layer

    os.makedirs(layers_root(), 0o700, exist_ok=True)
    os.chmod(layers_root(), 0o700)
    count = len(manifest.layers)
    directories: list[str] = [""] * count
    diff_ids: list[str] = [""] * count
    staged: dict[int, str] = {}
    running: list[tuple[int, tuple, _Download]] = []
    unique = f"{os.getpid()}-{os.urandom(6).hex()}"
    try:
        missing = []
        first: dict[str, int] = {}  # the first index of each missing diff_id
        for index, diff_id in enumerate(manifest.diff_ids):
            stored = os.path.join(layers_root(), digest_hex(diff_id))
            if os.path.isdir(stored):
                directories[index], diff_ids[index] = stored, diff_id
                report(index, "exists")
            elif diff_id in first:  # the same layer again: fetched and unpacked once
                report(index, "exists")
            else:
                first[diff_id] = index
                missing.append(index)
        for index in missing:
            staged[index] = os.path.join(layers_root(), f".unpacking-{unique}-{index}")
            download = _Download(fetch, index, manifest.layers[index])
            try:
                job = layer.start_unpack(
                    download.read_fd, staged[index], manifest.layers[index].media_type
                )
            finally:
                os.close(download.read_fd)  # the child's now
            download.thread.start()
            running.append((index, job, download))
            report(index, "unpacking")
            if len(running) >= parallel:
                _finish_stream(*running.pop(0), manifest, staged, directories, diff_ids, report)
        while running:
            _finish_stream(*running.pop(0), manifest, staged, directories, diff_ids, report)
        for index, diff_id in enumerate(manifest.diff_ids):
            if not directories[index]:  # a repeated layer: where its first one is
                directories[index] = directories[first[diff_id]]
                diff_ids[index] = diff_id
        _check_against_lower_layers(manifest, directories)
    except BaseException:
        for index, job, _download in running:
            layer.abandon(job, staged[index])  # its download then fails to write, and ends
        for staging in staged.values():
            if os.path.lexists(staging):
                remove_tree(staging)
        raise
    return staged, diff_ids


def _finish_stream(index, job, download, manifest, staged, directories, diff_ids, report) -> None:
    """Wait for layer ``index``'s download, then for its unpacking; check both."""
    from runtime import layer

    error = download.wait()
    if error is not None and not isinstance(error, BrokenPipeError):
        layer.abandon(job, staged[index])  # the download's failure is the cause
        raise error
    report(index, "verifying")  # (a broken pipe: the unpacking stopped, and says why)
    _finish(index, job, manifest, staged, directories, diff_ids)
    report(index, "done")
