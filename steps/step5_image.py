"""Step 5: a root filesystem from an image, with overlayfs.

Adds images to step 4: instead of a rootfs directory, the container's "/" is an overlay of
an OCI image's layers (read-only, shared, unpacked once into the store) and a writable
layer of its own that is thrown away afterwards. IMAGE is a stored image (``busybox``), an
image file (OCI layout or archive, docker save archive, rootfs tarball) that is imported
first, or a rootfs directory. Without a command, the image's own (ENTRYPOINT + CMD) runs.
Try: ``sudo python3 -m steps.step5_image busybox -- sh -c 'mount | grep overlay'``.
"""

from __future__ import annotations

import os
import sys
import tempfile

from runtime import filesystem, image, removal
from steps import common, step4_cgroups

NAMESPACES = step4_cgroups.NAMESPACES


def setup(options) -> None:
    """Stack the image's layers at options.rootfs, then step 4's setup (which pivots into it)."""
    filesystem.mount_layers(options.layers, options.storage)
    step4_cgroups.setup(options)


def add_image_argument(parser) -> None:
    parser.add_argument("image", help="image name, image file or rootfs directory")


def run_image(options, setup_inside=setup, namespaces: int = NAMESPACES, ready=None) -> int:
    """Find (or import) options.image, run the command on its layers, forget its writes.

    ``setup_inside``, ``namespaces`` and ``ready`` are for the steps built on this one.
    """
    try:
        found = image.resolve(options.image)
        options.command = found.command_line(options.command)
    except image.ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 125
    options.layers = found.lower_directories()
    print(f"step 5: image {found.name}, layers (top first): {options.layers}", file=sys.stderr)
    os.makedirs(image.home(), exist_ok=True)
    options.storage = tempfile.mkdtemp(prefix=".step5-", dir=image.home())  # upper, work, root
    options.rootfs = os.path.join(options.storage, "root")
    try:
        return step4_cgroups.run_limited(options, setup_inside, namespaces, ready)
    finally:
        removal.remove_tree(options.storage)


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    add_image_argument(parser)
    step4_cgroups.add_limit_options(parser)
    return run_image(common.parse(parser, argv, command_required=False))


if __name__ == "__main__":
    sys.exit(main())
