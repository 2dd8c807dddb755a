"""Capability names and sets: root's ~41 privileges (capabilities(7)) as bits and as names.

The kernel keeps each of a process's five capability sets as a bit mask: capability N is bit
N. People name them: config.json writes ``CAP_NET_ADMIN``, docker's flags accept
``NET_ADMIN``, and /proc/PID/status shows the masks in hexadecimal (``CapBnd:
00000000a80425fb``). This module turns one into the other; runtime.security applies the
sets, runtime.policy chooses docker's.

Man page: https://man7.org/linux/man-pages/man7/capabilities.7.html
"""

from __future__ import annotations

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

# The five sets, as config.json's process.capabilities names them.
SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def mask_of(names) -> int:
    """The capability set (a bit mask) of capability ``names`` (``CHOWN``, no ``CAP_``)."""
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES.index(name)
    return mask


def names_of(mask: int) -> list[str]:
    """The names of the capabilities in ``mask``, in bit order (as ``capsh --decode``)."""
    return [name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1]


def spec_names(mask: int) -> list[str]:
    """The names of the capabilities in ``mask`` as config.json writes them: ``CAP_CHOWN``."""
    return ["CAP_" + name for name in names_of(mask)]


def last_capability() -> int:
    """The highest capability number this kernel knows (/proc/sys/kernel/cap_last_cap)."""
    with open("/proc/sys/kernel/cap_last_cap", "rb") as file:
        return int(file.read())
