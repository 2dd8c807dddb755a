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

from runtime import rootpath

# passwd(5): name:password:UID:GID:GECOS:directory:shell; group(5): name:password:GID:users.
PASSWD_FIELDS = ("name", "password", "UID", "GID", "GECOS", "directory", "shell")
GROUP_FIELDS = ("name", "password", "GID", "user list")


class UserError(Exception):
    """USER names no user or group of the container, or its files are malformed."""


def _entries(path: str, fields: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each entry of the container's /etc/passwd or /etc/group;
    none if the file is missing. Read inside the container's root, without blocking and up
    to a bound (see runtime.rootpath): the image chose what these files are."""
    try:
        data = rootpath.read_file(path)
    except rootpath.PathError as error:
        raise UserError(str(error)) from None
    entries = []
    for number, line in enumerate((data or b"").decode(errors="replace").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        entry = line.split(":")
        if len(entry) < len(fields):
            raise UserError(
                f"{path} line {number}: {len(entry)} fields where {len(fields)} belong "
                f"({':'.join(fields)})"
            )
        entries.append((number, entry))
    return entries


def _number(path: str, found: tuple[int, list[str]], index: int, fields) -> int:
    """Field ``index`` of entry ``found`` of ``path``, which must be a number."""
    number, entry = found
    if not _is_id(entry[index]):
        raise UserError(
            f"{path} line {number}: {fields[index]} {entry[index]!r} is not a number "
            f"from 0 to {MAX_ID}"
        )
    return int(entry[index])


MAX_ID = 2**32 - 2  # uid_t and gid_t; 2**32 - 1 is (uid_t) -1, "no change" to setuid(2)


def _is_id(text: str) -> bool:
    """ASCII digits only (str.isdigit() also takes ``²``, which int() then refuses), of a
    number a uid or gid can be."""
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= MAX_ID


def parse_user(spec: str) -> str:
    """``--user``: ``USER[:GROUP]``, each a name or a number. Names are looked up when the
    container starts, in its own files (see this module's docstring)."""
    user, colon, group = spec.partition(":")
    if not user or (colon and not group) or ":" in group or any(c.isspace() for c in spec):
        raise ValueError(f"--user takes USER[:GROUP], names or numbers (got {spec!r})")
    return spec


def resolve(spec: str) -> tuple[int, int, list[int], str | None]:
    """``USER[:GROUP]`` -> (uid, gid, supplementary gids, home directory or None).

    A user of /etc/passwd has its group and home there; a number found nowhere is the
    user of that id with group 0 and home "/", as runc and docker make it."""
    user, _, group = spec.partition(":")
    passwd = _entries("/etc/passwd", PASSWD_FIELDS)
    groups = _entries("/etc/group", GROUP_FIELDS)
    found = next((e for e in passwd if user in (e[1][0], e[1][2])), None)
    if found:
        uid = _number("/etc/passwd", found, 2, PASSWD_FIELDS)
        gid = _number("/etc/passwd", found, 3, PASSWD_FIELDS)
        home = found[1][5] or None
    elif _is_id(user):  # a numeric user need not exist: group root, home "/", as runc
        uid, gid, home = int(user), 0, "/"
    else:
        raise UserError(f"user {user!r} is not in the container's /etc/passwd")
    if group:
        group_found = next((e for e in groups if group in (e[1][0], e[1][2])), None)
        if group_found:
            gid = _number("/etc/group", group_found, 2, GROUP_FIELDS)
        elif _is_id(group):
            gid = int(group)
        else:
            raise UserError(f"group {group!r} is not in the container's /etc/group")
    name = found[1][0] if found else None
    supplementary = {gid}
    for entry in groups:
        if name and name in entry[1][3].split(","):
            supplementary.add(_number("/etc/group", entry, 2, GROUP_FIELDS))
    return uid, gid, sorted(supplementary), home


def switch_to(spec: str) -> str | None:
    """Become ``USER[:GROUP]`` for good; return the user's home directory if known."""
    uid, gid, supplementary, home = resolve(spec)
    os.setgroups(supplementary)
    os.setgid(gid)
    os.setuid(uid)
    return home
