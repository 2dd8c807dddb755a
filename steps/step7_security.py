"""Step 7: security boundaries: what the container's root may still do.

Adds to step 6 the boundaries that keep the container's root from acting as the host's:
docker's 14 capabilities (``--cap-add``, ``--cap-drop``), no_new_privs and a seccomp filter
(``--security-opt no-new-privileges=false``, ``seccomp=unconfined``), masked and read-only
paths in /proc and /sys (``systempaths=unconfined``), and a device allow-list on the
cgroup. Its network is step 6's with ``--net bridge``; by default, ``--net none``, the
container has a network namespace with only ``lo``, and the host's network is left as it is.
Try: ``sudo .venv/bin/python -m steps.step7_security busybox -- grep Cap /proc/self/status``,
then the same with ``--cap-add ALL --security-opt seccomp=unconfined``.
"""

from __future__ import annotations

import contextlib
import functools
import sys

from runtime import cgroups, container, devices, image, network, policy, security
from steps import common, step4_cgroups, step5_image, step6_veth

NAMESPACES = step6_veth.NAMESPACES


def setup(
    boundaries: security.Boundaries,
    hostname: str,
    layers: list[str],
    storage: str,
    cgroup_v2: bool,
) -> None:
    """Step 6's setup (layers, mounts, pivot_root, lo); then hide paths and drop privileges."""
    step6_veth.setup(hostname, layers, storage, cgroup_v2)
    # workshop TODO: mask /proc's revealing files, make /proc/sys and others read-only: bind
    #   mounts in the new root (mount(2), MS_RDONLY; boundaries.protect_paths)
    boundaries.protect_paths()  # masks and read-only paths, in the new root
    # workshop end
    # ``mycontainer run`` does the next two after the gate, around the switch to the image's
    # USER (runtime.process). The steps never switch users, so they can do it here: nothing
    # the init does after this (report, wait at the gate, close descriptors, execve) needs a
    # capability or a system call that the filter denies.
    # workshop TODO: drop the capabilities (capabilities(7)), set no_new_privs (prctl(2)) and
    #   install the seccomp(2) filter: boundaries.before_ and after_user_switch
    boundaries.before_user_switch()  # the bounding set
    boundaries.after_user_switch()  # the other sets, no_new_privs, seccomp
    # workshop end


def boundaries_of(cap_add: list[str], cap_drop: list[str], security_opt: list[str]):
    """What docker's flags stand for: the capabilities, no_new_privs, the seccomp filter
    and the masked paths, as runtime.security applies them."""
    config, program = policy.security_settings(cap_add, cap_drop, security_opt)
    boundaries = security.Boundaries.from_config(config, program)
    print(
        f"step 7: capabilities {' '.join(security.names_of(boundaries.sets['bounding']))}; "
        f"no_new_privs {'on' if boundaries.no_new_privileges else 'off'}; "
        f"seccomp {'on' if boundaries.seccomp else 'off'}; "
        f"masked paths {'on' if boundaries.masked_paths else 'off'}",
        file=sys.stderr,
    )
    return boundaries


def network_of(mode: str, publish: list[str]):
    """Step 6's bridge network (``--net bridge``), or none: a network namespace with only
    ``lo`` (``--net none``), which leaves the host's network as it is."""
    return step6_veth.bridge_network(publish) if mode == "bridge" else contextlib.nullcontext()


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    step5_image.add_image_argument(parser)
    step4_cgroups.add_limit_options(parser)
    parser.add_argument(
        "--net", choices=("none", "bridge"), default="none", help="bridge: step 6's network"
    )
    step6_veth.add_publish_option(parser)
    for option, check in (
        ("--cap-add", policy.parse_cap_add),
        ("--cap-drop", policy.parse_cap_drop),
        ("--security-opt", policy.parse_security_opt),
    ):
        parser.add_argument(option, action="append", default=[], type=common.checked(check))
    options = common.parse(parser, argv, command_required=False)
    if options.publish and options.net != "bridge":
        parser.error("--publish needs --net bridge")
    try:
        boundaries = boundaries_of(options.cap_add, options.cap_drop, options.security_opt)
    except OSError as error:  # a capability we do not hold, a machine without a filter
        return common.failed(error)
    try:
        layers, command = step5_image.find_image(options.image, options.command)
        with (
            network_of(options.net, options.publish) as net,
            step4_cgroups.cgroup(options.memory, options.cpu_weight, options.pids_limit) as group,
            step5_image.writable_layer() as storage,
        ):
            # workshop TODO: allow the container only the default devices, on its cgroup (the
            #   devices controller: cgroups(7); devices.restrict)
            devices.restrict(group)  # before any process of the container opens a device
            # workshop end
            v2 = group.layout.uses_v2
            inside = functools.partial(setup, boundaries, options.hostname, layers, storage, v2)
            ready = net.connect if net else None
            return step4_cgroups.run(group, NAMESPACES, inside, command, ready)
    except (
        image.ImageError,
        cgroups.CgroupError,
        devices.DeviceError,
        network.NetworkError,
        container.ContainerError,
    ) as error:
        return common.failed(error)


if __name__ == "__main__":
    sys.exit(main())
