"""Pulling from a registry: ``mycontainer pull`` against skopeo + ``mycontainer load``, and podman.

    sudo .venv/bin/python bench/pull.py [--runs 5] [--json results.json]

The image and the registry
--------------------------
image_import.py's Debian minbase bookworm (three gzip layers, ~120 MB unpacked; built once
with debootstrap, cached), pushed with skopeo into Debian's ``docker-registry``
(distribution 2.8) serving plain HTTP on 127.0.0.1 from a directory of the benchmark's own:
tests/registry.py's, the registry the pull tests use. The whole benchmark runs in network
and mount namespaces of its own (unshare(1)), so the registry's port and whatever the tools
mount are seen by nobody else. ``--small`` pulls the busybox rootfs split into three layers
instead, once: the smoke test (tests/test_bench_pull.py).

What is timed
-------------
Each sample is the wall-clock time from fork to exit (``time.perf_counter()``), stdin,
stdout and stderr on /dev/null, into a new, empty store: nothing of the image is there.

* **mycontainer pull**: ``mycontainer pull HOST/bench/debian:latest`` into a new
  ``MYCONTAINER_HOME``: download, digest checks and unpacking, layers unpacked while they
  download (issue 16). Until the command exists (``mycontainer pull --help`` fails), it is
  skipped, and the report says so;
* **skopeo+load**: ``skopeo copy docker://HOST/bench/debian:latest oci:DIR:latest``, then
  ``mycontainer load DIR`` into a new home: download, then import, one after the other; the
  two parts' times are reported too;
* **podman**: ``podman pull --tls-verify=false HOST/bench/debian:latest`` with a storage root,
  run root and tmpdir of its own (``--root``, ``--runroot``, ``--tmpdir``; overlay driver;
  no events written): download, checks and unpacking into its overlay layers.

All write to the same new filesystem (``--target``, as image_import.py: a loop-mounted ext4
by default); ``sync`` before each sample, its output removed after it. ``--warmup`` untimed
rounds (default 1), then ``--runs`` rounds (default 5), each running every tool once, the
first one moving on by one each round. **The bar: pull <= 0.9x skopeo+load (streaming must
beat doing the two in turn) and <= 0.5x podman; the aims: <= 0.8x and <= 0.4x.**

Everything is made in one temporary directory (``$TMPDIR``), removed, with the registry
stopped and the filesystem unmounted, on any way out. Needs the venv's Python (tests/
registry.py's fixtures import pytest), root, and ``docker-registry``, ``skopeo`` (and
``podman``, else skipped): ``setup.sh`` installs them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from common import (
    BenchError,
    add_json_and_mycontainer_options,
    add_rounds_options,
    date_and_machine,
    find_mycontainer,
    interleave,
    isolate,
    machine_notes,
    root_on_linux,
    run_cleanly,
    times,
    verdict,
)
from image_import import (
    Target,
    Tool,
    debian_layout,
    describe,
    remove_tree,
    run_quietly,
    small_layout,
    unmount_under,
)

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)
import registry as registries  # noqa: E402 (tests/registry.py, found through the line above)

REPOSITORY = "bench/debian:latest"
BARS = {"skopeo+load": (0.9, 0.8), "podman": (0.5, 0.4)}  # pull's median over theirs


def pull_tool(path: str, reference: str) -> Tool:
    """``mycontainer pull``, or why it is skipped: the command may not exist yet."""
    helped = subprocess.run([path, "pull", "--help"], capture_output=True, text=True)
    if helped.returncode != 0:
        return Tool("pull", skipped="this mycontainer has no 'pull' command yet (issue 16)")

    def pull(output: str) -> None:
        os.mkdir(output)
        run_quietly([path, "pull", reference], env={**os.environ, "MYCONTAINER_HOME": output})

    return Tool("pull", pull)


def skopeo_load_tool(path: str, reference: str, phases: dict) -> Tool:
    """skopeo's download, then our import; each part's seconds go to ``phases``."""

    def copy_then_load(output: str) -> None:
        os.mkdir(output)
        layout = os.path.join(output, "layout")
        start = time.perf_counter()
        run_quietly(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
            + [f"docker://{reference}", f"oci:{layout}:latest"],
            env={**os.environ, "TMPDIR": output},
        )
        copied = time.perf_counter()
        home = os.path.join(output, "home")
        os.mkdir(home)
        run_quietly([path, "load", layout], env={**os.environ, "MYCONTAINER_HOME": home})
        phases.setdefault("skopeo copy", []).append(copied - start)
        phases.setdefault("load", []).append(time.perf_counter() - copied)

    return Tool("skopeo+load", copy_then_load)


def podman_tool(reference: str) -> Tool:
    binary = shutil.which("podman")
    if not binary:
        return Tool("podman", skipped="not found on PATH (apt-get install podman)")

    def pull(output: str) -> None:
        os.mkdir(output)
        own = {name: os.path.join(output, name) for name in ("root", "tmpdir", "tmp")}
        os.mkdir(own["tmp"])
        # Its run root must be a short path (podman refuses one over 50 characters).
        runroot = tempfile.mkdtemp(prefix="mycontainer-bench-podman-", dir="/run")
        argv = [binary, "--root", own["root"], "--runroot", runroot]
        argv += ["--tmpdir", own["tmpdir"], "--storage-driver", "overlay"]
        argv += ["--events-backend", "none", "--cgroup-manager", "cgroupfs"]
        try:
            run_quietly(
                [*argv, "pull", "--quiet", "--tls-verify=false", reference],
                env={**os.environ, "TMPDIR": own["tmp"]},
            )
        finally:
            unmount_under(output)  # what its overlay driver may have mounted
            unmount_under(runroot)
            remove_tree(runroot)

    return Tool("podman", pull)


def time_once(tool: Tool, output: str) -> float:
    """One sample into ``output`` (removed after it), after flushing earlier writes."""
    os.sync()
    start = time.perf_counter()
    tool.run(output)
    elapsed = time.perf_counter() - start
    unmount_under(output)
    remove_tree(output)
    return elapsed


def summarize(samples: list[float]) -> dict:
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "samples_s": [round(s, 4) for s in samples],
    }


def benchmark(args, workdir: str, stack: contextlib.ExitStack) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)  # this namespace's loopback
    mycontainer = args.mycontainer or find_mycontainer()
    layout = small_layout(workdir, args.rootfs) if args.small else debian_layout()
    os.mkdir(os.path.join(workdir, "pki"))
    try:  # openssl, docker-registry and skopeo say what failed
        certificates = registries.Certificates(os.path.join(workdir, "pki"))
        serving = registries.serve(os.path.join(workdir, "registry"), certificates)
        registry = stack.enter_context(serving)
        registry.push(f"oci:{layout}:latest", REPOSITORY)
    except RuntimeError as error:
        raise BenchError(str(error)) from None
    reference = f"{registry.host}/{REPOSITORY}"
    target = Target(args.target, workdir, 1024 if args.small else 2048)
    stack.callback(target.remove)

    phases: dict[str, list[float]] = {}
    tools = [
        pull_tool(mycontainer, reference),
        skopeo_load_tool(mycontainer, reference, phases),
        podman_tool(reference),
    ]
    load_before = os.getloadavg()[0]
    say(f"image: {layout}")
    say(f"  {describe(layout)}")
    say(f"registry: docker-registry on {registry.host} (plain HTTP, this namespace only)")
    say(f"written to: {target.describe}")
    for tool in tools:
        if tool.skipped:
            say(f"{tool.name}: skipped: {tool.skipped}")
    measured = [tool for tool in tools if not tool.skipped]
    say(f"{args.warmup} warm-up and {args.runs} timed rounds, interleaved")
    for serial, (tool, timed) in enumerate(interleave(measured, args.warmup, args.runs)):
        took = time_once(tool, os.path.join(target.path, f"out-{serial}"))
        if timed:
            tool.samples.append(took)
        elif tool.name == "skopeo+load":
            for parts in phases.values():
                parts.pop()  # a warm-up's parts are no samples either
    stats = {tool.name: summarize(tool.samples) for tool in measured}
    parts = {name: summarize(samples) for name, samples in phases.items()}

    def ratio(name: str, peer: str) -> float | None:
        if name in stats and peer in stats:
            return stats[name]["median_s"] / stats[peer]["median_s"]
        return None

    say(f"\n{'tool':<13} {'median':>8} {'min':>8} {'max':>8} {'/skopeo+load':>12} {'/podman':>8}")
    for tool in tools:
        if tool.skipped:
            say(f"{tool.name:<13} skipped: {tool.skipped}")
            continue
        s = stats[tool.name]
        s["ratio_to_skopeo+load"] = ratio(tool.name, "skopeo+load")
        s["ratio_to_podman"] = ratio(tool.name, "podman")
        say(
            f"{tool.name:<13} {s['median_s']:>6.2f} s {s['min_s']:>6.2f} s {s['max_s']:>6.2f} s"
            f" {times(s['ratio_to_skopeo+load']):>12} {times(s['ratio_to_podman']):>8}"
        )
    for name, part in parts.items():
        say(f"  {name:<11} {part['median_s']:>6.2f} s (part of skopeo+load)")

    verdicts = {}
    for peer, (bar, aim) in BARS.items():
        if "pull" not in stats:
            verdicts[peer] = "mycontainer pull was not measured (no 'pull' command yet): no verdict"
        else:
            verdicts[peer] = verdict("mycontainer pull", ratio("pull", peer), peer, bar, aim)
        say(f"verdict against {peer}: {verdicts[peer]}")
    notes = machine_notes(load_before, 2.0, args.mycontainer)
    for note in notes:
        say(f"note: {note}")
    return {
        **date_and_machine(),
        "image": "small" if args.small else "debian bookworm minbase",
        "registry": "docker-registry (distribution 2.8), plain HTTP on 127.0.0.1",
        "target": target.describe,
        "mycontainer": mycontainer,
        "runs": args.runs,
        "warmup": args.warmup,
        "tools": stats,
        "parts": parts,
        "skipped": {tool.name: tool.skipped for tool in tools if tool.skipped},
        "bars": {peer: {"bar": bar, "aim": aim} for peer, (bar, aim) in BARS.items()},
        "verdicts": verdicts,
        "notes": notes,
    }


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Pulling from a local registry: mycontainer pull against skopeo copy + "
        "mycontainer load, and podman pull.",
    )
    add_rounds_options(parser, 5, 1, "rounds", "the busybox root filesystem (for --small)")
    parser.add_argument(
        "--small", action="store_true", help="the busybox rootfs in three layers, 1 round"
    )
    parser.add_argument(
        "--target",
        default="ext4",
        metavar="ext4|tmpfs|DIR",
        help="where the pulls write: a new loop-mounted ext4 (default), a new tmpfs, "
        "or a new directory in DIR",
    )
    add_json_and_mycontainer_options(parser)
    args = parser.parse_args(argv)
    if args.small:
        args.runs, args.warmup = 1, 0
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs needs at least 1, --warmup at least 0")
    if not root_on_linux("pull: needs root on Linux: sudo .venv/bin/python bench/pull.py"):
        return 1
    if reason := registries.missing_commands():
        print(f"pull: the registry needs: {reason}", file=sys.stderr)
        return 1
    isolate(__file__, sys.argv[1:] if argv is None else argv)
    workdir = tempfile.mkdtemp(prefix="mycontainer-bench-pull-")
    stack = contextlib.ExitStack()  # the registry stopped, the filesystem unmounted

    def clean_up() -> None:
        stack.close()
        remove_tree(workdir)

    return run_cleanly("pull", lambda: benchmark(args, workdir, stack), clean_up, args.json)


if __name__ == "__main__":
    sys.exit(main())
