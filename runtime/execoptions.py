"""The options of ``mycontainer exec``, docker exec's flags: one table, from which both the
fast path (runtime.launcher) and the click command (runtime.cli) are built, and the rule of
where they may go: before CONTAINER only, as docker's; everything after it is the command.

This module is on ``exec``'s hot path: it imports only runtime.users, which an exec imports
anyway (``--env``'s and ``--env-file``'s checks come from runtime.runoptions, with ``run``'s
whole option table, only when they are given).
"""

from __future__ import annotations

from runtime.users import parse_user


def check_workdir(path: str) -> str:
    """``--workdir``: an absolute directory of the container, which must exist there (run
    makes a missing one; exec, as docker's, does not)."""
    if not path.startswith("/"):
        raise ValueError(f"--workdir must be an absolute path (got {path!r})")
    return path


def check_env(text: str) -> tuple[str, str | None]:
    """``--env``: as ``run --env`` (runtime.runoptions.parse_env)."""
    from runtime.runoptions import parse_env

    return parse_env(text)


def check_env_file(path: str) -> list[tuple[str, str]]:
    """``--env-file``: as ``run --env-file`` (runtime.runoptions.parse_env_file)."""
    from runtime.runoptions import parse_env_file

    return parse_env_file(path)


# name -> (check that returns the value or raises ValueError, help)
EXEC_OPTIONS = {
    "--user": (parse_user, "Run as USER[:GROUP], names or numbers (default: the container's)."),
    "--workdir": (check_workdir, "The command's directory, absolute (default: the container's)."),
    "--env": (check_env, "Set a variable, KEY=VALUE (KEY alone: its value here). Repeatable."),
    "--env-file": (
        check_env_file,
        "Read variables from a file: KEY=VALUE lines, KEY alone, # comments. Repeatable.",
    ),
}
# Options that take no value: name -> help.
EXEC_FLAGS = {
    "--interactive": "Keep stdin attached (default: /dev/null).",
    "--tty": "Give the command a terminal of its own in the container, relayed to this one.",
    "--detach": "Leave the command running in the background; print nothing.",
}
SHORT_FLAGS = {"-i": "--interactive", "-t": "--tty", "-d": "--detach"}  # together: -it
SHORT_OPTIONS = {"-u": "--user", "-w": "--workdir", "-e": "--env"}
REPEATABLE_OPTIONS = {"--env", "--env-file"}


def parse_exec_args(args: list[str]) -> tuple[dict, str, list[str]]:
    """(options by key, CONTAINER, COMMAND) of ``exec``'s arguments; ValueError if they are
    not a valid exec command line (help, an unknown option, a bad value, no COMMAND).

    Options come before CONTAINER: ``--user VALUE``, ``--user=VALUE``, ``-u VALUE``,
    ``-uVALUE``, flags alone or together (``-it``); a ``--`` ends them.
    """
    options: dict = {}
    tokens = iter(args)
    for token in tokens:
        if token == "--" or not token.startswith("-") or token == "-":
            rest = list(tokens) if token == "--" else [token, *tokens]
            break
        name, equals, value = token.partition("=")
        letters = token[1:]
        if token[1] != "-" and all(f"-{letter}" in SHORT_FLAGS for letter in letters):
            for letter in letters:
                options[SHORT_FLAGS[f"-{letter}"][2:]] = True
            continue
        if token[1] != "-":  # -u VALUE or -uVALUE
            name, value = SHORT_OPTIONS.get(token[:2], token), token[2:]
            equals = value
        if name in EXEC_FLAGS and not equals:
            options[name[2:]] = True
            continue
        if name not in EXEC_OPTIONS:
            raise ValueError(f"unknown option {token!r}")
        value = value if equals else next(tokens, None)
        if value is None:
            raise ValueError(f"option {name} needs a value")
        check, _help = EXEC_OPTIONS[name]
        key = name[2:].replace("-", "_")
        if name in REPEATABLE_OPTIONS:
            options.setdefault(key, []).append(check(value))
        else:
            options[key] = check(value)
    else:
        rest = []
    if len(rest) < 2:
        raise ValueError("exec needs CONTAINER and COMMAND")
    return options, rest[0], rest[1:]
