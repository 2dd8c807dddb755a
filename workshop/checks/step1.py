"""Step 1's checks: the hostname inside is the one given, and the host keeps its own."""

from __future__ import annotations

import contextlib

from workshop.checks import sandbox
from workshop.checks.check import Check

NAME = "workshop-box"


@contextlib.contextmanager
def scene():
    yield None


def hostname_inside(program, _scene) -> str | None:
    result = program.run(f"step --hostname {NAME} -- hostname")
    if result.code == 0 and result.last_line() == NAME:
        return None
    if result.last_line() == sandbox.HOSTNAME:
        return f"'hostname' inside printed {sandbox.HOSTNAME!r}, the host's name, not {NAME!r}"
    return result.seen(f"'hostname' inside printed {result.last_line()!r}, not {NAME!r}")


def host_keeps_its_hostname(program, _scene) -> str | None:
    result = program.run(f"step --hostname {NAME} -- true; hostname")
    if result.last_line() == sandbox.HOSTNAME:
        return None
    return result.seen(
        f"the host's hostname became {result.last_line()!r} (the checker gave your step a "
        "throw-away hostname of its own: your machine's name did not change)"
    )


CHECKS = [
    Check(
        "hostname-inside",
        "the hostname inside is the one given with --hostname",
        hostname_inside,
        (
            "A container has a hostname of its own: the step sets it inside the new UTS "
            "namespace, after unsharing it and before the command runs, in setup() "
            "(uts_namespaces(7)).",
            "sethostname(2) names the UTS namespace the caller is in: "
            "runtime.namespaces.set_hostname(name), in setup(hostname), with the name the user "
            "gave (--hostname).",
            "In setup(hostname), write `namespaces.set_hostname(hostname)`.",
        ),
    ),
    Check(
        "host-keeps-hostname",
        "the host keeps its own hostname",
        host_keeps_its_hostname,
        (
            "sethostname(2) renames the UTS namespace its caller is in: the host's, unless the "
            "step first made a new one for the container (uts_namespaces(7)).",
            "The step's NAMESPACES are the flags runtime.process unshares (unshare(2)): "
            "runtime.namespaces.UTS is CLONE_NEWUTS.",
            "At the top of the step, write `NAMESPACES = namespaces.UTS`.",
        ),
    ),
]
