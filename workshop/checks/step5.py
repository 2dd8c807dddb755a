"""Step 5's checks, on an image of three layers (scenes.layered_image): the layers are
merged, a whiteout of the top layer hides a file of the one below, and the container's
writes are forgotten."""

from __future__ import annotations

import shlex

from workshop.checks import scenes
from workshop.checks.check import Check

scene = scenes.layered_image


def step(image, command: str) -> str:
    layout, store = image
    return f"MYCONTAINER_HOME={shlex.quote(store)} step {shlex.quote(layout)} -- {command}"


def listing(result) -> list[str]:
    return sorted(result.out.split()) if result.code == 0 else []


def whiteout_hides(program, image) -> str | None:
    result = program.run(step(image, "ls /workshop"))
    names = listing(result)
    if names == ["lower.txt", "upper.txt"]:
        return None
    if "gone.txt" in names:
        return "/workshop/gone.txt is there: the top layer's whiteout did not hide it"
    if names:
        return f"/workshop holds {' '.join(names)}, not lower.txt and upper.txt"
    return result.seen("/workshop could not be listed")


def writes_forgotten(program, image) -> str | None:
    write = step(image, "sh -c 'echo written > /workshop/written'")
    result = program.run(f"{write} && {step(image, 'ls /workshop')}")
    names = listing(result)
    if names and "written" not in names:
        return None
    if "written" in names:
        return "a file a container wrote was still there in the next container"
    return result.seen("/workshop could not be written, then listed")


CHECKS = [
    Check(
        "whiteout-hides",
        "the image's layers are merged, and a whiteout hides a file of a layer below",
        whiteout_hides,
        (
            "An image is a stack of layers. overlayfs(5) shows read-only lower directories "
            "as one tree, the first one on top; a whiteout in a layer (a .wh.NAME file in "
            "the tar, a 0:0 character device once unpacked) hides NAME in the layers below.",
            'mount("overlay", root, "overlay", 0, "lowerdir=TOP:...:BOTTOM,upperdir=U,'
            'workdir=W") (mount(2)): runtime.filesystem.mount_layers(layers, storage) does it, '
            "with the image's layers top first, as find_image() returns them.",
            "In setup(), write `rootfs = filesystem.mount_layers(layers, storage)`, then step "
            "4's setup on that rootfs.",
        ),
    ),
    Check(
        "writes-forgotten",
        "what a container writes is gone in the next one",
        writes_forgotten,
        (
            "The image's layers are shared by every container and never change: a container "
            "writes to an upper directory of its own, thrown away when it ends "
            "(overlayfs(5): copy up).",
            "runtime.filesystem.mount_layers(layers, storage) puts the upper directory in "
            "storage, which writable_layer() makes new for each run (tempfile.mkdtemp) and "
            "removes afterwards with runtime.removal.remove_tree.",
            "The skeleton's writable_layer() makes a new storage directory for each run "
            "(tempfile.mkdtemp): in setup(), write "
            "`rootfs = filesystem.mount_layers(layers, storage)`, so that the upper "
            "directory is there, and not in one shared by every run.",
        ),
    ),
]
