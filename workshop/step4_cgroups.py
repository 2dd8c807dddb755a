# Step 4, for you to write: the TODOs say what to do and which man page to read.
# (skeleton cb2d3b88e30f, made from steps/step4_cgroups.py by python -m workshop.make)
# ruff: noqa: F401, F841 (what the TODOs need is imported; some of it is yet unused)
"""Step 4: limits, with control groups.

Adds a cgroup to step 3: before unsharing, the child joins a group of its own whose files
limit its memory (memory.max, or memory.limit_in_bytes on cgroup v1), its share of CPU time
(cpu.weight, or cpu.shares) and its number of processes (pids.max); then it unshares a cgroup
namespace too, so that it sees its group as "/". When the kernel's OOM killer strikes inside,
the step says so and exits 137. Try:
``sudo .venv/bin/python -m workshop.step4_cgroups --rootfs /var/lib/mycontainer/rootfs/busybox
--memory 32m -- sh -c 'tail /dev/zero'``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import workshop
from runtime import cgroups, filesystem, namespaces
from runtime.container import EXIT_OOM
from steps import common

step3_mount = workshop.previous("step3_mount")  # yours, or the solution's

NAMESPACES = workshop.Todo(
    "TODO step 4: step 3's namespaces and a new cgroup one, CLONE_NEWCGROUP (cgroup_namespaces(7))"
)


def setup(hostname: str, rootfs: str, cgroup_v2: bool) -> None:
    """Step 3's setup; then, on cgroup v2, show the container its group at /sys/fs/cgroup.

    (The group itself was joined before the namespaces were made: see run.)
    """
    step3_mount.setup(hostname, rootfs)
    raise NotImplementedError(
        "TODO step 4: on cgroup v2, mount the container's view of its group at /sys/fs/cgroup "
        "(mount(2) of type cgroup2: cgroups(7))"
    )


def add_limit_options(parser) -> None:
    """--memory, --cpu-weight and --pids-limit, checked as mycontainer run checks them."""
    parser.add_argument("--memory", type=common.checked(cgroups.parse_memory), help="e.g. 64m")
    parser.add_argument(
        "--cpu-weight", type=common.checked(cgroups.parse_cpu_weight), help="1-10000"
    )
    parser.add_argument("--pids-limit", type=common.checked(cgroups.parse_pids_limit))


@contextlib.contextmanager
def cgroup(memory: int | None, cpu_weight: int | None, pids_limit: int | None):
    """A cgroup of the container's own, with these limits written in its files; removed
    afterwards (rmdir(2): the kernel refuses while a process is left in it)."""
    group = cgroups.Cgroup(cgroups.detect(), f"step4-{os.getpid()}")
    raise NotImplementedError(
        "TODO step 4: make the group, a directory in each hierarchy, and write its limits in its "
        "files (memory.max, cpu.weight, pids.max on v2): cgroups(7)"
    )
    print(f"step 4: the container's cgroup is {', '.join(group.directories)}", file=sys.stderr)
    try:
        yield group
    finally:
        group.remove()


def run(group, flags: int, setup_inside, command: list[str], ready=None) -> int:
    """common.run in namespaces ``flags``, the child joining ``group`` before it unshares;
    after an OOM kill, 137."""
    raise NotImplementedError(
        "TODO step 4: run it, the child joining the group before it unshares (it writes its pid in "
        "cgroup.procs: cgroups(7)); after an OOM kill (memory.events), say so, return EXIT_OOM"
    )


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__, rootfs=True)
    add_limit_options(parser)
    options = common.parse(parser, argv)
    try:
        with cgroup(options.memory, options.cpu_weight, options.pids_limit) as group:
            v2 = group.layout.uses_v2
            inside = functools.partial(setup, options.hostname, options.rootfs, v2)
            return run(group, NAMESPACES, inside, options.command)
    except cgroups.CgroupError as error:
        return common.failed(error)


if __name__ == "__main__":
    sys.exit(main())
