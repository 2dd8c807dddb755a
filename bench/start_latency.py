"""Start latency: ``mycontainer run --net none ROOTFS /bin/true`` against runc, crun, unshare.

    sudo .venv/bin/invoke bench          # or: sudo .venv/bin/python bench/start_latency.py

What is timed
-------------
The wall-clock time of one whole command, from fork to exit, for each of:

* ``mycontainer run --net none ROOTFS /bin/true`` (the subject), ROOTFS being the busybox
  image's directory (``--rootfs``), given as a path so that every tool runs the very same
  directory; ``--net none`` (a network namespace with only loopback) because the bundle the
  others run has no more than that either, while mycontainer's default network is a bridge
  and a veth pair;
* ``mycontainer run --net none busybox /bin/true``: the same through the image store (the
  stored OCI image, its layer mounted with overlayfs), for comparison; skipped when the
  ``busybox`` image is not in the store (``invoke rootfs`` builds it);
* ``runc run`` and ``crun run`` of an OCI bundle whose ``root.path`` is the *same* rootfs
  directory, with a ``config.json`` from ``runc spec`` (``crun spec`` without runc), patched
  to: no terminal, args ``["/bin/true"]``, namespaces pid, mount, uts, ipc and network (the
  ones mycontainer makes);
* ``unshare --fork --pid --mount --uts --ipc --net chroot ROOTFS /bin/true``: the floor, the
  same namespaces with no runtime at all.

Each sample is ``time.perf_counter()`` around one ``subprocess.run``, with stdin, stdout and
stderr on /dev/null; a non-zero exit stops the benchmark with the tool's error.

How
---
Warm-up runs first (page cache, the runtime's bytecode, the kernel's dentries), then
``--runs`` iterations. Each iteration runs every tool once, round-robin, and starts one tool
further along than the previous iteration, so that no tool is always first (or always right
after the same neighbour) and slow drift of the machine spreads over all tools alike.

For each tool the report gives the median and the 10th and 90th percentiles in ms, and the
ratio of its median to runc's and to crun's. mycontainer's bar is 2.0x runc's median; the aim
beyond it is 1.0x. The numbers are reported, never asserted: a test of timing would only
measure how busy the CI machine was.

runc and crun keep their state under a temporary ``--root`` (nothing is left in /run/runc or
/run/crun); each run uses a fresh container id, and every container is deleted
(``delete -f``) right after its run and again, with the temporary directory, on the way out,
whether the benchmark finished, failed or was interrupted (Ctrl-C, SIGTERM).

Standard library only (Python >= 3.10), so it runs with any Python on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable

from common import (
    HOME,
    BenchError,
    Runner,
    Tool,
    add_json_and_mycontainer_options,
    add_rounds_options,
    find_mycontainer,
    peer_tools,
    report,
    run_timing,
    spec_bundle,
    time_tools,
)

COMMAND = "/bin/true"
NAMESPACES = ("pid", "mount", "uts", "ipc", "network")
BAR, AIM = 2.0, 1.0  # mycontainer's median over runc's: at most BAR, ideally at most AIM


def mycontainer_tool(path: str, rootfs: str) -> Tool:
    """The subject: ``mycontainer run``."""
    if not os.access(path, os.X_OK):
        raise BenchError(f"mycontainer not found: run ./setup.sh (it makes {path})")
    # The rootfs as a directory (which mycontainer runs as it is), not the image name
    # "busybox": a name goes through mycontainer's image store, which may give another
    # directory, and every tool here must run the very same one. No network but loopback,
    # like the bundle of runc and crun: the default (a bridge and a veth pair) is more work.
    return Tool("mycontainer", lambda _id: [path, "run", "--rm", "--net", "none", rootfs, COMMAND])


def mycontainer_image_tool(path: str) -> Tool:
    """``mycontainer run`` of the stored busybox image: the store and overlayfs included."""
    name = "mycontainer-image"
    if not os.path.exists(os.path.join(HOME, "images", "busybox:latest.json")):
        return Tool(name, skipped=f"no busybox image in {HOME} (invoke rootfs builds it)")
    return Tool(name, lambda _id: [path, "run", "--rm", "--net", "none", "busybox", COMMAND])


def unshare_tool(rootfs: str) -> Tool:
    """The floor: the same namespaces and a chroot, and nothing else."""
    flags = ["--fork", "--pid", "--mount", "--uts", "--ipc", "--net"]
    return Tool("unshare", lambda _id: ["unshare", *flags, "chroot", rootfs, COMMAND])


def patch_config(rootfs: str) -> Callable[[dict], None]:
    """The changes to the spec's config.json: run ``COMMAND`` in ``rootfs``, no terminal,
    the namespaces mycontainer makes."""

    def patch(config: dict) -> None:
        config["process"]["terminal"] = False
        config["process"]["args"] = [COMMAND]
        config["root"] = {"path": rootfs, "readonly": True}
        config["linux"]["namespaces"] = [{"type": kind} for kind in NAMESPACES]

    return patch


def make_tools(args, workdir: str, notes: list[str]) -> list[Tool]:
    """mycontainer, runc, crun and unshare; a missing peer is skipped, with the reason."""
    rootfs = args.rootfs
    path = args.mycontainer or find_mycontainer()
    tools = [mycontainer_tool(path, rootfs), mycontainer_image_tool(path)]
    bundle = os.path.join(workdir, "bundle")
    if shutil.which("runc") or shutil.which("crun"):
        generator = spec_bundle(bundle, patch_config(rootfs))
        notes.append(f"runc and crun ran a bundle with a config.json from {generator}, patched")
    tools += peer_tools(os.path.join(workdir, "state"), bundle, notes)
    missing = [name for name in ("unshare", "chroot") if not shutil.which(name)]
    if missing:
        why = f"{' and '.join(missing)} not found on PATH (apt-get install util-linux coreutils)"
        tools.append(Tool("unshare", skipped=why))
    else:
        tools.append(unshare_tool(rootfs))
    return tools


def benchmark(args, workdir: str, runner: Runner) -> dict:
    """Set the tools up, warm them up, time them interleaved, and report."""
    notes: list[str] = []
    tools = make_tools(args, workdir, notes)
    what = f"start latency of {COMMAND} in {args.rootfs}"
    notes += time_tools(runner, tools, args, what, "tool", args.mycontainer)
    path = args.mycontainer or find_mycontainer()
    about = {"command": COMMAND, "rootfs": args.rootfs, "mycontainer": path}
    return report(tools, args, notes, "mycontainer", BAR, AIM, about)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start latency of 'mycontainer run' against runc, crun and unshare.",
    )
    add_rounds_options(parser, 30, 3, "runs per tool", "root filesystem")
    add_json_and_mycontainer_options(parser)
    return run_timing("start_latency", parser, argv, COMMAND, "", benchmark)


if __name__ == "__main__":
    sys.exit(main())
