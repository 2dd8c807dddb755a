"""exec: ``mycontainer exec C true`` against ``runc exec ID true`` and ``crun exec ID true``.

    sudo .venv/bin/invoke bench --exec    # or: sudo .venv/bin/python bench/exec.py

What is timed
-------------
The wall-clock time of one whole exec of ``true`` into a container that runs ``sleep``, from
fork to exit, for each of:

* ``mycontainer exec NAME true`` (the subject), into a container of ``mycontainer run -d
  --net none ROOTFS sleep``: the console script next to the Python that runs the
  benchmark, else on PATH, or ``--mycontainer PATH``;
* ``mycontainer-oci exec NAME true``, into the same container, for comparison;
* ``runc exec ID true`` and ``crun exec ID true``, into a container each of ``runc/crun run
  -d`` of a bundle whose config.json is ``runc spec``'s (``crun spec``'s without runc), but
  for what running ``sleep`` needs: ``process.args``, ``process.terminal`` false and
  ``root.path`` the busybox rootfs, the same directory mycontainer runs.

So each exec does the same work: join the container's cgroups and namespaces (mycontainer's
container has the same ones: pid, mount, uts, ipc, network, and cgroup on cgroup v2), take
its capabilities, no_new_privs, seccomp filter and user, and execute ``true`` there.

Each sample is ``time.perf_counter()`` around one ``subprocess.run``, with stdin, stdout and
stderr on /dev/null; a non-zero exit stops the benchmark with the tool's error.

How
---
As ``oci_run.py`` does, with the runner and tools of ``common.py``: warm-up runs, then
``--runs`` interleaved iterations, each starting one tool further along
(``common.interleave``); the median, the 10th and 90th percentiles, and the ratios of the
medians to runc's and crun's. mycontainer exec's bar is 1.5x runc's median, the aim beyond
it 1.0x (issue 14). Reported, never asserted.

The containers are started once, before the warm-up, each with a fresh name (runc's and
crun's under a temporary state root, mycontainer's in its usual one); on any way out (done,
failed, Ctrl-C, SIGTERM) they are removed (``rm -f``, ``delete -f``), and the temporary
bundle and state with them. On a hybrid cgroup host crun runs through the ``unshare -m``
wrapper that start_latency.py explains (its ``exec`` too, where it adds the same ~3 ms).

Standard library only (Python >= 3.10), so it runs with any Python on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from common import (
    BenchError,
    Runner,
    Tool,
    add_json_and_mycontainer_options,
    add_rounds_options,
    find_mycontainer,
    oci_tool,
    report,
    run_timing,
    spec_bundle,
    time_tools,
)

SUBJECT = "mycontainer"
ARGS = ["true"]
SLEEP = ["sleep", "1000000"]
BAR, AIM = 1.5, 1.0  # mycontainer exec's median over runc exec's: at most BAR, ideally AIM


def started(runner: Runner, lifecycle: Tool, start: list[str]) -> tuple[str, str]:
    """Start a container with ``start`` + [its new name], removed with ``lifecycle.delete``
    on any way out (the runner remembers it); return its name and what ``start`` printed."""
    name = runner.new_container(lifecycle)
    # Files, not pipes: the detached container may keep them open.
    with tempfile.TemporaryFile("w+") as output, tempfile.TemporaryFile("w+") as errors:
        completed = subprocess.run(
            [*start, name], stdin=subprocess.DEVNULL, stdout=output, stderr=errors
        )
        output.seek(0)
        errors.seek(0)
        if completed.returncode != 0:
            raise BenchError(f"{' '.join(start)} {name} failed: {errors.read().strip()}")
        return name, output.read().strip()


def mycontainer_tools(args, runner: Runner) -> list[Tool]:
    """``mycontainer exec`` and ``mycontainer-oci exec`` into one detached container, of
    the usual state root (as start_latency.py's runs: a root of its own would leave a cgroup
    parent of its own behind)."""
    mycontainer = args.mycontainer or find_mycontainer()
    if not os.access(mycontainer, os.X_OK):
        raise BenchError(f"{mycontainer}: not an executable file")
    state_root = os.environ.get("MYCONTAINER_STATE") or "/run/mycontainer"
    lifecycle = Tool(SUBJECT, delete=lambda name: [mycontainer, "rm", "-f", name])
    run = [mycontainer, "run", "-d", "--net", "none", args.rootfs, *SLEEP, "--name"]
    name, container_id = started(runner, lifecycle, run)  # run -d prints the id
    oci = os.path.join(os.path.dirname(mycontainer), "mycontainer-oci")
    oci_exec = [oci, "--root", state_root, "exec", container_id, *ARGS]
    return [
        Tool(SUBJECT, argv=lambda _: [mycontainer, "exec", name, *ARGS]),
        Tool("mycontainer-oci", argv=lambda _: oci_exec)
        if os.access(oci, os.X_OK)
        else Tool("mycontainer-oci", skipped=f"no {oci} beside {mycontainer}"),
    ]


def peer_exec_tools(runner: Runner, state_root: str, bundle: str, notes: list[str]) -> list[Tool]:
    """``runc exec`` and ``crun exec`` into a container each of ``run -d`` of ``bundle``."""
    tools = []
    for name in ("runc", "crun"):
        if not shutil.which(name):
            tools.append(Tool(name, skipped=f"not found on PATH (apt-get install {name})"))
            continue
        lifecycle = oci_tool(name, state_root, bundle)  # its run and delete, wrapped if need be
        run = lifecycle.argv("")[:-1]  # [...wrap, binary, --root, ROOT, run, --bundle, B]
        run.insert(run.index("run") + 1, "-d")
        container, _ = started(runner, lifecycle, run)
        exec_ = run[: run.index("run")] + ["exec", container, *ARGS]
        tools.append(Tool(name, argv=lambda _, argv=exec_: argv))
    if any(tool.argv and tool.argv("")[0] == "unshare" for tool in tools):
        notes.append("hybrid cgroups: crun ran under 'unshare -m', which adds ~3 ms to its times")
    return tools


def benchmark(args, workdir: str, runner: Runner) -> dict:
    """Start the containers, warm up, time the execs interleaved, and report."""
    notes: list[str] = []
    bundle = os.path.join(workdir, "bundle")

    def patch(config: dict) -> None:
        config["process"]["args"] = SLEEP
        config["process"]["terminal"] = False
        config["root"]["path"] = args.rootfs

    tools = mycontainer_tools(args, runner)
    if shutil.which("runc") or shutil.which("crun"):
        generator = spec_bundle(bundle, patch)
        notes.append(f"runc and crun ran one bundle, its config.json from {generator}")
        tools += peer_exec_tools(runner, os.path.join(workdir, "state"), bundle, notes)
    else:
        notes.append("neither runc nor crun is installed (apt-get install runc crun)")
    what = f"exec of {' '.join(ARGS)} into a running container of {args.rootfs}"
    notes += time_tools(runner, tools, args, what, "tool", args.mycontainer)
    about = {"args": ARGS, "rootfs": args.rootfs, SUBJECT: args.mycontainer or find_mycontainer()}
    return report(tools, args, notes, SUBJECT, BAR, AIM, about, "runc exec")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="'mycontainer exec' against 'runc exec' and 'crun exec', of true into "
        "a running busybox container.",
    )
    add_rounds_options(parser, 30, 3, "execs per tool", "root filesystem")
    add_json_and_mycontainer_options(parser)
    return run_timing("exec", parser, argv, "/bin/sleep", " --exec", benchmark)


if __name__ == "__main__":
    sys.exit(main())
