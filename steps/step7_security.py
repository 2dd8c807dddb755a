"""Step 7: security boundaries: what the container's root may still do.

Adds to step 5 the boundaries that keep the container's root from acting as the host's:
docker's 14 capabilities (``--cap-add``, ``--cap-drop``), no_new_privs and a seccomp filter
(``--security-opt no-new-privileges=false``, ``seccomp=unconfined``), masked and read-only
paths in /proc and /sys (``systempaths=unconfined``), and a device allow-list on the
cgroup. Try: ``sudo python3 -m steps.step7_security busybox -- grep Cap /proc/self/status``,
then the same with ``--cap-add ALL --security-opt seccomp=unconfined``.
"""

from __future__ import annotations

import sys

from runtime import devices, policy, security
from runtime.container import ContainerError
from runtime.process import EXIT_RUNTIME_ERROR
from steps import common, step4_cgroups, step5_image


def setup(options) -> None:
    """Step 5's setup (layers, mounts, pivot_root); then hide paths and drop privileges."""
    step5_image.setup(options)
    options.security.protect_paths()  # masks and read-only paths, in the new root
    # ``mycontainer run`` does the next two after the gate, around the switch to the image's
    # USER (runtime.process). The steps never switch users, so they can do it here: nothing
    # the init does after this (report, wait at the gate, close descriptors, execve) needs a
    # capability or a system call that the filter denies.
    options.security.before_user_switch()  # the bounding set
    options.security.after_user_switch()  # the other sets, no_new_privs, seccomp


def restrict_devices(options) -> None:
    """Runs in the parent while the container waits at its gate: the device allow-list on
    the cgroup that step 4 made, before the command can open anything."""
    try:
        devices.restrict(options.cgroup)
    except devices.DeviceError as error:
        raise ContainerError(str(error)) from None  # common.run prints it, in one line


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    step5_image.add_image_argument(parser)
    step4_cgroups.add_limit_options(parser)
    for option, check in (
        ("--cap-add", policy.parse_cap_add),
        ("--cap-drop", policy.parse_cap_drop),
        ("--security-opt", policy.parse_security_opt),
    ):
        parser.add_argument(option, action="append", default=[], type=common.checked(check))
    options = common.parse(parser, argv, command_required=False)
    try:
        config, program = policy.security_settings(
            options.cap_add, options.cap_drop, options.security_opt
        )
    except OSError as error:  # a capability we do not hold, a machine without a filter
        print(f"error: {error}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    options.security = boundaries = security.Boundaries.from_config(config, program)
    print(
        f"step 7: capabilities {' '.join(security.names_of(boundaries.sets['bounding']))}; "
        f"no_new_privs {'on' if boundaries.no_new_privileges else 'off'}; "
        f"seccomp {'on' if boundaries.seccomp else 'off'}; "
        f"masked paths {'on' if boundaries.masked_paths else 'off'}",
        file=sys.stderr,
    )
    return step5_image.run_image(options, setup, ready=lambda _pid: restrict_devices(options))


if __name__ == "__main__":
    sys.exit(main())
