"""The options of ``mycontainer run``, docker's flags: one table, from which both the fast
path (runtime.launcher) and the click command (runtime.cli) are built, and the rule of where
on the command line they may go.
"""

from __future__ import annotations

import os

from runtime.cgroups import parse_cpu_weight, parse_memory, parse_pids_limit
from runtime.namespaces import check_hostname
from runtime.network import parse_net, parse_publish
from runtime.policy import parse_cap_add, parse_cap_drop, parse_security_opt


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
# Options that take no value (flags): name -> help. True when given.
RUN_FLAGS = {
    "--tty": "Give the container a terminal of its own (/dev/pts/0), relayed to this one.",
    "--interactive": "Keep stdin attached (it always is: accepted for docker's -it).",
    "--init": "Run a small init as PID 1 that forwards signals and reaps zombies (as tini).",
}
SHORT_FLAGS = {"-t": "--tty", "-i": "--interactive"}  # before IMAGE, and together: -it
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
    IMAGE, and comes out under its long name; so do short flags (SHORT_FLAGS: ``-t``, or
    ``-it`` together). A flag (RUN_FLAGS) comes out alone, without a value. Returns (our
    options with their values, the rest).
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
        if before_image and _short_flags(token):  # -t, -i, -it
            ours += [SHORT_FLAGS[f"-{letter}"] for letter in token[1:]]
            continue
        if name in RUN_FLAGS and not equals:
            ours.append(name)
            continue
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


def _short_flags(token: str) -> bool:
    """Is ``token`` one or more short flags together, such as ``-t`` or ``-it``?"""
    letters = token[1:]
    return token[:1] == "-" and letters != "" and all(f"-{c}" in SHORT_FLAGS for c in letters)
