"""What the steps' checks run on: a copy of the busybox root filesystem, a layered image."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile

from workshop.checks.check import Unprepared

MARKER = "workshop-marker"


def busybox_rootfs() -> str:
    """The busybox root filesystem that ``invoke rootfs`` builds."""
    from runtime import image

    try:
        path = image.built_in_rootfs("busybox")
    except image.ImageError as error:
        raise Unprepared(str(error)) from None
    if not os.path.isdir(os.path.join(path, "bin")):
        raise Unprepared(f"the busybox rootfs is not built ({path}): run 'invoke rootfs'")
    return path


@contextlib.contextmanager
def rootfs_copy():
    """A copy of the busybox rootfs, with a file /MARKER only it has; removed afterwards.

    A copy, so that a step that writes into its rootfs spoils nothing, and the checks can
    tell this root from the host's."""
    source = busybox_rootfs()
    scratch = tempfile.TemporaryDirectory(prefix="workshop-check-", ignore_cleanup_errors=True)
    with scratch as directory:
        rootfs = os.path.join(directory, "rootfs")
        shutil.copytree(source, rootfs, symlinks=True)
        with open(os.path.join(rootfs, MARKER), "w") as file:
            file.write("the rootfs of the check\n")
        yield rootfs


def tar(entries: list[tuple[str, bytes | None]], rootfs: str | None = None) -> bytes:
    """An uncompressed tar: ``rootfs``'s tree if given, then ``entries``, (name, content)
    pairs, a directory where the content is None."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        if rootfs:
            archive.add(rootfs, arcname=".")
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_layout(directory: str, layers: list[bytes]) -> None:
    """An OCI image layout (image-spec's image-layout.md) of ``layers``, bottom first, for
    this machine's architecture."""
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs)

    def blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as file:
            file.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    config = {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64"),
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(data).hexdigest()}" for data in layers],
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [blob(data, "application/vnd.oci.image.layer.v1.tar") for data in layers],
    }
    entry = blob(json.dumps(manifest).encode(), manifest["mediaType"])
    with open(os.path.join(directory, "index.json"), "w") as file:
        json.dump({"schemaVersion": 2, "manifests": [entry]}, file)
    with open(os.path.join(directory, "oci-layout"), "w") as file:
        json.dump({"imageLayoutVersion": "1.0.0"}, file)


@contextlib.contextmanager
def layered_image():
    """An image of three layers in a store of its own: busybox; then /workshop with
    lower.txt and gone.txt; then upper.txt and a whiteout of gone.txt. Yields (the image's
    OCI layout, the store for MYCONTAINER_HOME); both are removed afterwards."""
    source = busybox_rootfs()
    scratch = tempfile.TemporaryDirectory(prefix="workshop-check-", ignore_cleanup_errors=True)
    with scratch as directory:
        layout, store = os.path.join(directory, "layered"), os.path.join(directory, "store")
        layers = [
            tar([], rootfs=source),
            tar(
                [
                    ("workshop", None),
                    ("workshop/lower.txt", b"lower\n"),
                    ("workshop/gone.txt", b"gone\n"),
                ]
            ),
            tar([("workshop/upper.txt", b"upper\n"), ("workshop/.wh.gone.txt", b"")]),
        ]
        write_layout(layout, layers)
        os.mkdir(store)
        try:
            yield layout, store
        finally:
            from runtime import removal

            removal.remove_tree(store)  # what the step left there too, mounts included
