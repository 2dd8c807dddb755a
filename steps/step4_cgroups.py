"""Step 4: limits, with control groups.

Adds a cgroup to step 3: before unsharing, the child joins a group of its own whose files
limit its memory (memory.max, or memory.limit_in_bytes on cgroup v1), its share of CPU time
(cpu.weight, or cpu.shares) and its number of processes (pids.max); then it unshares a cgroup
namespace too, so that it sees its group as "/". When the kernel's OOM killer strikes inside,
the step says so and exits 137. Try:
``sudo python3 -m steps.step4_cgroups --rootfs /var/lib/mycontainer/rootfs/busybox
--memory 32m -- sh -c 'tail /dev/zero'``.
"""

from __future__ import annotations

import os
import sys

from runtime import cgroups, filesystem, namespaces
from steps import common, step3_mount

NAMESPACES = step3_mount.NAMESPACES | namespaces.CGROUP


def setup(options) -> None:
    """Step 3's setup; then, on cgroup v2, show the container its group at /sys/fs/cgroup.

    (The group itself was joined before the namespaces were made: see main.)
    """
    step3_mount.setup(options)
    if options.cgroup_v2:
        filesystem.mount_cgroup2("/sys/fs/cgroup")


def add_limit_options(parser) -> None:
    """--memory, --cpu-weight and --pids-limit, checked as mycontainer run checks them."""
    parser.add_argument("--memory", type=common.checked(cgroups.parse_memory), help="e.g. 64m")
    parser.add_argument(
        "--cpu-weight", type=common.checked(cgroups.parse_cpu_weight), help="1-10000"
    )
    parser.add_argument("--pids-limit", type=common.checked(cgroups.parse_pids_limit))


def run_limited(options, setup_inside, namespaces: int = NAMESPACES, ready=None) -> int:
    """Make the cgroup, run the command in it (``setup_inside(options)`` first), remove it.

    ``namespaces`` and ``ready`` are for the steps built on this one (see common.run).
    """
    layout = cgroups.detect()
    options.cgroup_v2 = layout.uses_v2
    group = cgroups.Cgroup(layout, f"step4-{os.getpid()}")
    try:
        group.create(
            cgroups.docker_resources(options.memory, options.cpu_weight, options.pids_limit)
        )
    except cgroups.CgroupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 125
    print(f"step 4: the container's cgroup is {', '.join(group.directories)}", file=sys.stderr)
    options.cgroup = group  # for the steps built on this one: step 7 restricts its devices
    try:
        code = common.run(
            namespaces, lambda: setup_inside(options), options.command, group.join, ready
        )
        if group.oom_kills():
            print("step 4: killed by the kernel's OOM killer", file=sys.stderr)
            code = 137
        return code
    finally:
        group.remove()


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__, rootfs=True)
    add_limit_options(parser)
    return run_limited(common.parse(parser, argv), setup)


if __name__ == "__main__":
    sys.exit(main())
