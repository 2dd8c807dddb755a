"""``mycontainer pull``: an image from its registry into the store, as fast as it arrives.

1. Parse the reference (runtime.reference) and ping its registry (runtime.registry).
2. Fetch the manifest the tag or digest names; an index (several platforms) resolves to
   this host's platform, or ``--platform``'s. Schema 1 manifests (docker before 2016) are
   refused: they name no config, and their signatures are obsolete.
3. If the store has the image under that name from the same manifest, stop: up to date.
4. Fetch the config (bounded, checked against its digest): it lists the layers' diff_ids,
   so the layers the store already has are known before any is fetched, and skipped.
5. Fetch the missing layers, three at a time as docker does, each one unpacked *while* it
   downloads: the bytes go through a pipe into runtime.layer's unpacking child, which
   hashes both the blob (its digest in the manifest) and the tar (its diff_id). Downloading
   then importing would take the sum of both; streaming takes about the longer.
6. Move the layers and the record into the store all at once (runtime.image.import_streams):
   on any failure, or Ctrl-C, the store is as it was.
"""

from __future__ import annotations

import json
import os
import sys

from runtime import image, imagesource, imagespec, registry
from runtime.imagespec import ImageError
from runtime.progress import LayerProgress
from runtime.reference import Reference, ReferenceError, parse

PARALLEL = 3  # layers fetched at a time, as docker's max-concurrent-downloads
MAX_MANIFEST = 4 << 20  # bytes of a manifest or index, read whole
MAX_CONFIG = 4 << 20  # bytes of an image config, read whole
MAX_LAYERS = 500  # overlayfs stacks no more lower layers (OVL_MAX_STACK, fs/overlayfs)
INDEX_TYPES = imagespec.INDEX_TYPES
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
SCHEMA1_TYPES = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)


def parse_platform(text: str) -> tuple[str, str, str | None]:
    """``--platform os/arch[/variant]`` -> (os, architecture, variant), as docker names
    them (``linux/x86_64`` is ``linux/amd64``); ValueError if it is not one."""
    parts = text.lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"--platform is os/arch[/variant], like linux/arm64 (got {text!r})")
    architecture = imagespec.ARCHITECTURES.get(parts[1], parts[1])
    return parts[0], architecture, parts[2] if len(parts) == 3 else None


def host_platform() -> tuple[str, str, str | None]:
    machine = os.uname().machine
    return "linux", imagespec.ARCHITECTURES.get(machine, machine), None


def pull(
    text: str | Reference,
    platform: str | None = None,
    tls_verify: bool = True,
    quiet: bool = False,
) -> image.Image:
    """Pull image ``text`` (a reference) into the store; returns it. Progress goes to
    stderr (unless ``quiet``); ImageError, naming the reference and what failed, on any
    failure, with the store as it was."""
    try:
        reference = text if isinstance(text, Reference) else parse(text)
    except ReferenceError as error:
        raise ImageError(str(error)) from None
    try:
        wanted = parse_platform(platform) if platform else host_platform()
    except ValueError as error:
        raise ImageError(str(error)) from None
    try:
        return _pull(reference, wanted, tls_verify, quiet)
    except registry.RegistryError as error:
        raise ImageError(f"pull {reference}: {error}") from None
    except imagesource.Malformed as error:
        raise ImageError(f"pull {reference}: malformed image metadata: {error}") from None
    except ImageError as error:
        raise ImageError(f"pull {reference}: {error}", error.exit_code) from None


def for_run(text: str, platform: str | None) -> image.Image:
    """Pull image ``text`` for ``run`` (``--pull``): a name that is no reference (a path,
    mistyped) is said to be neither an image, a file nor a directory."""
    try:
        reference = parse(text)
    except ReferenceError:
        raise ImageError(f"no such image, file or directory: {text}") from None
    return pull(reference, platform=platform)


def _pull(reference: Reference, wanted, tls_verify: bool, quiet: bool) -> image.Image:
    client = registry.Client(
        reference.registry, reference.path, _credentials(reference), tls_verify
    )
    client.ping()
    media_type, body = client.manifest(reference.manifest_reference, MAX_MANIFEST)
    digest = _digest(body)
    if reference.digest and digest != reference.digest:
        raise ImageError(f"the registry's manifest has digest {digest}, not the one asked for")
    document = _manifest_document(media_type, body, reference.manifest_reference)
    if media_type in INDEX_TYPES:
        chosen = _choose(document, wanted, reference.manifest_reference)
        media_type, body = client.manifest(chosen["digest"], MAX_MANIFEST)
        if _digest(body) != chosen["digest"]:
            raise ImageError(f"manifest {chosen['digest']}: its content has another digest")
        document = _manifest_document(media_type, body, chosen["digest"])
        if media_type not in MANIFEST_TYPES:
            raise ImageError(f"manifest {chosen['digest']}: an index in an index (refused)")
    where = f"manifest {digest}"
    config_descriptor = imagesource.check_descriptor(document.get("config"), where, "config")
    stored = _stored(reference.store_name)
    if stored and (stored.details.get("digest"), stored.id) == (
        digest,
        config_descriptor["digest"],
    ):
        _say(quiet, f"{reference.store_name}: image is up to date")  # (same platform too)
        return stored
    descriptors = imagesource.check_descriptors(document, where, "layers")
    if len(descriptors) > MAX_LAYERS:  # (it could never run; 40,000 fit in a manifest)
        raise ImageError(
            f"{where} has {len(descriptors)} layers, over the {MAX_LAYERS} that overlayfs can stack"
        )
    for number, descriptor in enumerate(descriptors):
        size = descriptor.get("size")
        if not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
            raise imagesource.Malformed(where, f"layers[{number}].size", "a size", size)
    config_bytes = client.blob(config_descriptor["digest"], MAX_CONFIG, "config")
    try:
        config = json.loads(config_bytes)
    except (ValueError, RecursionError):
        raise ImageError(f"config {config_descriptor['digest']} is not JSON") from None
    try:
        settings, diff_ids = imagesource.image_config(config)
    except imagesource.Malformed as error:
        raise ImageError(f"malformed image metadata: {error}") from None
    if len(diff_ids) != len(descriptors):  # (else the store would record other layers)
        raise ImageError(
            f"config {config_descriptor['digest']} lists {len(diff_ids)} diff_ids for the "
            f"manifest's {len(descriptors)} layers"
        )
    layers = [
        imagesource.Blob(d["digest"], d.get("mediaType") or "", d["digest"]) for d in descriptors
    ]
    details = {"id": config_descriptor["digest"], "created": imagesource.created(config)}
    details["digest"] = digest
    manifest = imagesource.Manifest(reference.store_name, settings, diff_ids, layers, details)
    sizes = [d["size"] for d in descriptors]
    display = LayerProgress([blob.digest for blob in layers], sizes, None if quiet else sys.stderr)
    _say(quiet, f"pulling {reference} from {reference.registry}")

    def fetch(index: int, blob, write) -> None:
        client.stream_blob(blob.digest, sizes[index], write, display.receiver(index))

    try:
        pulled = image.import_streams(manifest, fetch, PARALLEL, display.report)
    finally:
        display.close()
    _say(quiet, f"{reference.store_name}: downloaded, digest {digest}")
    return pulled


def _credentials(reference: Reference):
    """The user's (name, secret) for the registry, from the files ``mycontainer login``,
    docker and podman write (runtime.credentials); None: anonymous."""
    from runtime import credentials

    try:
        return credentials.lookup(reference.domain)
    except credentials.CredentialsError as error:
        raise ImageError(str(error)) from None


def _digest(body: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(body).hexdigest()


def _manifest_document(media_type: str, body: bytes, name: str) -> dict:
    """The manifest or index ``body``, checked to be JSON of a type we read."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    schema1 = isinstance(document, dict) and document.get("schemaVersion") == 1
    if media_type in SCHEMA1_TYPES or schema1:
        raise ImageError(
            f"manifest {name} is of schema 1, which docker deprecated in 2016 and mycontainer "
            "does not read: push the image again with a current tool"
        )
    if media_type not in INDEX_TYPES + MANIFEST_TYPES:
        raise ImageError(
            f"manifest {name}: the registry answered {media_type or 'no media type'!r}, "
            "not an image manifest or index"
        )
    if not isinstance(document, dict):
        raise ImageError(f"manifest {name} is not a JSON object")
    declared = document.get("mediaType")
    if declared is not None and declared != media_type:
        raise ImageError(f"manifest {name} says it is {declared!r}, but came as {media_type!r}")
    return document


def _choose(index: dict, wanted, name: str) -> dict:
    """The descriptor of ``index`` for platform ``wanted`` (os, architecture, variant): an
    exact variant first, then one without (arm64's is v8 when unsaid, as docker's)."""
    where = f"index {name}"
    descriptors = imagesource.check_descriptors(index, where)
    system, architecture, variant = wanted
    candidates = []
    for descriptor in descriptors:
        platform = descriptor.get("platform") or {}
        if platform.get("os") != system or platform.get("architecture") != architecture:
            continue
        theirs = platform.get("variant")
        if architecture == "arm64" and theirs in (None, "v8"):
            theirs = variant if variant in (None, "v8") else theirs
        if theirs == variant or variant is None:
            candidates.append((theirs != variant, descriptor))
    if not candidates:
        listed = sorted(
            "/".join(filter(None, (p.get("os"), p.get("architecture"), p.get("variant"))))
            for p in (d.get("platform") or {} for d in descriptors)
        )
        shown = "/".join(filter(None, wanted))
        raise ImageError(
            f"no image for platform {shown} (it has: {', '.join(listed) or 'none'}); "
            "choose one with --platform"
        )
    candidates.sort(key=lambda candidate: candidate[0])
    return candidates[0][1]


def _stored(name: str) -> image.Image | None:
    try:
        found = image.matching(name)
    except ImageError:
        return None
    return found[0] if found[0].name == imagespec.normalize(name) else None


def _say(quiet: bool, line: str) -> None:
    if not quiet:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
