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
    images/<name>.json           name, config and the diff_ids of its layers, bottom first
    rootfs/busybox/              the busybox root filesystem that steps 3 and 4 use
"""

from __future__ import annotations

import json
import os

from runtime.removal import remove_tree

DEFAULT_HOME = "/var/lib/mycontainer"
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "amd64": "amd64"}


class ImageError(Exception):
    """IMAGE names nothing runnable, or could not be imported; the message says what to do."""


def home() -> str:
    """Where mycontainer keeps images; ``MYCONTAINER_HOME`` overrides it."""
    return os.environ.get("MYCONTAINER_HOME", DEFAULT_HOME)


def built_in_rootfs(name: str) -> str:
    """The directory that holds the locally built root filesystem ``name``."""
    return os.path.join(home(), "rootfs", name)


def layers_root() -> str:
    return os.path.join(home(), "layers")


def _by_blob_root() -> str:
    return os.path.join(layers_root(), ".by-blob")


def normalize(name: str) -> str:
    """The name as the store keeps it: ``busybox`` -> ``busybox:latest`` (no tag means
    latest) and ``docker.io/library/busybox:1`` -> ``busybox:1`` (docker's short form)."""
    for registry in ("docker.io/library/", "docker.io/"):
        name = name.removeprefix(registry)
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class Image:
    """An image in the store (or a root filesystem directory run as it is)."""

    def __init__(self, name: str, config: dict, layers: list[str], directory: str | None = None):
        self.name = name if directory else normalize(name)
        self.config = config  # the "config" object of the OCI image config: Cmd, Env...
        self.layers = layers  # diff_ids, bottom layer first
        self.directory = directory  # set for a plain root filesystem directory

    def lower_directories(self) -> list[str]:
        """The directories an overlay mount stacks, *top* layer first (overlayfs's order)."""
        if self.directory:
            return [self.directory]
        return [os.path.join(layers_root(), _hex(diff_id)) for diff_id in reversed(self.layers)]

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
        return args

    def environment(self) -> dict[str, str]:
        """The image's Env (``KEY=value`` strings) as a dict."""
        pairs = (entry.partition("=") for entry in self.config.get("Env") or [])
        return {key: value for key, _, value in pairs if key}

    def record(self) -> dict:
        return {"name": self.name, "config": self.config, "layers": self.layers}


def resolve(reference: str, progress=None) -> Image:
    """The image ``reference`` names: a stored name, else a file or directory to import.

    A locally stored image of that name wins; then an image file or OCI layout (imported on
    the fly, then stored); then a plain root filesystem directory.
    """
    stored = _read_record(normalize(reference))
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
    """Remove what interrupted imports left in the store (their process is gone)."""
    removed = []
    for parent in (layers_root(), home()):
        names = os.listdir(parent) if os.path.isdir(parent) else []
        for name in names:
            if not name.startswith((".unpacking-", ".staging-", ".busybox-oci-")):
                continue
            pid = name.split("-")[1] if name.startswith(".unpacking-") else ""
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                continue  # an import still running
            if name.startswith((".staging-", ".busybox-oci-")) and _younger_than(
                os.path.join(parent, name), 3600
            ):
                continue  # no pid in the name: leave recent ones to their import
            remove_tree(os.path.join(parent, name))
            removed.append(name)
    return removed


def _younger_than(path: str, seconds: float) -> bool:
    import time

    return time.time() - os.stat(path).st_mtime < seconds


def remove(name: str) -> None:
    """Remove image ``name`` from the store; its layers stay for :func:`remove_unused_layers`."""
    path = _record_path(normalize(name))
    if not os.path.exists(path):
        raise ImageError(f"no such image: {name}")
    os.unlink(path)


def remove_unused_layers(in_use: set[str]) -> list[str]:
    """Remove the layers no image uses (say, after an image was loaded again under its
    name) and no container stacks (``in_use``: their directories); return their diff_ids."""
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
        if not (diff_id and os.path.isdir(os.path.join(layers_root(), _hex(diff_id)))):
            os.unlink(os.path.join(_by_blob_root(), rootfs_digest))
    return removed


# --- importing -------------------------------------------------------------------------------


def load(reference: str, progress=None) -> Image:
    """Import the image file or OCI layout ``reference`` (``FILE[:TAG]``) into the store.

    Layers already in the store are not unpacked again. On any failure nothing of this
    import is left behind. ``progress(done, total)``, if given, is told every tenth of a
    second how many bytes of the layer blobs the unpacking has read, and (total, total) at
    the end.
    """
    from runtime import imagesource

    path, tag = split_reference(reference)
    if not (os.path.isdir(path) or os.path.isfile(path)):
        raise ImageError(f"no such image file or directory: {path}")
    with imagesource.open_source(path) as source:
        try:
            manifest = source.select(tag)
        except (KeyError, IndexError, TypeError, AttributeError) as error:  # JSON of odd shape
            detail = f"no {error} field" if isinstance(error, KeyError) else str(error)
            raise ImageError(f"{path}: malformed image metadata ({detail})") from None
        # (a rootfs tarball's diff_id is known only once it is unpacked)
        image = Image(manifest.name, manifest.config, _unpack_layers(source, manifest, progress))
    _write_record(image)
    return image


def _unpack_layers(source, manifest, progress) -> list[str]:
    """Unpack the missing layers, several at once; check them; move them into the store.

    Returns the diff_ids, bottom layer first. On any failure nothing of this import remains.
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
                expected = _diff_id_seen(_hex(blob.digest))
            stored = os.path.join(layers_root(), _hex(expected)) if expected else ""
            if stored and os.path.isdir(stored):
                directories[index], diff_ids[index] = stored, expected
                continue
            try:
                blobs[index] = source.open_blob(blob)
            except FileNotFoundError:
                blob_name = _blob_name(manifest, index)
                raise ImageError(f"image {manifest.name}: blob {blob_name} is missing") from None
        meter = _Meter(blobs, progress)
        for index, fd in blobs.items():
            staged[index] = os.path.join(layers_root(), f".unpacking-{os.getpid()}-{index}")
            running.append(
                (index, layer.start_unpack(fd, staged[index], manifest.layers[index].media_type))
            )
            if len(running) >= max(1, os.cpu_count() or 1):
                meter.wait(running[0][1])
                _finish(*running.pop(0), manifest, staged, directories, diff_ids)
        while running:
            meter.wait(running[0][1])
            _finish(*running.pop(0), manifest, staged, directories, diff_ids)
        for index in range(1, count):  # no layer may write through a lower layer's symlink
            try:
                layer.check_against_lower_layers(directories[index], directories[:index][::-1])
            except layer.LayerError as error:
                blob = _blob_name(manifest, index)
                raise ImageError(f"image {manifest.name}: blob {blob}: {error}") from None
        for index, staging in staged.items():
            final = os.path.join(layers_root(), _hex(diff_ids[index]))
            try:
                os.rename(staging, final)
            except OSError:  # unpacked meanwhile by another import: keep that one
                remove_tree(staging)
            if not manifest.diff_ids:
                _remember_diff_id(_hex(manifest.layers[index].digest), diff_ids[index])
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
    return diff_ids


def _diff_id_seen(rootfs_digest: str) -> str | None:
    """The diff_id of the rootfs tarball whose sha256 is ``rootfs_digest``, if the store has
    imported it before: so that running the same file again unpacks nothing (hashing a
    file is much cheaper than unpacking it)."""
    try:
        with open(os.path.join(_by_blob_root(), rootfs_digest)) as file:
            diff_id = file.read()
        _hex(diff_id)
        return diff_id
    except (FileNotFoundError, ImageError):  # not seen, or a record cut short
        return None


def _remember_diff_id(rootfs_digest: str, diff_id: str) -> None:
    os.makedirs(_by_blob_root(), 0o700, exist_ok=True)
    path = os.path.join(_by_blob_root(), rootfs_digest)
    with open(path, "w") as file:
        file.write(diff_id)


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


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ImageError(f"unsupported or malformed digest: {digest}")
    return value


def _record_path(name: str) -> str:
    """images/<name>.json, with '/' and other unsafe characters %-escaped."""
    safe = "".join(c if c.isalnum() or c in "-_.:" else f"%{ord(c):02X}" for c in name)
    return os.path.join(home(), "images", f"{safe}.json")


def _write_record(image: Image) -> None:
    path = _record_path(image.name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as file:
        json.dump(image.record(), file, indent=2)
    os.replace(path + ".tmp", path)


def _read_record(name: str) -> Image | None:
    return _read_record_file(_record_path(name))


def _read_record_file(path: str) -> Image | None:
    if not path.endswith(".json"):
        return None
    try:
        with open(path) as file:
            record = json.load(file)
    except FileNotFoundError:
        return None
    return Image(record["name"], record["config"], record["layers"])
