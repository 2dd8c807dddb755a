"""Reading image files: OCI layouts, docker archives and root filesystem tarballs.

Each kind becomes a *source* with two questions: which manifest does the user mean
(``select(tag)``: by tag, then by this machine's architecture), and where is a blob
(``open_blob``). Small blobs (index, manifests, configs) are checked against their sha256
here; layers are checked while they unpack (runtime.layer).

Every field that mycontainer reads from the metadata (index, manifests, config, docker's
manifest.json) is checked for its shape first: a wrong one is :class:`Malformed`, naming
the field, before any layer is unpacked.

Image archives (``.tar``, ``.tar.gz``) are first unpacked into a staging directory: they
are flat files (``blobs/sha256/<hex>``, ``manifest.json``...), so only plain names,
regular files, directories and symbolic links that stay inside are accepted.

Specs: https://github.com/opencontainers/image-spec/blob/main/image-layout.md,
https://github.com/opencontainers/image-spec/blob/main/image-index.md,
https://github.com/moby/moby/blob/master/image/spec/v1.2.md (docker save)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tarfile
import tempfile

from runtime import imagespec, layer
from runtime.imagespec import ImageError
from runtime.removal import remove_tree

IMAGE_MARKERS = {"oci-layout": "oci", "index.json": "oci", "manifest.json": "docker"}
NAME_ANNOTATION = "io.containerd.image.name"  # the full name, as containerd and docker write it
TAG_ANNOTATION = "org.opencontainers.image.ref.name"  # the tag (image-layout.md)
# Open for writing, but never through a symbolic link (open(2): O_NOFOLLOW).
WRITE_NO_FOLLOW = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
SUFFIXES = (".tar.gz", ".tar.xz", ".tar.zst", ".tgz", ".txz", ".tar", ".oci")
MAX_JSON = 16 << 20  # bytes of an index, manifest or config: read whole, so bounded
SHAPES = {dict: "an object", list: "a list", str: "a string"}


class Malformed(Exception):
    """A field of the image's metadata is missing or of the wrong shape; the message names
    the document and the field (``config field "config.Cmd" must be...``)."""

    def __init__(self, document: str, field: str, shape: str, value=None):
        got = "it is missing" if value is None else f"got {imagespec.excerpt(value)}"
        what = f'{document} field "{field}"' if field else document
        super().__init__(f"{what} must be {shape} ({got})")


class Blob:
    """Where a layer is, and what its bytes must hash to (when the image says)."""

    def __init__(self, digest: str | None, media_type: str, path: str):
        self.digest = digest
        self.media_type = media_type
        self.path = path  # relative to the source, or absolute for a rootfs tarball


class Manifest:
    """The image the user picked: its name, its config, and its layers bottom first; what
    the store records of it besides (``details``: its id, created, digest; see Image)."""

    def __init__(
        self,
        name: str,
        config: dict,
        diff_ids: list[str],
        layers: list[Blob],
        details: dict | None = None,
    ):
        if diff_ids and len(diff_ids) != len(layers):
            raise ImageError(f"image {name}: {len(layers)} layers but {len(diff_ids)} diff_ids")
        self.name = imagespec.check_name(imagespec.normalize(name))
        self.config = config
        self.diff_ids = diff_ids
        self.layers = layers
        self.details = details or {}


@contextlib.contextmanager
def open_source(path: str, home: str):
    """The source for the image at ``path``, its staging directory removed afterwards.

    An archive is unpacked into a ``.staging-*`` directory under the store's ``home``, where
    ``prune`` finds it if the import is killed.
    """
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "oci-layout")):
            raise ImageError(f"{path} is not an OCI image layout (it has no oci-layout file)")
        yield OciLayout(path, stem(path))
        return
    kind = sniff(path)
    if kind == "rootfs":
        yield RootfsTarball(path)
        return
    os.makedirs(home, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".staging-", dir=home)
    try:
        extract_image_files(path, staging)
        yield (OciLayout if kind == "oci" else DockerArchive)(staging, stem(path))
    finally:
        remove_tree(staging)


def stem(path: str) -> str:
    """``/x/debian-12.tar.gz`` -> ``debian-12``: the default image name for a file."""
    name = os.path.basename(os.path.normpath(path))
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _tar_stream(path: str):
    """(file, decompressed stream) of a possibly compressed tar file."""
    file = open(path, "rb")  # noqa: SIM115 (closed by the caller, with the stream)
    return file, layer.decompressed(file, layer.compression(file.peek(6)[:6]))


def sniff(path: str) -> str:
    """``oci``, ``docker`` or ``rootfs``, from the names inside the (possibly compressed) tar.

    It reads until a marker file, or until a top-level directory that no image archive has
    (``bin/``, ``etc/``...): a root filesystem is then not read twice. Top-level files decide
    nothing (crane writes ``sha256:<hex>`` before its manifest.json; macOS tar, ``._*``).
    """
    file, stream = _tar_stream(path)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for entry in archive:
                name = entry.name.removeprefix("./")
                kind = IMAGE_MARKERS.get(name)
                if kind:
                    return kind
                top, slash, _ = name.partition("/")
                if (slash or entry.isdir() or entry.issym()) and not _image_directory(top):
                    return "rootfs"
    except (tarfile.TarError, EOFError, OSError, layer.LayerError) as error:
        raise ImageError(f"{path} is not an image or a tar archive ({error})") from None
    finally:
        file.close()
    return "rootfs"


def _image_directory(top: str) -> bool:
    """Whether an image archive may have directory ``top``: ``blobs`` (OCI), or a legacy
    ``docker save`` layer directory, named by a 64-digit hex."""
    return top in ("", ".", "blobs") or _digest_in_path(top) is not None


def extract_image_files(path: str, staging: str) -> None:
    """Unpack an image archive's files into ``staging``, refusing anything that could escape.

    A name is checked where it resolves, not only as text: symbolic links that each stay
    inside (``c -> .``, ``e -> c/..``) can still chain to a parent of ``staging``.
    """
    root = os.path.realpath(staging)
    file, stream = _tar_stream(path)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for entry in archive:
                name = os.path.normpath(entry.name.removeprefix("./"))
                if name == ".":
                    continue
                target = os.path.join(root, name)
                parent = os.path.realpath(os.path.dirname(target))
                if name.startswith(("/", "..")) or not (parent + os.sep).startswith(root + os.sep):
                    raise ImageError(f"{path}: entry {entry.name!r} points outside the archive")
                if os.path.islink(target) and not entry.issym():
                    raise ImageError(f"{path}: entry {entry.name!r} would write through a link")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if entry.isdir():
                    os.makedirs(target, exist_ok=True)
                elif entry.isreg():
                    fd = os.open(target, WRITE_NO_FOLLOW, 0o600)
                    with archive.extractfile(entry) as source, open(fd, "wb") as out:
                        while chunk := source.read(layer.CHUNK):
                            out.write(chunk)
                elif entry.issym() and _inside(name, entry.linkname):
                    os.symlink(entry.linkname, target)  # docker save links repeated layers
                else:
                    raise ImageError(f"{path}: entry {entry.name!r} is not allowed in an image")
    except (tarfile.TarError, EOFError) as error:
        raise ImageError(f"{path}: truncated or broken archive ({error})") from None
    finally:
        file.close()


def _inside(name: str, link: str) -> bool:
    return not os.path.isabs(link) and not os.path.normpath(
        os.path.join(os.path.dirname(name), link)
    ).startswith("..")


class Source:
    """Files of an image in a directory (an OCI layout, or an unpacked archive)."""

    def __init__(self, root: str, default_name: str):
        self.root = root
        self.default_name = default_name

    def open_blob(self, blob: Blob) -> int:
        path = os.path.realpath(os.path.join(self.root, blob.path))
        if not path.startswith(os.path.realpath(self.root) + os.sep):
            raise ImageError(f"blob {blob.path!r} points outside the image")
        return open_regular(path, f"image {self.default_name}: {blob.path}")

    def read_json(self, path: str, digest: str | None, what: str) -> dict | list:
        """A small JSON file, checked against ``digest`` when one is given."""
        try:
            fd = self.open_blob(Blob(digest, "", path))
        except FileNotFoundError:
            raise ImageError(
                f"image {self.default_name}: {what} {digest or path} is missing"
            ) from None
        with os.fdopen(fd, "rb") as file:
            data = file.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise ImageError(f"image {self.default_name}: {what} {path} is over 16 MiB")
        if digest and "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ImageError(f"image {self.default_name}: blob {digest} ({what}): digest mismatch")
        try:
            return json.loads(data)
        except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
            raise ImageError(f"image {self.default_name}: {what} {path} is not JSON") from None


def open_regular(path: str, shown: str) -> int:
    """Open an image's file for reading, FileNotFoundError if it is missing. What is not a
    regular file is refused (``shown`` names it): a FIFO would block forever, a device would
    be read without end, or opening it would do something (open(2) of a tape rewinds it)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ImageError(f"{shown} is not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # (swapped meanwhile?)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(f"{shown} is not a regular file")
    return fd


class OciLayout(Source):
    """An OCI image layout: index.json, then manifests and configs under blobs/."""

    def select(self, tag: str | None) -> Manifest:
        index = check_object(self.read_json("index.json", None, "index"), "index.json", "")
        descriptor = _pick(check_descriptors(index, "index.json"), tag, self.default_name)
        annotations = descriptor.get("annotations") or {}
        name = annotations.get(NAME_ANNOTATION) or _name(
            self.default_name, annotations.get(TAG_ANNOTATION) or tag
        )
        while descriptor.get("mediaType") in imagespec.INDEX_TYPES:  # nested index: by platform
            where = f"index {descriptor['digest']}"
            nested = self.read_json(_blob_path(descriptor), descriptor["digest"], "index")
            nested = check_object(nested, where, "")
            descriptor = _pick(check_descriptors(nested, where), None, name)
        where = f"manifest {descriptor['digest']}"
        manifest = self.read_json(_blob_path(descriptor), descriptor["digest"], "manifest")
        manifest = check_object(manifest, where, "")
        config_descriptor = check_descriptor(manifest.get("config"), where, "config")
        config = self.read_json(
            _blob_path(config_descriptor), config_descriptor["digest"], "config"
        )
        layers = [
            Blob(d["digest"], d.get("mediaType") or "", _blob_path(d))
            for d in check_descriptors(manifest, where, "layers")
        ]
        details = {"id": config_descriptor["digest"], "created": created(config)}
        return Manifest(name, *image_config(config), layers, details)


class DockerArchive(Source):
    """A ``docker save`` archive: manifest.json lists each image's config and layer files."""

    def select(self, tag: str | None) -> Manifest:
        everything = self.read_json("manifest.json", None, "manifest.json")
        if not isinstance(everything, list):
            raise Malformed("manifest.json", "", "a list", everything)
        for number, entry in enumerate(everything):
            check_object(entry, "manifest.json", f"[{number}]")
            _take(entry, "Config", str, "manifest.json", f"[{number}].Config")
            _strings(entry.get("Layers"), "manifest.json", f"[{number}].Layers")
            if entry.get("RepoTags") is not None:
                _strings(entry["RepoTags"], "manifest.json", f"[{number}].RepoTags")
        entries = everything
        if tag:
            entries = [e for e in entries if any(_has_tag(t, tag) for t in e.get("RepoTags") or [])]
        if len(entries) != 1:
            tags = sorted(t for e in everything for t in e.get("RepoTags") or [])
            raise ImageError(_choose_message(self.default_name, tag, tags))
        entry = entries[0]
        name = (entry.get("RepoTags") or [_name(self.default_name, tag)])[0]
        config = self.read_json(entry["Config"], _digest_in_path(entry["Config"]), "config")
        layers = [Blob(_digest_in_path(path), "", path) for path in entry["Layers"]]
        details = {"id": _digest_in_path(entry["Config"]), "created": created(config)}
        return Manifest(name, *image_config(config), layers, details)


def created(config) -> str | None:
    """The config's ``created`` time (RFC 3339), if it is a string."""
    value = config.get("created") if isinstance(config, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def image_config(config) -> tuple[dict, list[str]]:
    """(the ``config`` object, the diff_ids) of an image config (config.md), checked."""
    check_object(config, "config", "")
    settings = {} if config.get("config") is None else config["config"]
    problem = imagespec.config_problem(settings)
    if problem:
        field, shape, value = problem
        raise Malformed("config", f"config.{field}".rstrip("."), shape, value)
    rootfs = _take(config, "rootfs", dict, "config", "rootfs")
    diff_ids = _strings(rootfs.get("diff_ids"), "config", "rootfs.diff_ids")
    for number, diff_id in enumerate(diff_ids):
        _digest(diff_id, "config", f"rootfs.diff_ids[{number}]")
    return settings, diff_ids


# --- the shapes of fields -------------------------------------------------------------------


def check_object(value, document: str, field: str) -> dict:
    if not isinstance(value, dict):
        raise Malformed(document, field, "an object", value)
    return value


def _take(parent: dict, key: str, kind: type, document: str, field: str):
    """``parent[key]``, which must be of ``kind`` (dict, list or str)."""
    value = parent.get(key)
    if not isinstance(value, kind):
        raise Malformed(document, field, SHAPES[kind], value)
    return value


def _strings(value, document: str, field: str) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise Malformed(document, field, "a list of strings", value)
    return value


def _digest(value, document: str, field: str) -> str:
    """A digest mycontainer can check: sha256, 64 lower-case hex digits (descriptor.md)."""
    if not imagespec.is_digest(value):
        raise Malformed(document, field, "a digest, sha256:<64 hex digits>", value)
    return value


def check_descriptor(value, document: str, field: str) -> dict:
    """A descriptor (descriptor.md), with the fields mycontainer reads checked."""
    check_object(value, document, field)
    _digest(value.get("digest"), document, f"{field}.digest")
    if value.get("mediaType") is not None:
        _take(value, "mediaType", str, document, f"{field}.mediaType")
    annotations = value.get("annotations")
    if annotations is not None and not imagespec.is_text_map(annotations):
        raise Malformed(document, f"{field}.annotations", "an object of strings", annotations)
    platform = value.get("platform")
    if platform is not None:
        check_object(platform, document, f"{field}.platform")
        for key in ("architecture", "os", "variant"):
            if platform.get(key) is not None:
                _take(platform, key, str, document, f"{field}.platform.{key}")
    return value


def check_descriptors(parent: dict, document: str, key: str = "manifests") -> list[dict]:
    items = _take(parent, key, list, document, key)
    return [check_descriptor(d, document, f"{key}[{n}]") for n, d in enumerate(items)]


class RootfsTarball:
    """A plain root filesystem tarball: a single layer, with no config."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def select(self, tag: str | None) -> Manifest:
        """Its one layer, with the digest of the file: the unpacking checks that it reads
        those bytes, and the store remembers the diff_id they give."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        blob = Blob(f"sha256:{digest.hexdigest()}", "", self.path)
        return Manifest(_name(stem(self.path), tag), {}, [], [blob])

    def open_blob(self, blob: Blob) -> int:
        return os.open(blob.path, os.O_RDONLY)


def _pick(descriptors: list[dict], tag: str | None, name: str) -> dict:
    """One descriptor of an index: by tag, else the only one, else ``latest``; of several
    platforms (a multi-architecture index), this machine's."""

    def tag_of(descriptor: dict) -> str:
        return (descriptor.get("annotations") or {}).get(TAG_ANNOTATION, "")

    tags = sorted({tag_of(d) for d in descriptors} - {""})
    if not descriptors:
        raise ImageError(f"image {name} lists no image in its index")
    if tag:
        descriptors = [d for d in descriptors if _has_tag(tag_of(d), tag)]
    elif len(descriptors) > 1 and "latest" in tags:
        descriptors = [d for d in descriptors if tag_of(d) == "latest"]
    if len(descriptors) > 1 and all("platform" in d for d in descriptors):
        machine = os.uname().machine
        architecture = imagespec.ARCHITECTURES.get(machine, machine)
        descriptors = [
            d
            for d in descriptors
            if d["platform"].get("architecture") == architecture
            and d["platform"].get("os") == "linux"
        ][:1]
        if not descriptors:
            raise ImageError(f"image {name} has no manifest for linux/{architecture}")
    if len(descriptors) != 1:
        raise ImageError(_choose_message(name, tag, tags))
    return descriptors[0]


def _choose_message(name: str, tag: str | None, tags: list[str]) -> str:
    listed = ", ".join(tags) or "none"
    if tag:
        return f"image {name} has no tag {tag!r} (tags: {listed})"
    return f"image {name} holds several images: pick one as FILE:TAG (tags: {listed})"


def _has_tag(reference: str, tag: str) -> bool:
    return reference == tag or reference.endswith(f":{tag}")


def _name(default: str, tag: str | None) -> str:
    """A store name from a file's stem and a tag (or a full name given as the tag)."""
    if tag and ("/" in tag or ":" in tag):
        return imagespec.normalize(tag)
    return f"{default}:{tag or 'latest'}"


def _blob_path(descriptor: dict) -> str:
    algorithm, _, value = descriptor["digest"].partition(":")
    return f"blobs/{algorithm}/{value}"


def _digest_in_path(path: str) -> str | None:
    """``blobs/sha256/<hex>`` or ``<hex>.json`` name their own digest; ``<hex>/layer.tar`` not."""
    base = os.path.basename(path).removesuffix(".json")
    if len(base) == 64 and all(c in "0123456789abcdef" for c in base):
        return f"sha256:{base}"
    return None
