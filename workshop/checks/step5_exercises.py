"""The checks of step 5's exercises (docs/step5-image.md), ``invoke check 5 --exercise K``.

All run ``mycontainer`` (``python -m runtime``), with the learner's changes: exercise 4
looks at the image ``hello:opaque`` the learner built in their store (``MYCONTAINER_HOME``,
else /var/lib/mycontainer), what ``ls /etc`` shows in it and the attribute the unpacker set
on its top layer's ``etc`` (xattr(7)); exercise 5 loads the chapter's hostile layer into a
store of its own while the importer's first defence is off, as the exercise asks, and sees
the chroot stop it; exercise 6 passes while the runtime takes its copying fallback (put the
lines back after: ``invoke check 5`` passes again).

Exercise 5's second edit, the chroot disabled too, is for a throw-away VM: the checker
finds it in runtime/layer.py before it loads anything, and then refuses to load, in one
line. (The machine the checker runs on may be a VM, but not one to throw away.)

Exercises 1 and 8 need umoci or docker to build their images, 2 is three successive edits
of one layout of which only the last is left to see, 3 runs commands whose answer is a file
size the checker could only measure by running them itself, and 7 is a timing: no checker.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import shlex
import tarfile
import tempfile

from runtime import image
from workshop.checks import sandbox
from workshop.checks.check import Check, Exercise, Unprepared

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

PWNED = b"pwned\n"
REFUSED = "refuses to write through symbolic link 'etc'"
LOOPED = "Too many levels of symbolic links: 'etc/evil'"
# The sandbox's /etc becomes an overlay whose upper directory is on a tmpfs of its own:
# whatever a load writes into "the host's" /etc lands there, and is listed after the load.
THROWAWAY_ETC = """\
mount -t tmpfs workshop-etc "$WORKSHOP_SCRATCH" && mkdir "$WORKSHOP_SCRATCH/upper" \
  "$WORKSHOP_SCRATCH/work" && mount -t overlay -o "lowerdir=/etc,upperdir=$WORKSHOP_SCRATCH/\
upper,workdir=$WORKSHOP_SCRATCH/work" workshop-etc /etc || exit 125
"""


def chroots(path: str) -> bool:
    """Whether start_unpack in the runtime/layer.py at ``path`` still calls os.chroot."""
    with open(path, "rb") as file:
        tree = ast.parse(file.read(), path)
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef) and function.name == "start_unpack":
            calls = [node.func for node in ast.walk(function) if isinstance(node, ast.Call)]
            return any(isinstance(call, ast.Attribute) and call.attr == "chroot" for call in calls)
    return False


@contextlib.contextmanager
def hostile_layer():
    """The chapter's /tmp/evil.tar (a link etc -> /etc, then a file etc/evil) in a directory
    of its own, removed afterwards; refused before anything is loaded if the learner's
    importer no longer chroots."""
    layer = os.path.join(sandbox.REPO, "runtime", "layer.py")
    try:
        contained = chroots(layer)
    except (OSError, SyntaxError, ValueError) as error:
        raise Unprepared(
            f"cannot read runtime/layer.py ({error}): fix it, then check again"
        ) from None
    if not contained:
        raise Unprepared(
            "runtime/layer.py's start_unpack no longer calls os.chroot: without its second "
            "defence a hostile layer writes on this machine, so the checker loads none (that "
            "edit is for a throw-away VM); put the chroot back to check the first edit"
        )
    scratch = tempfile.TemporaryDirectory(prefix="workshop-check-", ignore_cleanup_errors=True)
    with scratch as directory:
        with tarfile.open(os.path.join(directory, "evil.tar"), "w") as archive:
            link = tarfile.TarInfo("etc")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc"
            archive.addfile(link)
            evil = tarfile.TarInfo("etc/evil")
            evil.size = len(PWNED)
            archive.addfile(evil, io.BytesIO(PWNED))
        yield directory


def load_hostile(program, directory: str):
    """Load the hostile layer into a new store, under a throw-away /etc: the result, with
    the names the load wrote into that /etc after the line "written into /etc:"."""
    store = tempfile.mkdtemp(prefix="store-", dir=directory)
    etc = tempfile.mkdtemp(prefix="etc-", dir=directory)
    archive = shlex.quote(os.path.join(directory, "evil.tar"))
    script = (
        f"{THROWAWAY_ETC}MYCONTAINER_HOME={shlex.quote(store)} step load {archive}\n"
        'echo "exit status $?"; echo "written into /etc:"; ls -A "$WORKSHOP_SCRATCH/upper"\n'
    )
    result = program.run(script, WORKSHOP_SCRATCH=etc)
    if result.code == 125 and "exit status" not in result.out:
        raise RuntimeError(f"no throw-away /etc: {sandbox.failure(result.err)}")
    return result, store


def stopped_by_the_chroot(program, directory) -> str | None:
    result, _ = load_hostile(program, directory)
    if LOOPED in result.err and REFUSED not in result.err:
        return None
    if REFUSED in result.err:
        return f"the load was refused by the first defence, as before: {REFUSED}"
    if "exit status 0" in result.out:
        return "the load succeeded: nothing stopped the hostile layer"
    return result.seen("the load did not end with ELOOP on etc/evil")


def nothing_outside(program, directory) -> str | None:
    result, store = load_hostile(program, directory)
    status, _, written = result.out.partition("written into /etc:")
    if written.split():
        return f"the load wrote {' '.join(written.split())} into the host's /etc (a throw-away one)"
    if status.strip() != "exit status 125":
        return result.seen(f"the load ended with {status.strip()!r}, not exit status 125")
    left = [name for name in ("images", "layers") if any_in(os.path.join(store, name))]
    if left:
        return f"the refused load left something in the store's {' and '.join(left)}"
    return None


def any_in(directory: str) -> bool:
    return os.path.isdir(directory) and bool(os.listdir(directory))


WITHOUT_THE_CHROOT = Exercise(
    [
        Check(
            "ex5-stopped-by-the-chroot",
            "with _real_parents off, the hostile layer gets past it, and the chroot stops it: "
            "ELOOP on etc/evil",
            stopped_by_the_chroot,
            (
                "The importer defends twice: it refuses a parent that is a symbolic link "
                "(the first defence), and it unpacks in a child chroot(2)ed into the layer "
                "(the second), where a link to /etc points at the layer's own etc. The "
                "exercise asks you to disable the first, in runtime/layer.py.",
                "In runtime/layer.py, Unpacker._real_parents: make it return before its loop, "
                "so that no parent is checked; leave start_unpack's os.chroot as it is.",
                "Disable the first: `Unpacker._real_parents` returns at once (a `return` "
                "right after its docstring); put it back after with "
                "`git checkout runtime/layer.py`.",
            ),
        ),
        Check(
            "ex5-nothing-outside",
            "the load still fails (exit status 125) and writes nothing outside the layer: "
            "nothing in /etc, no image, no layer left",
            nothing_outside,
            (
                "A refused layer must leave no trace: the child that unpacks is chroot(2)ed, "
                "so /etc in there is the layer's own, and the parent removes the layer's "
                "directory when the child reports a failure.",
                'Keep os.chroot(destination) and os.chdir("/") in start_unpack; '
                "finish_unpack removes the destination (remove_tree) when the report is not ok.",
                "Leave `os.chroot(destination)` in start_unpack: only "
                "`Unpacker._real_parents` returns at once.",
            ),
        ),
    ],
    module="runtime",
    scene=hostile_layer,
)

EXERCISES = {4: AN_OPAQUE_DIRECTORY, 5: WITHOUT_THE_CHROOT, 6: NO_OVERLAYFS}
