"""What the container's process inherits besides its capabilities: its user and groups, its
umask, its resource limits and its OOM score, as config.json's ``process`` gives them.

All four survive execve(2) and pass to every child, so the runtime sets them on the
container's first process before it executes the program, in runc's order:

1. **Resource limits** (``process.rlimits``, setrlimit(2)): the most CPU time, open files,
   processes... Set from the runtime on the waiting init (prlimit(2)), while it is still
   root: raising a hard limit needs CAP_SYS_RESOURCE, and RLIMIT_NPROC then counts the
   user's processes as setuid(2) makes it that user.
2. **The OOM score adjustment** (``process.oomScoreAdj``, /proc/PID/oom_score_adj, from -1000:
   never kill, to 1000: kill first). Also from the runtime, as root: lowering it needs
   CAP_SYS_RESOURCE, and the container's /proc need not be mounted for it.
3. **The user** (``process.user``): numbers only, as runc takes them (no /etc/passwd
   lookup): supplementary groups (setgroups(2)), group (setgid(2)), last the user
   (setuid(2)), since after setuid we could no longer change the others; and the umask
   (umask(2); unset, the runtime's stays, as the spec says). In the init, after the gate,
   between runtime.security's two moments.

Man pages: https://man7.org/linux/man-pages/man2/setrlimit.2.html,
https://man7.org/linux/man-pages/man5/proc_pid_oom_score_adj.5.html,
https://man7.org/linux/man-pages/man7/credentials.7.html,
https://man7.org/linux/man-pages/man2/umask.2.html
Spec: https://github.com/opencontainers/runtime-spec/blob/main/config.md#posix-process
"""

from __future__ import annotations

import os
import resource

from runtime.syscalls import capget

MAX_ID = 2**32 - 2  # uid_t and gid_t; 2**32 - 1 is (uid_t) -1, "no change" to setuid(2)
RLIM_INFINITY = 2**64 - 1  # as config.json writes "unlimited" (rlim_t's largest value); the
# resource module takes limits up to 2**63 - 1 only, and -1 for this one
NGROUPS_MAX = 65536  # the most supplementary groups setgroups(2) takes
CAP_SYS_RESOURCE = 24

# setrlimit(2)'s resources, by config.json's names (the kernel's own; RLIMIT_RSS is ignored
# by Linux since 2.6, but set all the same).
RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


class ProcessSettingsError(OSError):
    """A user, limit or score that cannot be applied as given; the message names its
    config.json field. An OSError, so that every one-line error path of the runtime shows it."""


class ProcessSettings:
    """``process.user``, ``process.rlimits`` and ``process.oomScoreAdj`` of a config.json,
    checked here, in the runtime, before anything of the container exists.

    ``user`` is ``{"uid": 0, "gid": 0, "umask": 18, "additionalGids": [5]}`` (None: the
    process stays who it is); ``rlimits`` a list of ``{"type": "RLIMIT_NOFILE", "soft": 1024,
    "hard": 1024}``; ``oom_score_adj`` an integer or None (unchanged).
    """

    def __init__(self, user: dict | None = None, rlimits=(), oom_score_adj: int | None = None):
        self.user = None if user is None else _user(user)
        self.rlimits = _rlimits(rlimits)
        if oom_score_adj is not None and not _is_int(oom_score_adj, -1000, 1000):
            raise ProcessSettingsError(
                f"process.oomScoreAdj must be a number from -1000 to 1000 (got {oom_score_adj!r})"
            )
        self.oom_score_adj = oom_score_adj

    @classmethod
    def from_config(cls, config: dict) -> ProcessSettings:
        """The settings of a config.json (a dict, in the spec's field names)."""
        process = config.get("process") or {}
        return cls(process.get("user"), process.get("rlimits") or (), process.get("oomScoreAdj"))

    def apply_limits(self, pid: int) -> None:
        """Set the resource limits and the OOM score of process ``pid`` (the container's
        init, waiting at its gate, still root), as runc does from its parent process."""
        for name, (number, soft, hard) in self.rlimits.items():
            try:
                resource.prlimit(pid, number, (soft, hard))
            except (OSError, ValueError) as error:
                raise ProcessSettingsError(
                    f"process.rlimits: cannot set {name} to soft {_shown(soft)}, hard "
                    f"{_shown(hard)}: {_rlimit_reason(number, hard, error)}"
                ) from None
        if self.oom_score_adj is not None:
            try:
                with open(f"/proc/{pid}/oom_score_adj", "w") as file:
                    file.write(str(self.oom_score_adj))
            except OSError as error:
                reason = error.strerror or str(error)
                if isinstance(error, PermissionError):
                    reason = "lowering it needs CAP_SYS_RESOURCE, which mycontainer lacks"
                raise ProcessSettingsError(
                    f"process.oomScoreAdj: cannot set {self.oom_score_adj}: {reason}"
                ) from None

    def switch_user(self) -> None:
        """Become ``process.user`` for good: groups, group, user, then the umask (in the
        init, after runtime.security's before_user_switch, which keeps the capabilities
        that config.json gives across the switch)."""
        if self.user is None:
            return
        uid, gid, additional_gids, umask = self.user
        try:
            os.setgroups(additional_gids)
            os.setgid(gid)
            os.setuid(uid)
        except OSError as error:
            raise ProcessSettingsError(
                f"process.user: cannot become uid {uid}, gid {gid}, groups {additional_gids}: "
                f"{error.strerror}"
            ) from None
        if umask is not None:
            os.umask(umask)


def _is_int(value, low: int, high: int) -> bool:
    """An integer from ``low`` to ``high``; JSON's true and false are none."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _user(user: dict) -> tuple[int, int, list[int], int | None]:
    """``process.user`` as (uid, gid, additional gids, umask or None), checked."""
    if not isinstance(user, dict):
        raise ProcessSettingsError("process.user must be an object with uid and gid")
    for field in ("uid", "gid"):
        if not _is_int(user.get(field), 0, MAX_ID):
            raise ProcessSettingsError(
                f"process.user.{field} must be a number from 0 to {MAX_ID} "
                f"(got {user.get(field)!r})"
            )
    additional = user.get("additionalGids") or []
    if (
        not isinstance(additional, list)
        or not all(_is_int(g, 0, MAX_ID) for g in additional)
        or len(additional) > NGROUPS_MAX
    ):
        raise ProcessSettingsError(
            f"process.user.additionalGids must be a list of at most {NGROUPS_MAX} numbers "
            f"from 0 to {MAX_ID} (got {str(additional)[:80]})"
        )
    umask = user.get("umask")
    if umask is not None and not _is_int(umask, 0, 0o777):
        raise ProcessSettingsError(
            f"process.user.umask must be a number from 0 to 511 (0o777) (got {umask!r})"
        )
    return user["uid"], user["gid"], additional, umask


def _rlimits(rlimits) -> dict[str, tuple[int, int, int]]:
    """``process.rlimits`` as {name: (resource number, soft, hard)}, checked: a type the
    kernel does not know, or one given twice, is an error, as the spec requires."""
    if not isinstance(rlimits, (list, tuple)):
        raise ProcessSettingsError("process.rlimits must be a list of {type, soft, hard}")
    checked = {}
    for rlimit in rlimits:
        name = rlimit.get("type") if isinstance(rlimit, dict) else None
        if name not in RLIMITS:
            raise ProcessSettingsError(
                f"process.rlimits: unknown type {name!r} (one of {', '.join(sorted(RLIMITS))})"
            )
        if name in checked:
            raise ProcessSettingsError(f"process.rlimits: {name} is given twice")
        soft, hard = rlimit.get("soft"), rlimit.get("hard")
        for field, value in (("soft", soft), ("hard", hard)):
            if not (_is_int(value, 0, 2**63 - 1) or value == RLIM_INFINITY):
                raise ProcessSettingsError(
                    f"process.rlimits: {name} {field} must be a number from 0 to "
                    f"{2**63 - 1}, or {RLIM_INFINITY}: unlimited (got {value!r})"
                )
        if soft > hard:
            raise ProcessSettingsError(
                f"process.rlimits: {name} soft {_shown(soft)} is above its hard {_shown(hard)}"
            )
        checked[name] = (RLIMITS[name], _rlim(soft), _rlim(hard))
    return checked


def _rlim(value: int) -> int:
    """config.json's limit as the resource module takes it: unlimited is RLIM_INFINITY."""
    return resource.RLIM_INFINITY if value == RLIM_INFINITY else value


def _shown(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY or value == RLIM_INFINITY else str(value)


def _rlimit_reason(number: int, hard: int, error: Exception) -> str:
    """Why prlimit(2) refused: most often a hard limit above the runtime's own."""
    _, ours = resource.getrlimit(number)
    above = ours != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > ours)
    if above and not capget()[0] >> CAP_SYS_RESOURCE & 1:
        return (
            f"the hard limit is above mycontainer's own ({ours}), and raising it needs "
            "CAP_SYS_RESOURCE, which mycontainer lacks"
        )
    if above and number == resource.RLIMIT_NOFILE:
        return "the hard limit is above /proc/sys/fs/nr_open"
    return getattr(error, "strerror", None) or str(error)
