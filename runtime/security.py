"""What a container's root may still do: capabilities, no_new_privs, seccomp, hidden paths.

Namespaces give a container its own view of the machine, but its processes still run as
root on the host's kernel. Four boundaries narrow what that root can do, each applied by
the container's init (runtime.process) after the gate, in this order (runc's):

1. **Capabilities** (capabilities(7)). Root's power is ~41 separate privileges. A container
   keeps docker's 14 (:data:`DEFAULT_CAPABILITIES`): enough to chown, bind port 80 or
   switch user, not to mount, load modules, trace other processes or reboot. Four sets
   matter: *bounding* (the most this process and its descendants can ever get back, even
   through a set-user-ID-root program or file capabilities), *permitted*, *effective* (what
   the kernel checks) and *inheritable*. Bounding becomes the container's set; so do
   permitted and effective for root, while any other USER gets none; inheritable and the
   fifth, *ambient*, are empty (docker's rules since CVE-2022-24769). ``--cap-add`` and
   ``--cap-drop`` change the set, as docker's do.
2. **no_new_privs** (prctl(2) PR_SET_NO_NEW_PRIVS): from now on, execve(2) never grants
   privileges (set-user-ID bits, file capabilities are ignored). On by default;
   ``--security-opt no-new-privileges=false`` lifts it.
3. **seccomp** (runtime.seccomp): a filter that makes ~70 dangerous system calls fail with
   EPERM. ``--security-opt seccomp=unconfined`` lifts it.
4. **Masked and read-only paths** (the OCI runtime spec's defaults): files of /proc and /sys
   that leak host information (/proc/kcore, /proc/keys, ...) are covered with /dev/null or
   an empty read-only tmpfs; /proc/sys, /proc/sysrq-trigger and a few more become read-only,
   so that the container cannot retune the host's kernel. Done right after pivot_root.
   ``--security-opt systempaths=unconfined`` lifts it (as docker's).

Man pages: https://man7.org/linux/man-pages/man7/capabilities.7.html,
https://man7.org/linux/man-pages/man2/prctl.2.html,
https://man7.org/linux/man-pages/man2/seccomp.2.html
Spec: https://github.com/opencontainers/runtime-spec/blob/main/config-linux.md
"""

from __future__ import annotations

import errno
import os
import stat

from runtime import seccomp
from runtime.syscalls import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
    PR_CAP_AMBIENT,
    PR_CAP_AMBIENT_CLEAR_ALL,
    PR_CAPBSET_DROP,
    PR_SET_NO_NEW_PRIVS,
    capget,
    capset,
    machine_name,
    mount,
    prctl,
)

# capabilities(7), in bit order: capability N is bit N of every set.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN",
    "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip

# docker's default set (moby's oci/caps/defaults.go): 00000000a80425fb in /proc/PID/status.
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip

# The OCI runtime spec's defaults (runc spec; docker masks and protects the same).
MASKED_PATHS = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

SECURITY_OPTS = "no-new-privileges[=true|false], seccomp=unconfined or systempaths=unconfined"


def mask_of(names) -> int:
    """The capability set (a bit mask) of capability ``names``."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES.index(name)
    return mask


def names_of(mask: int) -> list[str]:
    """The names of the capabilities in ``mask``, in bit order (as ``capsh --decode``)."""
    return [name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1]


# --- input -------------------------------------------------------------------------------


def _capability_parser(option: str):
    def parse(text: str) -> str:
        """``NET_ADMIN``, ``CAP_NET_ADMIN``, ``net_admin`` -> ``NET_ADMIN``; ``ALL`` stays."""
        name = text.strip().upper()  # ASCII only: "ſys_admin".upper() is SYS_ADMIN
        name = name[4:] if name.startswith("CAP_") else name
        if not text.isascii() or name != "ALL" and name not in CAPABILITIES:
            raise ValueError(
                f"{option}: unknown capability {text!r} (a name from capabilities(7), such "
                "as NET_ADMIN or CAP_NET_ADMIN, or ALL)"
            )
        return name

    parse.__name__ = f"parse_{option.lstrip('-').replace('-', '_')}"
    return parse


parse_cap_add = _capability_parser("--cap-add")
parse_cap_drop = _capability_parser("--cap-drop")


def parse_security_opt(text: str) -> str:
    """A ``--security-opt`` as docker spells it, normalised: ``no-new-privileges=true``,
    ``no-new-privileges=false``, ``seccomp=unconfined`` or ``systempaths=unconfined``.

    docker also accepts ``:`` for ``=`` (``no-new-privileges:true``), and so do we.
    """
    key, separator, value = text.replace(":", "=", 1).partition("=")
    key, value = key.strip().lower(), value.strip().lower()
    if key == "no-new-privileges" and (not separator or value in ("true", "false")):
        return f"{key}={value or 'true'}"
    if key in ("seccomp", "systempaths") and value == "unconfined":
        return f"{key}=unconfined"
    if key == "seccomp":
        raise ValueError(
            f"--security-opt: seccomp profiles from a file are not supported; only "
            f"seccomp=unconfined (got {text!r})"
        )
    raise ValueError(f"--security-opt takes {SECURITY_OPTS} (got {text!r})")


# --- the container's settings --------------------------------------------------------------


class Security:
    """The boundaries of one container, from the ``--cap-add``, ``--cap-drop`` and
    ``--security-opt`` values (already checked by the parse functions above)."""

    def __init__(self, cap_add=(), cap_drop=(), security_opt=()):
        # docker's rules (moby's oci/caps TweakCapabilities): --cap-add ALL gives every
        # capability but the dropped ones; --cap-drop ALL keeps only the added ones; else
        # the default set, minus the dropped, plus the added (adding wins).
        everything = (1 << len(CAPABILITIES)) - 1
        if "ALL" in cap_add:
            self.capabilities = everything & ~mask_of(n for n in cap_drop if n != "ALL")
        elif "ALL" in cap_drop:
            self.capabilities = mask_of(cap_add)
        else:
            default = mask_of(DEFAULT_CAPABILITIES) & ~mask_of(cap_drop)
            self.capabilities = default | mask_of(cap_add)
        self.named = mask_of(n for n in cap_add if n != "ALL")  # must be granted, or fail
        options = dict(option.split("=", 1) for option in security_opt)
        self.no_new_privileges = options.get("no-new-privileges", "true") == "true"
        self.seccomp = options.get("seccomp") != "unconfined"
        self.system_paths = options.get("systempaths") != "unconfined"

    # After pivot_root, still before the gate ------------------------------------------------

    def protect_paths(self) -> None:
        """Mask MASKED_PATHS and make READONLY_PATHS read-only, in the new root.

        Every path is opened one component at a time from "/", refusing symbolic links
        (O_NOFOLLOW), and the mount is made on the opened file through /proc/self/fd/N:
        nothing is resolved twice, and nothing can be redirected by a link planted in the
        rootfs (CVE-2025-31133, where runc bind-mounted a /dev/null that the container had
        replaced with a link to /proc/sys/kernel/core_pattern). /dev/null itself is checked
        to be the null device before it is used as the mask.
        """
        if not self.system_paths:
            return
        null = open_in_root("/dev/null")
        try:
            if os.fstat(null).st_rdev != os.makedev(1, 3):
                raise OSError("refusing to mask with /dev/null: it is not the null device")
            for path in MASKED_PATHS:
                _mask(path, null)
        finally:
            os.close(null)
        for path in READONLY_PATHS:
            _make_read_only(path)

    # After the gate, in the init: before and after the switch to the image's USER ----------

    def before_user_switch(self) -> None:
        """Seccomp first if no_new_privs is off (installing a filter then needs CAP_SYS_ADMIN,
        which we are about to lose); shrink the bounding set (it needs CAP_SETPCAP)."""
        _, held, _ = capget()
        missing = self.named & ~held
        if missing:
            raise OSError(
                f"cannot add {', '.join(names_of(missing))}: mycontainer itself does not "
                "have it (see CapBnd in /proc/self/status)"
            )
        self.capabilities &= held  # --cap-add ALL: all that we have
        if self.seccomp and not self.no_new_privileges:
            self._install_seccomp()
        for cap in range(64):
            if not self.capabilities >> cap & 1:
                try:
                    prctl(PR_CAPBSET_DROP, cap)
                except OSError as error:
                    if error.errno != errno.EINVAL:
                        raise
                    break  # past the last capability this kernel knows

    def after_user_switch(self) -> None:
        """Set the capability sets, clear ambient, set no_new_privs, then seccomp: the last
        step before execve(2), so the filter need not allow what the runtime still does.

        As docker since CVE-2022-24769: root gets the container's set as permitted and
        effective; any other user gets none (setuid(2) has emptied them already), so that a
        program with file capabilities gains nothing under no_new_privs; inheritable stays
        empty for everyone, or such a program's ``=ei`` capabilities would be granted.
        """
        mask = self.capabilities if os.geteuid() == 0 else 0
        capset(effective=mask, permitted=mask, inheritable=0)
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        if self.no_new_privileges:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            if self.seccomp:
                self._install_seccomp()

    def _install_seccomp(self) -> None:
        machine = machine_name()
        if machine not in seccomp.AUDIT_ARCH:
            raise OSError(
                f"no seccomp filter for {machine}: run with --security-opt seccomp=unconfined"
            )
        seccomp.install(seccomp.build(self.capabilities, machine))


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
