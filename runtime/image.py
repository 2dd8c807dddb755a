"""Images: what ``mycontainer run IMAGE`` names.

For now an image is a root filesystem directory, or the name ``busybox`` for the rootfs that
``invoke rootfs`` builds from the host's busybox. Step 5 turns this into OCI images.
"""

from __future__ import annotations

import os

DEFAULT_HOME = "/var/lib/mycontainer"
BUILT_IN = ("busybox",)


class ImageError(Exception):
    """IMAGE names nothing runnable; the message says what to do."""


def home() -> str:
    """Where mycontainer keeps images; ``MYCONTAINER_HOME`` overrides it."""
    return os.environ.get("MYCONTAINER_HOME", DEFAULT_HOME)


def built_in_rootfs(name: str) -> str:
    """The directory that holds the locally built image ``name``."""
    return os.path.join(home(), "rootfs", name)


def resolve(image: str) -> str:
    """The absolute, symlink-free rootfs directory that ``image`` names.

    A locally built image of that name wins; otherwise ``image`` is a directory path.
    """
    built = built_in_rootfs(image)
    if os.sep not in image and os.path.isdir(built):
        return built
    if os.path.isdir(image):
        return os.path.realpath(image)
    if image in BUILT_IN:
        raise ImageError(f"image {image!r} is not built yet: run 'invoke rootfs'")
    raise ImageError(f"no such image or rootfs directory: {image}")
