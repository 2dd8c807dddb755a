"""A minimal root filesystem built from the host's static busybox, with no internet.

busybox is one binary that behaves as ``sh``, ``ls``, ``ps``... depending on the name it is
called by (argv[0]). A rootfs of one static busybox plus a symbolic link per applet is a
complete, if small, Linux userland: the same trick the official ``busybox`` image uses.
It must be *statically* linked: the rootfs has no /lib with a C library to load.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
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
