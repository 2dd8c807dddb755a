"""What the benchmarks (start_latency.py, oci_run.py, exec.py, detached.py, image_import.py) share.

Each benchmark is run as a script (``python3 bench/start_latency.py``), so its own directory
is on ``sys.path`` and ``from common import ...`` finds this file; bench/ is no package.
Standard library only, like the benchmarks, so that any Python on the machine runs them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("MYCONTAINER_HOME", "/var/lib/mycontainer")
BUSYBOX_ROOTFS = os.path.join(HOME, "rootfs", "busybox")  # what `invoke rootfs` builds
CGROUP_V2_HYBRID_MOUNT = "/sys/fs/cgroup/unified"
ISOLATED = "MYCONTAINER_BENCH_ISOLATED"  # set once a benchmark runs under unshare (isolate)

T = TypeVar("T")


class BenchError(Exception):
    """A tool failed or the benchmark cannot run; the message says what to do."""


def add_json_and_mycontainer_options(parser: argparse.ArgumentParser) -> None:
    """``--json FILE`` and ``--mycontainer PATH``, which mean the same in both benchmarks."""
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument(
        "--mycontainer",
        metavar="PATH",
        help="the mycontainer to measure (default: the one next to this Python, else on PATH)",
    )


def root_on_linux(refusal: str) -> bool:
    """Whether this runs as root on Linux (containers and mounts need it); if not, say
    ``refusal`` on stderr."""
    if sys.platform == "linux" and os.geteuid() == 0:
        return True
    print(refusal, file=sys.stderr)
    return False


def find_mycontainer() -> str:
    """The console script next to this Python (the venv's), else on PATH."""
    path = os.path.join(os.path.dirname(sys.executable), "mycontainer")
    if not os.access(path, os.X_OK):
        path = shutil.which("mycontainer") or os.path.join(REPO, ".venv", "bin", "mycontainer")
    return path


def interleave(items: list[T], warmup: int, runs: int) -> Iterator[tuple[T, bool]]:
    """``(item, timed)``: ``warmup`` untimed rounds of every item, then ``runs`` timed rounds.

    Each timed round starts one item further along than the previous one, so that no item is
    always first (or always right after the same neighbour) and slow drift of the machine
    (another job, the page cache, CPU frequency) spreads over all items alike.
    """
    for _ in range(warmup):
        for item in items:
            yield item, False
    for iteration in range(runs):
        first = iteration % len(items)
        for item in items[first:] + items[:first]:
            yield item, True


def times(ratio: float | None) -> str:
    """A ratio for the report's tables: ``1.23x``, or ``-`` when its peer was not measured."""
    return "-" if ratio is None else f"{ratio:.2f}x"


def verdict(
    subject: str,
    ratio: float | None,
    peer: str,
    bar: float,
    aim: float,
    peer_in_full: str | None = None,
) -> str:
    """How ``subject``'s median over ``peer``'s compares with the bar and, beyond it, the aim."""
    if ratio is None:
        return f"{peer} was not measured: cannot judge the bar ({subject} <= {bar:.1f}x {peer})"
    said = f"{subject} takes {ratio:.2f}x {peer_in_full or peer}'s median: "
    if ratio <= aim:
        return said + f"meets the aim (<= {aim:.1f}x {peer}), and so the bar (<= {bar:.1f}x)"
    if ratio <= bar:
        return said + f"meets the bar (<= {bar:.1f}x {peer}), not yet the aim (<= {aim:.1f}x)"
    return said + f"MISSES the bar (<= {bar:.1f}x {peer})"


def date_and_machine() -> dict:
    """The first fields of the results: when and on what they were measured."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def stale_bytecode(package: str) -> list[str]:
    """The modules of ``package`` whose .pyc is missing or out of date for this Python.

    ``mycontainer run`` imports its runtime at every start. Without up-to-date bytecode
    Python compiles each module again, and with PYTHONDONTWRITEBYTECODE set (as in some
    sessions) it never saves the result: every start pays for the compiling.
    """
    stale = []
    for name in sorted(os.listdir(package)):
        if not name.endswith(".py"):
            continue
        source = os.path.join(package, name)
        try:
            with open(importlib.util.cache_from_source(source), "rb") as file:
                header = file.read(16)
        except FileNotFoundError:
            stale.append(name)
            continue
        magic, flags = header[:4], int.from_bytes(header[4:8], "little")
        stat = os.stat(source)
        recorded = (int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little"))
        actual = (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size & 0xFFFFFFFF)
        # flags 0: a timestamp .pyc, valid while the source's mtime and size are unchanged.
        if magic != importlib.util.MAGIC_NUMBER or (flags == 0 and recorded != actual):
            stale.append(name)
    return stale


def machine_notes(load_before: float, own_load: float, mycontainer: str | None) -> list[str]:
    """What may have skewed the times: a busy machine (a load average beyond the
    benchmark's own ``own_load`` CPUs), and this checkout's runtime without up-to-date
    bytecode (another ``--mycontainer`` may run another checkout's: it is not checked)."""
    notes = []
    cpus = os.cpu_count() or 1
    load_after = os.getloadavg()[0]
    if load_before > 0.5 * cpus or load_after > own_load + 0.5 * cpus:
        notes.append(
            f"the machine was busy (load average {load_before:.2f} before, "
            f"{load_after:.2f} after): the times are noisy"
        )
    stale = [] if mycontainer else stale_bytecode(os.path.join(REPO, "runtime"))
    if stale:
        every_start = os.environ.get("PYTHONDONTWRITEBYTECODE")
        notes.append(
            f"runtime/__pycache__ is missing or out of date for {', '.join(stale)}: "
            f"mycontainer's times include compiling them"
            f"{' at every start (PYTHONDONTWRITEBYTECODE is set)' if every_start else ''}. "
            "Run: .venv/bin/python -m compileall runtime steps (setup.sh does)"
        )
    return notes


def isolate(script: str, argv: list[str]) -> None:
    """Run ``script`` with ``argv`` again in a mount and a network namespace of its own
    (unshare(1)), unless this is that run: what its containers mount, and whatever a tool
    does to a network, then stays in namespaces that end with it. Not ``ip netns exec``,
    which remounts /sys."""
    if os.environ.get(ISOLATED) == "1":
        return
    os.environ[ISOLATED] = "1"
    unshare = ["unshare", "--mount", "--propagation", "private", "--net"]
    os.execvp("unshare", [*unshare, sys.executable, os.path.abspath(script), *argv])


def run_cleanly(
    name: str, work: Callable[[], dict], clean_up: Callable[[], None], json_path: str | None
) -> int:
    """``work()`` then, always and uninterruptibly, ``clean_up()``; Ctrl-C and SIGTERM stop
    the work and take the same way out. Writes ``work``'s results to ``json_path`` if given."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        results = work()
    except BenchError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        # No second Ctrl-C may stop the clean-up half-way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        clean_up()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if json_path:
        with open(json_path, "w") as file:
            json.dump(results, file, indent=2)
            file.write("\n")
        print(f"results written to {json_path}")
    return 0


def add_rounds_options(
    parser: argparse.ArgumentParser, runs: int, warmup: int, per: str, rootfs_help: str
) -> None:
    """``--runs``, ``--warmup`` and ``--rootfs``, which every benchmark takes."""
    parser.add_argument("--runs", type=int, default=runs, help=f"timed {per} (default {runs})")
    parser.add_argument(
        "--warmup", type=int, default=warmup, help=f"warm-up {per} (default {warmup})"
    )
    parser.add_argument(
        "--rootfs", default=BUSYBOX_ROOTFS, help=f"{rootfs_help} (default {BUSYBOX_ROOTFS})"
    )


def can_run(name: str, args: argparse.Namespace, command: str, invoke_flag: str = "") -> bool:
    """Whether benchmark ``name`` can run: as root on Linux, with ``command`` in
    ``args.rootfs``, which becomes absolute and free of symlinks (runc requires that of
    ``root.path``). If not, says why and how (``invoke bench`` with ``invoke_flag``)."""
    refusal = f"{name}: containers need root on Linux: sudo .venv/bin/invoke bench{invoke_flag}"
    if not root_on_linux(refusal):
        return False
    args.rootfs = os.path.realpath(args.rootfs)
    if os.path.exists(os.path.join(args.rootfs, command.lstrip("/"))):
        return True
    print(f"{name}: no {command} in {args.rootfs}: build it with .venv/bin/invoke rootfs")
    return False


def run_timing(
    name: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    command: str,
    invoke_flag: str,
    benchmark: Callable[[argparse.Namespace, str, Runner], dict],
) -> int:
    """The way in of a benchmark that times containers: parse ``argv`` (percentiles need
    two runs), check that it ``can_run``, then ``benchmark(args, workdir, runner)`` in
    ``run_containers``."""
    args = parser.parse_args(argv)
    if args.runs < 2 or args.warmup < 0:
        parser.error("--runs needs at least 2 (for percentiles), --warmup at least 0")
    if not can_run(name, args, command, invoke_flag):
        return 1
    return run_containers(name, lambda workdir, runner: benchmark(args, workdir, runner), args.json)


def gnu_time() -> str | None:
    """GNU time (Debian's ``time`` package), which measures a command's peak memory, or None.

    Only a small program can: a command's ``ru_maxrss`` (getrusage(2)) starts from the
    resident set of the process it was forked from, since execve(2) keeps the largest of the
    old image's (and Python's subprocess even shares the benchmark's with vfork). Run by
    Python, ``/bin/true`` reports the 14 MB of the benchmark; run by GNU time, 1 MB.
    """
    path = shutil.which("time") or "/usr/bin/time"
    if not os.access(path, os.X_OK):
        return None
    completed = subprocess.run([path, "--version"], capture_output=True, text=True)
    return path if "GNU" in completed.stdout + completed.stderr else None


def run_measured(
    argv: list[str], peak: tuple[str, str] | None = None
) -> tuple[int, float, int | None]:
    """Run ``argv`` with stdin, stdout and stderr on /dev/null; return its exit status, the
    seconds from fork to exit, and with ``peak`` (GNU time's path, a file for it to write)
    its peak memory in kB: GNU time's "maximum resident set size", the largest of the
    command and of the descendants it waited for (``ru_maxrss``). GNU time's own fork and
    exec, ~1 ms, are in the seconds then."""
    if peak:
        argv = [peak[0], "-f", "%M", "-o", peak[1], "--", *argv]
    start = time.perf_counter()
    status = subprocess.run(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ).returncode
    elapsed = time.perf_counter() - start
    if not peak:
        return status, elapsed, None
    with open(peak[1]) as file:  # "Command exited with non-zero status N" comes first
        return status, elapsed, int(file.read().split()[-1])


@dataclass
class Tool:
    """One way to start a container, or (``skipped``) why it cannot be measured here."""

    name: str
    argv: Callable[[str], list[str]] | None = None  # container id -> the command line to time
    delete: Callable[[str], list[str]] | None = None  # container id -> runc/crun delete -f
    skipped: str = ""
    samples: list[float] = field(default_factory=list)  # milliseconds
    peaks_kb: list[int] = field(default_factory=list)  # peak memory (kB), if measured


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
        return self.measure_once(tool)[0]

    def measure_once(
        self, tool: Tool, peak: tuple[str, str] | None = None
    ) -> tuple[float, int | None]:
        """Run ``tool`` once with a fresh container id; return the milliseconds it took and,
        with ``peak``, its peak memory in kB (``run_measured``)."""
        container_id = self.new_container(tool)
        argv = tool.argv(container_id)
        status, seconds, peak_kb = run_measured(argv, peak)
        if tool.delete:
            self.delete(container_id)
        if status != 0:
            raise BenchError(
                f"{tool.name} failed (exit status {status}): {' '.join(argv)}\n"
                f"{self.diagnose(tool)}"
            )
        return seconds * 1000, peak_kb

    def time_interleaved(self, tools: list[Tool], warmup: int, runs: int) -> None:
        """Warm every tool up, then time each ``runs`` times (``interleave``)."""
        for tool, timed in interleave(tools, warmup, runs):
            milliseconds = self.time_once(tool)
            if timed:
                tool.samples.append(milliseconds)

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


def run_containers(name: str, work: Callable[[str, Runner], dict], json_path: str | None) -> int:
    """``work(workdir, runner)`` in a new temporary directory, then (``run_cleanly``) delete
    the containers the runner left and the directory."""
    runner = Runner()
    workdir = tempfile.mkdtemp(prefix="mycontainer-bench-")

    def clean_up() -> None:
        for failure in runner.delete_all():
            print(f"{name}: could not delete a container: {failure}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)

    return run_cleanly(name, lambda: work(workdir, runner), clean_up, json_path)


def spec_bundle(bundle: str, patch: Callable[[dict], None]) -> str:
    """Make ``bundle`` with the ``config.json`` of ``runc spec`` (``crun spec`` without runc),
    changed by ``patch``; return which tool's spec it came from."""
    generator = "runc" if shutil.which("runc") else "crun"
    os.mkdir(bundle)
    subprocess.run([generator, "spec", "--bundle", bundle], check=True, capture_output=True)
    path = os.path.join(bundle, "config.json")
    with open(path) as file:
        config = json.load(file)
    patch(config)
    with open(path, "w") as file:
        json.dump(config, file, indent=2)
    return f"{generator} spec"


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


def peer_tools(state_root: str, bundle: str, notes: list[str]) -> list[Tool]:
    """runc and crun running ``bundle``; one that is not installed is skipped, with why."""
    tools = []
    for name in ("runc", "crun"):
        if shutil.which(name):
            tools.append(oci_tool(name, state_root, bundle))
        else:
            tools.append(Tool(name, skipped=f"not found on PATH (apt-get install {name})"))
    if shutil.which("crun") and os.path.ismount(CGROUP_V2_HYBRID_MOUNT):
        notes.append(
            f"hybrid cgroups: crun ran under 'unshare -m' with {CGROUP_V2_HYBRID_MOUNT} "
            "unmounted, which adds ~3 ms to its times"
        )
    return tools


def summarize(samples: list[float]) -> dict[str, float]:
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    return {"median_ms": statistics.median(samples), "p10_ms": deciles[0], "p90_ms": deciles[-1]}


def ratio(numerator: dict | None, denominator: dict | None) -> float | None:
    if numerator is None or denominator is None:
        return None
    return numerator["median_ms"] / denominator["median_ms"]


def print_table(tools: list[Tool]) -> dict[str, dict]:
    """Print each tool's median, percentiles and ratios to runc's and crun's; return them,
    with the samples, by tool name (the measured ones)."""
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
    return stats


def time_tools(
    runner: Runner,
    tools: list[Tool],
    args: argparse.Namespace,
    what: str,
    per: str,
    other: str | None,
) -> list[str]:
    """Say what is timed, time the tools that are not skipped (``--warmup`` and ``--runs``,
    interleaved), and return what may have skewed the times (``machine_notes``; the
    benchmark itself keeps about one CPU busy, more is someone else's load; ``other``:
    the ``--mycontainer`` measured, if not this checkout's)."""
    load_before = os.getloadavg()[0]
    print(
        f"{what}: {args.warmup} warm-up and {args.runs} timed runs per {per}, interleaved; "
        f"kernel {platform.release()}, {os.cpu_count() or 1} CPUs"
    )
    runner.time_interleaved([tool for tool in tools if not tool.skipped], args.warmup, args.runs)
    return machine_notes(load_before, 1.0, other)


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {note}")


def report(
    tools: list[Tool],
    args: argparse.Namespace,
    notes: list[str],
    subject: str,
    bar: float,
    aim: float,
    about: dict,
    peer_in_full: str | None = None,
) -> dict:
    """Print the table, the verdict on ``subject``'s median over runc's and the notes;
    return the same for --json, after ``about`` (what was run, and by whom)."""
    stats = print_table(tools)
    if subject in stats:
        judged = verdict(subject, stats[subject]["ratio_to_runc"], "runc", bar, aim, peer_in_full)
    else:
        judged = f"{subject} was not measured: cannot judge the bar ({subject} <= {bar:.1f}x runc)"
    print(f"\nverdict: {judged}")
    print_notes(notes)
    return {
        **date_and_machine(),
        **about,
        "runs": args.runs,
        "warmup": args.warmup,
        "bar": bar,
        "aim": aim,
        "tools": stats,
        "skipped": {tool.name: tool.skipped for tool in tools if tool.skipped},
        "verdict": judged,
        "notes": notes,
    }
