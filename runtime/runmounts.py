"""The mounts that ``mycontainer run``'s options ask for, in config.json's form: ``-v``,
``--tmpfs`` and ``--read-only``, as docker's.

They go into the container's ``mounts`` after docker's defaults (runtime.filesystem), so
one mechanism, runtime.mounts, mounts them all: each destination is resolved inside the
rootfs (a symbolic link of the image aimed out of it leads back in), and what is missing
is made there. Each of them replaces the default mounts at its destination or below it
(``--tmpfs /dev/shm:size=1g``; ``-v /dev:/dev`` takes /dev/pts and /dev/shm too), and they
are mounted parents first, whatever their order on the command line (``-v /b:/a/b -v
/a:/a`` mounts /a, then /a/b), as docker sorts them.

- ``-v HOST:CONTAINER[:OPTIONS]`` bind-mounts HOST, an absolute path (or one starting with
  ``.``, taken from the current directory) that must exist: docker would create a missing
  directory, but a typo would then quietly mount an empty one. ``-v NAME:CONTAINER``
  mounts the named volume NAME (runtime.volumes), made on first use and, while empty,
  filled from the image. OPTIONS: ``ro`` or ``rw``, a propagation (``rprivate``, the
  default, ``rshared``, ``rslave``...) and, for a volume, ``nocopy``.
- ``--tmpfs PATH[:OPTIONS]`` mounts a new tmpfs(5), in memory, gone with the container,
  with docker's options ``rw,noexec,nosuid,nodev`` before the given ones (``size=64m``,
  ``mode=1777``, ``exec``...).
- ``--read-only`` makes the root read-only (root.readonly), with podman's tmpfs on /tmp,
  /var/tmp and /run, where programs expect to write (podman's ``--read-only-tmpfs``):
  docker mounts none, leaving each user to find out which ``--tmpfs`` a program needs.

Man pages: https://man7.org/linux/man-pages/man5/tmpfs.5.html,
https://man7.org/linux/man-pages/man8/mount.8.html (bind mounts, propagation)
"""

from __future__ import annotations

import os
import re

from runtime import mounts
from runtime.state import check_name

BIND_MODES = {"ro", "rw"}
NOCOPY = "nocopy"  # a named volume's: do not fill it from the image (runtime.volumes)
PROPAGATIONS = {"private", "rprivate", "shared", "rshared", "slave", "rslave"}
TMPFS_DEFAULTS = ("rw", "noexec", "nosuid", "nodev")  # docker's, before the user's
# tmpfs(5)'s own options, and what their values must look like.
_SIZE = r"\d+[kKmMgGtTpPeE%]?"
TMPFS_DATA = {
    "size": _SIZE,
    "nr_blocks": _SIZE,
    "nr_inodes": _SIZE,
    "mode": r"[0-7]{1,4}",
    "uid": r"\d+",
    "gid": r"\d+",
    "huge": r"never|always|within_size|advise|deny|force",
    "mpol": r"default|prefer:[\d,-]+|bind:[\d,-]+|interleave(:[\d,-]+)?|local",
}
TMPFS_WORDS = {"noswap", "inode32", "inode64"}
# --read-only's writable places (podman's --read-only-tmpfs): destination -> options.
READ_ONLY_TMPFS = {
    "/tmp": "rw,nosuid,nodev,mode=1777",
    "/var/tmp": "rw,nosuid,nodev,mode=1777",
    "/run": "rw,nosuid,nodev,mode=755",
}


def parse_volume(text: str) -> dict:
    """``-v HOST:CONTAINER[:OPTIONS]`` or ``-v NAME:CONTAINER[:OPTIONS]`` -> a bind mount
    in config.json's form; a named volume's ``source`` is its name until :func:`for_run`
    makes it a path. Checks everything but what makes the volume."""
    parts = text.split(":")
    if len(parts) == 1 and text.startswith("/"):
        raise ValueError(
            f"--volume {text}: anonymous volumes are not supported: name one "
            f"(-v NAME:{text}), or give a host path (-v HOST_PATH:{text})"
        )
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ValueError(
            f"--volume takes HOST_PATH:CONTAINER_PATH[:ro] or VOLUME:CONTAINER_PATH[:ro] "
            f"(got {text!r})"
        )
    source, destination = parts[0], parts[1]
    options = parts[2].split(",") if len(parts) == 3 else []
    if source.startswith("."):  # docker's CLI takes ./dir and ../dir from here
        source = os.path.abspath(source)
    if source.startswith("/"):
        if not os.path.exists(source):
            raise ValueError(
                f"--volume {text}: the host path {source} does not exist (create it first, "
                "or name a volume)"
            )
        source = os.path.normpath(source)
    else:
        try:
            check_name(source, "volume")
        except ValueError as error:
            raise ValueError(
                f"--volume {text}: {error} (a host directory needs an absolute path, "
                "or one starting with '.')"
            ) from None
    destination = _container_path("--volume", text, destination)
    unknown = [o for o in options if o not in BIND_MODES | PROPAGATIONS | {NOCOPY}]
    if NOCOPY in options and source.startswith("/"):
        unknown.append(NOCOPY)  # a host path is never filled
    if (
        unknown
        or len(BIND_MODES.intersection(options)) > 1
        or len(PROPAGATIONS.intersection(options)) > 1
    ):
        raise ValueError(
            f"--volume {text}: its options are ro or rw, one of "
            f"{', '.join(sorted(PROPAGATIONS))}, and nocopy for a volume (got {parts[2]!r})"
        )
    propagation = PROPAGATIONS.intersection(options) or {"rprivate"}
    fill = [] if NOCOPY in options or source.startswith("/") else [mounts.COPY_UP]
    return {
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", *BIND_MODES.intersection(options), *propagation, *fill],
    }


def parse_tmpfs(text: str) -> dict:
    """``--tmpfs PATH[:OPTIONS]`` -> a tmpfs mount in config.json's form; OPTIONS are
    mount(8)'s flags and tmpfs(5)'s own, each checked here: the kernel's answer to a bad
    one would only be "invalid argument"."""
    path, _, given = text.partition(":")
    destination = _container_path("--tmpfs", text, path)
    options = given.split(",") if given else []
    for option in options:
        key, equals, value = option.partition("=")
        if equals and key in TMPFS_DATA:
            if not re.fullmatch(TMPFS_DATA[key], value):
                raise ValueError(f"--tmpfs {text}: {option!r} is no valid {key} (tmpfs(5))")
        elif not (
            option in mounts.FLAG_OPTIONS
            and option not in ("bind", "rbind", "remount")
            or option in PROPAGATIONS
            or option in TMPFS_WORDS
        ):
            raise ValueError(
                f"--tmpfs {text}: unknown option {option!r} (mount(8)'s flags, such as ro "
                f"or exec, and tmpfs(5)'s: {', '.join(TMPFS_DATA)}, noswap)"
            )
    return {
        "destination": destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": [*TMPFS_DEFAULTS, *options],
    }


def _container_path(option: str, text: str, path: str) -> str:
    """``path``, which must be absolute and not "/" itself, normalized."""
    if not path.startswith("/"):
        raise ValueError(f"{option} {text}: the container path {path!r} must be absolute")
    path = os.path.normpath(path)
    if path in ("/", "//"):
        raise ValueError(f"{option} {text}: the container's root cannot be mounted over")
    return path


def for_run(defaults, volume_mounts=(), tmpfs_mounts=(), read_only: bool = False) -> list[dict]:
    """The ``mounts`` of a container: ``defaults`` (docker's), but those at a destination
    of the user's mounts, then the user's (``--read-only``'s tmpfs too) parents first.

    Named volumes are made here (runtime.volumes.create), so the caller holds the store's
    lock (image.StoreLock) until the container's state names them. A destination given
    twice is refused before any is made.
    """
    chosen = [*volume_mounts, *tmpfs_mounts]
    seen = set()
    for entry in chosen:
        if entry["destination"] in seen:
            raise ValueError(f"duplicate mount point: {entry['destination']}")
        seen.add(entry["destination"])
    if read_only:
        chosen += [
            {"destination": path, "type": "tmpfs", "source": "tmpfs", "options": o.split(",")}
            for path, o in READ_ONLY_TMPFS.items()
            if path not in seen
        ]
    made = []
    for entry in chosen:
        if entry["type"] == "bind" and not entry["source"].startswith("/"):
            from runtime import volumes

            entry = {**entry, "source": volumes.create(entry["source"]).mountpoint}
        made.append(entry)
    made.sort(key=lambda entry: entry["destination"].count("/"))  # parents first: stable
    kept = [entry for entry in defaults if not _covered(entry["destination"], seen)]
    return [*kept, *made]


def _covered(destination: str, mounted: set[str]) -> bool:
    """Whether ``destination`` is one of ``mounted``, or below one (a default /dev/shm when
    the user mounts /dev: the user's mount would hide it, as docker leaves it out)."""
    path = os.path.normpath(destination)
    return any(path == top or path.startswith(top + "/") for top in mounted)
