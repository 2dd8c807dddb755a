"""The options of ``mycontainer run``, docker's flags: one table, from which both the fast
path (runtime.launcher) and the click command (runtime.cli) are built, and the rule of where
on the command line they may go.
"""

from __future__ import annotations

import os

from runtime.cgroups import parse_cpu_weight, parse_cpus, parse_memory, parse_pids_limit
from runtime.namespaces import check_hostname
from runtime.network import parse_net, parse_publish
from runtime.policy import parse_cap_add, parse_cap_drop, parse_security_opt
from runtime.runmounts import parse_tmpfs, parse_volume
from runtime.state import StateError, check_name
from runtime.users import parse_user


def parse_env(text: str) -> tuple[str, str | None]:
    """``KEY=VALUE`` -> (KEY, VALUE); ``KEY`` -> (KEY, its value here, or None), as docker."""
    key, equals, value = text.partition("=")
    if not key or " " in key:
        raise ValueError(f"--env takes KEY=VALUE or KEY (got {text!r})")
    return key, value if equals else os.environ.get(key)


def parse_name(text: str) -> str:
    """``--name``: docker's rule for names (runtime.state.check_name)."""
    try:
        return check_name(text)
    except StateError as error:
        raise ValueError(str(error)) from None


def parse_env_file(path: str) -> list[tuple[str, str]]:
    """The variables of an env file, as docker reads one (``--env-file``): a ``KEY=VALUE``
    a line, taken as it is (no quotes removed, no ``$`` expanded); a ``KEY`` alone takes
    its value here, and is left out if unset; blank lines and lines starting with ``#``
    are skipped; the spaces before a KEY are dropped, a KEY holding one is refused."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            lines = file.read().splitlines()
    except OSError as error:
        raise ValueError(f"--env-file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--env-file {path}: not UTF-8 text") from None
    variables = []
    for number, line in enumerate(lines, 1):
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if not key or any(c.isspace() for c in key):
            raise ValueError(
                f"--env-file {path} line {number}: {key!r} is no variable name (KEY=VALUE)"
            )
        if equals:
            variables.append((key, value))
        elif key in os.environ:
            variables.append((key, os.environ[key]))
    return variables


def parse_pull(text: str) -> str:
    """``--pull``: when to pull IMAGE from its registry, as docker's (runtime.image.resolve)."""
    if text not in ("missing", "always", "never"):
        raise ValueError(f"--pull is missing, always or never (got {text!r})")
    return text


def parse_workdir(path: str) -> str:
    """``--workdir``: an absolute directory of the container (made if missing, as docker)."""
    if not path.startswith("/"):
        raise ValueError(f"--workdir must be an absolute path (got {path!r})")
    return path


# The options of ``run``: name -> (check that returns the value or raises ValueError, help).
# runtime.cli builds its click options from this table.
RUN_OPTIONS = {
    "--name": (parse_name, "Name the container (unique); commands take it instead of the id."),
    "--hostname": (check_hostname, "Hostname inside the container (default: its short id)."),
    "--memory": (parse_memory, "Memory limit, e.g. 64m or 1g (at least 6m); no swap."),
    "--cpu-weight": (
        parse_cpu_weight,
        "Share of CPU time under contention, 1-10000 (default 100).",
    ),
    "--pids-limit": (parse_pids_limit, "Most processes and threads the container may have."),
    "--cpus": (parse_cpus, "CPU time, in CPUs (1.5: one and a half), however idle the host."),
    "--entrypoint": (str, "Replace the image's ENTRYPOINT ('' clears it; CMD is then unused)."),
    "--env": (
        parse_env,
        "Set a variable, KEY=VALUE (KEY alone: its value here, if set). Repeatable.",
    ),
    "--env-file": (
        parse_env_file,
        "Read variables from a file: KEY=VALUE lines, KEY alone, # comments. Repeatable.",
    ),
    "--volume": (
        parse_volume,
        "Mount HOST_PATH (it must exist) or volume NAME (made if missing) at CONTAINER_PATH: "
        "HOST_PATH:CONTAINER_PATH[:ro], NAME:CONTAINER_PATH[:ro]. Repeatable.",
    ),
    "--tmpfs": (
        parse_tmpfs,
        "Mount a tmpfs: PATH[:OPTIONS] (default rw,noexec,nosuid,nodev; size=64m...). Repeatable.",
    ),
    "--workdir": (parse_workdir, "The command's directory, absolute (made if missing)."),
    "--user": (parse_user, "Run as USER[:GROUP], names or numbers (the image's /etc/passwd)."),
    "--net": (parse_net, "Network: bridge (default; eth0 on bridge mycontainer0), none or host."),
    "--publish": (
        parse_publish,
        "Publish a port, HOST_PORT:CONTAINER_PORT[/tcp|udp], with --net bridge. Repeatable.",
    ),
    "--cap-add": (parse_cap_add, "Add a capability (NET_ADMIN, CAP_NET_ADMIN, ALL). Repeatable."),
    "--cap-drop": (parse_cap_drop, "Drop a capability (as --cap-add; ALL drops all). Repeatable."),
    "--pull": (
        parse_pull,
        "Pull IMAGE from its registry: missing (default: if not stored), always, never.",
    ),
    "--platform": (str, "Pull IMAGE for this platform, os/arch[/variant] (default: the host's)."),
    "--security-opt": (
        parse_security_opt,
        "no-new-privileges[=true|false] (default true), seccomp=unconfined or "
        "systempaths=unconfined. Repeatable.",
    ),
}
# Options that take no value (flags): name -> help. True when given.
RUN_FLAGS = {
    "--tty": "Give the container a terminal of its own (/dev/pts/0), relayed to this one.",
    "--interactive": "Keep stdin open: the container reads what is typed or piped here.",
    "--detach": "Run in the background and print the container's id ('mycontainer logs').",
    "--rm": "Remove the container when it stops (else it stays, with its exit code).",
    "--read-only": "Make the root read-only, with tmpfs on /tmp, /var/tmp and /run.",
    "--init": "Run a small init as PID 1 that forwards signals and reaps zombies (as tini).",
}
# before IMAGE, and together: -it, -dit
SHORT_FLAGS = {"-t": "--tty", "-i": "--interactive", "-d": "--detach"}
# Options that may be given more than once: their value is the list of all of them.
REPEATABLE_OPTIONS = {
    "--publish",
    "--env",
    "--env-file",
    "--cap-add",
    "--cap-drop",
    "--security-opt",
    "--volume",
    "--tmpfs",
}
# Short names, recognised before IMAGE only: after it, the ``-p`` of ``mkdir -p`` is the
# command's. (Long options are recognised anywhere, as split_run_args explains.)
SHORT_OPTIONS = {
    "-p": "--publish",
    "-e": "--env",
    "-v": "--volume",
    "-w": "--workdir",
    "-u": "--user",
}


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
