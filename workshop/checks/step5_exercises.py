"""The checks of step 5's exercises (docs/step5-image.md), ``invoke check 5 --exercise K``.

Both run ``mycontainer`` (``python -m runtime``) on the learner's store
(``MYCONTAINER_HOME``, else /var/lib/mycontainer): exercise 4 looks at the image
``hello:opaque`` the learner built, what ``ls /etc`` shows in it and the attribute the
unpacker set on its top layer's ``etc`` (xattr(7)); exercise 6 passes while the runtime
takes its copying fallback, as the exercise asks (put the line back after).

Exercises 1 and 8 need umoci or docker to build their images, 2 is three successive edits
of one layout of which only the last is left to see, 3 runs commands whose answer is a file
size the checker could only measure by running them itself, 5 disables the importer's
defences against a file the learner would have to keep, and 7 is a timing: no checker.
"""

from __future__ import annotations

import json
import os

from runtime import image
from workshop.checks.check import Check, Exercise

OPAQUE = "hello:opaque"


def only_hostname(program, _scene) -> str | None:
    result = program.run(f"step run --rm --net none {OPAQUE} ls /etc")
    names = result.out.split()
    if result.code == 0 and names == ["hostname"]:
        return None
    if result.code == 0:
        return f"ls /etc in {OPAQUE} shows {' '.join(names) or 'nothing'}, not only hostname"
    return result.seen(f"{OPAQUE} did not run (is it loaded: mycontainer images?)")


def opaque_attribute(_program, _scene) -> str | None:
    try:
        with open(os.path.join(image.home(), "images", f"{OPAQUE}.json")) as file:
            layers = json.load(file)["layers"]
    except (OSError, ValueError, KeyError, image.ImageError):
        return f"there is no image {OPAQUE} in the store ({image.home()}): load it first"
    etc = os.path.join(image.home(), "layers", layers[-1].split(":", 1)[-1], "etc")
    try:
        value = os.getxattr(etc, "trusted.overlay.opaque")
    except OSError as error:
        return f"the top layer's etc has no trusted.overlay.opaque ({error.strerror})"
    return None if value == b"y" else f"the top layer's etc has trusted.overlay.opaque={value!r}"


AN_OPAQUE_DIRECTORY = Exercise(
    [
        Check(
            "ex4-only-hostname",
            f"ls /etc in {OPAQUE} shows only hostname",
            only_hostname,
            (
                "An opaque directory of an upper layer hides everything below it in the lower "
                "ones: the image spec marks it with a file .wh..wh..opq in a layer's tar "
                "(image-spec layer.md, Whiteouts).",
                "A layer tar with the directory etc, the entry etc/.wh..wh..opq and "
                "etc/hostname, added on top of busybox; then mycontainer load, under the "
                f"name {OPAQUE}.",
                'Write `t.addfile(tarfile.TarInfo("etc/.wh..wh..opq"))` in the layer, add it '
                f"with `umoci raw add-layer`, then `mycontainer load /tmp/{OPAQUE}`.",
            ),
        ),
        Check(
            "ex4-opaque-attribute",
            "the top layer's etc has trusted.overlay.opaque = y",
            opaque_attribute,
            (
                "overlayfs reads opaque directories from an attribute, not a file: the "
                "unpacker turns .wh..wh..opq into trusted.overlay.opaque=y on the directory "
                "(overlayfs documentation, xattr(7)).",
                "The layer's directory is the last of the image's layers in the store "
                f'(images/{OPAQUE}.json); os.getxattr(PATH, "trusted.overlay.opaque") reads it.',
                "Load the image with `mycontainer load /tmp/hello:opaque`: the importer sets "
                "the attribute.",
            ),
        ),
    ],
    module="runtime",
)


def fallback_root(program, _scene) -> str | None:
    result = program.run("step run --rm --net none busybox sh -c 'mount | grep \" on / \"'")
    line = result.last_line()
    if result.code == 0 and " on / type " in line and " type overlay " not in line:
        return None
    if " type overlay " in line:
        return "/ in the container is still an overlay: mount_layers mounted overlayfs"
    return result.seen("the container did not run, or its / was not listed")


NO_OVERLAYFS = Exercise(
    [
        Check(
            "ex6-fallback-root",
            "with mount_layers's fallback taken, / in a container is not an overlay, and it runs",
            fallback_root,
            (
                "Without overlayfs (mount(2) fails with ENODEV), the runtime copies every "
                "layer, whiteouts applied, into the container's own root, and bind-mounts "
                "that: slower and bigger, but the same files.",
                "In runtime/filesystem.py, mount_layers: replace the mount of type overlay "
                "with a raise of OSError(errno.ENODEV, ...), so that copy_layers runs.",
                'In mount_layers, replace `mount("overlay", ...)` with '
                '`raise OSError(errno.ENODEV, "no overlayfs")`; put it back after.',
            ),
        )
    ],
    module="runtime",
)

EXERCISES = {4: AN_OPAQUE_DIRECTORY, 6: NO_OVERLAYFS}
