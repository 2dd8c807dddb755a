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
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common import (
    BUSYBOX_ROOTFS,
    HOME,
    BenchError,
    add_json_and_mycontainer_options,
    date_and_machine,
    find_mycontainer,
    interleave,
    machine_notes,
    root_on_linux,
    run_cleanly,
    times,
    verdict,
)

COMMAND = "/bin/true"
NAMESPACES = ("pid", "mount", "uts", "ipc", "network")
BAR, AIM = 2.0, 1.0  # mycontainer's median over runc's: at most BAR, ideally at most AIM
CGROUP_V2_HYBRID_MOUNT = "/sys/fs/cgroup/unified"


@dataclass
class Tool:
    """One way to start a container, or (``skipped``) why it cannot be measured here."""

    name: str
    argv: Callable[[str], list[str]] | None = None  # container id -> the command line to time
    delete: Callable[[str], list[str]] | None = None  # container id -> runc/crun delete -f
    skipped: str = ""
    samples: list[float] = field(default_factory=list)  # milliseconds


class Runner:
    """Runs tools, fails loudly, and remembers the containers it still has to delete."""

    def __init__(self) -> None:
        self.serial = 0
        self.undeleted: dict[str, Tool] = {}  # container id -> the tool that made it

    def new_container(self, tool: Tool) -> str:
        """A fresh container id, remembered until ``delete`` succeeds."""
        self.serial += 1
        container_id = f"bench-{os.getpid()}-{self.serial}"
        if tool.delete:
            self.undeleted[container_id] = tool
        return container_id

    def time_once(self, tool: Tool) -> float:
        """Run ``tool`` once with a fresh container id; return the milliseconds it took."""
        container_id = self.new_container(tool)
        argv = tool.argv(container_id)
        start = time.perf_counter()
        completed = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        elapsed = time.perf_counter() - start
        if tool.delete:
            self.delete(container_id)
        if completed.returncode != 0:
            raise BenchError(
                f"{tool.name} failed (exit status {completed.returncode}): {' '.join(argv)}\n"
                f"{self.diagnose(tool)}"
            )
        return elapsed * 1000

    def delete(self, container_id: str) -> None:
        """``runc/crun delete -f``: a container that is gone already is no error."""
        argv = self.undeleted[container_id].delete(container_id)
        completed = subprocess.run(argv, capture_output=True, text=True)
        if completed.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {completed.stderr.strip()}")
        del self.undeleted[container_id]

    def delete_all(self) -> list[str]:
        """Delete what is left (after a failure or Ctrl-C); return what could not be."""
        failures = []
        for container_id in list(self.undeleted):
            try:
                self.delete(container_id)
            except (BenchError, OSError) as error:
                failures.append(str(error))
        return failures

    def diagnose(self, tool: Tool) -> str:
        """Run a failed tool once more, untimed, to show what it says on stderr."""
        container_id = self.new_container(tool)
        completed = subprocess.run(
            tool.argv(container_id), stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if tool.delete:
            self.delete(container_id)
        said = (completed.stderr or completed.stdout).strip()
        return f"it says: {said}" if said else "it prints nothing on stderr"


def mycontainer_tool(path: str, rootfs: str) -> Tool:
    """The subject: ``mycontainer run``."""
    if not os.access(path, os.X_OK):
        raise BenchError(f"mycontainer not found: run ./setup.sh (it makes {path})")
    # The rootfs as a directory (which mycontainer runs as it is), not the image name
    # "busybox": a name goes through mycontainer's image store, which may give another
    # directory, and every tool here must run the very same one. No network but loopback,
    # like the bundle of runc and crun: the default (a bridge and a veth pair) is more work.
    return Tool("mycontainer", lambda _id: [path, "run", "--net", "none", rootfs, COMMAND])


def mycontainer_image_tool(path: str) -> Tool:
    """``mycontainer run`` of the stored busybox image: the store and overlayfs included."""
    name = "mycontainer-image"
    if not os.path.exists(os.path.join(HOME, "images", "busybox:latest.json")):
        return Tool(name, skipped=f"no busybox image in {HOME} (invoke rootfs builds it)")
    return Tool(name, lambda _id: [path, "run", "--net", "none", "busybox", COMMAND])


def oci_tool(name: str, state_root: str, bundle: str) -> Tool:
    """runc or crun, running the bundle, with its state under the temporary ``state_root``."""
    binary = shutil.which(name)
    root = os.path.join(state_root, name)
    wrap: list[str] = []
    if name == "crun" and os.path.ismount(CGROUP_V2_HYBRID_MOUNT):
        # A "hybrid" cgroup host: v1 controllers under /sys/fs/cgroup, plus an empty v2
        # hierarchy at /sys/fs/cgroup/unified. crun 1.8 refuses that layout ("cgroups in
        # hybrid mode not supported, drop all controllers from cgroupv2"). So crun runs in a
        # mount namespace of its own (unshare -m makes its mounts private: nothing changes
        # on the host) where the v2 mount is gone, and then sees a plain cgroup v1 host.
        # This wrapper costs an unshare and a sh, ~3 ms here, which crun's times include.
        wrap = ["unshare", "-m", "sh", "-c", f'umount {CGROUP_V2_HYBRID_MOUNT} && exec "$@"', "sh"]
    return Tool(
        name,
        argv=lambda cid: [*wrap, binary, "--root", root, "run", "--bundle", bundle, cid],
        delete=lambda cid: [*wrap, binary, "--root", root, "delete", "-f", cid],
    )


def unshare_tool(rootfs: str) -> Tool:
    """The floor: the same namespaces and a chroot, and nothing else."""
    flags = ["--fork", "--pid", "--mount", "--uts", "--ipc", "--net"]
    return Tool("unshare", lambda _id: ["unshare", *flags, "chroot", rootfs, COMMAND])


def make_bundle(bundle: str, rootfs: str) -> str:
    """Write ``bundle/config.json`` for ``rootfs``; return which tool's spec it started from."""
    generator = "runc" if shutil.which("runc") else "crun"
    subprocess.run([generator, "spec", "--bundle", bundle], check=True, capture_output=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as file:
        config = json.load(file)
    config["process"]["terminal"] = False
    config["process"]["args"] = [COMMAND]
    # runc wants root.path absolute and free of symlinks: rootfs is os.path.realpath'd.
    config["root"] = {"path": rootfs, "readonly": True}
    config["linux"]["namespaces"] = [{"type": kind} for kind in NAMESPACES]
    with open(path, "w") as file:
        json.dump(config, file, indent=2)
    return f"{generator} spec"


def summarize(samples: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return {"median_ms": statistics.median(samples), "p10_ms": deciles[0], "p90_ms": deciles[-1]}


def ratio(numerator: dict | None, denominator: dict | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return numerator["median_ms"] / denominator["median_ms"]


def report(tools: list[Tool], args, notes: list[str]) -> dict:
    """Print the table and the verdict; return the same as a dict for --json."""
    stats = {tool.name: summarize(tool.samples) for tool in tools if not tool.skipped}
    for tool in tools:
        if not tool.skipped:
            summary = stats[tool.name]
            summary["ratio_to_runc"] = ratio(summary, stats.get("runc"))
            summary["ratio_to_crun"] = ratio(summary, stats.get("crun"))
            summary["samples_ms"] = [round(ms, 3) for ms in tool.samples]
    print(f"{'tool':<17} {'median':>9} {'p10':>9} {'p90':>9} {'/runc':>7} {'/crun':>7}")
    for tool in tools:
        if tool.skipped:
            print(f"{tool.name:<17} skipped: {tool.skipped}")
            continue
        s = stats[tool.name]
        print(
            f"{tool.name:<17} {s['median_ms']:>6.1f} ms {s['p10_ms']:>6.1f} ms"
            f" {s['p90_ms']:>6.1f} ms {times(s['ratio_to_runc']):>7} {times(s['ratio_to_crun']):>7}"
        )
    judged = verdict("mycontainer", stats["mycontainer"]["ratio_to_runc"], "runc", BAR, AIM)
    print(f"\nverdict: {judged}")
    for note in notes:
        print(f"note: {note}")
    return {
        **date_and_machine(),
        "command": COMMAND,
        "rootfs": args.rootfs,
        "mycontainer": args.mycontainer or find_mycontainer(),
        "runs": args.runs,
        "warmup": args.warmup,
        "bar": BAR,
        "aim": AIM,
        "tools": stats,
        "skipped": {tool.name: tool.skipped for tool in tools if tool.skipped},
        "verdict": judged,
        "notes": notes,
    }


def make_tools(args, workdir: str, notes: list[str]) -> list[Tool]:
    """mycontainer, runc, crun and unshare; a missing peer is skipped, with the reason."""
    rootfs = args.rootfs
    path = args.mycontainer or find_mycontainer()
    tools = [mycontainer_tool(path, rootfs), mycontainer_image_tool(path)]
    bundle = os.path.join(workdir, "bundle")
    if shutil.which("runc") or shutil.which("crun"):
        os.mkdir(bundle)
        generator = make_bundle(bundle, rootfs)
        notes.append(f"runc and crun ran a bundle with a config.json from {generator}, patched")
    for name in ("runc", "crun"):
        if shutil.which(name):
            tools.append(oci_tool(name, os.path.join(workdir, "state"), bundle))
        else:
            tools.append(Tool(name, skipped=f"not found on PATH (apt-get install {name})"))
    missing = [name for name in ("unshare", "chroot") if not shutil.which(name)]
    if missing:
        why = f"{' and '.join(missing)} not found on PATH (apt-get install util-linux coreutils)"
        tools.append(Tool("unshare", skipped=why))
    else:
        tools.append(unshare_tool(rootfs))
    if shutil.which("crun") and os.path.ismount(CGROUP_V2_HYBRID_MOUNT):
        notes.append(
            f"hybrid cgroups: crun ran under 'unshare -m' with {CGROUP_V2_HYBRID_MOUNT} "
            "unmounted, which adds ~3 ms to its times"
        )
    return tools


def benchmark(args, workdir: str, runner: Runner) -> dict:
    """Set the tools up, warm them up, time them interleaved, and report."""
    notes: list[str] = []
    tools = make_tools(args, workdir, notes)
    measured = [tool for tool in tools if not tool.skipped]
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    print(
        f"start latency of {COMMAND} in {args.rootfs}: {args.warmup} warm-up and {args.runs} "
        f"timed runs per tool, interleaved; kernel {platform.release()}, {cpus} CPUs"
    )
    for tool, timed in interleave(measured, args.warmup, args.runs):
        milliseconds = runner.time_once(tool)
        if timed:
            tool.samples.append(milliseconds)

    # The benchmark itself keeps about one CPU busy; more than that is someone else's load.
    notes += machine_notes(load_before, 1.0, args.mycontainer)
    return report(tools, args, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start latency of 'mycontainer run' against runc, crun and unshare.",
    )
    parser.add_argument("--runs", type=int, default=30, help="timed runs per tool (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per tool (default 3)")
    parser.add_argument(
        "--rootfs", default=BUSYBOX_ROOTFS, help=f"root filesystem (default {BUSYBOX_ROOTFS})"
    )
    add_json_and_mycontainer_options(parser)
    args = parser.parse_args(argv)
    if args.runs < 2 or args.warmup < 0:
        parser.error("--runs needs at least 2 (for percentiles), --warmup at least 0")
    if not root_on_linux(
        "start_latency: containers need root on Linux: sudo .venv/bin/invoke bench"
    ):
        return 1
    # runc needs an absolute root.path without symlinks; all tools get the same directory.
    args.rootfs = os.path.realpath(args.rootfs)
    if not os.path.exists(os.path.join(args.rootfs, COMMAND.lstrip("/"))):
        print(
            f"start_latency: no {COMMAND} in {args.rootfs}: build it with .venv/bin/invoke rootfs"
        )
        return 1

    runner = Runner()
    workdir = tempfile.mkdtemp(prefix="mycontainer-bench-")

    def clean_up() -> None:
        for failure in runner.delete_all():
            print(f"start_latency: could not delete a container: {failure}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)

    return run_cleanly(
        "start_latency", lambda: benchmark(args, workdir, runner), clean_up, args.json
    )


if __name__ == "__main__":
    sys.exit(main())
