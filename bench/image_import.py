"""Image import: ``mycontainer load`` against ``umoci unpack`` and GNU tar, on a Debian image.

    sudo .venv/bin/python bench/image_import.py [--runs 5] [--json results.json]

The image
---------
A ``debootstrap --variant=minbase`` Debian bookworm (~120 MB unpacked, from the mirror this
host's apt uses), split into three layers, bottom first:

1. ``usr`` (nearly all of the bytes: with merged /usr, every program and library);
2. ``etc`` and ``var`` (configuration, the dpkg database);
3. the rest: the ``bin``, ``lib``, ``sbin`` symbolic links into /usr, ``dev``, ``root``,
   ``tmp``, ``run`` and the other top-level directories.

As in the official ``debian`` image, apt's downloaded packages and lists are removed
(``var/cache/apt/archives/*.deb``, ``var/cache/apt/*.bin``, ``var/lib/apt/lists/*``).
Each layer is a tar made by GNU tar with ``--format=gnu --numeric-owner --sort=name`` (as
debuerreotype makes the official ``debian`` images' layers), compressed with gzip level 6
(docker's and ``gzip``'s default), and the three form an OCI image layout (index, manifest,
config with the diff_ids) written here, with the standard library. debootstrap runs once:
the layout is cached outside the repository, in ``/var/cache/mycontainer-bench/`` (or
``$MYCONTAINER_BENCH_CACHE``), under a key hashed from the recipe (suite, variant, mirror,
architecture, layer split, this builder's version); the downloaded .debs are kept there too.

What is timed
-------------
Each sample is the wall-clock time of one whole import, from fork to exit, by ``time.
perf_counter()`` around the commands, with stdin, stdout and stderr on /dev/null:

* **mycontainer**: ``mycontainer load LAYOUT`` into a new, empty ``MYCONTAINER_HOME`` (so
  that no layer is already stored): it checks every digest and unpacks the layers in
  parallel, one child process per layer (runtime/image.py, runtime/layer.py);
* **umoci**: ``umoci unpack --image LAYOUT:TAG BUNDLE`` (it also writes the bundle's
  config.json and an mtree manifest of the unpacked tree);
* **tar**: ``tar -xzf LAYER -C DIR`` of the three layer blobs in order, into one directory:
  what the OCI spec describes (GNU tar runs gzip as a second process, so it uses up to two
  cores);
* **tar-parallel**: the same three ``tar -xzf``, started at once, each into a directory of
  its own: the fair peer of our parallel per-layer unpacking.

GNU tar checks no digest and knows no whiteout; umoci and mycontainer check both digests of
each layer (blob and diff_id). Each sample's output is removed after it, and ``sync``
flushes what it wrote before the next one starts, so that no sample pays for another's
write-back; the time of that ``sync`` (what the tool left dirty) is reported beside it.
The blobs are read from the page cache (one untimed warm-up round first): this measures
the import, not the disk.

Where the imports write (``--target``): by default a new ext4 filesystem (journaled, the
mkfs defaults) in a sparse file, loop-mounted for the benchmark and gone after it. Not the
host's disk: creating a file costs what the filesystem makes it cost, and on an ext4
*without* a journal (such as this development machine's root) every new inode first skips
the inodes deleted in the last minutes, one lookup each, so right after a 120 MB tree was
removed (by the previous sample, or by anyone) a create takes ~0.4 ms instead of ~0.04 ms,
and the import measures that. ``--target tmpfs`` writes to a new tmpfs (no disk at all),
``--target DIR`` to a new directory in DIR (say, the host's disk, as users have it).

How
---
``--warmup`` untimed rounds (default 1), then ``--runs`` rounds (default 3); each round runs
every tool once, and the tool that goes first moves on by one each round, so that drift of
the machine spreads over all tools alike. For each tool the report gives the median, the
fastest and the slowest sample, and the ratio of its median to tar's, tar-parallel's and
umoci's. **The bar: mycontainer's median <= 1.0x tar's; the aim beyond: <= 0.8x**.

Then, with the image loaded into a temporary home, the warm start of a container of it:
``mycontainer run --net none IMAGE /bin/true`` against the same of ``busybox`` (the busybox
rootfs, ``/var/lib/mycontainer/rootfs/busybox``, as a one-layer image in the same home),
``--warm-runs`` interleaved runs each (default 20) after 3 warm-up runs. **The bar: the Debian
image's median <= 1.2x busybox's.**

``--small`` measures the same on a small image instead (the busybox rootfs split into three
layers), with one run: the smoke test (tests/test_bench_import.py) uses it. The numbers are
reported, never asserted. ``--json FILE`` writes every sample and the summary.

``--candidate PATH`` measures another mycontainer (say, one with a patched runtime) in the
same rounds, so that the two are compared under the same load.

Everything is written in one temporary directory (``$TMPDIR``) and the filesystem mounted
in it, unmounted and removed on any way out (done, failed, Ctrl-C, SIGTERM).

Standard library only (Python >= 3.10), so it runs with any Python on the machine.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from common import (
    BenchError,
    add_json_and_mycontainer_options,
    add_rounds_options,
    date_and_machine,
    find_mycontainer,
    interleave,
    machine_notes,
    root_on_linux,
    run_cleanly,
    times,
    verdict,
)

CACHE = os.environ.get("MYCONTAINER_BENCH_CACHE", "/var/cache/mycontainer-bench")
SUITE = "bookworm"
BUILDER_VERSION = 1  # bump when the way the image is built changes: the cache key changes
# The layers, bottom first: top-level names of the rootfs; None is "every other name".
DEBIAN_SPLIT = (("usr",), ("etc", "var"), None)
SMALL_SPLIT = (("usr",), ("bin", "sbin"), None)
TAG = "latest"
BAR, AIM = 1.0, 0.8  # mycontainer's median import time over GNU tar's
RUN_BAR = 1.2  # warm run of the Debian image over busybox's
RUN_WARMUP = 3
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"


def say(text: str) -> None:
    print(text, flush=True)


# --- the image -------------------------------------------------------------------------------


def mirror() -> str:
    """The Debian mirror this host's apt uses (lab/image.py's rule): maybe the only reachable."""
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
    for name in files:
        try:
            with open(name) as file:
                text = file.read()
        except OSError:
            continue
        for line in text.splitlines():  # one-line style: deb URI SUITE COMPONENTS
            parts = line.split()
            if parts[:1] == ["deb"] and SUITE in parts and "security" not in line:
                return next(p for p in parts[1:] if "://" in p).rstrip("/")
        for stanza in text.split("\n\n"):  # deb822 style: URIs: and Suites:
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "security" not in stanza:
                return fields.get("URIs", "").split()[0].rstrip("/")
    return "http://deb.debian.org/debian"


def debian_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def debian_layout() -> str:
    """The cached OCI layout of the split Debian image; built first (debootstrap) if needed."""
    recipe = {
        "suite": SUITE,
        "variant": "minbase",
        "mirror": mirror(),
        "arch": debian_arch(),
        "split": DEBIAN_SPLIT,
        "builder": BUILDER_VERSION,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    target = os.path.join(CACHE, f"debian-{SUITE}-{key}")
    if os.path.exists(os.path.join(target, "recipe.json")):
        return os.path.join(target, "layout")
    if not shutil.which("debootstrap"):
        raise BenchError("debootstrap not found: apt-get install debootstrap")
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and reuse it
        if os.path.exists(os.path.join(target, "recipe.json")):
            return os.path.join(target, "layout")
        work = os.path.join(CACHE, f".build-{key}-{os.getpid()}")
        try:
            os.mkdir(work)
            rootfs = os.path.join(work, "rootfs")
            say(f"building the Debian image once (debootstrap {SUITE}, cached in {target}) ...")
            command = [
                "debootstrap",
                "--variant=minbase",
                f"--arch={recipe['arch']}",
                f"--cache-dir={os.path.join(CACHE, 'debs')}",
                SUITE,
                rootfs,
                recipe["mirror"],
            ]
            os.makedirs(os.path.join(CACHE, "debs"), exist_ok=True)
            log = os.path.join(work, "debootstrap.log")
            with open(log, "w") as file:
                completed = subprocess.run(command, stdout=file, stderr=subprocess.STDOUT)
            if completed.returncode != 0:
                with open(log) as file:
                    tail = file.read()[-3000:]
                raise BenchError(f"debootstrap failed ({completed.returncode}):\n{tail}")
            minimize(rootfs)
            write_layout(rootfs, os.path.join(work, "layout"), DEBIAN_SPLIT, "debian", ["bash"])
            remove_tree(rootfs)
            with open(os.path.join(work, "recipe.json"), "w") as file:
                json.dump(recipe, file, indent=2)
            if os.path.lexists(target):
                remove_tree(target)
            os.rename(work, target)
        finally:
            if os.path.lexists(work):
                unmount_under(work)
                remove_tree(work)
    return os.path.join(target, "layout")


def minimize(rootfs: str) -> None:
    """What ``apt-get clean`` removes, and apt's lists, as the official debian image does."""
    patterns = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*")
    for pattern in patterns:
        for path in glob.glob(os.path.join(rootfs, pattern)):
            if os.path.isfile(path) and not path.endswith("/lock"):
                os.unlink(path)


def unmount_under(path: str) -> None:
    """Lazily unmount what a killed debootstrap left mounted in ``path`` (/proc, /sys)."""
    prefix = os.path.realpath(path) + "/"
    with open("/proc/self/mountinfo") as file:
        points = [line.split()[4].replace("\\040", " ") for line in file]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def split(rootfs: str, plan: tuple) -> list[list[str]]:
    """The top-level names of ``rootfs`` in each layer of ``plan`` (None: all the others)."""
    names = sorted(os.listdir(rootfs))
    named = {name for group in plan if group for name in group}
    return [
        [n for n in names if n in group] if group else [n for n in names if n not in named]
        for group in plan
    ]


def write_layout(
    rootfs: str, layout: str, plan: tuple, name: str, command: list[str]
) -> list[dict]:
    """Write ``rootfs`` as an OCI image layout of len(plan) gzip layers; describe the layers."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)

    def add_blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as file:
            file.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    layers, diff_ids, described = [], [], []
    for names in split(rootfs, plan):
        descriptor, diff_id, size = add_layer(rootfs, names, blobs)
        layers.append(descriptor)
        diff_ids.append(diff_id)
        described.append({"names": names, "size": descriptor["size"], "unpacked": size})
    config = {
        "architecture": debian_arch(),
        "os": "linux",
        "config": {
            "Cmd": command,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": add_blob(json.dumps(config).encode(), CONFIG_TYPE),
        "layers": layers,
    }
    entry = add_blob(json.dumps(manifest).encode(), MANIFEST_TYPE)
    entry["annotations"] = {
        "io.containerd.image.name": f"bench-{name}:{TAG}",
        "org.opencontainers.image.ref.name": TAG,
    }
    with open(os.path.join(layout, "index.json"), "w") as file:
        json.dump({"schemaVersion": 2, "manifests": [entry]}, file)
    with open(os.path.join(layout, "oci-layout"), "w") as file:
        json.dump({"imageLayoutVersion": "1.0.0"}, file)
    with open(os.path.join(layout, "layers.json"), "w") as file:  # ours: for the report
        json.dump(described, file, indent=2)
    return described


def add_layer(rootfs: str, names: list[str], blobs: str) -> tuple[dict, str, int]:
    """GNU tar of ``names`` in ``rootfs``, gzip'd into ``blobs``: (descriptor, diff_id, size)."""
    command = ["tar", "--create", "--file=-", "--format=gnu", "--numeric-owner", "--sort=name"]
    command += ["--directory", rootfs, "--", *names]
    tar_hash, blob_hash, size = hashlib.sha256(), hashlib.sha256(), 0
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip, mtime 0
    staging = os.path.join(blobs, ".layer")
    with open(staging, "wb") as out, subprocess.Popen(command, stdout=subprocess.PIPE) as tar:
        while chunk := tar.stdout.read(1 << 20):
            tar_hash.update(chunk)
            size += len(chunk)
            compressed = compressor.compress(chunk)
            blob_hash.update(compressed)
            out.write(compressed)
        compressed = compressor.flush()
        blob_hash.update(compressed)
        out.write(compressed)
    if tar.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed ({tar.returncode})")
    os.rename(staging, os.path.join(blobs, blob_hash.hexdigest()))
    descriptor = {
        "mediaType": LAYER_TYPE,
        "digest": "sha256:" + blob_hash.hexdigest(),
        "size": os.path.getsize(os.path.join(blobs, blob_hash.hexdigest())),
    }
    return descriptor, "sha256:" + tar_hash.hexdigest(), size


def layout_layers(layout: str) -> list[str]:
    """The paths of the layout's layer blobs, bottom first."""
    with open(os.path.join(layout, "index.json")) as file:
        manifest_digest = json.load(file)["manifests"][0]["digest"]
    with open(os.path.join(layout, "blobs", *manifest_digest.split(":"))) as file:
        manifest = json.load(file)
    return [os.path.join(layout, "blobs", *d["digest"].split(":")) for d in manifest["layers"]]


def remove_tree(path: str) -> None:
    """rm -rf, faster than shutil.rmtree on a big tree; never crosses into another mount."""
    subprocess.run(["rm", "-rf", "--one-file-system", "--", path], check=False)


# --- where the imports write ------------------------------------------------------------------


class Target:
    """The filesystem the imports write to, and how to take it down again."""

    def __init__(self, kind: str, workdir: str, size_mb: int):
        self.kind = kind
        self.mounted = ""
        if kind in ("ext4", "tmpfs"):
            self.path = os.path.join(workdir, "mnt")
            os.mkdir(self.path)
            if kind == "ext4":
                self.describe = f"a new ext4 filesystem ({size_mb} MB, loop-mounted)"
                self._mount_ext4(os.path.join(workdir, "fs.img"), size_mb)
            else:
                self.describe = f"a new tmpfs ({size_mb} MB)"
                self._mount(["-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs"])
        else:
            if not os.path.isdir(kind):
                raise BenchError(f"--target {kind}: not ext4, tmpfs or a directory")
            self.path = tempfile.mkdtemp(prefix="mycontainer-bench-import-", dir=kind)
            fs = subprocess.run(
                ["stat", "-f", "-c", "%T", self.path], capture_output=True, text=True
            ).stdout.strip()
            self.describe = f"{self.path} ({fs or 'unknown'} filesystem)"

    def _mount_ext4(self, image: str, size_mb: int) -> None:
        if not shutil.which("mkfs.ext4"):
            raise BenchError("mkfs.ext4 not found (apt-get install e2fsprogs), or use --target")
        with open(image, "wb") as file:
            file.truncate(size_mb << 20)  # sparse
        # Inode tables and journal written now, not by a kernel thread during the samples.
        mkfs = ["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", image]
        run_quietly(mkfs)
        self._mount(["-o", "loop,noatime", image])

    def _mount(self, source: list[str]) -> None:
        completed = subprocess.run(["mount", *source, self.path], capture_output=True, text=True)
        if completed.returncode != 0:
            raise BenchError(
                f"cannot mount the bench's {self.kind}: {completed.stderr.strip()} "
                "(--target DIR writes into an existing directory instead)"
            )
        self.mounted = self.path

    def remove(self) -> None:
        if self.mounted:
            if subprocess.run(["umount", self.mounted], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", self.mounted], capture_output=True)
        else:
            remove_tree(self.path)


# --- the tools -------------------------------------------------------------------------------


@dataclass
class Tool:
    """One way to import the image, or (``skipped``) why it cannot be measured here."""

    name: str
    run: Callable[[str], None] | None = None  # a new output directory's path -> one import
    skipped: str = ""
    samples: list[float] = field(default_factory=list)  # seconds
    syncs: list[float] = field(default_factory=list)  # seconds of the sync right after


def run_quietly(argv: list[str], env: dict | None = None) -> None:
    completed = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    if completed.returncode != 0:
        said = completed.stderr.decode(errors="replace").strip()[-2000:]
        raise BenchError(
            f"{' '.join(argv)} failed (exit status {completed.returncode}): "
            f"{said or 'it prints nothing on stderr'}"
        )


def mycontainer_tool(path: str, layout: str, name: str = "mycontainer") -> Tool:
    if not os.access(path, os.X_OK):
        raise BenchError(f"{name} not found: run ./setup.sh (it makes {path})")

    def load(output: str) -> None:
        os.mkdir(output)  # a new, empty home: no layer is stored yet
        run_quietly([path, "load", layout], env={**os.environ, "MYCONTAINER_HOME": output})

    return Tool(name, load)


def umoci_tool(layout: str) -> Tool:
    binary = shutil.which("umoci")
    if not binary:
        return Tool("umoci", skipped="not found on PATH (apt-get install umoci)")
    return Tool(
        "umoci",
        lambda output: run_quietly([binary, "unpack", "--image", f"{layout}:{TAG}", output]),
    )


def tar_tool(blobs: list[str]) -> Tool:
    def extract(output: str) -> None:
        os.mkdir(output)
        for blob in blobs:
            run_quietly(["tar", "-xzf", blob, "-C", output])

    return Tool("tar", extract)


def tar_parallel_tool(blobs: list[str]) -> Tool:
    def extract(output: str) -> None:
        os.mkdir(output)
        jobs = []
        try:
            for index, blob in enumerate(blobs):
                directory = os.path.join(output, str(index))
                os.mkdir(directory)
                argv = ["tar", "-xzf", blob, "-C", directory]
                jobs.append((argv, subprocess.Popen(argv, stdin=subprocess.DEVNULL)))
            failed = [argv for argv, job in jobs if job.wait() != 0]
        except BaseException:  # Ctrl-C, SIGTERM: no tar may go on writing
            for _argv, job in jobs:
                job.kill()
                job.wait()
            raise
        if failed:
            raise BenchError(f"{' '.join(failed[0])} failed")

    return Tool("tar-parallel", extract)


# --- measuring -------------------------------------------------------------------------------


def time_once(tool: Tool, output: str) -> tuple[float, float]:
    """Time one import into ``output`` (then removed), after flushing earlier writes: the
    seconds of the import, and of the ``sync`` right after it."""
    os.sync()
    start = time.perf_counter()
    tool.run(output)
    elapsed = time.perf_counter() - start
    os.sync()  # what the tool left for the kernel to write back
    synced = time.perf_counter() - start - elapsed
    remove_tree(output)
    return elapsed, synced


def summarize(tool: Tool) -> dict:
    return {
        "median_s": statistics.median(tool.samples),
        "min_s": min(tool.samples),
        "max_s": max(tool.samples),
        "sync_after_median_s": statistics.median(tool.syncs),
        "samples_s": [round(s, 4) for s in tool.samples],
        "sync_after_s": [round(s, 4) for s in tool.syncs],
    }


def benchmark_import(args, layout: str, workdir: str) -> dict:
    """Time the four tools, interleaved, each writing a new directory of ``workdir``."""
    blobs = layout_layers(layout)
    tools = [
        mycontainer_tool(args.mycontainer or find_mycontainer(), layout),
        umoci_tool(layout),
        tar_tool(blobs),
        tar_parallel_tool(blobs),
    ]
    if args.candidate:  # another build, measured in the same rounds (say, a patched runtime)
        tools.insert(1, mycontainer_tool(args.candidate, layout, "candidate"))
    measured = [tool for tool in tools if not tool.skipped]
    serial = 0

    def output() -> str:
        nonlocal serial
        serial += 1
        return os.path.join(workdir, f"out-{serial}")

    say(f"import: {args.warmup} warm-up and {args.runs} timed rounds, interleaved")
    for tool, timed in interleave(measured, args.warmup, args.runs):
        elapsed, synced = time_once(tool, output())
        if timed:
            tool.samples.append(elapsed)
            tool.syncs.append(synced)
    stats = {tool.name: summarize(tool) for tool in measured}
    for summary in stats.values():
        for peer in ("tar", "tar-parallel", "umoci"):
            summary[f"ratio_to_{peer}"] = (
                summary["median_s"] / stats[peer]["median_s"] if peer in stats else None
            )
    say(
        f"\n{'tool':<13} {'median':>8} {'min':>8} {'max':>8} {'sync':>7}"
        f" {'/tar':>6} {'/tar-par':>8} {'/umoci':>6}"
    )
    for tool in tools:
        if tool.skipped:
            say(f"{tool.name:<13} skipped: {tool.skipped}")
            continue
        s = stats[tool.name]
        say(
            f"{tool.name:<13} {s['median_s']:>6.2f} s {s['min_s']:>6.2f} s {s['max_s']:>6.2f} s"
            f" {s['sync_after_median_s']:>5.2f} s {times(s['ratio_to_tar']):>6}"
            f" {times(s['ratio_to_tar-parallel']):>8} {times(s['ratio_to_umoci']):>6}"
        )

    def import_verdict(name: str) -> str:
        return verdict(name, stats[name]["ratio_to_tar"], "tar", BAR, AIM, "GNU tar")

    judged = import_verdict("mycontainer")
    say(f"\nimport verdict: {judged}")
    if "candidate" in stats:
        say(f"(candidate: {import_verdict('candidate')})")
    return {
        "tools": stats,
        "skipped": {tool.name: tool.skipped for tool in tools if tool.skipped},
        "bar": BAR,
        "aim": AIM,
        "verdict": judged,
        "candidate": args.candidate,
    }


def benchmark_run(args, layout: str, workdir: str, busybox: str) -> dict:
    """Warm ``mycontainer run --net none IMAGE /bin/true``: the image against busybox."""
    home = os.path.join(workdir, "run-home")
    os.mkdir(home)
    env = {**os.environ, "MYCONTAINER_HOME": home}
    path = args.mycontainer or find_mycontainer()

    def load(layout_path: str) -> str:
        completed = subprocess.run(
            [path, "load", layout_path], env=env, capture_output=True, text=True
        )
        if completed.returncode != 0:
            raise BenchError(f"mycontainer load {layout_path} failed: {completed.stderr.strip()}")
        return completed.stdout.split()[-1]

    images = {"image": load(layout), "busybox": load(busybox)}
    samples: dict[str, list[float]] = {name: [] for name in images}
    say(
        f"\nwarm run: mycontainer run --net none IMAGE /bin/true, {RUN_WARMUP} warm-up and "
        f"{args.warm_runs} timed runs each, interleaved ({images['image']} against "
        f"{images['busybox']})"
    )

    def time_run(name: str) -> float:
        argv = [path, "run", "--rm", "--net", "none", images[name], "/bin/true"]
        start = time.perf_counter()
        run_quietly(argv, env=env)
        return (time.perf_counter() - start) * 1000

    names = list(images)
    for name, timed in interleave(names, RUN_WARMUP, args.warm_runs):
        milliseconds = time_run(name)
        if timed:
            samples[name].append(milliseconds)
    stats = {
        name: {
            "image": images[name],
            "median_ms": statistics.median(samples[name]),
            "min_ms": min(samples[name]),
            "max_ms": max(samples[name]),
            "samples_ms": [round(ms, 3) for ms in samples[name]],
        }
        for name in names
    }
    ratio = stats["image"]["median_ms"] / stats["busybox"]["median_ms"]
    for name in names:
        s = stats[name]
        say(
            f"{'run-' + name:<13} {s['median_ms']:>6.1f} ms (min {s['min_ms']:.1f}, "
            f"max {s['max_ms']:.1f})  {s['image']}"
        )
    met = "meets" if ratio <= RUN_BAR else "MISSES"
    judged = f"the image's warm run takes {ratio:.2f}x busybox's: {met} the bar (<= {RUN_BAR}x)"
    say(f"\nrun verdict: {judged}")
    return {
        "runs": args.warm_runs,
        "tools": stats,
        "ratio": ratio,
        "bar": RUN_BAR,
        "verdict": judged,
    }


def small_layout(workdir: str, busybox_rootfs: str) -> str:
    """The --small image: the busybox rootfs split into three layers."""
    layout = os.path.join(workdir, "small-layout")
    write_layout(busybox_rootfs, layout, SMALL_SPLIT, "busybox3", ["sh"])
    return layout


def describe(layout: str) -> str:
    with open(os.path.join(layout, "layers.json")) as file:
        layers = json.load(file)
    parts = [
        f"{'+'.join(layer['names'][:3])}{'+...' if len(layer['names']) > 3 else ''} "
        f"{layer['size'] / 1e6:.1f}/{layer['unpacked'] / 1e6:.1f} MB"
        for layer in layers
    ]
    total = sum(layer["unpacked"] for layer in layers) / 1e6
    return f"{len(layers)} layers (gzip/tar): {'; '.join(parts)}; {total:.0f} MB of tar in all"


def inflate_library() -> str:
    """The inflate that runtime.layer picks in this Python: ISA-L's when isal is installed."""
    try:
        import isal
    except ImportError:
        return "zlib (the isal package is not installed: pip install isal)"
    return f"ISA-L (isal {isal.__version__})"


def benchmark(args, workdir: str, cleanup: list) -> dict:
    notes: list[str] = []
    layout = small_layout(workdir, args.rootfs) if args.small else debian_layout()
    with open(os.path.join(layout, "layers.json")) as file:
        layers = json.load(file)
    unpacked_mb = sum(layer["unpacked"] for layer in layers) >> 20
    target = Target(args.target, workdir, max(512, 8 * unpacked_mb))
    cleanup.append(target)
    busybox = os.path.join(workdir, "busybox-layout")
    write_layout(args.rootfs, busybox, (None,), "busybox", ["sh"])
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    say(f"image: {layout}")
    say(f"  {describe(layout)}")
    say(f"written to: {target.describe}")
    say(f"kernel {platform.release()}, {cpus} CPUs, load average {load_before:.2f}")
    say(f"gzip inflate: {inflate_library()}")
    results = {"import": benchmark_import(args, layout, target.path)}
    if args.warm_runs:
        results["run"] = benchmark_run(args, layout, target.path, busybox)
    # Its own load: the import's two threads, and tar's gzip beside tar.
    notes += machine_notes(load_before, 1.5, args.mycontainer)
    for note in notes:
        say(f"note: {note}")
    return {
        **date_and_machine(),
        "inflate": inflate_library(),
        "image": "small" if args.small else f"debian {SUITE} minbase",
        "layers": layers,
        "target": target.describe,
        "mycontainer": args.mycontainer or find_mycontainer(),
        "runs": args.runs,
        "warmup": args.warmup,
        **results,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Image import: 'mycontainer load' against umoci unpack and GNU tar.",
    )
    add_rounds_options(parser, 3, 1, "rounds", "the busybox root filesystem")
    parser.add_argument(
        "--warm-runs",
        type=int,
        default=20,
        help="timed warm 'run's of each image (default 20; 0 skips that part)",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="the busybox rootfs in three layers instead of Debian, 1 round, 2 warm runs",
    )
    parser.add_argument(
        "--target",
        default="ext4",
        metavar="ext4|tmpfs|DIR",
        help="where the imports write: a new loop-mounted ext4 (default), a new tmpfs, "
        "or a new directory in DIR",
    )
    add_json_and_mycontainer_options(parser)
    parser.add_argument(
        "--candidate",
        metavar="PATH",
        help="another mycontainer to measure beside it, in the same rounds (a patched build)",
    )
    args = parser.parse_args(argv)
    if args.small:
        args.runs, args.warmup, args.warm_runs = 1, 0, min(args.warm_runs, 2)
    if args.runs < 1 or args.warmup < 0 or args.warm_runs < 0:
        parser.error("--runs needs at least 1, --warmup and --warm-runs at least 0")
    if not root_on_linux(
        "image_import: needs root on Linux: sudo .venv/bin/python bench/image_import.py"
    ):
        return 1
    if not os.path.exists(os.path.join(args.rootfs, "bin", "busybox")):
        print(
            f"image_import: no busybox rootfs in {args.rootfs}: run .venv/bin/invoke rootfs",
            file=sys.stderr,
        )
        return 1

    workdir = tempfile.mkdtemp(prefix="mycontainer-bench-import-")
    cleanup: list[Target] = []

    def clean_up() -> None:
        for target in cleanup:
            target.remove()
        remove_tree(workdir)

    return run_cleanly(
        "image_import", lambda: benchmark(args, workdir, cleanup), clean_up, args.json
    )


if __name__ == "__main__":
    sys.exit(main())
