"""The ``mycontainer`` entry point, and the one-line error policy every command shares.

``mycontainer run`` is measured against runc and crun, which start a container in tens of
milliseconds; importing click alone costs ~34 ms on a small VM. So a *plain* ``run`` command
line (known options with valid values, an IMAGE, a COMMAND) is parsed here, by the same
rules and with the same option table as the click CLI in :mod:`runtime.cli`; so is a plain
``load FILE``, measured against GNU tar. Anything else (help, a bad value, an unknown
option, another command) goes to click, which explains it.
"""

from __future__ import annotations

import os
import sys

from runtime.cgroups import format_size, parse_cpu_weight, parse_memory, parse_pids_limit
from runtime.exits import exit_with_result, interruptible
from runtime.namespaces import check_hostname
from runtime.network import parse_net, parse_publish
from runtime.progress import progress_on_terminal
from runtime.security import parse_cap_add, parse_cap_drop, parse_security_opt


def parse_env(text: str) -> tuple[str, str | None]:
    """``KEY=VALUE`` -> (KEY, VALUE); ``KEY`` -> (KEY, its value here, or None), as docker."""
    key, equals, value = text.partition("=")
    if not key or " " in key:
        raise ValueError(f"--env takes KEY=VALUE or KEY (got {text!r})")
    return key, value if equals else os.environ.get(key)


# The options of ``run``: name -> (check that returns the value or raises ValueError, help).
# runtime.cli builds its click options from this table.
RUN_OPTIONS = {
    "--hostname": (check_hostname, "Hostname inside the container (default: its short id)."),
    "--memory": (parse_memory, "Memory limit, e.g. 64m or 1g (at least 6m); no swap."),
    "--cpu-weight": (
        parse_cpu_weight,
        "Share of CPU time under contention, 1-10000 (default 100).",
    ),
    "--pids-limit": (parse_pids_limit, "Most processes and threads the container may have."),
    "--entrypoint": (str, "Replace the image's ENTRYPOINT ('' clears it; CMD is then unused)."),
    "--env": (
        parse_env,
        "Set a variable, KEY=VALUE (KEY alone: its value here, if set). Repeatable.",
    ),
    "--net": (parse_net, "Network: bridge (default; eth0 on bridge mycontainer0), none or host."),
    "--publish": (
        parse_publish,
        "Publish a port, HOST_PORT:CONTAINER_PORT[/tcp|udp], with --net bridge. Repeatable.",
    ),
    "--cap-add": (parse_cap_add, "Add a capability (NET_ADMIN, CAP_NET_ADMIN, ALL). Repeatable."),
    "--cap-drop": (parse_cap_drop, "Drop a capability (as --cap-add; ALL drops all). Repeatable."),
    "--security-opt": (
        parse_security_opt,
        "no-new-privileges[=true|false] (default true), seccomp=unconfined or "
        "systempaths=unconfined. Repeatable.",
    ),
}
# Options that may be given more than once: their value is the list of all of them.
REPEATABLE_OPTIONS = {"--publish", "--env", "--cap-add", "--cap-drop", "--security-opt"}
# Short names, recognised before IMAGE only: after it, the ``-p`` of ``mkdir -p`` is the
# command's. (Long options are recognised anywhere, as split_run_args explains.)
SHORT_OPTIONS = {"-p": "--publish", "-e": "--env"}


def split_run_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Move the options of ``run`` to the front, as ``--name value``; the rest keeps its order.

    The seed's command line puts options after the command (``run busybox hostname
    --hostname a``), so an option of ours is recognised anywhere before a ``--``; any other
    token, such as the ``-l`` of ``ls -l``, stays with the command. After ``--``, nothing is
    ours. A short option (SHORT_OPTIONS: ``-p 80:80`` or ``-p80:80``) is ours only before
    IMAGE, and comes out under its long name. Returns (our options with their values, the rest).
    """
    ours: list[str] = []
    rest: list[str] = []
    before_image = True
    tokens = iter(args)
    for token in tokens:
        if token == "--":
            rest.append(token)
            rest.extend(tokens)
            break
        name, equals, value = token.partition("=")
        if before_image and token[:2] in SHORT_OPTIONS:  # -p VALUE, or -pVALUE
            name, value = SHORT_OPTIONS[token[:2]], token[2:]
            equals = value  # a value attached to the option counts as given
        if name in RUN_OPTIONS:
            value = value if equals else next(tokens, None)
            if value is None:
                raise ValueError(
                    f"option {name} needs a value (put '--' before COMMAND "
                    "to pass it to the command)"
                )
            ours += [name, value]
        else:
            rest.append(token)
            before_image = before_image and token.startswith("-")
    return ours, rest


def parse_plain_run(argv: list[str]) -> tuple[str, list[str], dict[str, str]] | None:
    """(IMAGE, COMMAND, options) for a valid ``run`` command line; None for anything else."""
    if not argv or argv[0] != "run":
        return None
    try:
        ours, rest = split_run_args(argv[1:])
    except ValueError:
        return None
    options = {}
    for name, value in zip(ours[::2], ours[1::2], strict=True):
        check, _help = RUN_OPTIONS[name]
        key = name.lstrip("-").replace("-", "_")
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


def run(image: str, command: list[str], **options) -> int:
    """``mycontainer run``: create, start, wait for and delete one container.

    ``options`` are RUN_OPTIONS' values by name (``hostname``, ``memory``, ``cpu_weight``...).

    The store stays locked (shared) from finding the image until the container's state
    names its layers: ``rmi`` and ``prune`` wait, and never remove them in between.
    Container.run lets go of it once the container is created.
    """
    from runtime import container
    from runtime import image as images

    container.check_host()
    with images.StoreLock() as store:
        with interruptible():  # an image file may be imported: undone if interrupted
            found = images.resolve(image, progress=progress_on_terminal())
        entrypoint = options.pop("entrypoint", None)
        env = found.environment()
        env.update((key, value) for key, value in options.pop("env", []) if value is not None)
        config = container.Config(
            found.lower_directories(),
            found.command_line(command, entrypoint),
            image=found.name,
            env=env,
            cwd=found.config.get("WorkingDir") or "/",
            user=found.config.get("User") or None,
            **options,
        )
        box = container.Container(config)
        try:  # once the container stacks its layers, rmi and prune may go on
            code = box.run(created=store.release)
        finally:
            if box.leftovers:  # the command's exit code stands; this is one more line
                sys.stderr.write(f"mycontainer: warning: {box.leftovers}\n")
    if box.oom_killed:
        limit = f" (limit {format_size(config.memory)})" if config.memory else ""
        sys.stderr.write(f"mycontainer: container killed: out of memory{limit}\n")
    return code


def load(file: str) -> int:
    """``mycontainer load``: import an image file into the store and print its name."""
    from runtime import container, image

    container.check_host()
    with interruptible():
        loaded = image.load(file, progress=progress_on_terminal())
    print(loaded.name)
    return 0


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: the fast paths for a plain ``run`` and ``load FILE``,
    click for the rest."""
    argv = sys.argv[1:] if argv is None else argv
    open_standard_streams()
    if len(argv) == 2 and argv[0] == "load" and not argv[1].startswith("-"):
        exit_with_result(load, argv[1])
    plain = parse_plain_run(argv)
    if plain is None:
        from runtime import cli

        cli.main(argv)
    image, command, options = plain
    exit_with_result(run, image, command, **options)
