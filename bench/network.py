"""Networking: mycontainer's default, ``--net bridge``, against ``--net none`` and runc, one
container at a time and many at once.

    sudo .venv/bin/invoke bench --network   # or: sudo .venv/bin/python bench/network.py

What is measured
----------------
IMAGE is the rootfs (``--rootfs``) made into a tarball and loaded (``mycontainer load``) into
a home of the benchmark's own, as ``busybox``; runc runs the very same rootfs directory, from
start_latency.py's bundle (``runc spec``, patched to run ``/bin/true`` without a terminal in
the namespaces mycontainer makes: a network namespace with loopback only).

1. **One at a time.** Each sample is one whole command, fork to exit, and its peak memory
   as GNU time measures it (``time -f %M``, around every tool alike): the largest resident
   set of the command and of the descendants it waited for (``ru_maxrss``, getrusage(2)).
   Not the ``ru_maxrss`` the benchmark's own wait4(2) would give: execve(2) keeps the
   resident set of the process a command was forked from, which would be the benchmark's
   Python (~14 MB): a small program must fork it. (Without GNU time, no peaks.) The tools:

   * ``mycontainer run --rm --net none IMAGE true`` (``mycontainer-none``);
   * ``mycontainer run --rm IMAGE true`` (``mycontainer-bridge``), the bridge and its NAT
     already there, as for every run but a host's first;
   * the same right after ``mycontainer prune`` removed the bridge and the NAT rules (it
     does when no container holds an address): a host's first run, which creates them
     (``mycontainer-first``). The benchmark checks that the bridge was gone;
   * ``runc run`` of the bundle (``runc``).

   After ``--warmup`` untimed rounds, ``--runs`` rounds, interleaved as the other benchmarks'
   (``common.interleave``: each round starts one tool further along). Median, 10th and 90th
   percentiles, ratios of the medians, median peak memory.
2. **Many at once.** For each N of ``--parallel`` (default 20 and 50): N ``mycontainer run
   --rm IMAGE ip -4 -o addr show eth0`` started at once (bridge), N ``mycontainer run --rm
   --net none IMAGE true`` (none) and N ``runc run`` of the bundle, each with ids of its own;
   the wall time from the first spawn to the last exit. Every one must exit 0, every bridge
   container must print its eth0 address, and afterwards nothing may be left: no container
   state, name, writable layer or cgroup, no ``mc*`` veth in the namespace.
   ``--parallel-runs`` rounds (default 3), interleaved; medians. These runs need not
   overlap, and one may rightly lease the address another released a moment before; so
   then, untimed, for each N: N bridge containers that print their address and wait for
   their stdin to close, all held running at once until all have printed, must have N
   distinct addresses.

The issue's bars (issue 15), each reported as met or not, never asserted: bridge run ÷ none
run <= 1.5x (medians); a bridge run's peak memory <= 15 MB, and <= 1.3x a none run's; 20
bridge runs at once ÷ 20 runc runs at once <= 3x; the wall time growing no worse than
linearly from the smallest N to the largest (bridge and none); ``--net none`` ÷ runc <=
1.0x, as start_latency.py judges it too (with crun and unshare beside it).

Isolation
---------
The benchmark runs itself again under ``unshare --mount --propagation private --net``: the
bridge, the veths, the NAT table and ip_forward it makes exist in that network namespace
only, never on the host's network, and the containers' mounts in that mount namespace; both
end with it. (Not ``ip netns exec``, which remounts /sys.) mycontainer gets a home and a
state root in a temporary directory, runc a ``--root`` there. On any way out (done, failed,
Ctrl-C, SIGTERM): the commands still running get SIGTERM, and whatever carries the
benchmark's mark (detached.py's) still runs 10 s later SIGKILL; then every container is
removed (``rm -f``, ``delete -f``), ``mycontainer prune`` removes what a killed run left and
the bridge, and the cgroup parents, mounts and directory go.

Standard library only (Python >= 3.10), so it runs with any Python on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from common import (
    BenchError,
    Runner,
    Tool,
    add_json_and_mycontainer_options,
    add_rounds_options,
    can_run,
    date_and_machine,
    find_mycontainer,
    gnu_time,
    interleave,
    isolate,
    machine_notes,
    oci_tool,
    print_notes,
    run_cleanly,
    spec_bundle,
    summarize,
    times,
)
from detached import MARK, Mycontainer, end_ours, mounts_under, processes, run_quietly
from start_latency import COMMAND, patch_config

MB = 1024  # kB
BARS = {
    "bridge_over_none": 1.5,  # median of a bridge run over a --net none run's
    "bridge_peak_mb": 15.0,  # peak memory of a bridge run
    "bridge_peak_over_none": 1.3,
    "parallel_bridge_over_runc": 3.0,  # N bridge runs at once over N runc runs at once
    "none_over_runc": 1.0,
}
PARALLEL_FOR_BAR = 20  # the N of the parallel bar
SHOW_ADDRESS = ["ip", "-4", "-o", "addr", "show", "eth0"]  # what parallel bridge runs print
HOLD = "ip -4 -o addr show eth0 && { read _ || :; }"  # print the address, wait for EOF
HOLD_TIMEOUT = 120.0
ADDRESS = re.compile(r"\binet (\d+\.\d+\.\d+\.\d+)/")
GRACE = 20.0  # seconds the commands still running get to end after SIGTERM, on the way out
VETH_PREFIX = "mc"  # mycontainer's host ends of veth pairs: mc<id> (runtime/network.py)


def bridge_name() -> str:
    return os.environ.get("MYCONTAINER_BRIDGE", "mycontainer0")


def links() -> list[str]:
    """The interfaces of this network namespace (if_nameindex(3), not /sys/class/net,
    which shows the namespace of whoever mounted /sys)."""
    return [name for _, name in socket.if_nameindex()]


def address_key(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split("."))


class Network:
    """What the benchmark made: mycontainer with a home and state root of its own (in this
    process's environment, so that every command it runs uses them), runc's bundle and
    state, and the parallel starts still running."""

    def __init__(self, workdir: str, runner: Runner):
        self.workdir = workdir
        self.runner = runner
        self.mycontainer: Mycontainer | None = None
        self.runc = Tool("runc", skipped="not found on PATH (apt-get install runc)")
        self.running: list[subprocess.Popen] = []
        self.gnu_time = gnu_time()

    def set_up(self, args, notes: list[str]) -> None:
        """Load the image, learn the cgroup parent, make the bridge and runc's bundle."""
        path = args.mycontainer or find_mycontainer()
        if not os.access(path, os.X_OK):
            raise BenchError(f"mycontainer not found: run ./setup.sh (it makes {path})")
        # Every command the benchmark runs carries the mark (detached.py's) and the home.
        os.environ[MARK] = self.workdir
        self.mycontainer = Mycontainer(path, self.workdir, dict(os.environ))
        os.environ.update(self.mycontainer.env)
        tarball = os.path.join(self.workdir, "busybox.tar")  # loaded as the image "busybox"
        subprocess.run(["tar", "-C", args.rootfs, "-cf", tarball, "."], check=True)
        self.mycontainer.load(tarball)
        os.remove(tarball)
        # A detached bridge container: its state names the cgroup parent (removed at the
        # end), and it makes the bridge, which the timed bridge runs then find there.
        self.run("run", "-d", self.mycontainer.image, "sleep", "60")
        self.mycontainer.remove_all()
        if shutil.which("runc"):
            bundle = os.path.join(self.workdir, "bundle")
            generator = spec_bundle(bundle, patch_config(args.rootfs))
            self.runc = oci_tool("runc", os.path.join(self.workdir, "runc"), bundle)
            notes.append(f"runc ran a bundle with a config.json from {generator}, patched")

    def argv(self, *args: str) -> list[str]:
        assert self.mycontainer is not None
        return [self.mycontainer.path, *args]

    def run(self, *args: str) -> str:
        """``mycontainer ARGS``, untimed; its stdout, or BenchError with its stderr."""
        return run_quietly(self.argv(*args), dict(os.environ), f"mycontainer {args[0]}")

    def remove_bridge(self) -> None:
        """``mycontainer prune``: no container holds an address, so the bridge and NAT go."""
        self.run("prune")
        if bridge_name() in links():
            raise BenchError(f"mycontainer prune left the bridge {bridge_name()}")

    def left(self) -> list[str]:
        """What containers left: state, names, writable layers, cgroups, veths."""
        assert self.mycontainer is not None
        left = self.mycontainer.left()
        return left + [f"veth {name}" for name in links() if name.startswith(VETH_PREFIX)]

    def clean_up(self) -> list[str]:
        """End the commands still running (also one whose start an interruption cut short,
        which no Popen tracks, and one that a GNU time ended on SIGTERM left orphaned),
        remove every container, the bridge, the cgroup parents and the mounts; return the
        problems."""
        problems = []
        for process in self.running:
            if process.stdin:
                process.stdin.close()  # a held container's read ends
        for process in processes(self.workdir):
            if process.marked and process.ppid == os.getpid():
                os.kill(process.pid, signal.SIGTERM)  # mycontainer run stops its container
        deadline = time.monotonic() + GRACE
        for process in self.running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # end_ours kills it
        # Then nothing changes the state while it is removed. (Cut short in set_up, the probe
        # container's monitor is SIGKILLed so, and its container removed below.)
        killed = end_ours(self.workdir)  # what still runs after 10 s, SIGKILLed
        if killed:
            problems.append(f"processes still ran, killed: {killed}")
        for process in self.running:
            process.wait()
        while True:  # reap the children that no Popen tracks
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        problems += [f"cannot delete a runc container: {f}" for f in self.runner.delete_all()]
        if self.mycontainer:
            problems += self.mycontainer.remove_all()
            try:
                self.run("prune")
            except BenchError as error:
                problems.append(str(error))
            problems += self.mycontainer.remove_cgroup_parents()
        for point in reversed(mounts_under(self.workdir)):
            subprocess.run(["umount", "-l", point], capture_output=True)
        return problems


# --- one at a time -----------------------------------------------------------------------


def single_tools(net: Network) -> list[Tool]:
    """None, bridge, a host's first bridge run, runc: each one command, timed whole."""
    assert net.mycontainer is not None
    none = net.argv("run", "--rm", "--net", "none", net.mycontainer.image, "true")
    bridge = net.argv("run", "--rm", net.mycontainer.image, "true")
    return [
        Tool("mycontainer-none", lambda _id: none),
        Tool("mycontainer-bridge", lambda _id: bridge),
        Tool("mycontainer-first", lambda _id: bridge),
        net.runc,
    ]


def time_single(net: Network, tools: list[Tool], warmup: int, runs: int) -> None:
    """Every tool once a round, interleaved; ``mycontainer-first`` right after a prune."""
    peak = (net.gnu_time, os.path.join(net.workdir, "peak")) if net.gnu_time else None
    for tool, timed in interleave([t for t in tools if not t.skipped], warmup, runs):
        if tool.name == "mycontainer-first":
            net.remove_bridge()
        milliseconds, peak_kb = net.runner.measure_once(tool, peak)
        if timed:
            tool.samples.append(milliseconds)
            if peak_kb is not None:
                tool.peaks_kb.append(peak_kb)


# --- many at once ------------------------------------------------------------------------


def start_at_once(net: Network, argvs: list[list[str]]) -> tuple[float, list[tuple]]:
    """Start every command of ``argvs`` at once; return the seconds from the first spawn to
    the last exit, and each one's (argv, exit status, stdout, stderr). Their output goes to
    files (``ip`` prints a line): pipes would have to be read while they run."""
    with contextlib.ExitStack() as files:
        outputs = [
            [files.enter_context(tempfile.TemporaryFile(dir=net.workdir)) for _ in range(2)]
            for _ in argvs
        ]
        begun = time.perf_counter()
        for argv, (out, err) in zip(argvs, outputs, strict=True):
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            net.running.append(process)
        for process in net.running:
            process.wait()
        elapsed = time.perf_counter() - begun
        results = []
        for process, files_of_one in zip(net.running, outputs, strict=True):
            said = []
            for file in files_of_one:
                file.seek(0)
                said.append(file.read().decode(errors="replace"))
            results.append((process.args, process.returncode, *said))
    net.running = []
    return elapsed, results


def parallel_round(net: Network, kind: str, count: int) -> float:
    """``count`` containers of ``kind`` (bridge, none, runc) at once; the seconds it took.
    Fails unless every one exited 0, every bridge container had an address of its own, and
    nothing is left."""
    assert net.mycontainer is not None
    image = net.mycontainer.image
    ids = []
    if kind == "runc":
        ids = [net.runner.new_container(net.runc) for _ in range(count)]
        argvs = [net.runc.argv(cid) for cid in ids]
    elif kind == "bridge":
        argvs = [net.argv("run", "--rm", image, *SHOW_ADDRESS)] * count
    else:
        argvs = [net.argv("run", "--rm", "--net", "none", image, "true")] * count
    elapsed, results = start_at_once(net, argvs)
    for cid in ids:
        net.runner.delete(cid)
    failed = [(argv, status, err) for argv, status, _, err in results if status != 0]
    if failed:
        argv, status, err = failed[0]
        raise BenchError(
            f"{len(failed)} of {count} {kind} runs at once failed; one (exit status {status}): "
            f"{' '.join(argv)}: {err.strip() or 'nothing on stderr'}"
        )
    if kind == "bridge":
        # Distinct addresses are checked by held_at_once: these runs need not overlap, and
        # one may lease the address another released a moment before.
        addresses = [ADDRESS.findall(out) for _, _, out, _ in results]
        if any(len(found) != 1 for found in addresses):
            raise BenchError(f"a bridge container printed no eth0 address: {addresses}")
    if kind != "runc":
        left = net.left()
        if left:
            raise BenchError(f"{count} {kind} runs at once left behind: {'; '.join(left)}")
    return elapsed


def held_at_once(net: Network, count: int) -> list[str]:
    """Start ``count`` bridge containers at once that each print their address and then wait
    for their stdin to close, close it once all have printed, and return the addresses:
    all ``count`` ran at the same time, so no two may have the same. Fails as
    ``parallel_round`` does, and if they did not all print within HOLD_TIMEOUT s."""
    assert net.mycontainer is not None
    argv = net.argv("run", "--rm", "-i", net.mycontainer.image, "sh", "-c", HOLD)
    with contextlib.ExitStack() as files:
        outputs = [
            files.enter_context(tempfile.TemporaryFile(dir=net.workdir)) for _ in range(count)
        ]
        for out in outputs:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE
            )
            net.running.append(process)
        deadline = time.monotonic() + HOLD_TIMEOUT
        while True:
            said = []
            for out in outputs:
                out.seek(0)
                said.append(out.read().decode(errors="replace"))
            waiting = [
                p for p, text in zip(net.running, said, strict=True) if not ADDRESS.search(text)
            ]
            if not waiting or any(p.poll() is not None for p in waiting):
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{len(waiting)} of {count} held bridge containers printed no address "
                    f"within {HOLD_TIMEOUT:.0f} s"
                )
            time.sleep(0.05)
        for process in net.running:
            process.stdin.close()  # the container's read ends
        results = []
        for process, text in zip(net.running, said, strict=True):
            err = process.stderr.read().decode(errors="replace")
            results.append((process.wait(), text, err))
    net.running = []
    failed = [(status, err) for status, _, err in results if status != 0]
    if failed:
        status, err = failed[0]
        raise BenchError(
            f"{len(failed)} of {count} held bridge containers failed; one (exit status "
            f"{status}): {' '.join(argv)}: {err.strip() or 'nothing on stderr'}"
        )
    addresses = [ADDRESS.findall(text) for _, text, _ in results]
    if any(len(found) != 1 for found in addresses):
        raise BenchError(f"a held bridge container printed no eth0 address: {addresses}")
    addresses = [found[0] for found in addresses]
    if len(set(addresses)) != count:
        shared = sorted({a for a in addresses if addresses.count(a) > 1})
        raise BenchError(f"{count} bridge containers running at once shared addresses: {shared}")
    left = net.left()
    if left:
        raise BenchError(f"{count} held bridge containers left behind: {'; '.join(left)}")
    return addresses


def time_parallel(net: Network, counts: list[int], rounds: int) -> dict[str, dict[int, list]]:
    """Every (kind, N) once a round, interleaved as ``common.interleave``; the seconds."""
    kinds = ["bridge", "none"] + ([] if net.runc.skipped else ["runc"])
    walls: dict[str, dict[int, list]] = {kind: {n: [] for n in counts} for kind in kinds}
    items = [(kind, n) for n in counts for kind in kinds]
    for (kind, count), _ in interleave(items, 0, rounds):
        walls[kind][count].append(parallel_round(net, kind, count))
    return walls


# --- the report --------------------------------------------------------------------------


def megabytes(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / MB:.1f} MB"


def judge(what: str, value: float | None, bar: float, unit: str = "x") -> dict:
    """One bar of the issue: ``value`` against at most ``bar``."""
    if value is None:
        return {
            "bar": what,
            "value": None,
            "limit": bar,
            "met": None,
            "text": f"{what}: not measured",
        }
    met = round(value, 2) <= bar  # as printed: 1.004x is no miss of 1.0x
    said = f"{what} {value:.2f}{unit}: {'met' if met else 'NOT met'} (<= {bar:.1f}{unit})"
    return {"bar": what, "value": value, "limit": bar, "met": met, "text": said}


def single_report(tools: list[Tool]) -> dict[str, dict]:
    """Print and return, by tool, the times and peak memory of the runs one at a time."""
    stats = {}
    for tool in tools:
        if not tool.skipped:
            stats[tool.name] = {
                **summarize(tool.samples),
                "peak_kb": statistics.median(tool.peaks_kb) if tool.peaks_kb else None,
                "samples_ms": [round(ms, 3) for ms in tool.samples],
                "peaks_kb": tool.peaks_kb,
            }

    def over(name: str, peer: str) -> float | None:
        if name not in stats or peer not in stats:
            return None
        return stats[name]["median_ms"] / stats[peer]["median_ms"]

    print(f"{'tool':<19} {'median':>9} {'p10':>9} {'p90':>9} {'/none':>7} {'/runc':>7} {'peak':>9}")
    for tool in tools:
        if tool.skipped:
            print(f"{tool.name:<19} skipped: {tool.skipped}")
            continue
        s = stats[tool.name]
        s["ratio_to_none"] = over(tool.name, "mycontainer-none")
        s["ratio_to_runc"] = over(tool.name, "runc")
        print(
            f"{tool.name:<19} {s['median_ms']:>6.1f} ms {s['p10_ms']:>6.1f} ms"
            f" {s['p90_ms']:>6.1f} ms {times(s['ratio_to_none']):>7}"
            f" {times(s['ratio_to_runc']):>7} {megabytes(s['peak_kb']):>9}"
        )
    return stats


def parallel_report(walls: dict[str, dict[int, list]], counts: list[int]) -> dict[str, dict]:
    """Print and return, by tool and N, the median wall time of N runs at once, its ratio to
    runc's, and how it grew from the smallest N over linear growth."""
    stats: dict[str, dict] = {}
    for kind, by_count in walls.items():
        stats[kind] = {
            n: {"median_s": statistics.median(s), "samples_s": [round(x, 4) for x in s]}
            for n, s in by_count.items()
        }
    low = min(counts)
    print(f"{'tool':<19} {'N':>4} {'wall':>9} {'per ctr':>9} {'/runc':>7} {'growth/linear':>14}")
    for kind, by_count in stats.items():
        for n, s in by_count.items():
            runc = stats.get("runc", {}).get(n)
            s["ratio_to_runc"] = s["median_s"] / runc["median_s"] if runc else None
            s["growth_over_linear"] = None
            if n != low:
                s["growth_over_linear"] = (s["median_s"] / by_count[low]["median_s"]) / (n / low)
            name = kind if kind == "runc" else f"mycontainer-{kind}"
            print(
                f"{name:<19} {n:>4} {s['median_s']:>7.2f} s {s['median_s'] / n * 1000:>6.0f} ms"
                f" {times(s['ratio_to_runc']):>7} {times(s['growth_over_linear']):>14}"
            )
    return stats


def bars(single: dict[str, dict], parallel: dict[str, dict], counts: list[int]) -> list[dict]:
    """Every bar of issue 15 this benchmark measures, judged."""
    none, bridge = single.get("mycontainer-none"), single.get("mycontainer-bridge")
    peak, none_peak = bridge["peak_kb"], none["peak_kb"]
    judged = [
        judge("bridge run / none run", bridge["ratio_to_none"], BARS["bridge_over_none"]),
        judge(
            "bridge run's peak memory",
            peak / MB if peak else None,
            BARS["bridge_peak_mb"],
            " MB",
        ),
        judge(
            "bridge run's peak memory / none run's",
            peak / none_peak if peak and none_peak else None,
            BARS["bridge_peak_over_none"],
        ),
    ]
    n = PARALLEL_FOR_BAR if PARALLEL_FOR_BAR in counts else min(counts)
    judged.append(
        judge(
            f"{n} bridge runs at once / {n} runc runs at once",
            parallel["bridge"][n]["ratio_to_runc"],
            BARS["parallel_bridge_over_runc"],
        )
    )
    if len(counts) > 1:
        high = max(counts)
        for kind in ("bridge", "none"):
            judged.append(
                judge(
                    f"{kind} runs at once, growth from {min(counts)} to {high} over linear",
                    parallel[kind][high]["growth_over_linear"],
                    1.0,
                )
            )
    judged.append(
        judge(
            "none run / runc run (start_latency.py judges it too)",
            none["ratio_to_runc"],
            BARS["none_over_runc"],
        )
    )
    return judged


def benchmark(args, net: Network) -> dict:
    """Set up, time one at a time, then many at once, and report."""
    notes: list[str] = []
    net.set_up(args, notes)
    tools = single_tools(net)
    load_before = os.getloadavg()[0]
    print(
        f"network: {args.warmup} warm-up and {args.runs} timed runs per tool, interleaved, "
        f"then {', '.join(map(str, args.parallel))} at once, {args.parallel_runs} rounds; "
        f"kernel {platform.release()}, {os.cpu_count() or 1} CPUs"
    )
    time_single(net, tools, args.warmup, args.runs)
    walls = time_parallel(net, args.parallel, args.parallel_runs)
    addresses = {n: held_at_once(net, n) for n in args.parallel}
    notes += machine_notes(load_before, float(max(args.parallel)), args.mycontainer)
    if not net.gnu_time:
        notes.append("no GNU time on PATH: peak memory not measured (apt-get install time)")
    print(f"\none at a time, {args.runs} runs: fork to exit; peak memory by GNU time (%M)")
    single = single_report(tools)
    print(
        f"\nN at once: first spawn to last exit, median of {args.parallel_runs}; growth/linear: "
        f"the time's growth from N={min(args.parallel)} over N's"
    )
    parallel = parallel_report(walls, args.parallel)
    for n, found in addresses.items():
        print(
            f"addresses: {n} bridge containers running at once, {len(set(found))} distinct "
            f"({min(found, key=address_key)} to {max(found, key=address_key)})"
        )
    judged = bars(single, parallel, args.parallel)
    print()
    for bar in judged:
        print(f"bar: {bar['text']}")
    print_notes(notes)
    return {
        **date_and_machine(),
        "image": f"{net.mycontainer.image}: a tarball of {args.rootfs}, loaded",
        "rootfs": args.rootfs,
        "mycontainer": net.mycontainer.path,
        "bridge": bridge_name(),
        "runs": args.runs,
        "warmup": args.warmup,
        "parallel": args.parallel,
        "parallel_runs": args.parallel_runs,
        "tools": single,
        "at_once": {kind: {str(n): s for n, s in by.items()} for kind, by in parallel.items()},
        "addresses": {str(n): found for n, found in addresses.items()},
        "skipped": {tool.name: tool.skipped for tool in tools if tool.skipped},
        "bars": judged,
        "cgroups": sorted(net.mycontainer.cgroups()),
        "notes": notes,
    }


# --- the way in and out ------------------------------------------------------------------


def counts(text: str) -> list[int]:
    try:
        found = sorted({int(word) for word in text.split(",")})
    except ValueError:
        found = []
    if not found or found[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give counts such as 20,50")
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description="Bridge networking against --net none and runc: one container at a "
        "time (time and peak memory), a host's first, and many at once.",
    )
    add_rounds_options(parser, 30, 3, "runs per tool", "root filesystem")
    parser.add_argument(
        "--parallel",
        type=counts,
        default=[20, 50],
        metavar="N,N",
        help="containers started at once (default 20,50)",
    )
    parser.add_argument(
        "--parallel-runs", type=int, default=3, help="timed rounds of those (default 3)"
    )
    add_json_and_mycontainer_options(parser)
    args = parser.parse_args(argv)
    if args.runs < 2 or args.warmup < 0 or args.parallel_runs < 1:
        parser.error("--runs needs at least 2 (for percentiles), --parallel-runs 1, --warmup 0")
    if not can_run("network", args, COMMAND, " --network"):
        return 1
    isolate(__file__, argv)
    workdir = tempfile.mkdtemp(prefix="mycontainer-bench-")
    net = Network(workdir, Runner())

    def clean_up() -> None:
        for problem in net.clean_up():
            print(f"network: clean-up: {problem}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)

    return run_cleanly("network", lambda: benchmark(args, net), clean_up, args.json)


if __name__ == "__main__":
    sys.exit(main())
