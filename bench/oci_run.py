"""OCI run: ``mycontainer-oci run`` of a busybox bundle against ``runc run`` and ``crun run``.

    sudo .venv/bin/invoke bench --oci    # or: sudo .venv/bin/python bench/oci_run.py

What is timed
-------------
The wall-clock time of one whole ``RUNTIME --root TMP run --bundle BUNDLE ID``, from fork to
exit, for RUNTIME each of:

* ``mycontainer-oci`` (the subject: the OCI runtime command line that podman, containerd
  and CRI-O drive), the console script next to the Python that runs the benchmark, else on
  PATH, or ``--mycontainer-oci PATH``; skipped, saying so, while it is not built;
* ``runc`` and ``crun``, the runtimes engines use by default.

All three run the *same* bundle: its ``config.json`` is ``runc spec``'s (``crun spec``'s
without runc) as it is, but for what running ``true`` needs: ``process.args`` ``["true"]``,
``process.terminal`` false, and ``root.path`` the busybox rootfs (``--rootfs``), absolute and
symlink-free (runc requires that), read-only as the spec generator has it. So the work is
what an engine asks of a runtime: the namespaces, mounts, cgroup, capabilities, masked paths
and rlimits of runc's default configuration.

Each sample is ``time.perf_counter()`` around one ``subprocess.run``, with stdin, stdout and
stderr on /dev/null; a non-zero exit stops the benchmark with the tool's error.

How
---
As ``start_latency.py`` does, with the runner and tools of ``common.py``: warm-up runs, then
``--runs`` interleaved iterations, each starting one tool further along (``common.interleave``); the
median, the 10th and 90th percentiles, and the ratios of the medians to runc's and crun's.
mycontainer-oci's bar is 1.3x runc's median, the aim beyond it 1.0x (issue 13). Reported,
never asserted.

Every runtime keeps its state under a temporary ``--root``; each run uses a fresh container
id and is followed by ``delete -f``; on any way out (done, failed, Ctrl-C, SIGTERM) the
containers left are deleted and the temporary bundle and state removed. On a hybrid cgroup
host crun runs through the ``unshare -m`` wrapper that start_latency.py explains.

Standard library only (Python >= 3.10), so it runs with any Python on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable

from common import (
    BenchError,
    Runner,
    Tool,
    add_rounds_options,
    peer_tools,
    report,
    run_timing,
    spec_bundle,
    time_tools,
)

SUBJECT = "mycontainer-oci"
PEERS = ("runc", "crun")
ARGS = ["true"]
BAR, AIM = 1.3, 1.0  # mycontainer-oci's median over runc's: at most BAR, ideally at most AIM


def find_mycontainer_oci() -> str | None:
    """The console script next to this Python (the venv's), else on PATH, else None."""
    path = os.path.join(os.path.dirname(sys.executable), SUBJECT)
    if os.access(path, os.X_OK):
        return path
    return shutil.which(SUBJECT)


def runtime_tool(name: str, path: str, state_root: str, bundle: str) -> Tool:
    """``PATH --root STATE_ROOT/NAME run --bundle BUNDLE ID``, then ``delete -f ID``."""
    root = os.path.join(state_root, name)
    return Tool(
        name,
        argv=lambda cid: [path, "--root", root, "run", "--bundle", bundle, cid],
        delete=lambda cid: [path, "--root", root, "delete", "-f", cid],
    )


def patch_config(rootfs: str) -> Callable[[dict], None]:
    """The changes to the spec's config.json: run ``ARGS`` in ``rootfs``, no terminal."""

    def patch(config: dict) -> None:
        config["process"]["args"] = ARGS
        config["process"]["terminal"] = False
        config["root"]["path"] = rootfs

    return patch


def make_tools(args, workdir: str, notes: list[str]) -> list[Tool]:
    """mycontainer-oci, runc and crun; one that is not installed is skipped, with why."""
    state_root = os.path.join(workdir, "state")
    bundle = os.path.join(workdir, "bundle")
    if not any(shutil.which(name) for name in PEERS):
        raise BenchError("neither runc nor crun is installed: apt-get install runc crun")
    generator = spec_bundle(bundle, patch_config(args.rootfs))
    notes.append(f"every runtime ran one bundle, its config.json from {generator}")
    subject = args.mycontainer_oci or find_mycontainer_oci()
    if subject and os.access(subject, os.X_OK):
        tools = [runtime_tool(SUBJECT, subject, state_root, bundle)]
    elif args.mycontainer_oci:
        raise BenchError(f"{args.mycontainer_oci}: not an executable file")
    else:
        tools = [Tool(SUBJECT, skipped="not built yet (pip install -e . makes it)")]
    return tools + peer_tools(state_root, bundle, notes)


def benchmark(args, workdir: str, runner: Runner) -> dict:
    """Set the tools up, warm them up, time them interleaved, and report."""
    notes: list[str] = []
    tools = make_tools(args, workdir, notes)
    # This checkout's bytecode matters only if its mycontainer-oci was measured.
    other = args.mycontainer_oci or (SUBJECT if tools[0].skipped else None)
    what = f"OCI run of {' '.join(ARGS)} in {args.rootfs}"
    notes += time_tools(runner, tools, args, what, "runtime", other)
    subject = args.mycontainer_oci or find_mycontainer_oci()
    about = {"args": ARGS, "rootfs": args.rootfs, SUBJECT: subject}
    return report(tools, args, notes, SUBJECT, BAR, AIM, about)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="'mycontainer-oci run' of a busybox bundle against 'runc run' and 'crun run'.",
    )
    add_rounds_options(parser, 30, 3, "runs per tool", "root filesystem")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument(
        "--mycontainer-oci",
        metavar="PATH",
        help=f"the {SUBJECT} to measure (default: the one next to this Python, else on PATH)",
    )
    return run_timing("oci_run", parser, argv, f"/bin/{ARGS[0]}", " --oci", benchmark)


if __name__ == "__main__":
    sys.exit(main())
