"""Step 5: a root filesystem from an image, with overlayfs.

Adds images to step 4: instead of a rootfs directory, the container's "/" is an overlay of
an OCI image's layers (read-only, shared, unpacked once into the store) and a writable
layer of its own that is thrown away afterwards. IMAGE is a stored image (``busybox``), an
image file (OCI layout or archive, docker save archive, rootfs tarball) that is imported
first, or a rootfs directory. Without a command, the image's own (ENTRYPOINT + CMD) runs.
Try: ``sudo .venv/bin/python -m steps.step5_image busybox -- sh -c 'mount | grep overlay'``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile

from runtime import cgroups, filesystem, image, removal
from steps import common, step4_cgroups

NAMESPACES = step4_cgroups.NAMESPACES


def setup(hostname: str, layers: list[str], storage: str, cgroup_v2: bool) -> None:
    """Stack the image's layers at storage/root, then step 4's setup (which pivots into it)."""
    # workshop TODO: mount an overlay of the layers (read-only, top first) and a writable upper
    #   at storage/root (overlayfs(5): lowerdir, upperdir, workdir); step 4's setup there
    rootfs = filesystem.mount_layers(layers, storage)
    step4_cgroups.setup(hostname, rootfs, cgroup_v2)
    # workshop end


def add_image_argument(parser) -> None:
    parser.add_argument("image", help="image name, image file or rootfs directory")


def find_image(name: str, command: list[str]) -> tuple[list[str], list[str]]:
    """The layers (top first) of image ``name``, imported first if it is a file, and the
    command to run: ``command``, or the image's own."""
    found = image.resolve(name)
    layers = found.lower_directories()
    print(f"step 5: image {found.name}, layers (top first): {layers}", file=sys.stderr)
    return layers, found.command_line(command)


@contextlib.contextmanager
def writable_layer():
    """A directory of the container's own beside the images, for overlayfs's upper and
    work directories and the mount point of "/"; removed afterwards, with what was written."""
    os.makedirs(image.home(), exist_ok=True)
    storage = tempfile.mkdtemp(prefix=".step5-", dir=image.home())
    try:
        yield storage
    finally:
        removal.remove_tree(storage)


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    add_image_argument(parser)
    step4_cgroups.add_limit_options(parser)
    options = common.parse(parser, argv, command_required=False)
    try:
        layers, command = find_image(options.image, options.command)
        with (
            step4_cgroups.cgroup(options.memory, options.cpu_weight, options.pids_limit) as group,
            writable_layer() as storage,
        ):
            v2 = group.layout.uses_v2
            inside = functools.partial(setup, options.hostname, layers, storage, v2)
            return step4_cgroups.run(group, NAMESPACES, inside, command)
    except (image.ImageError, cgroups.CgroupError) as error:
        return common.failed(error)


if __name__ == "__main__":
    sys.exit(main())
