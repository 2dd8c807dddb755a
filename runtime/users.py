"""Running the container's program as the image's USER.

An image's config may say ``"User": "nobody"``, ``"1000"``, ``"1000:1000"`` or
``"app:staff"``. Names mean what the *container's* /etc/passwd and /etc/group say, not the
host's, so they are looked up after pivot_root. Then, as docker does: supplementary groups
(setgroups(2)), group (setgid(2)), and last the user (setuid(2)), since after setuid we
could no longer change the others.

Man pages: https://man7.org/linux/man-pages/man2/setuid.2.html,
https://man7.org/linux/man-pages/man5/passwd.5.html
"""

from __future__ import annotations

import os


class UserError(Exception):
    """USER names no user or group of the container."""


def _entries(path: str) -> list[list[str]]:
    """The colon-separated lines of /etc/passwd or /etc/group; none if the file is missing."""
    try:
        with open(path) as file:
            return [line.rstrip("\n").split(":") for line in file if line.count(":") >= 2]
    except FileNotFoundError:
        return []


def resolve(spec: str) -> tuple[int, int, list[int], str | None]:
    """``USER[:GROUP]`` -> (uid, gid, supplementary gids, home directory or None)."""
    user, _, group = spec.partition(":")
    passwd = _entries("/etc/passwd")
    groups = _entries("/etc/group")
    entry = next((e for e in passwd if user in (e[0], e[2])), None)
    if entry:
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5] if len(entry) > 5 else None
    elif user.isdigit():
        uid, gid, home = int(user), int(user), None  # a numeric user need not exist
    else:
        raise UserError(f"user {user!r} is not in the container's /etc/passwd")
    if group:
        found = next((e for e in groups if group in (e[0], e[2])), None)
        if found:
            gid = int(found[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise UserError(f"group {group!r} is not in the container's /etc/group")
    name = entry[0] if entry else None
    supplementary = sorted(
        {int(e[2]) for e in groups if name and len(e) > 3 and name in e[3].split(",")} | {gid}
    )
    return uid, gid, supplementary, home


def switch_to(spec: str) -> str | None:
    """Become ``USER[:GROUP]`` for good; return the user's home directory if known."""
    uid, gid, supplementary, home = resolve(spec)
    os.setgroups(supplementary)
    os.setgid(gid)
    os.setuid(uid)
    return home
