"""What several steps' checks run on: a copy of the busybox root filesystem."""

from __future__ import annotations

import contextlib
import os
import shutil
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
