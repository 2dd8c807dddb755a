"""A minimal root filesystem built from the host's static busybox, with no internet.

busybox is one binary that behaves as ``sh``, ``ls``, ``ps``... depending on the name it is
called by (argv[0]). A rootfs of one static busybox plus a symbolic link per applet is a
complete, if small, Linux userland: the same trick the official ``busybox`` image uses.
It must be *statically* linked: the rootfs has no /lib with a C library to load.

The same rootfs then becomes a real OCI image, ``busybox:latest``, written as an OCI image
layout (one gzip layer, a config, a manifest, an index) and imported into the store like
any other image.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile

DIRECTORIES = {
    "bin": 0o755,
    "sbin": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "etc": 0o755,
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "root": 0o700,
    "home": 0o755,
    "var": 0o755,
    "tmp": 0o1777,  # sticky: everyone may create files, only owners delete them
}

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
"""


class RootfsError(Exception):
    """The rootfs could not be built; the message says what to install or fix."""


def find_static_busybox() -> str:
    """The path of a statically linked busybox on this host, or RootfsError saying what to do."""
    path = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(path):
        raise RootfsError("busybox not found: install it with 'apt-get install busybox-static'")
    if not is_static_elf(path):
        raise RootfsError(
            f"{path} is dynamically linked and cannot run in a rootfs without a C library: "
            "install 'busybox-static'"
        )
    return path


def is_static_elf(path: str) -> bool:
    """True if the ELF file at ``path`` asks for no program interpreter (no PT_INTERP)."""
    with open(path, "rb") as file:
        header = file.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return False
        order = "<" if header[5] == 1 else ">"
        (phoff,) = struct.unpack_from(order + "Q", header, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", header, 0x36)
        file.seek(phoff)
        table = file.read(phentsize * phnum)
    pt_interp = 3
    types = (struct.unpack_from(order + "I", table, i * phentsize)[0] for i in range(phnum))
    return pt_interp not in types


def build_busybox_rootfs(destination: str, busybox: str | None = None) -> str:
    """Build the rootfs at ``destination`` (replacing it) and return its path.

    Built in a temporary directory beside it and renamed into place, so an interrupted
    build never leaves a half rootfs that containers would run in.
    """
    busybox = busybox or find_static_busybox()
    parent = os.path.dirname(os.path.abspath(destination))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".rootfs-", dir=parent)
    try:
        _populate(staging, busybox)
        if os.path.isdir(destination):
            shutil.rmtree(destination)
        os.rename(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def _populate(root: str, busybox: str) -> None:
    os.chmod(root, 0o755)
    for directory, mode in DIRECTORIES.items():
        path = os.path.join(root, directory)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)  # makedirs applies the umask, and the sticky bit needs chmod
    shutil.copy2(busybox, os.path.join(root, "bin/busybox"))
    applets = subprocess.run(
        [busybox, "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:  # e.g. "bin/ls", "usr/bin/wc"
        link = os.path.join(root, applet)
        if not os.path.lexists(link):
            os.symlink("/bin/busybox", link)
    for name, text in (("passwd", PASSWD), ("group", GROUP)):
        with open(os.path.join(root, "etc", name), "w") as file:
            file.write(text)


def build_busybox_image(busybox: str | None = None) -> str:
    """Build the busybox rootfs (for the steps) and import it as image ``busybox:latest``."""
    from runtime import image

    rootfs = build_busybox_rootfs(image.built_in_rootfs("busybox"), busybox)
    # Locked as an import, so that prune leaves the layout alone until it is imported.
    with (
        image.StoreLock(),
        tempfile.TemporaryDirectory(prefix=".busybox-oci-", dir=image.home()) as layout,
    ):
        write_oci_layout(rootfs, layout, "busybox:latest", ["sh"])
        return image.load(layout).name


def write_oci_layout(rootfs: str, layout: str, name: str, command: list[str]) -> None:
    """Write ``rootfs`` as a one-layer OCI image layout at ``layout`` (image-layout.md)."""
    from runtime import imagespec

    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def add_blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as file:
            file.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    with tempfile.TemporaryFile() as tar_file:
        with tarfile.open(fileobj=tar_file, mode="w", format=tarfile.PAX_FORMAT) as archive:
            archive.add(rootfs, arcname=".")
        tar_file.seek(0)
        layer_tar = tar_file.read()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    layer = add_blob(
        gzip.compress(layer_tar, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    machine = os.uname().machine
    config = {
        "architecture": imagespec.ARCHITECTURES.get(machine, machine),
        "os": "linux",
        "config": {"Cmd": command, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": add_blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [layer],
    }
    entry = add_blob(json.dumps(manifest).encode(), manifest["mediaType"])
    entry["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
    }
    with open(os.path.join(layout, "index.json"), "w") as file:
        json.dump({"schemaVersion": 2, "manifests": [entry]}, file)
    with open(os.path.join(layout, "oci-layout"), "w") as file:
        json.dump({"imageLayoutVersion": "1.0.0"}, file)
