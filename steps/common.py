"""What every step shares: its command line, and running a command in new namespaces.

A step is three things: the namespaces it unshares, a ``setup()`` that runs inside them
before the command, and the command. :func:`run` does the rest with ``runtime.process``,
exactly as ``mycontainer run`` does: fork, unshare, (fork again for a PID namespace), setup,
execve, wait. The lessons do it by hand rather than with ``runtime.container.Container``,
the runtime's lifecycle, because a Container makes all eight steps' parts at once (state,
cgroup, image, network, boundaries), and a lesson adds one at a time.
"""

from __future__ import annotations

import argparse
import operator
import os
import sys

from runtime import process
from runtime.container import ContainerError, check_host
from runtime.process import EXIT_RUNTIME_ERROR


def parser(doc: str, *, rootfs: bool = False) -> argparse.ArgumentParser:
    """``[--hostname NAME] [--rootfs DIR] -- CMD [ARGS...]``, described by the step's docstring."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        usage="sudo .venv/bin/python -m steps.STEP [options] -- CMD [ARGS...]",
    )
    parser.add_argument("--hostname", default="container", help="hostname inside")
    if rootfs:
        parser.add_argument("--rootfs", required=True, type=_directory, help="root filesystem")
    return parser


def parse(
    parser: argparse.ArgumentParser, argv: list[str] | None, command_required: bool = True
) -> argparse.Namespace:
    """Parse the options before ``--``; everything after it is the command, verbatim."""
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    options = parser.parse_args(argv[:split])
    options.command = argv[split + 1 :]
    if command_required and not options.command:
        parser.error("give the command to run after --, e.g. -- sh")
    return options


def parse_args(doc: str, argv: list[str] | None, *, rootfs: bool = False) -> argparse.Namespace:
    """The common options only: ``parse(parser(doc, rootfs=rootfs), argv)``."""
    return parse(parser(doc, rootfs=rootfs), argv)


def checked(check):
    """An argparse ``type`` from one of the runtime's checks (which raise ValueError)."""

    def convert(text: str):
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = check.__name__
    return convert


def _directory(path: str) -> str:
    """An existing directory, as an absolute path without symbolic links."""
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(
            f"{path} is not a directory (build the busybox one with 'invoke rootfs')"
        )
    return os.path.realpath(path)


def failed(error: Exception) -> int:
    """Say what went wrong, in one line, and return the exit code it stands for: the
    error's own (a command that cannot be executed is 126, say), else 125, the runtime's."""
    print(f"error: {error}", file=sys.stderr)
    return getattr(error, "exit_code", EXIT_RUNTIME_ERROR)


def run(namespaces: int, setup, command: list[str], before_unshare=None, ready=None) -> int:
    """Run ``command`` in new ``namespaces`` after ``setup()``; return its exit code.

    ``before_unshare()``, if given, runs first in the child, still outside the namespaces.
    ``ready(pid)``, if given, runs in the parent while the child waits at its gate, set up
    but not yet exec'd: the place to configure it from outside (step 6 plugs in a network).
    """
    try:
        check_host()
        flags = operator.index(namespaces)  # a workshop skeleton's TODO raises here
        program = process.Program(command)
        init = process.spawn(program, namespaces=flags, setup=setup, before_unshare=before_unshare)
        if ready:
            try:
                ready(init.pid)
            except BaseException:
                init.kill()
                init.close()
                raise
        init.start()
    except (ContainerError, process.ProcessError) as error:
        return failed(error)
    with process.forwarding_signals(init.pid), process.terminal_foreground(init.pid):
        return init.wait()
