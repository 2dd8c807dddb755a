"""The options of ``mycontainer exec``, docker exec's flags: one table, from which both the
fast path (runtime.launcher) and the click command (runtime.cli) are built, and the rule of
where they may go: before CONTAINER only, as docker's; everything after it is the command.

This module is on ``exec``'s hot path: it imports nothing (``--env``'s check comes from
runtime.runoptions, with ``run``'s whole option table, only when ``-e`` is given).
"""

from __future__ import annotations


def check_user(text: str) -> str:
    """``--user``: ``USER[:GROUP]``, names or numbers, looked up in the container's
    /etc/passwd and /etc/group when the process starts (runtime.users)."""
    user, colon, group = text.partition(":")
    if not user or (colon and not group) or ":" in group or any(c.isspace() for c in text):
        raise ValueError(f"--user takes USER[:GROUP], names or numbers (got {text!r})")
    return text


def check_workdir(path: str) -> str:
    """``--workdir``: an absolute directory of the container, which must exist there."""
    if not path.startswith("/"):
        raise ValueError(f"--workdir must be an absolute path (got {path!r})")
    return path


def check_env(text: str) -> tuple[str, str | None]:
    """``--env``: as ``run --env`` (runtime.runoptions.parse_env)."""
    from runtime.runoptions import parse_env

    return parse_env(text)


# name -> (check that returns the value or raises ValueError, help)
EXEC_OPTIONS = {
    "--user": (check_user, "Run as USER[:GROUP], names or numbers (default: the container's)."),
    "--workdir": (check_workdir, "The command's directory, absolute (default: the container's)."),
    "--env": (check_env, "Set a variable, KEY=VALUE (KEY alone: its value here). Repeatable."),
}
# Options that take no value: name -> help.
EXEC_FLAGS = {
    "--interactive": "Keep stdin attached (default: /dev/null).",
    "--tty": "Give the command a terminal of its own in the container, relayed to this one.",
    "--detach": "Leave the command running in the background; print nothing.",
}
SHORT_FLAGS = {"-i": "--interactive", "-t": "--tty", "-d": "--detach"}  # together: -it
SHORT_OPTIONS = {"-u": "--user", "-w": "--workdir", "-e": "--env"}
REPEATABLE_OPTIONS = {"--env"}


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
        if name in REPEATABLE_OPTIONS:
            options.setdefault(name[2:], []).append(check(value))
        else:
            options[name[2:]] = check(value)
    else:
        rest = []
    if len(rest) < 2:
        raise ValueError("exec needs CONTAINER and COMMAND")
    return options, rest[0], rest[1:]
