"""Step 5, images: real images made by real tools (umoci, skopeo, GNU tar), a hostile set of
our own, and a store that keeps each layer once and never lets a container change it."""

from __future__ import annotations

import fcntl
import functools
import gzip
import hashlib
import io
import json
import os
import pty
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import time
import zlib

import pytest

from conftest import environment, mycontainer_command, read_until, running_containers

pytestmark = pytest.mark.privileged


def need(tool: str) -> None:
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (apt-get install {tool}; setup.sh does)")


def sh(*args: str, **kwargs) -> None:
    subprocess.run(args, check=True, capture_output=True, **kwargs)


def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """An uncompressed tar of ``entries``, in the order given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return (info, data) if kind == tarfile.REGTYPE else info


# --- images built by real tools ------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory, home):
    """An OCI layout of three layers made with umoci, with its docker-archive twin (skopeo),
    OCI archives (GNU tar) and root filesystem tarballs."""
    need("umoci")
    rootfs = str(home / "rootfs" / "busybox")
    work = tmp_path_factory.mktemp("images")
    layout, bundle = work / "layout", work / "bundle"
    sh("umoci", "init", "--layout", str(layout))
    sh("umoci", "new", "--image", f"{layout}:merged")
    sh("umoci", "unpack", "--image", f"{layout}:merged", str(bundle))
    root = bundle / "rootfs"
    sh("cp", "-a", f"{rootfs}/.", str(root))
    (root / "data/gonedir").mkdir(parents=True)
    for name in ("data/keep.txt", "data/gone.txt", "data/gonedir/x"):
        (root / name).write_text(name + "\n")
    (root / "opaque").mkdir()
    (root / "opaque/old.txt").write_text("old\n")
    (root / "suid").write_text("#!/bin/sh\n")
    os.chmod(root / "suid", 0o4755)
    os.symlink("/etc/passwd", root / "abs-link")
    (root / "hard1").write_text("linked\n")
    os.link(root / "hard1", root / "hard2")
    sh("umoci", "repack", "--image", f"{layout}:merged", str(bundle))  # layer 1
    shutil.rmtree(bundle)
    sh("umoci", "unpack", "--image", f"{layout}:merged", str(bundle))
    (root / "data/gone.txt").unlink()  # a file whiteout
    shutil.rmtree(root / "data/gonedir")  # a directory whiteout
    (root / "data/new.txt").write_text("new\n")
    sh("umoci", "repack", "--image", f"{layout}:merged", str(bundle))  # layer 2
    # Layer 3: an opaque directory, its marker *after* the layer's own entry in the tar.
    third = work / "opaque.tar"
    third.write_bytes(
        tar_bytes([member("opaque/fresh.txt", data=b"fresh\n"), member("opaque/.wh..wh..opq")])
    )
    sh("umoci", "raw", "add-layer", "--image", f"{layout}:merged", str(third))
    sh("umoci", "config", "--image", f"{layout}:merged", "--config.cmd", "sh")
    files = {"layout": str(layout)}
    files["oci.tar"] = str(work / "oci.tar")
    sh("tar", "-C", str(layout), "-cf", files["oci.tar"], ".")  # members start with ./
    files["oci.tar.gz"] = str(work / "oci.tar.gz")
    sh("tar", "-C", str(layout), "-czf", files["oci.tar.gz"], ".")
    if shutil.which("skopeo"):
        files["docker.tar"] = str(work / "docker.tar")
        sh(
            "skopeo",
            "copy",
            f"oci:{layout}:merged",
            f"docker-archive:{files['docker.tar']}:twin:latest",
        )
    files["rootfs.tar.gz"] = str(work / "rootfs.tar.gz")
    sh("tar", "-C", rootfs, "-czf", files["rootfs.tar.gz"], ".")
    files["rootfs.tar.xz"] = str(work / "rootfs.tar.xz")
    sh("tar", "-C", rootfs, "-cJf", files["rootfs.tar.xz"], ".")
    return files


RUN = ("run", "--rm", "--net", "none")  # a run that leaves nothing: its container goes
MERGED_VIEW = (
    "ls /data /opaque; stat -c '%a %n' /suid; readlink /abs-link; "
    "[ $(stat -c %i /hard1) = $(stat -c %i /hard2) ] && echo hard links kept"
)
MERGED_EXPECTED = (
    "/data:\nkeep.txt\nnew.txt\n\n/opaque:\nfresh.txt\n4755 /suid\n/etc/passwd\nhard links kept\n"
)


def test_load_through_click_and_without_it(mycontainer, images, tmp_path):
    """``load FILE`` skips importing click (runtime.launcher); ``load -- FILE`` goes through
    click: the same output, the same one-line error."""
    for argv in (["load"], ["load", "--"]):
        loaded = mycontainer(*argv, images["rootfs.tar.xz"])
        assert (loaded.stdout, loaded.stderr) == ("rootfs:latest\n", "")  # no bar: not a tty
        missing = mycontainer(*argv, str(tmp_path / "missing.tar"))
        assert missing.returncode == 125
        assert missing.stderr == (
            f"mycontainer: error: no such image file or directory: {tmp_path}/missing.tar\n"
        )


def load_on_a_terminal(reference: str, home, state_root) -> tuple[int, bytes, bytes]:
    """``mycontainer load REFERENCE`` with stderr on a pty: (exit code, stdout, stderr)."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        mycontainer_command("load", reference),
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=environment(home, state_root),
    )
    os.close(secondary)
    shown = b""
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:  # EIO: the other end is closed
            break
        if not data:
            break
        shown += data
    os.close(primary)
    output = process.stdout.read()
    return process.wait(timeout=30), output, shown


ERASE = rb"\r\x1b\[K"
BAR = ERASE + rb"unpacking \[[#.]{30}\] +\d+%  \d+/\d+ MiB"
EMPTY_BAR = ERASE + rb"unpacking \[\.{30}\]   0%  0/\d+ MiB"
DRAWN = rb"%s(%s)*" % (EMPTY_BAR, BAR)  # at 0% first, then each change


def test_a_progress_bar_when_stderr_is_a_terminal(images, home, state_root):
    code, output, shown = load_on_a_terminal(images["rootfs.tar.gz"], home, state_root)
    assert (code, output) == (0, b"rootfs:latest\n")
    assert re.fullmatch(DRAWN + ERASE, shown), shown  # erased when done


def test_the_progress_bar_is_gone_before_an_error(home, state_root, tmp_path):
    write_layout(
        tmp_path / "broken", [tar_bytes([member("f", data=b"x" * 4096)])], corrupt="truncated"
    )
    code, output, shown = load_on_a_terminal(str(tmp_path / "broken"), home, state_root)
    assert (code, output) == (125, b"")
    assert re.fullmatch(DRAWN + ERASE + rb"mycontainer: error: [^\r\n]+\r\n", shown), shown


def test_a_rootfs_tarball_is_unpacked_once(mycontainer, home, state_root, tmp_path):
    """A rootfs tarball has no config to name its layer: the store remembers which layer a
    file of that sha256 gave, so importing it again unpacks nothing (and draws no bar)."""
    tarball = tmp_path / "once.tar.gz"
    tarball.write_bytes(gzip.compress(rootfs_with(str(home / "rootfs/busybox"), "once")))
    code, output, shown = load_on_a_terminal(str(tarball), home, state_root)
    assert (code, output) == (0, b"once:latest\n")
    assert re.fullmatch(DRAWN + ERASE, shown), shown
    code, output, shown = load_on_a_terminal(str(tarball), home, state_root)
    assert (code, output, shown) == (0, b"once:latest\n", b"")  # nothing to unpack
    result = mycontainer(*RUN, str(tarball), "cat", "/which")
    assert (result.stdout, result.stderr) == ("once\n", "")
    assert mycontainer("rmi", "once").returncode == 0


@pytest.mark.parametrize("kind", ["layout", "oci.tar", "oci.tar.gz", "docker.tar"])
def test_container_sees_exactly_the_merged_layers(mycontainer, images, kind):
    if kind not in images:
        pytest.skip("skopeo is not installed (apt-get install skopeo; setup.sh does)")
    reference = images[kind] if kind == "layout" else f"{images[kind]}"
    result = mycontainer(*RUN, reference, "sh", "-c", MERGED_VIEW)
    assert result.returncode == 0, result.stderr
    assert result.stdout == MERGED_EXPECTED


@pytest.mark.parametrize("kind", ["rootfs.tar.gz", "rootfs.tar.xz"])
def test_a_rootfs_tarball_is_an_image(mycontainer, images, kind):
    load = mycontainer("load", images[kind])
    assert load.returncode == 0, load.stderr
    assert load.stdout == "rootfs:latest\n"
    result = mycontainer(*RUN, "rootfs", "cat", "/etc/group")
    assert result.stdout.startswith("root:x:0:")


def test_load_names_the_image_and_images_lists_it(mycontainer, images):
    if "docker.tar" not in images:
        pytest.skip("skopeo is not installed (apt-get install skopeo; setup.sh does)")
    assert mycontainer("load", images["docker.tar"]).stdout == "twin:latest\n"
    listing = [line.split() for line in mycontainer("images").stdout.splitlines()]
    assert listing[0] == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    rows = {tuple(row[:2]): row[2:] for row in listing[1:]}
    assert ("twin", "latest") in rows and ("busybox", "latest") in rows
    # docker's IMAGE ID: the start of the config's digest, which docker save names it by
    config = json.loads(
        subprocess.check_output(["tar", "-xOf", images["docker.tar"], "manifest.json"])
    )
    assert rows["twin", "latest"][0] == config[0]["Config"].split("/")[-1][:12]
    assert rows["twin", "latest"][-1].endswith(("kB", "MB"))
    assert mycontainer("rmi", "twin").returncode == 0
    assert "twin " not in mycontainer("images").stdout


def layer_tree(home) -> dict[str, str]:
    """path -> (mode, size, content hash) of everything in the store's layers."""
    tree = {}
    for root, directories, files in os.walk(home / "layers"):
        for name in directories + files:
            path = os.path.join(root, name)
            status = os.lstat(path)
            content = ""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as file:
                    content = hashlib.sha256(file.read()).hexdigest()
            tree[path] = f"{status.st_mode:o} {status.st_ino} {status.st_mtime_ns} {content}"
    return tree


def test_second_run_unpacks_nothing_and_writes_never_reach_the_layers(mycontainer, images, home):
    mycontainer("load", images["layout"])
    before = layer_tree(home)
    script = "echo changed > /data/keep.txt; rm /bin/ls; mkdir /new; cat /data/keep.txt"
    result = mycontainer(*RUN, images["layout"], "sh", "-c", script)
    assert result.stdout == "changed\n"
    assert layer_tree(home) == before  # not re-unpacked, and not written to
    again = mycontainer(*RUN, images["layout"], "cat", "/data/keep.txt")
    assert again.stdout == "data/keep.txt\n"
    assert os.listdir(home / "containers") == []


def test_two_containers_do_not_see_each_others_writes(mycontainer, background):
    writer = background(*RUN, "busybox", "sh", "-c", "echo mine > /marker; echo written; sleep 30")
    assert read_until(writer.stdout.fileno(), b"written\n") == b"written\n"
    reader = mycontainer(*RUN, "busybox", "ls", "/marker")
    assert reader.returncode != 0 and "No such file" in reader.stderr


def test_image_config_is_honoured(mycontainer, images, tmp_path):
    layout = tmp_path / "configured"
    shutil.copytree(images["layout"], layout)
    sh(
        "umoci", "config", "--image", f"{layout}:merged",
        "--config.entrypoint", "sh", "--config.entrypoint", "-c",
        "--config.cmd", 'echo "$(id -u) $(pwd) $GREETING"',
        "--config.env", "GREETING=hello", "--config.workingdir", "/work",
        "--config.user", "nobody",
    )  # fmt: skip
    image = str(layout)
    assert mycontainer(*RUN, image).stdout == "65534 /work hello\n"
    # COMMAND replaces Cmd (here: the argument of the Entrypoint's sh -c)
    assert mycontainer(*RUN, image, "echo other").stdout == "other\n"
    # -e adds to (and overrides) Env
    result = mycontainer(*RUN, "-e", "GREETING=hi", image)
    assert result.stdout == "65534 /work hi\n"
    # --entrypoint replaces the Entrypoint, and the image's Cmd is dropped
    result = mycontainer(*RUN, "--entrypoint", "id", image, "-u")
    assert result.stdout == "65534\n"


# --- hostile images, of our own -----------------------------------------------------------


def add_blob(blobs, data: bytes, media_type: str) -> dict:
    """Store ``data`` under its digest in ``blobs``; return its OCI descriptor."""
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def write_layout(directory, layers: list[bytes], *, compress=True, corrupt=None) -> None:
    """An OCI layout with ``layers`` (tar bytes, bottom first); ``corrupt`` breaks it."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def add(data: bytes, media_type: str) -> dict:
        return add_blob(blobs, data, media_type)

    descriptors = []
    for data in layers:
        blob = gzip.compress(data, mtime=0) if compress else data
        if corrupt == "truncated":
            blob = blob[: len(blob) // 2]
        descriptors.append(add(blob, "application/vnd.oci.image.layer.v1.tar+gzip"))
    diff_ids = ["sha256:" + hashlib.sha256(data).hexdigest() for data in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "config": add(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": descriptors,
    }
    entry = add(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    last = blobs / descriptors[-1]["digest"].split(":")[1]
    if corrupt == "wrong-digest":
        data = bytearray(last.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte
        last.write_bytes(bytes(data))
    elif corrupt == "missing":
        last.unlink()


@pytest.fixture
def sentinel(home):
    """A directory beside the store that no image may touch; checked byte for byte."""
    path = home.parent / "sentinel"
    path.mkdir(exist_ok=True)
    (path / "file").write_text("precious\n")

    def snapshot():
        return sorted(
            (
                os.path.relpath(os.path.join(root, name), path),
                open(os.path.join(root, name), "rb").read(),
            )
            for root, _, names in os.walk(path)
            for name in names
        )

    before = snapshot()
    yield path
    assert snapshot() == before, "a hostile image changed the sentinel directory"
    assert sorted(os.listdir(path)) == ["file"]


def escape(sentinel, name: str) -> str:
    """A relative name climbing from anywhere in the store to ``sentinel``/name."""
    return "../" * 12 + str(sentinel).lstrip("/") + "/" + name


def huge_pax_header() -> tarfile.TarInfo:
    """A header that tarfile would read whole into memory: 20 MiB here, gigabytes in a bomb."""
    info = tarfile.TarInfo("big-header")
    info.pax_headers = {"comment": "x" * (20 << 20)}
    return info


HOSTILE = {
    "dot-dot": lambda s: [[member(escape(s, "pwned"), data=b"x")]],
    "absolute name": lambda s: [[member(f"{s}/pwned", data=b"x")]],
    "symlink then write, same layer": lambda s: [
        [member("link", tarfile.SYMTYPE, str(s)), member("link/pwned", data=b"x")]
    ],
    "symlink in a lower layer": lambda s: [
        [member("link", tarfile.SYMTYPE, str(s))],
        [member("link/pwned", data=b"x")],
    ],
    "hard link outside": lambda s: [[member("h", tarfile.LNKTYPE, escape(s, "file"))]],
    "hard link to an absolute name": lambda s: [[member("h", tarfile.LNKTYPE, f"{s}/file")]],
    "hard link through a symlink": lambda s: [
        [member("link", tarfile.SYMTYPE, str(s)), member("h", tarfile.LNKTYPE, "link/file")]
    ],
    "directory replaced by a symlink, then written through": lambda s: [
        [
            member("d", tarfile.DIRTYPE),
            member("d/fine", data=b"x"),
            member("d", tarfile.SYMTYPE, str(s)),
            member("d/pwned", data=b"x"),
        ]
    ],
    "whiteout outside": lambda s: [[member(escape(s, ".wh.file"))]],
    "whiteout .wh.": lambda s: [[member(".wh.")]],
    "whiteout .wh..": lambda s: [[member("a/.wh..")]],
    "whiteout .wh...": lambda s: [[member(".wh...")]],
    "huge pax header": lambda s: [[huge_pax_header()]],
    "whiteout of a whiteout": lambda s: [[member(".wh..wh.file")]],
    "whiteout as a directory": lambda s: [[member(".wh.dir/file", data=b"x")]],
}


def store_contents(home) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(root, name), home)
        for root, directories, files in os.walk(home)
        for name in directories + files
        if not os.path.relpath(root, home).startswith(("rootfs", "layers/"))
    )


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_layers_are_refused(mycontainer, home, sentinel, tmp_path, case):
    layers = [tar_bytes(entries) for entries in HOSTILE[case](sentinel)]
    write_layout(tmp_path / "hostile", layers)
    before = store_contents(home)
    result = mycontainer("load", str(tmp_path / "hostile"))
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("mycontainer: error: image hostile:latest: blob sha256:")
    assert "refuse" in result.stderr or "malformed" in result.stderr, result.stderr
    assert store_contents(home) == before  # nothing left behind


def test_a_layer_thousands_of_levels_deep_loads(mycontainer, tmp_path):
    """2,000 nested directories over a lower layer: checked without recursion (os.walk of
    Python 3.11 recursed once per level, and gave a RecursionError traceback)."""
    layers = [[member("a", data=b"x")], [member("/".join(["d"] * 2000) + "/f", data=b"x")]]
    write_layout(tmp_path / "deep", [tar_bytes(entries) for entries in layers])
    result = mycontainer("load", str(tmp_path / "deep"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "deep:latest\n", "")
    assert mycontainer("rmi", "deep:latest").returncode == 0


def without_config(layout) -> None:
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    del manifest["config"]
    index["manifests"][0] = add_blob(
        layout / "blobs/sha256", json.dumps(manifest).encode(), index["manifests"][0]["mediaType"]
    )
    (layout / "index.json").write_text(json.dumps(index))


def without_digest(layout) -> None:
    index = json.loads((layout / "index.json").read_text())
    del index["manifests"][0]["digest"]
    (layout / "index.json").write_text(json.dumps(index))


MALFORMED = {
    "a manifest without config": without_config,
    "a descriptor without digest": without_digest,
    "an index that is a list": lambda layout: (layout / "index.json").write_text("[]"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_image_metadata_is_one_line(mycontainer, home, tmp_path, case):
    layout = tmp_path / "odd"
    write_layout(layout, [tar_bytes([member("f", data=b"x")])])
    MALFORMED[case](layout)
    before = store_contents(home)
    result = mycontainer("load", str(layout))
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"mycontainer: error: {layout}: malformed image metadata")
    assert store_contents(home) == before


def rewrite(layout, index=None, manifest=None, config=None) -> None:
    """Change the JSON documents of the one-image ``layout`` (each function edits one in
    place), storing each changed blob under its new digest and chaining the digests up."""
    blobs = layout / "blobs" / "sha256"
    index_json = json.loads((layout / "index.json").read_text())
    entry = index_json["manifests"][0]
    manifest_json = json.loads((blobs / entry["digest"].split(":")[1]).read_text())
    config_json = json.loads((blobs / manifest_json["config"]["digest"].split(":")[1]).read_text())
    if config:
        config(config_json)
        media_type = "application/vnd.oci.image.config.v1+json"
        manifest_json["config"] = add_blob(blobs, json.dumps(config_json).encode(), media_type)
    if manifest:
        manifest(manifest_json)
    index_json["manifests"][0] = {
        **entry,
        **add_blob(blobs, json.dumps(manifest_json).encode(), entry["mediaType"]),
    }
    if index:
        index(index_json)
    (layout / "index.json").write_text(json.dumps(index_json))


def settings(**fields):
    """A change of the config's "config" object: its fields set to ``fields``."""
    return lambda config: config.setdefault("config", {}).update(fields)


def first_descriptor(**fields):
    return lambda index: index["manifests"][0].update(fields)


# Hostile image metadata: (how to change a good image, the field the error must name).
HOSTILE_METADATA = {
    "Cmd a string": ({"config": settings(Cmd="sh")}, '"config.Cmd"'),
    "Entrypoint a string": ({"config": settings(Entrypoint="/bin/sh -c")}, '"config.Entrypoint"'),
    "Cmd of numbers": ({"config": settings(Cmd=[1, 2])}, '"config.Cmd"'),
    "Cmd with a NUL byte": ({"config": settings(Cmd=["ec\u0000ho"])}, '"config.Cmd"'),
    "Env a string": ({"config": settings(Env="PATH=/bin")}, '"config.Env"'),
    "Env of numbers": ({"config": settings(Env=[1])}, '"config.Env"'),
    "Env without =": ({"config": settings(Env=["JUSTAWORD"])}, '"config.Env"'),
    "WorkingDir a number": ({"config": settings(WorkingDir=5)}, '"config.WorkingDir"'),
    "WorkingDir relative": ({"config": settings(WorkingDir="relative")}, '"config.WorkingDir"'),
    "User a number": ({"config": settings(User=0)}, '"config.User"'),
    "User a list": ({"config": settings(User=["root"])}, '"config.User"'),
    "ExposedPorts a list": ({"config": settings(ExposedPorts=["80/tcp"])}, '"config.ExposedPorts"'),
    "ExposedPorts a name": ({"config": settings(ExposedPorts={"http": {}})}, "ExposedPorts"),
    "ExposedPorts too high": ({"config": settings(ExposedPorts={"99999/tcp": {}})}, "ExposedPorts"),
    "ExposedPorts Unicode digits": ({"config": settings(ExposedPorts={"²/tcp": {}})}, "Exposed"),
    "ExposedPorts odd protocol": ({"config": settings(ExposedPorts={"80/icmp": {}})}, "Exposed"),
    "ExposedPorts odd value": ({"config": settings(ExposedPorts={"80/tcp": 1})}, "ExposedPorts"),
    "Volumes a list": ({"config": settings(Volumes=["/data"])}, '"config.Volumes"'),
    "Labels of numbers": ({"config": settings(Labels={"a": 1})}, '"config.Labels"'),
    "StopSignal a number": ({"config": settings(StopSignal=9)}, '"config.StopSignal"'),
    "config a string": ({"config": lambda c: c.update(config="sh")}, 'field "config"'),
    "rootfs missing": ({"config": lambda c: c.pop("rootfs")}, '"rootfs"'),
    "rootfs a string": ({"config": lambda c: c.update(rootfs="layers")}, '"rootfs"'),
    "diff_ids a string": (
        {"config": lambda c: c["rootfs"].update(diff_ids=c["rootfs"]["diff_ids"][0])},
        '"rootfs.diff_ids"',
    ),
    "a diff_id a number": (
        {"config": lambda c: c["rootfs"].update(diff_ids=[7])},
        '"rootfs.diff_ids"',
    ),
    "a diff_id not sha256": (
        {"config": lambda c: c["rootfs"].update(diff_ids=["md5:0123"])},
        '"rootfs.diff_ids[0]"',
    ),
    "a config that is a list": ({"config": lambda c: (c.clear(), c.update(x=[]))}, '"rootfs"'),
    "layers a string": ({"manifest": lambda m: m.update(layers="x")}, '"layers"'),
    "a layer a string": ({"manifest": lambda m: m.update(layers=["x"])}, '"layers[0]"'),
    "a layer's digest a number": (
        {"manifest": lambda m: m["layers"][0].update(digest=5)},
        '"layers[0].digest"',
    ),
    "a layer's digest a path": (
        {"manifest": lambda m: m["layers"][0].update(digest="sha256:../../../etc/passwd")},
        '"layers[0].digest"',
    ),
    "a layer's mediaType a list": (
        {"manifest": lambda m: m["layers"][0].update(mediaType=["gzip"])},
        '"layers[0].mediaType"',
    ),
    "config descriptor a string": ({"manifest": lambda m: m.update(config="x")}, '"config"'),
    "manifests a string": ({"index": lambda i: i.update(manifests="x")}, '"manifests"'),
    "a manifest descriptor a number": (
        {"index": lambda i: i.update(manifests=[5])},
        '"manifests[0]" must be an object (got 5)',
    ),
    "annotations a list": (
        {"index": first_descriptor(annotations=["x"])},
        '"manifests[0].annotations"',
    ),
    "an annotation a number": (
        {"index": first_descriptor(annotations={"org.opencontainers.image.ref.name": 1})},
        '"manifests[0].annotations"',
    ),
    "platform a string": ({"index": first_descriptor(platform="linux")}, '"manifests[0].platform"'),
}


@pytest.mark.parametrize("case", HOSTILE_METADATA)
def test_hostile_image_metadata_is_one_line_naming_the_field(mycontainer, home, tmp_path, case):
    """Each malformed field: exit 125, one line naming it, before anything is unpacked."""
    changes, field = HOSTILE_METADATA[case]
    layout = tmp_path / "odd"
    write_layout(layout, [tar_bytes([member("f", data=os.urandom(64))])])  # a layer of its own
    rewrite(layout, **changes)
    before = store_contents(home)
    result = mycontainer("load", str(layout))
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"mycontainer: error: {layout}: malformed image metadata")
    assert field in result.stderr, result.stderr
    assert store_contents(home) == before


def test_an_empty_index_and_null_fields(mycontainer, home, tmp_path):
    """An index that lists nothing is one line; null stands for unset, as in docker's own
    configs (a layer's mediaType, Cmd, Env...), and loads."""
    layout = tmp_path / "nulls"
    write_layout(layout, [tar_bytes([member("f", data=os.urandom(64))])])
    nulls = dict.fromkeys(["Cmd", "Entrypoint", "Env", "WorkingDir", "User", "ExposedPorts"])
    rewrite(
        layout,
        config=settings(**nulls),
        manifest=lambda m: m["layers"][0].update(mediaType=None),
    )
    result = mycontainer("load", str(layout))
    assert (result.returncode, result.stdout, result.stderr) == (0, "nulls:latest\n", "")
    assert mycontainer("rmi", "nulls").returncode == 0
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    before = store_contents(home)
    result = mycontainer("load", str(layout))
    assert (result.returncode, result.stderr) == (
        125,
        "mycontainer: error: image nulls lists no image in its index\n",
    )
    assert store_contents(home) == before


BAD_NAMES = {
    "300 characters": ("a" * 300, "too long (307 characters"),  # with :latest
    "a space": ("my image:1", "invalid image name 'my image:1'"),
    "a tag of 129 characters": ("x:" + "t" * 129, "a tag is 1 to 128"),
    "a component of dots": ("../x:1", "starts or ends with"),
    "a NUL byte": ("x\u0000y:1", '"manifests[0].annotations"'),
}


@pytest.mark.parametrize("case", BAD_NAMES)
def test_an_invalid_name_is_refused_before_any_work(mycontainer, home, tmp_path, case):
    """The name is checked before any layer is unpacked (the layer is new to the store: a
    late failure would leave it there)."""
    name, message = BAD_NAMES[case]
    layout = tmp_path / "named"
    write_layout(layout, [tar_bytes([member("f", data=os.urandom(64))])])
    rewrite(layout, index=first_descriptor(annotations={"io.containerd.image.name": name}))
    before = store_contents(home)
    result = mycontainer("load", str(layout))
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert store_contents(home) == before


@pytest.mark.parametrize("which", ["layer", "index.json"])
def test_an_image_file_that_is_a_fifo_is_refused_without_hanging(
    mycontainer, home, tmp_path, which
):
    layout = tmp_path / "fifo"
    write_layout(layout, [tar_bytes([member("f", data=os.urandom(64))])])
    if which == "layer":
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads(
            (layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text()
        )
        path = layout / "blobs/sha256" / manifest["layers"][0]["digest"][7:]
        shown = f"blobs/sha256/{path.name}"
    else:
        path, shown = layout / "index.json", "index.json"
    path.unlink()
    os.mkfifo(path)
    before = store_contents(home)
    result = mycontainer("load", str(layout), timeout=20)
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr == f"mycontainer: error: image fifo: {shown} is not a regular file\n"
    assert store_contents(home) == before


def test_an_invalid_tag_is_refused_before_the_file_is_read(mycontainer, home, tmp_path):
    write_layout(tmp_path / "tagged", [tar_bytes([member("f", data=os.urandom(64))])])
    before = store_contents(home)
    result = mycontainer("load", f"{tmp_path / 'tagged'}:-v1")
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr == (
        "mycontainer: error: invalid tag '-v1': a tag is 1 to 128 letters, digits, '.', '_' "
        "or '-', not first '.' or '-'\n"
    )
    assert store_contents(home) == before


HOSTILE_DOCKER_MANIFESTS = {
    "an object": ({"Config": "c.json"}, "manifest.json must be a list"),
    "Layers a string": ([{"Config": "c.json", "Layers": "l.tar"}], '"[0].Layers"'),
    "Config a number": ([{"Config": 1, "Layers": []}], '"[0].Config"'),
    "RepoTags a string": ([{"Config": "c.json", "Layers": [], "RepoTags": "x"}], '"[0].RepoTags"'),
}


@pytest.mark.parametrize("case", HOSTILE_DOCKER_MANIFESTS)
def test_hostile_docker_manifests_are_one_line(mycontainer, home, tmp_path, case):
    manifest, field = HOSTILE_DOCKER_MANIFESTS[case]
    archive = tmp_path / "odd.tar"
    archive.write_bytes(tar_bytes([member("manifest.json", data=json.dumps(manifest).encode())]))
    before = store_contents(home)
    result = mycontainer("load", str(archive))
    assert (result.returncode, result.stdout) == (125, "")
    assert (
        result.stderr
        == f"mycontainer: error: {archive}: malformed image metadata: "
        + (result.stderr.split("malformed image metadata: ", 1)[1])
    )
    assert result.stderr.count("\n") == 1 and field in result.stderr, result.stderr
    assert store_contents(home) == before


BIG = 512 << 20  # bytes of zeros in the big image's one file: a second or so to unpack


@functools.cache
def big_layer() -> tuple[bytes, str]:
    """(gzip blob, diff_id) of a layer that inflates from under a megabyte to half a gigabyte."""
    header = tarfile.TarInfo("big")
    header.size = BIG
    diff_id = hashlib.sha256()
    compressor = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip
    compressed = []
    zeros = bytes(1 << 20)
    for piece in [header.tobuf(tarfile.PAX_FORMAT), *[zeros] * (BIG >> 20), bytes(1024)]:
        diff_id.update(piece)
        compressed.append(compressor.compress(piece))
    compressed.append(compressor.flush())
    return b"".join(compressed), "sha256:" + diff_id.hexdigest()


def write_big_layout(layout, lower: list[bytes] = ()) -> None:
    """An OCI layout of the ``lower`` layers (tar bytes, bottom first), then the big one."""
    write_layout(layout, list(lower) or [tar_bytes([])])
    blob, diff_id = big_layer()
    media_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    descriptor = add_blob(layout / "blobs" / "sha256", blob, media_type)

    def on_top(config):
        config["rootfs"]["diff_ids"] = config["rootfs"]["diff_ids"][: len(lower)] + [diff_id]

    def manifest(document):
        document["layers"] = document["layers"][: len(lower)] + [descriptor]

    rewrite(layout, config=on_top, manifest=manifest)


@pytest.fixture(scope="module")
def big_layout(tmp_path_factory):
    layout = tmp_path_factory.mktemp("big") / "big"
    write_big_layout(layout)
    return layout


def unpacking(home) -> bool:
    """Whether an import is writing the big file, a megabyte of it written already."""
    for name in os.listdir(home / "layers"):
        try:
            if (
                name.startswith(".unpacking-")
                and (home / "layers" / name / "big").stat().st_size > 1 << 20
            ):
                return True
        except FileNotFoundError:
            continue
    return False


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        (["load"], signal.SIGINT),
        (["load"], signal.SIGTERM),
        (["load"], signal.SIGHUP),
        (["load", "--"], signal.SIGINT),  # through click, which catches KeyboardInterrupt
        (["run", "--rm", "--net", "none"], signal.SIGINT),  # run imports an image file first
    ],
    ids=["load SIGINT", "load SIGTERM", "load SIGHUP", "load -- SIGINT", "run SIGINT"],
)
def test_an_interrupted_import_leaves_the_store_as_it_was(
    home, state_root, big_layout, command, signum
):
    """A real signal, sent while the layer unpacks: one line, exit 128+N, no traceback, and
    the store exactly as before, named entry by named entry."""
    before = store_contents(home)
    process = subprocess.Popen(
        mycontainer_command(*command, str(big_layout)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(home, state_root),
    )
    try:
        deadline = time.monotonic() + 60
        while not unpacking(home):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the big layer never started to unpack"
            time.sleep(0.005)
        process.send_signal(signum)
        output, errors = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (process.returncode, output) == (128 + signum, "")
    assert errors == f"mycontainer: error: interrupted by {signal.Signals(signum).name}\n"
    assert store_contents(home) == before
    assert os.listdir(state_root) == []


def consistent_store(home) -> dict[str, list[str]]:
    """The store's images and their layers, asserting that every layer they name is there
    and that nothing is left under a temporary name."""
    images = {}
    for name in os.listdir(home / "images"):
        assert not name.startswith("."), f"left behind: images/{name}"
        record = json.loads((home / "images" / name).read_text())
        images[record["name"]] = record["layers"]
        for diff_id in record["layers"]:
            assert (home / "layers" / diff_id.split(":")[1]).is_dir(), f"{name}: {diff_id} gone"
    leftovers = [n for n in os.listdir(home / "layers") if n.startswith(".") and n != ".by-blob"]
    leftovers += [n for n in os.listdir(home) if n.startswith(".")]
    assert leftovers == []
    return images


def start(home, state_root, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        mycontainer_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(home, state_root),
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    output, errors = process.communicate(timeout=120)
    return process.returncode, output, errors


def test_parallel_loads_all_succeed(mycontainer, home, state_root, tmp_path):
    """Eight loads of one image at once, four times, then eight of different images."""
    same = tmp_path / "same"
    write_layout(same, [tar_bytes([member("f", data=os.urandom(1 << 16))])])
    for _round in range(4):
        loads = [start(home, state_root, "load", str(same)) for _ in range(8)]
        assert [finish(load) for load in loads] == [(0, "same:latest\n", "")] * 8
    assert "same:latest" in consistent_store(home)
    names = [f"other{i}" for i in range(8)]
    for name in names:
        write_layout(tmp_path / name, [tar_bytes([member(name, data=os.urandom(1 << 16))])])
    loads = [start(home, state_root, "load", str(tmp_path / name)) for name in names]
    assert [finish(load) for load in loads] == [(0, f"{name}:latest\n", "") for name in names]
    assert set(names) | {"same"} <= {name.split(":")[0] for name in consistent_store(home)}
    assert mycontainer("rmi", "same", *names).returncode == 0
    consistent_store(home)


def test_rmi_and_prune_racing_loads_leave_no_image_without_its_layers(
    mycontainer, home, state_root, tmp_path
):
    """rmi and prune remove layers no image names: never one that a load has moved in and
    not yet named in its record. Each round's image is new, so its layer is moved in."""
    for round_ in range(6):
        layout = tmp_path / f"race{round_}"
        write_layout(layout, [tar_bytes([member("f", data=os.urandom(1 << 16))])])
        loads = [start(home, state_root, "load", str(layout)) for _ in range(3)]
        removers = [
            start(home, state_root, "rmi", f"race{round_}"),
            start(home, state_root, "prune"),
        ]
        assert [finish(load)[0] for load in loads] == [0, 0, 0]
        for code, _output, errors in map(finish, removers):
            assert code == 0 or errors == f"mycontainer: error: no such image: race{round_}\n"
        if f"race{round_}:latest" in consistent_store(home):
            assert mycontainer("rmi", f"race{round_}").returncode == 0


def test_rmi_waits_for_a_load_that_uses_a_layer_it_would_remove(
    mycontainer, home, state_root, tmp_path
):
    """A load finds layer A in the store (image "lower" has it) and so does not unpack it;
    while it unpacks its big layer, rmi removes "lower": A must stay, for the new image."""
    layer_a = tar_bytes([member("a", data=os.urandom(64))])
    write_layout(tmp_path / "lower", [layer_a])
    assert mycontainer("load", str(tmp_path / "lower")).returncode == 0
    write_big_layout(tmp_path / "upper", [layer_a])
    load = start(home, state_root, "load", str(tmp_path / "upper"))
    deadline = time.monotonic() + 60
    while not unpacking(home):
        assert load.poll() is None and time.monotonic() < deadline, load.communicate()
        time.sleep(0.005)
    assert mycontainer("rmi", "lower").returncode == 0
    assert finish(load) == (0, "upper:latest\n", "")
    assert consistent_store(home)["upper:latest"][0] == "sha256:" + sha256(layer_a)
    assert mycontainer("rmi", "upper").returncode == 0


@pytest.mark.parametrize(
    "record",
    ['{"name": "edited:latest", "config": {"Cmd": "sh"}, "layers": []}', '{"name": ', "[]"],
    ids=["Cmd a string", "cut short", "a list"],
)
def test_a_broken_record_in_the_store_is_one_line(mycontainer, home, record):
    """A record edited by hand (or by an older mycontainer): what to do, not a traceback."""
    path = home / "images" / "edited:latest.json"
    path.write_text(record)
    try:
        result = mycontainer(*RUN, "edited", "true")
        assert result.returncode == 125
        assert result.stderr == (
            f"mycontainer: error: the store's record {path} is broken "
            + result.stderr.split(" is broken ", 1)[1]
        )
        assert result.stderr.count("\n") == 1 and "'mycontainer rmi'" in result.stderr
        assert mycontainer("rmi", "edited").returncode == 0
    finally:
        path.unlink(missing_ok=True)


def blocked_on_a_lock(pid: int) -> bool:
    """Whether ``pid`` waits for a flock(2): /proc/locks marks such requests '->'
    (proc(5))."""
    with open("/proc/locks") as file:
        return any("->" in line and line.split("->", 1)[1].split()[3] == str(pid) for line in file)


@pytest.mark.parametrize("command", [["rmi", "nothing"], ["prune"]])
def test_rmi_and_prune_wait_for_the_store_and_can_be_interrupted(home, state_root, command):
    """While an import holds the store (here: this test, as one), rmi and prune wait; Ctrl-C
    then ends them with one line, exit 130."""
    lock = os.open(home / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_SH)
        waiting = start(home, state_root, *command)
        deadline = time.monotonic() + 30
        while not blocked_on_a_lock(waiting.pid):
            assert waiting.poll() is None, finish(waiting)
            assert time.monotonic() < deadline, "it never waited for the store's lock"
            time.sleep(0.01)
        waiting.send_signal(signal.SIGINT)
        assert finish(waiting) == (130, "", "mycontainer: error: interrupted by SIGINT\n")
    finally:
        os.close(lock)


def test_rmi_racing_run_never_removes_the_layers_run_found(mycontainer, home, state_root, tmp_path):
    """run finds its image, then writes its state naming the layers; rmi in between must not
    remove them. Either run finds no image, or it runs; rmi removes the image, or says it
    is in use. (The window is a few milliseconds: this guards the outcome, and
    test_rmi_waits_for_a_load_that_uses_a_layer_it_would_remove the lock, for certain.)"""
    layout = tmp_path / "raced"
    write_layout(layout, [rootfs_with(str(home / "rootfs/busybox"), "raced")])
    run_command = ["run", "--rm", "--net", "none", "--pull", "never", "raced", "cat", "/which"]
    for delay in range(-6, 6):  # each started up to 60 ms before the other
        assert mycontainer("load", str(layout)).returncode == 0
        first, second = (["rmi", "raced"], run_command)[:: 1 if delay < 0 else -1]
        started = [start(home, state_root, *first)]
        time.sleep(0.01 * abs(delay))
        started.append(start(home, state_root, *second))
        run, rmi = started[:: 1 if delay >= 0 else -1]
        code, output, errors = finish(run)
        rmi = subprocess.CompletedProcess(rmi.args, *finish(rmi))
        assert (code, output, errors) in [
            (0, "raced\n", ""),
            (125, "", "mycontainer: error: no such image, file or directory: raced\n"),
        ], errors
        assert rmi.returncode == 0 or "is used by container" in rmi.stderr, rmi.stderr
        if rmi.returncode != 0:
            assert mycontainer("rmi", "raced").returncode == 0
        consistent_store(home)


# Links that each stay inside the archive, chained to reach the parent of the store's
# staging directory (staging -> home -> home's parent, where the sentinel is).
CLIMB = [
    member("c", tarfile.SYMTYPE, "."),
    member("e", tarfile.SYMTYPE, "c/.."),
    member("g", tarfile.SYMTYPE, "e/.."),
]
HOSTILE_ARCHIVES = {
    "chained links, then a file through them": [*CLIMB, member("g/sentinel/pwned", data=b"x")],
    "a link, then a file written through it": [
        *CLIMB,
        member("l", tarfile.SYMTYPE, "g/sentinel/file"),
        member("l", data=b"overwritten\n"),
    ],
}


@pytest.mark.parametrize("case", HOSTILE_ARCHIVES)
def test_hostile_image_archives_are_refused(mycontainer, home, sentinel, tmp_path, case):
    """An image archive is unpacked to a staging directory before its blobs are read: its
    entries must stay there, however their links chain."""
    archive = tmp_path / "hostile.tar"
    layout = member("oci-layout", data=b'{"imageLayoutVersion": "1.0.0"}')
    archive.write_bytes(tar_bytes([layout, *HOSTILE_ARCHIVES[case]]))
    before = store_contents(home)
    result = mycontainer("load", str(archive))
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"mycontainer: error: {archive}: entry "), result.stderr
    assert store_contents(home) == before


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ("wrong-digest", "its content has digest"),
        ("missing", "is missing"),
        ("truncated", "truncated or not a tar archive"),
        ("not-a-tar", "truncated or not a tar archive"),
    ],
)
def test_broken_images_are_refused(mycontainer, home, sentinel, tmp_path, corrupt, message):
    layers = (
        [b"this is not a tar archive" * 40]
        if corrupt == "not-a-tar"
        else [
            tar_bytes(
                [member("fine", data=b"fine\n")] * 1
                + [member(f"f{i}", data=os.urandom(4096)) for i in range(8)]
            )
        ]
    )
    write_layout(tmp_path / "broken", layers, corrupt=corrupt)
    before = store_contents(home)
    result = mycontainer("load", str(tmp_path / "broken"))
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("mycontainer: error: image broken:latest: blob sha256:")
    assert message in result.stderr
    assert store_contents(home) == before


def test_an_image_in_use_cannot_be_removed(mycontainer, background, state_root):
    process = background("run", "--rm", "--net", "none", "busybox", "sleep", "30")
    running_containers(state_root, runtimes=[process])
    result = mycontainer("rmi", "busybox")
    assert result.returncode == 125
    assert "is used by container" in result.stderr


def test_layers_stay_while_a_container_stacks_them(mycontainer, background, home, tmp_path):
    """``x`` loaded again leaves its old layer to no image; removing another image must not
    take that layer from under the container still running on it."""
    make_layout_with(tmp_path / "first" / "x", [({}, rootfs_with(home / "rootfs/busybox", "1"))])
    assert mycontainer("load", str(tmp_path / "first" / "x")).stdout == "x:latest\n"
    process = background(
        "run", "--rm", "-i", "--net", "none", "x", "sh", "-c", "echo up; read _; cat /which",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert read_until(process.stdout.fileno(), b"up\n") == b"up\n"
    make_layout_with(tmp_path / "second" / "x", [({}, rootfs_with(home / "rootfs/busybox", "2"))])
    assert mycontainer("load", str(tmp_path / "second" / "x")).stdout == "x:latest\n"
    write_layout(tmp_path / "other", [tar_bytes([member("f", data=b"f")])])
    assert mycontainer("load", str(tmp_path / "other")).returncode == 0
    assert mycontainer("rmi", "other").returncode == 0
    process.stdin.write("go\n")
    process.stdin.close()
    assert process.stdout.read() == "1\n"  # the first layer, still whole
    assert process.wait(timeout=20) == 0
    pruned = mycontainer("prune").stdout
    assert pruned.count("removed a layer no image or container uses") == 1, pruned
    assert mycontainer(*RUN, "x", "cat", "/which").stdout == "2\n"
    mycontainer("rmi", "x")


# --- index selection, docker >= 25 archives, zstd ---------------------------------------------


def make_layout_with(directory, manifests: list[tuple[dict, bytes]], nested_platforms=False):
    """An OCI layout whose index lists one manifest per (annotations, layer tar) given."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def add(data: bytes, media_type: str) -> dict:
        return add_blob(blobs, data, media_type)

    entries = []
    for extra, layer_tar in manifests:
        diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
        config = {"rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {"Cmd": ["sh"]}}
        manifest = {
            "schemaVersion": 2,
            "config": add(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
            "layers": [add(layer_tar, "application/vnd.oci.image.layer.v1.tar")],
        }
        entry = add(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        entry.update(extra)
        entries.append(entry)
    if nested_platforms:
        nested = {"schemaVersion": 2, "manifests": entries}
        entries = [add(json.dumps(nested).encode(), "application/vnd.oci.image.index.v1+json")]
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def rootfs_with(busybox_rootfs: str, marker: str) -> bytes:
    """The busybox rootfs plus a file /which naming ``marker``, as an uncompressed tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(busybox_rootfs, arcname=".")
        info = tarfile.TarInfo("which")
        info.size = len(marker) + 1
        archive.addfile(info, io.BytesIO(marker.encode() + b"\n"))
    return buffer.getvalue()


def test_the_host_architecture_is_picked_from_a_nested_index(mycontainer, busybox_rootfs, tmp_path):
    machine = {"x86_64": "amd64", "aarch64": "arm64"}[os.uname().machine]
    other = "arm64" if machine == "amd64" else "amd64"
    make_layout_with(
        tmp_path / "multi",
        [
            (
                {"platform": {"architecture": other, "os": "linux"}},
                rootfs_with(busybox_rootfs, other),
            ),
            (
                {"platform": {"architecture": machine, "os": "linux"}},
                rootfs_with(busybox_rootfs, machine),
            ),
        ],
        nested_platforms=True,
    )
    result = mycontainer(*RUN, str(tmp_path / "multi"), "cat", "/which")
    assert result.stdout == f"{machine}\n", result.stderr


def test_file_colon_tag_picks_one_of_several(mycontainer, busybox_rootfs, tmp_path):
    tag = "org.opencontainers.image.ref.name"
    make_layout_with(
        tmp_path / "tags",
        [
            ({"annotations": {tag: "one"}}, rootfs_with(busybox_rootfs, "one")),
            ({"annotations": {tag: "two"}}, rootfs_with(busybox_rootfs, "two")),
        ],
    )
    result = mycontainer(*RUN, f"{tmp_path / 'tags'}:two", "cat", "/which")
    assert result.stdout == "two\n", result.stderr
    ambiguous = mycontainer(*RUN, str(tmp_path / "tags"), "true")
    assert ambiguous.returncode == 125
    assert "pick one as FILE:TAG (tags: one, two)" in ambiguous.stderr


def test_archives_that_start_with_files_are_images(mycontainer, busybox_rootfs, tmp_path):
    """Top-level files before the marker do not make an archive a rootfs: crane (and ko,
    kaniko) write the config as ``sha256:<hex>`` and ``manifest.json`` last; macOS tar
    puts ``._*`` files first."""
    layer_tar = rootfs_with(busybox_rootfs, "crane")
    layer_gz = gzip.compress(layer_tar, mtime=0)
    machine = os.uname().machine
    config = json.dumps(
        {
            "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine),
            "os": "linux",
            "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(layer_tar)}"]},
        }
    ).encode()
    config_name, layer_name = f"sha256:{sha256(config)}", f"{sha256(layer_gz)}.tar.gz"
    manifest = [{"Config": config_name, "RepoTags": ["crane:v1"], "Layers": [layer_name]}]
    crane = tmp_path / "crane.tar"
    crane.write_bytes(
        tar_bytes(
            [
                member(config_name, data=config),
                member(layer_name, data=layer_gz),
                member("manifest.json", data=json.dumps(manifest).encode()),
            ]
        )
    )
    assert mycontainer("load", str(crane)).stdout == "crane:v1\n"
    assert mycontainer(*RUN, "crane:v1", "cat", "/which").stdout == "crane\n"

    layout = tmp_path / "mac"
    make_layout_with(layout, [({}, rootfs_with(busybox_rootfs, "mac"))])
    mac = tmp_path / "mac.tar"
    with tarfile.open(mac, "w") as tar:
        for name in ("./._blobs", "./.DS_Store"):
            info = tarfile.TarInfo(name)
            tar.addfile(info)
        tar.add(layout, arcname=".")
    assert mycontainer("load", str(mac)).stdout == "mac:latest\n"
    assert mycontainer(*RUN, "mac", "cat", "/which").stdout == "mac\n"
    mycontainer("rmi", "crane:v1", "mac")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_docker_25_archive_with_both_layouts(mycontainer, busybox_rootfs, tmp_path):
    """Docker >= 25 saves an OCI layout and a manifest.json whose layers are blobs/sha256/..."""
    layout = tmp_path / "d25"
    make_layout_with(layout, [({}, rootfs_with(busybox_rootfs, "docker25"))])
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    blob = lambda d: f"blobs/sha256/{d['digest'].split(':')[1]}"  # noqa: E731
    (layout / "manifest.json").write_text(
        json.dumps(
            [{"Config": blob(manifest["config"]), "RepoTags": ["d25:v1"],
              "Layers": [blob(d) for d in manifest["layers"]]}]
        )
    )  # fmt: skip
    archive = tmp_path / "d25.tar"
    with tarfile.open(archive, "w") as tar:  # manifest.json first: read as a docker archive
        tar.add(layout / "manifest.json", arcname="manifest.json")
        tar.add(layout, arcname=".")
    assert mycontainer("load", str(archive)).stdout == "d25:v1\n"
    assert mycontainer(*RUN, "d25:v1", "cat", "/which").stdout == "docker25\n"


def test_zstd_layers(mycontainer, busybox_rootfs, tmp_path):
    zstandard = pytest.importorskip("zstandard", reason="the zstandard package is not installed")
    layer_tar = rootfs_with(busybox_rootfs, "zstd")
    layout = tmp_path / "zst"
    write_layout(layout, [layer_tar], compress=False)
    # swap the layer blob for its zstd-compressed form, with the digests to match
    blobs = layout / "blobs/sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest_file = blobs / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_file.read_text())
    compressed = zstandard.ZstdCompressor().compress(layer_tar)
    digest = hashlib.sha256(compressed).hexdigest()
    (blobs / digest).write_bytes(compressed)
    manifest["layers"][0].update(digest=f"sha256:{digest}", size=len(compressed))
    manifest["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    data = json.dumps(manifest).encode()
    new_manifest = hashlib.sha256(data).hexdigest()
    (blobs / new_manifest).write_bytes(data)
    index["manifests"][0].update(digest=f"sha256:{new_manifest}", size=len(data))
    (layout / "index.json").write_text(json.dumps(index))
    assert mycontainer(*RUN, str(layout), "cat", "/which").stdout == "zstd\n"


# --- what GNU tar writes, unpacked exactly --------------------------------------------------


def tree(root) -> dict:
    """Everything below ``root``: type and mode, owner, mtime, content (or link target, or
    device number) and extended attributes of each path."""
    found = {}
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            status = os.lstat(path)
            if stat.S_ISREG(status.st_mode):
                with open(path, "rb") as file:
                    what = hashlib.sha256(file.read()).hexdigest()
            elif stat.S_ISLNK(status.st_mode):
                what = os.readlink(path)
            else:
                what = status.st_rdev
            xattrs = {
                key: os.getxattr(path, key, follow_symlinks=False)
                for key in os.listxattr(path, follow_symlinks=False)
            }
            owner = (status.st_uid, status.st_gid)
            found[os.path.relpath(path, root)] = (
                oct(status.st_mode),
                owner,
                int(status.st_mtime),
                what,
                xattrs,
            )
    return found


def gnu_tar_source(root, xattrs: bool) -> None:
    """A tree with what real layers hold beyond plain files: set-ID and sticky bits, other
    owners, old mtimes, a sparse file, names and link targets over 100 characters, hard and
    symbolic links, a FIFO, a device node; with ``xattrs``, an extended attribute."""
    deep = root / ("a-long-directory-name-" * 3) / ("and-a-longer-file-name-" * 4)
    deep.parent.mkdir(parents=True)
    deep.write_text("deep\n")
    os.symlink("/" + "x" * 150, root / "long-link")
    os.symlink("/bin/busybox", root / "sh")
    with open(root / "sparse", "wb") as file:
        file.truncate(8 << 20)
        file.seek(3 << 20)
        file.write(b"data in the middle of a hole")
    (root / "big").write_bytes(os.urandom(3 << 20))  # spans several chunks of the reader
    (root / "hard1").write_text("linked\n")
    os.link(root / "hard1", root / "hard2")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    if xattrs:
        os.setxattr(root / "big", "user.origin", b"gnu tar")
    (root / "shared").mkdir()
    (root / "tmp").mkdir()
    (root / "suid").write_text("#!/bin/sh\n")
    for name, mode, owner in [
        ("shared", 0o2775, (0, 50)),
        ("tmp", 0o1777, (0, 0)),
        ("suid", 0o4755, (0, 0)),
        ("big", 0o640, (1234, 5678)),
    ]:
        os.chown(root / name, *owner)
        os.chmod(root / name, mode)
    for path in [*root.rglob("*"), root]:
        os.utime(path, (1_000_000_000, 1_000_000_000), follow_symlinks=False)


def user_xattrs_work(directory) -> bool:
    """tmpfs has user.* attributes only since Linux 6.6 (Debian 12's VM kernel is 6.1)."""
    probe = os.path.join(directory, ".xattr-probe")
    open(probe, "w").close()
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


@pytest.mark.parametrize("tar_format", ["gnu", "posix", "posix with xattrs"])
def test_a_layer_is_unpacked_exactly_as_gnu_tar_wrote_it(mycontainer, home, tmp_path, tar_format):
    need("tar")
    xattrs = tar_format == "posix with xattrs"
    if xattrs and not (user_xattrs_work(tmp_path) and user_xattrs_work(home)):
        pytest.skip("this filesystem has no user.* extended attributes (tmpfs before Linux 6.6)")
    source = tmp_path / "source"
    source.mkdir()
    gnu_tar_source(source, xattrs)
    layer_tar = tmp_path / "layer.tar"
    options = ["--xattrs", "--xattrs-include=user.*"] if xattrs else []
    sh(
        "tar", f"--format={tar_format.split()[0]}", "--sparse", "--numeric-owner", *options,
        "-C", str(source), "-cf", str(layer_tar), ".",
    )  # fmt: skip
    data = layer_tar.read_bytes()
    write_layout(tmp_path / "gnu", [data])
    result = mycontainer("load", str(tmp_path / "gnu"))
    assert result.returncode == 0, result.stderr
    unpacked = home / "layers" / hashlib.sha256(data).hexdigest()
    assert tree(unpacked) == tree(source)
    assert os.lstat(unpacked / "hard1").st_ino == os.lstat(unpacked / "hard2").st_ino


def test_a_layer_cannot_set_overlayfs_attributes(mycontainer, home, tmp_path):
    """A redirect would make overlayfs look elsewhere in the lower layers: refused silently,
    as overlayfs's attributes come from whiteouts only; other attributes are kept."""
    directory = tarfile.TarInfo("dir")
    directory.type = tarfile.DIRTYPE
    directory.pax_headers = {
        "SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.trusted.mycontainer-test": "kept",
    }
    data = tar_bytes([directory])
    write_layout(tmp_path / "attributes", [data])
    assert mycontainer("load", str(tmp_path / "attributes")).returncode == 0
    unpacked = home / "layers" / hashlib.sha256(data).hexdigest() / "dir"
    assert os.listxattr(unpacked) == ["trusted.mycontainer-test"]


def test_a_hard_link_to_a_symlink_changes_nothing_through_it(mycontainer, home, tmp_path):
    """link(2) links the symbolic link itself; chmod(2) on the new name would follow it."""
    data = tar_bytes(
        [
            member("victim", data=b"x", mode=0o644),
            member("link", tarfile.SYMTYPE, "victim"),
            member("hard", tarfile.LNKTYPE, "link", mode=0o4777),
        ]
    )
    write_layout(tmp_path / "hardlink", [data])
    assert mycontainer("load", str(tmp_path / "hardlink")).returncode == 0
    unpacked = home / "layers" / hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(os.lstat(unpacked / "victim").st_mode) == 0o644
    assert os.readlink(unpacked / "hard") == "victim"


def test_whiteouts_and_entries_of_one_layer(mycontainer, busybox_rootfs, tmp_path):
    """A whiteout deletes what the layers *below* have (layer.md); this layer's own entries
    of the same name stay, in whichever order the tar has them."""
    lower = rootfs_with(busybox_rootfs, "lower")
    lower_extra = [member(f"{name}/old", data=b"old\n") for name in ("a", "b", "c")]
    upper = tar_bytes(
        [
            member(".wh.a"),  # then a/new, without an entry for a itself
            member("a/new", data=b"new\n"),
            member("b", tarfile.DIRTYPE),  # a directory, then its whiteout
            member("b/new", data=b"new\n"),
            member(".wh.b"),
            member(".wh.c"),  # a whiteout, then a directory
            member("c", tarfile.DIRTYPE),
            member("c/new", data=b"new\n"),
        ]
    )
    write_layout(tmp_path / "whiteouts", [lower, tar_bytes(lower_extra), upper])
    result = mycontainer(
        "run", "--rm", "--net", "none", str(tmp_path / "whiteouts"), "ls", "/a", "/b", "/c"
    )
    assert result.stdout == "/a:\nnew\n\n/b:\nnew\n\n/c:\nnew\n", result.stderr


def test_a_directory_replaced_by_a_file(mycontainer, home, tmp_path):
    data = tar_bytes(
        [member("a", tarfile.DIRTYPE), member("a/b", tarfile.DIRTYPE), member("a", data=b"file\n")]
    )
    write_layout(tmp_path / "replaced", [data])
    result = mycontainer("load", str(tmp_path / "replaced"))
    assert result.returncode == 0, result.stderr
    assert (home / "layers" / hashlib.sha256(data).hexdigest() / "a").read_text() == "file\n"


def test_a_broken_header_in_a_rootfs_tarball_is_refused(mycontainer, home, tmp_path):
    """tarfile ends quietly at a header it cannot read; a rootfs tarball has no diff_id to
    tell a whole archive from its first part, so the unpacker must notice."""
    data = bytearray(tar_bytes([member("one", data=b"1\n"), member("two", data=b"2\n")]))
    data[1024] ^= 0xFF  # the second header (after the first, and its one block of data)
    (tmp_path / "rootfs.tar.gz").write_bytes(gzip.compress(bytes(data)))
    before = store_contents(home)
    result = mycontainer("load", str(tmp_path / "rootfs.tar.gz"))
    assert result.returncode == 125
    assert "truncated or not a tar archive (a broken header at byte 1024)" in result.stderr
    assert store_contents(home) == before


def test_only_root_can_reach_the_layers(mycontainer, home, tmp_path):
    """Layers hold set-user-ID programs and device nodes: no other user may get at them."""
    data = tar_bytes([member("suid", data=b"#!/bin/sh\n", mode=0o4755)])
    write_layout(tmp_path / "suid", [data])
    assert mycontainer("load", str(tmp_path / "suid")).returncode == 0
    assert stat.S_IMODE(os.stat(home / "layers").st_mode) == 0o700
    suid = home / "layers" / hashlib.sha256(data).hexdigest() / "suid"
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "stat", str(suid)]
    result = subprocess.run(nobody, capture_output=True, text=True)
    assert result.returncode != 0 and "Permission denied" in result.stderr


def test_a_later_entry_replaces_an_earlier_one(mycontainer, home, tmp_path):
    """``tar -r`` appends new versions of a path: the last one wins, whatever its type."""
    need("tar")
    source, layer_tar = tmp_path / "source", tmp_path / "layer.tar"
    (source / "dir-then-link").mkdir(parents=True)
    (source / "dir-then-link/inside").write_text("gone\n")
    (source / "file-then-dir").write_text("gone\n")
    (source / "changed").write_text("first\n")
    sh("tar", "-C", str(source), "-cf", str(layer_tar), ".")
    shutil.rmtree(source / "dir-then-link")
    os.symlink("/elsewhere", source / "dir-then-link")
    (source / "file-then-dir").unlink()
    (source / "file-then-dir").mkdir()
    (source / "file-then-dir/new").write_text("new\n")
    (source / "changed").write_text("second\n")
    names = ["./dir-then-link", "./file-then-dir", "./file-then-dir/new", "./changed"]
    sh("tar", "-C", str(source), "-rf", str(layer_tar), "--no-recursion", *names)
    data = layer_tar.read_bytes()
    write_layout(tmp_path / "appended", [data])
    assert mycontainer("load", str(tmp_path / "appended")).returncode == 0
    unpacked = home / "layers" / hashlib.sha256(data).hexdigest()
    assert os.readlink(unpacked / "dir-then-link") == "/elsewhere"
    assert os.listdir(unpacked / "file-then-dir") == ["new"]
    assert (unpacked / "changed").read_text() == "second\n"


# --- gzip streams, with zlib and with ISA-L -----------------------------------------------------


def inflaters():
    from runtime import layer

    found = [pytest.param(zlib, id="zlib")]
    isal = pytest.param(
        layer.inflate_library,
        id="isal",
        marks=pytest.mark.skipif(
            layer.inflate_library is zlib, reason="isal is not installed (pip install isal)"
        ),
    )
    return [*found, isal]


@pytest.mark.parametrize("inflate_library", inflaters())
@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("one member", None),
        ("members with zero padding", None),
        ("truncated", "truncated or not a tar archive"),
        ("garbage after the end", "truncated or not a tar archive"),
    ],
)
def test_gzip_streams(tmp_path, monkeypatch, inflate_library, shape, message):
    """Unpacked in this process (the unpacking child inherits the inflate library chosen)."""
    from runtime import layer

    monkeypatch.setattr(layer, "inflate_library", inflate_library)
    files = [member(f"f{i}", data=os.urandom(700_000)) for i in range(4)]  # > 1 chunk
    data = tar_bytes(files)
    if shape == "one member":
        blob = gzip.compress(data)
    elif shape == "members with zero padding":  # as `cat a.gz b.gz` and block padding make
        blob = gzip.compress(data[:1_000_000]) + b"\0" * 1000 + gzip.compress(data[1_000_000:])
    elif shape == "truncated":
        blob = gzip.compress(data)[:-100_000]
    else:
        blob = gzip.compress(data) + b"this is not gzip"
    (tmp_path / "blob").write_bytes(blob)
    destination = str(tmp_path / "layer")
    fd = os.open(tmp_path / "blob", os.O_RDONLY)
    try:
        if message:
            with pytest.raises(layer.LayerError, match=message) as refused:
                layer.unpack(fd, destination)
            assert refused.value.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
            assert not os.path.exists(destination)
            return
        digest, diff_id = layer.unpack(fd, destination)
    finally:
        os.close(fd)
    assert digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    for info, content in files:
        assert (tmp_path / "layer" / info.name).read_bytes() == content
