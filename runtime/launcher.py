"""The ``mycontainer`` entry point: a plain ``run``, ``exec`` or ``load FILE`` without click.

``mycontainer run`` is measured against runc and crun, which start a container in tens of
milliseconds, less than click takes to import. So a *plain* ``run`` command line (known
options with valid values, an IMAGE, a COMMAND) is parsed here, by the same rules and with
the same option table (:mod:`runtime.runoptions`) as the click CLI in :mod:`runtime.cli`;
so is a plain ``exec`` (:mod:`runtime.execoptions`), measured against ``runc exec``, and a
plain ``load FILE``, measured against GNU tar. Anything else (help, a bad value, an unknown
option, another command) goes to click, which explains it. Each imports only what its own
command needs (an exec, not ``run``'s option table): tests/test_imports.py fails a run that
imports click, or any other module it can do without.
"""

from __future__ import annotations

import gc
import os
import sys

from runtime.exits import exit_with_result


def parse_plain_run(argv: list[str]) -> tuple[str, list[str], dict[str, str]] | None:
    """(IMAGE, COMMAND, options) for a valid ``run`` command line; None for anything else."""
    if not argv or argv[0] != "run":
        return None
    from runtime.runoptions import REPEATABLE_OPTIONS, RUN_FLAGS, RUN_OPTIONS, split_run_args

    try:
        ours, rest = split_run_args(argv[1:])
    except ValueError:
        return None
    options = {}
    tokens = iter(ours)
    for name in tokens:
        key = name.lstrip("-").replace("-", "_")
        if name in RUN_FLAGS:
            options[key] = True
            continue
        value = next(tokens)
        check, _help = RUN_OPTIONS[name]
        try:
            if name in REPEATABLE_OPTIONS:
                options.setdefault(key, []).append(check(value))
            else:
                options[key] = check(value)
        except ValueError:
            return None
    if not rest or rest[0].startswith("-"):
        return None  # help, an unknown option or no IMAGE: click explains
    image, command = rest[0], rest[1:]
    if command[:1] == ["--"]:
        command = command[1:]
    return image, command, options


def open_standard_streams() -> None:
    """Put /dev/null on descriptors 0, 1 and 2 where the caller closed them (``>&-``).

    Else the first files mycontainer opens get those numbers, and a container would be
    handed one of the runtime's own files as its stdin, stdout or stderr; and Python,
    finding no stdout or stderr, sets ``sys.stdout`` to None, so writing would fail.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open("/dev/null", os.O_RDWR)  # the lowest free number: ``fd``
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (the process's own)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115


def plain_exec(args: list[str]) -> None:
    """Run a valid ``exec ARGS`` command line and exit; return if click must explain it."""
    from runtime.execoptions import parse_exec_args

    try:
        options, reference, command = parse_exec_args(args)
    except ValueError:
        return
    from runtime.execution import command as exec_command

    gc.disable()  # as for a run (below)
    exit_with_result(exec_command, reference, command, **options)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: the fast paths for a plain ``run``, ``exec`` and ``load
    FILE``, click for the rest."""
    argv = sys.argv[1:] if argv is None else argv
    open_standard_streams()
    if argv[:1] == ["run"] and os.environ.get("MYCONTAINER_TIMINGS", "0") not in ("", "0"):
        from runtime import timings

        timings.instrument()
    if argv[:1] == ["exec"]:
        plain_exec(argv[1:])
    from runtime import commands

    if len(argv) == 2 and argv[0] == "load" and not argv[1].startswith("-"):
        exit_with_result(commands.load, argv[1])
    plain = parse_plain_run(argv)
    if plain is None:
        from runtime import cli

        cli.main(argv)
    image, command, options = plain
    # A run makes few objects and no garbage cycles worth the collector's passes, which
    # would also copy, after fork(2), every page they touch (mycontainer-oci does the same).
    # A load, with its archives, keeps the collector.
    gc.disable()
    exit_with_result(commands.run, image, command, **options)
