"""What the two benchmarks, start_latency.py and image_import.py, share.

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
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("MYCONTAINER_HOME", "/var/lib/mycontainer")
BUSYBOX_ROOTFS = os.path.join(HOME, "rootfs", "busybox")  # what `invoke rootfs` builds

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
