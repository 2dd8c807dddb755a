"""What a container's root may still do: capabilities, no_new_privs, seccomp, hidden paths.

Namespaces give a container its own view of the machine, but its processes still run as
root on the host's kernel. Four boundaries narrow what that root can do. This module applies
them as a config.json gives them (``process.capabilities``, ``process.noNewPrivileges``,
``linux.maskedPaths``, ``linux.readonlyPaths``, and a seccomp filter already compiled);
runtime.policy chooses docker's for ``mycontainer run``. The container's init
(runtime.process) applies them after the gate, around the switch to the container's user,
in this order (runc's):

1. **Capabilities** (capabilities(7)). Root's power is ~41 separate privileges, held in five
   sets: *bounding* (the most this process and its descendants can ever get back, even
   through a set-user-ID-root program or file capabilities), *permitted*, *effective* (what
   the kernel checks), *inheritable* (what may pass through execve(2) to a program whose
   file allows it) and *ambient* (what passes through execve(2) to any program that is not
   privileged). Each is set exactly as given: the bounding set shrinks first, while we
   still hold CAP_SETPCAP; the permitted set survives the switch to another user
   (PR_SET_KEEPCAPS), so that the other three can be set after it; ambient capabilities
   are raised last, since each must be permitted and inheritable by then.
2. **no_new_privs** (prctl(2) PR_SET_NO_NEW_PRIVS): from now on, execve(2) never grants
   privileges (set-user-ID bits, file capabilities are ignored).
3. **seccomp** (runtime.seccomp): a filter of system calls, installed last of all, right
   before execve(2); without no_new_privs installing it needs CAP_SYS_ADMIN, so then it goes
   in first of all, while we still hold it.
4. **Masked and read-only paths**: files of /proc and /sys that leak host information
   (/proc/kcore, /proc/keys, ...) are covered with /dev/null or an empty read-only tmpfs;
   /proc/sys, /proc/sysrq-trigger and a few more become read-only, so that the container
   cannot retune the host's kernel. Done right after pivot_root.

Man pages: https://man7.org/linux/man-pages/man7/capabilities.7.html,
https://man7.org/linux/man-pages/man2/prctl.2.html,
https://man7.org/linux/man-pages/man2/seccomp.2.html
Spec: https://github.com/opencontainers/runtime-spec/blob/main/config.md#linux-process,
https://github.com/opencontainers/runtime-spec/blob/main/config-linux.md
"""

from __future__ import annotations

import errno
import os
import stat
import sys

from runtime import seccomp
from runtime.capabilities import CAPABILITIES, SETS, last_capability, mask_of, names_of
from runtime.syscalls import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAP_AMBIENT_RAISE,
    PR_CAPBSET_DROP,
    PR_SET_KEEPCAPS,
    PR_SET_NO_NEW_PRIVS,
    capget,
    capset,
    mount,
    prctl,
)


class SecurityError(OSError):
    """A capability set or path that cannot be applied as given; the message names its
    config.json field. An OSError, so that every one-line error path of the runtime shows it."""


class Boundaries:
    """The boundaries of one container's processes, as config.json gives them.

    ``capabilities`` is ``process.capabilities``: the five sets, each a list of names such
    as ``CAP_NET_ADMIN`` (a missing set is empty; None: every set stays as the runtime's).
    ``seccomp`` is the filter, compiled (runtime.seccomp), or None. Every value is checked
    here, in the runtime, before anything of the container exists.
    """

    def __init__(
        self,
        capabilities: dict | None = None,
        no_new_privileges: bool = False,
        masked_paths=(),
        readonly_paths=(),
        seccomp: bytes | None = None,
        apparmor_profile: str | None = None,
    ):
        self.sets = None if capabilities is None else _capability_sets(capabilities)
        if apparmor_profile and not apparmor_enabled():
            raise SecurityError(
                f"process.apparmorProfile: {apparmor_profile!r} cannot be applied: AppArmor is "
                "not enabled on this host (leave the field out)"
            )
        self.apparmor_profile = apparmor_profile
        if not isinstance(no_new_privileges, bool):
            raise SecurityError(
                f"process.noNewPrivileges must be true or false (got {no_new_privileges!r})"
            )
        self.no_new_privileges = no_new_privileges
        self.masked_paths = _absolute_paths("linux.maskedPaths", masked_paths)
        self.readonly_paths = _absolute_paths("linux.readonlyPaths", readonly_paths)
        self.seccomp = seccomp

    @classmethod
    def from_config(cls, config: dict, seccomp: bytes | None = None) -> Boundaries:
        """The boundaries a config.json (a dict, in the spec's field names) sets."""
        process = config.get("process") or {}
        linux = config.get("linux") or {}
        return cls(
            process.get("capabilities"),
            process.get("noNewPrivileges", False),
            linux.get("maskedPaths") or (),
            linux.get("readonlyPaths") or (),
            seccomp,
            apparmor_profile=process.get("apparmorProfile"),
        )

    # After pivot_root, still before the gate ------------------------------------------------

    def protect_paths(self) -> None:
        """Mask ``masked_paths`` and make ``readonly_paths`` read-only, in the new root.

        Every path is opened one component at a time from "/", refusing symbolic links
        (O_NOFOLLOW), and the mount is made on the opened file through /proc/self/fd/N:
        nothing is resolved twice, and nothing can be redirected by a link planted in the
        rootfs (CVE-2025-31133, where runc bind-mounted a /dev/null that the container had
        replaced with a link to /proc/sys/kernel/core_pattern). /dev/null itself is checked
        to be the null device before it is used as the mask.
        """
        if self.masked_paths:
            null = open_in_root("/dev/null")
            try:
                if os.fstat(null).st_rdev != os.makedev(1, 3):
                    raise OSError("refusing to mask with /dev/null: it is not the null device")
                for path in self.masked_paths:
                    _mask(path, null)
            finally:
                os.close(null)
        for path in self.readonly_paths:
            _make_read_only(path)

    # After the gate, in the init: before and after the switch to the container's user -------

    def before_user_switch(self) -> None:
        """Seccomp first if no_new_privs is off (installing a filter then needs CAP_SYS_ADMIN,
        which we are about to lose); shrink the bounding set (it needs CAP_SETPCAP); keep the
        permitted set across setuid(2), to set the others from it after the switch."""
        if self.apparmor_profile:
            apply_apparmor_profile(self.apparmor_profile)
        if self.seccomp and not self.no_new_privileges:
            seccomp.install(self.seccomp)
        if self.sets is None:
            return
        for cap in range(64):
            if not self.sets["bounding"] >> cap & 1:
                try:
                    prctl(PR_CAPBSET_DROP, cap)
                except OSError as error:
                    if error.errno != errno.EINVAL:
                        raise
                    break  # past the last capability this kernel knows
        prctl(PR_SET_KEEPCAPS, 1)

    def after_user_switch(self) -> None:
        """Set the permitted, effective and inheritable sets, raise the ambient ones, set
        no_new_privs, then seccomp: the last step before execve(2), so the filter need not
        allow what the runtime still does.

        The sets are exactly those given. For a user other than root, execve(2) then keeps
        only the ambient ones (and those of a program's file capabilities, unless
        no_new_privs), whatever the permitted set was (capabilities(7)).
        """
        if self.sets is not None:
            prctl(PR_SET_KEEPCAPS, 0)
            sets = self.sets
            capset(sets["effective"], sets["permitted"], sets["inheritable"])
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
            for cap in range(len(CAPABILITIES)):
                if sets["ambient"] >> cap & 1:
                    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
        if self.no_new_privileges:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            if self.seccomp:
                seccomp.install(self.seccomp)


def _capability_sets(capabilities: dict) -> dict[str, int]:
    """config.json's ``process.capabilities`` as five masks, checked.

    A name that is no capability is an error, as the spec requires; so are sets that
    capset(2) and PR_CAP_AMBIENT would refuse, so that their EPERM becomes a line naming the
    field; and a capability the runtime itself does not hold (it could not give it). One
    this kernel is too old to know is left out, as runc and crun do.
    """
    if not isinstance(capabilities, dict) or set(capabilities) - set(SETS):
        raise SecurityError(f"process.capabilities takes the sets {', '.join(SETS)}")
    sets = {}
    for name in SETS:
        names = capabilities.get(name) or []
        field = f"process.capabilities.{name}"
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SecurityError(f"{field} must be a list of capability names")
        unknown = [n for n in names if not n.startswith("CAP_") or n[4:] not in CAPABILITIES]
        if unknown:
            raise SecurityError(
                f"{field}: unknown capability {unknown[0]!r} (a name from capabilities(7), "
                "such as CAP_NET_ADMIN)"
            )
        sets[name] = mask_of(n[4:] for n in names)
    dropped = sets["ambient"] & ~(sets["permitted"] & sets["inheritable"])
    if dropped:  # the kernel refuses them (PR_CAP_AMBIENT_RAISE); runc warns and goes on
        sys.stderr.write(
            f"mycontainer: warning: process.capabilities.ambient: {', '.join(names_of(dropped))}"
            " left out: an ambient capability must also be permitted and inheritable\n"
        )
        sets["ambient"] &= ~dropped
    for name, within, rule in (
        ("effective", sets["permitted"], "in permitted"),
        ("inheritable", sets["bounding"], "in bounding"),
    ):
        if sets[name] & ~within:
            raise SecurityError(
                f"process.capabilities.{name}: {', '.join(names_of(sets[name] & ~within))} "
                f"must also be {rule} (capabilities(7))"
            )
    _, held, _ = capget()
    if any(mask & ~held for mask in sets.values()):
        known = (1 << last_capability() + 1) - 1  # what this kernel cannot know, goes
        for name in SETS:
            sets[name] &= known
            if sets[name] & ~held:
                raise SecurityError(
                    f"process.capabilities.{name}: mycontainer itself does not have "
                    f"{', '.join(names_of(sets[name] & ~held))} (see CapPrm in "
                    "/proc/self/status), so it cannot give it"
                )
    return sets


def _absolute_paths(field: str, paths) -> tuple[str, ...]:
    """``paths`` (a list), each absolute as the spec requires, normalised (``//``, ``.``
    and ``..`` resolved as names: a path that is a symbolic link is refused later anyway)."""
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, str) for p in paths):
        raise SecurityError(f"{field} must be a list of absolute paths")
    normal = []
    for path in paths:
        if not path.startswith("/"):
            raise SecurityError(f"{field}: {path!r} is not an absolute path")
        normal.append("/" + os.path.normpath(path).lstrip("/"))
        if normal[-1] == "/":
            raise SecurityError(f"{field}: {path!r} is the container's whole root")
    return tuple(normal)


# --- paths, without following links --------------------------------------------------------


def open_in_root(path: str) -> int:
    """An O_PATH descriptor of absolute ``path``, walked from "/" one component at a time
    without following any symbolic link (openat(2) with O_NOFOLLOW); ENOENT if missing."""
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags | os.O_DIRECTORY)
    try:
        names = path.strip("/").split("/")
        for index, name in enumerate(names):
            last = index == len(names) - 1
            try:
                following = os.open(name, flags | (0 if last else os.O_DIRECTORY), dir_fd=fd)
            except NotADirectoryError:
                raise OSError(f"refusing {path}: {name} is a symbolic link or a file") from None
            os.close(fd)
            fd = following
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(f"refusing {path}: it is a symbolic link")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fd_path(fd: int) -> str:
    """The path that names what ``fd`` refers to, for mount(2): /proc/self/fd/N."""
    return f"/proc/self/fd/{fd}"


def _mask(path: str, null: int) -> None:
    """Hide a file under /dev/null, a directory under an empty read-only tmpfs."""
    try:
        fd = open_in_root(path)
    except FileNotFoundError:
        return  # this kernel has no such file: nothing to hide
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
            mount("tmpfs", _fd_path(fd), "tmpfs", flags, "size=4k,mode=555")
        else:
            mount(_fd_path(null), _fd_path(fd), None, MS_BIND)
    finally:
        os.close(fd)


def _make_read_only(path: str) -> None:
    """Bind-mount ``path`` onto itself, then remount that bind mount read-only."""
    try:
        fd = open_in_root(path)
    except FileNotFoundError:
        return
    try:
        mount(_fd_path(fd), _fd_path(fd), None, MS_BIND)
    finally:
        os.close(fd)
    fd = open_in_root(path)  # the new mount, now on top
    try:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
        mount(None, _fd_path(fd), None, flags)
    finally:
        os.close(fd)


def apparmor_enabled() -> bool:
    """Whether the kernel enforces AppArmor (its module parameter says Y)."""
    try:
        with open("/sys/module/apparmor/parameters/enabled") as file:
            return file.read().strip() == "Y"
    except OSError:
        return False


def apply_apparmor_profile(profile: str) -> None:
    """Have the next execve(2) enter AppArmor profile ``profile``, as runc does: the kernel
    reads "exec NAME" from /proc/self/attr/apparmor/exec (Linux 5.8+; /proc/self/attr/exec
    before). The profile must be loaded on the host (apparmor_parser), as docker-default is."""
    for path in ("/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.write(fd, f"exec {profile}".encode())
        except OSError as error:
            raise SecurityError(
                f"process.apparmorProfile: cannot apply {profile!r}: {error.strerror} "
                "(is it loaded? see aa-status)"
            ) from None
        finally:
            os.close(fd)
        return
    raise SecurityError("process.apparmorProfile: this kernel has no /proc/self/attr/exec")
