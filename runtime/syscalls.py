"""The Linux system calls that Python's ``os`` module lacks, through ctypes.

A container is made of a handful of system calls. Python 3.10 and 3.11 wrap most of what we
need (``fork``, ``execve``, ``sethostname`` via :mod:`socket`, ``mknod``), but not these:

==============  ======================================================================
unshare(2)      move the calling process into new namespaces
setns(2)        join an existing namespace through a file descriptor (for ``exec``)
mount(2)        attach a filesystem, or change a mount's flags and propagation
umount2(2)      detach a mount, lazily with ``MNT_DETACH``
pivot_root(2)   swap the root mount of this mount namespace for another one
prctl(2)        per-process switches such as ``PR_SET_CHILD_SUBREAPER``, ``PR_CAPBSET_DROP``,
                ``PR_SET_NO_NEW_PRIVS`` and ``PR_SET_SECCOMP``
sethostname(2)  name the UTS namespace (:mod:`socket` has it too: a run does without it)
capget(2)       read a process's capability sets (permitted, effective, inheritable)
capset(2)       set them
openat2(2)      open a path resolved as if a directory were "/", refusing /proc's magic links
bpf(2)          load an eBPF program and attach it to a cgroup (the cgroup v2 device filter)
==============  ======================================================================

glibc exports the first five as functions; ``pivot_root`` has no glibc wrapper, so we call
it through ``syscall(2)`` with its number, which differs per architecture.

Every wrapper raises :class:`OSError` with the errno and a message naming the call and its
arguments, e.g. ``pivot_root('/x', '/x/.oldroot'): Invalid argument``, because "Invalid
argument" alone never tells a learner which of ten mounts went wrong.

Man pages: https://man7.org/linux/man-pages/man2/unshare.2.html,
https://man7.org/linux/man-pages/man2/mount.2.html,
https://man7.org/linux/man-pages/man2/pivot_root.2.html
"""

from __future__ import annotations

import ctypes
import os

# Namespace flags, from <sched.h>; see namespaces(7).
CLONE_NEWNS = 0x00020000  # mount
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000  # hostname and NIS domain name
CLONE_NEWIPC = 0x08000000  # System V IPC, POSIX message queues
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags, from <sys/mount.h>.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MOUNT_FLAG_NAMES = {name: value for name, value in globals().items() if name.startswith("MS_")}

# mount_setattr(2) (Linux 5.12+): attributes of a mount and, with AT_RECURSIVE, of every
# mount below it, from <linux/mount.h> and <fcntl.h>.
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70  # the mask of the three atime choices below
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# umount2(2) flags.
MNT_DETACH = 2

# prctl(2) options, from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8  # setuid(2) away from root keeps the permitted set
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2  # the second arguments of PR_CAP_AMBIENT
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2  # the second argument of PR_SET_SECCOMP

# openat2(2) resolve flags, from <linux/openat2.h>.
RESOLVE_NO_MAGICLINKS = 0x02  # refuse /proc/PID/fd/N, /proc/PID/cwd and their kin
RESOLVE_IN_ROOT = 0x10  # "/" and ".." stop at the starting directory, as after chroot(2)

# capget(2)/capset(2): version 3 of the interface carries 64 capability bits in two 32-bit words.
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# System call numbers: of the calls glibc does not wrap (pivot_root, bpf) and of those the
# seccomp filter (runtime.seccomp) checks. x86_64 numbers come from
# arch/x86/entry/syscalls/syscall_64.tbl; aarch64 uses the generic table
# (include/uapi/asm-generic/unistd.h), as do Apple Silicon VMs, and has no legacy calls
# such as iopl or uselib. tests/test_security.py checks them against the kernel's headers.
# fmt: off
SYSCALL_NUMBERS = {
    "x86_64": {
        "acct": 163, "add_key": 248, "bpf": 321, "clock_adjtime": 305, "clock_settime": 227,
        "clone": 56, "clone3": 435, "create_module": 174, "delete_module": 176,
        "fanotify_init": 300, "finit_module": 313, "fsconfig": 431, "fsmount": 432, "fsopen": 430,
        "fspick": 433, "get_kernel_syms": 177, "get_mempolicy": 239, "init_module": 175,
        "io_uring_enter": 426, "io_uring_register": 427, "io_uring_setup": 425, "ioctl": 16,
        "ioperm": 173, "iopl": 172, "kcmp": 312, "kexec_file_load": 320, "kexec_load": 246,
        "keyctl": 250, "lookup_dcookie": 212, "mbind": 237, "migrate_pages": 256, "modify_ldt": 154,
        "mount": 165, "mount_setattr": 442, "move_mount": 429, "move_pages": 279, "nfsservctl": 180,
        "open_by_handle_at": 304, "open_tree": 428, "openat2": 437, "perf_event_open": 298,
        "personality": 135, "pidfd_getfd": 438, "pivot_root": 155, "process_madvise": 440,
        "process_vm_readv": 310, "process_vm_writev": 311, "ptrace": 101, "query_module": 178,
        "quotactl": 179, "quotactl_fd": 443, "reboot": 169, "request_key": 249,
        "set_mempolicy": 238, "set_mempolicy_home_node": 450, "setdomainname": 171,
        "sethostname": 170, "setns": 308, "settimeofday": 164, "socket": 41, "swapoff": 168,
        "swapon": 167, "_sysctl": 156, "sysfs": 139, "syslog": 103, "umount2": 166, "unshare": 272,
        "uselib": 134, "userfaultfd": 323, "ustat": 136, "vhangup": 153,
    },
    "aarch64": {
        "acct": 89, "add_key": 217, "bpf": 280, "clock_adjtime": 266, "clock_settime": 112,
        "clone": 220, "clone3": 435, "delete_module": 106, "fanotify_init": 262,
        "finit_module": 273, "fsconfig": 431, "fsmount": 432, "fsopen": 430, "fspick": 433,
        "get_mempolicy": 236, "init_module": 105, "io_uring_enter": 426, "io_uring_register": 427,
        "io_uring_setup": 425, "ioctl": 29, "kcmp": 272, "kexec_file_load": 294, "kexec_load": 104,
        "keyctl": 219, "lookup_dcookie": 18, "mbind": 235, "migrate_pages": 238, "mount": 40,
        "mount_setattr": 442, "move_mount": 429, "move_pages": 239, "nfsservctl": 42,
        "open_by_handle_at": 265, "open_tree": 428, "openat2": 437, "perf_event_open": 241,
        "personality": 92, "pidfd_getfd": 438, "pivot_root": 41, "process_madvise": 440,
        "process_vm_readv": 270, "process_vm_writev": 271, "ptrace": 117, "quotactl": 60,
        "quotactl_fd": 443, "reboot": 142, "request_key": 218, "set_mempolicy": 237,
        "set_mempolicy_home_node": 450, "setdomainname": 162, "sethostname": 161, "setns": 268,
        "settimeofday": 170, "socket": 198, "swapoff": 225, "swapon": 224, "syslog": 116,
        "umount2": 39, "unshare": 97, "userfaultfd": 282, "vhangup": 58,
    },
}
# fmt: on


# The C library (dlopen(NULL): the symbols already loaded into this process). ``use_errno``
# makes ctypes save errno for us right after each call. On macOS this loads fine too; only
# calling a Linux-only function there would fail.
LIBC = ctypes.CDLL(None, use_errno=True)


def machine_name(machine: str | None = None) -> str:
    """``machine`` (default: uname(2)'s for this one) as SYSCALL_NUMBERS spells it: some
    systems say arm64 or amd64 for aarch64 or x86_64."""
    machine = machine or os.uname().machine
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)


def syscall_number(name: str, machine: str | None = None) -> int:
    """The number of system call ``name`` on ``machine`` (default: this one)."""
    machine = machine_name(machine)
    try:
        return SYSCALL_NUMBERS[machine][name]
    except KeyError:
        raise OSError(f"{name}: no system call number known for {machine}") from None


class SyscallError(OSError):
    """An OSError whose text is just ``call(arguments): reason``, without ``[Errno N]``."""

    def __str__(self) -> str:
        return self.strerror


def _check(result: int, call: str, *args: object) -> int:
    """Turn a C-style ``-1`` return into an OSError that names the call and its arguments."""
    if result == -1:
        err = ctypes.get_errno()
        shown = ", ".join(repr(a) for a in args)
        raise SyscallError(err, f"{call}({shown}): {os.strerror(err)}")
    return result


class _Flags(int):
    """An int that shows as the names of its bits, so errors read ``MS_BIND|MS_REC``."""

    def __repr__(self) -> str:
        names = [name for name, bit in MOUNT_FLAG_NAMES.items() if self & bit]
        return "|".join(names) or "0"


def _path(value: str | os.PathLike | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    """Move this process into new namespaces (unshare(2)).

    A new PID namespace is special: it applies to the children forked afterwards, not to the
    caller, which is why the runtime forks once more after unsharing.
    """
    _check(LIBC.unshare(ctypes.c_int(flags)), "unshare", hex(flags))


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open /proc/PID/ns/* file) refers to (setns(2))."""
    _check(LIBC.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", fd, hex(nstype))


def mount(
    source: str | None,
    target: str | os.PathLike,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """Attach ``source`` at ``target``, or change the flags of a mount (mount(2))."""
    result = LIBC.mount(
        _path(source),
        _path(target),
        _path(fstype),
        ctypes.c_ulong(flags),
        _path(data),
    )
    _check(result, "mount", source, os.fspath(target), fstype, _Flags(flags), data)


def umount2(target: str | os.PathLike, flags: int = 0) -> None:
    """Detach the mount at ``target`` (umount2(2)); ``MNT_DETACH`` lets busy mounts go lazily."""
    _check(LIBC.umount2(_path(target), ctypes.c_int(flags)), "umount2", os.fspath(target), flags)


def pivot_root(new_root: str | os.PathLike, put_old: str | os.PathLike) -> None:
    """Make ``new_root`` the root mount and move the old root to ``put_old`` (pivot_root(2))."""
    number = ctypes.c_long(syscall_number("pivot_root"))
    result = LIBC.syscall(number, _path(new_root), _path(put_old))
    _check(result, "pivot_root", os.fspath(new_root), os.fspath(put_old))


def sethostname(name: str) -> None:
    """Set the hostname of this process's UTS namespace (sethostname(2))."""
    encoded = name.encode()
    _check(LIBC.sethostname(encoded, ctypes.c_size_t(len(encoded))), "sethostname", name)


def datagram_socket() -> int:
    """An AF_INET datagram socket's descriptor (socket(2)), for interface ioctls.

    The :mod:`socket` module would do, but a run does without its import (its cost is a
    test's to watch, not a comment's: tests/test_imports.py).
    """
    af_inet, sock_dgram_cloexec = 2, 2 | 0o2000000  # SOCK_DGRAM | SOCK_CLOEXEC
    return _check(LIBC.socket(af_inet, sock_dgram_cloexec, 0), "socket", "AF_INET", "SOCK_DGRAM")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    """Set a per-process attribute (prctl(2)); ``arg3`` may be an address (PR_SET_SECCOMP)."""
    result = LIBC.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0)
    return _check(result, "prctl", option, arg2)


_CAP_SETS = ("effective", "permitted", "inheritable")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capget() -> tuple[int, int, int]:
    """This thread's (effective, permitted, inheritable) capability sets, as 64-bit masks."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(LIBC.capget(ctypes.byref(header), data), "capget")
    return tuple(getattr(data[0], name) | getattr(data[1], name) << 32 for name in _CAP_SETS)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets (capset(2)): bit N is capability N.

    The kernel allows only to keep or lose permitted capabilities, never to gain one;
    effective must be a subset of the new permitted set.
    """
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for word, shift in ((0, 0), (1, 32)):
        masks = (effective, permitted, inheritable)
        data[word] = _CapData(*((mask >> shift) & 0xFFFFFFFF for mask in masks))
    _check(LIBC.capset(ctypes.byref(header), data), "capset", hex(permitted))


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    """Open ``path`` relative to ``dir_fd`` under the ``RESOLVE_*`` rules (openat2(2),
    Linux 5.6+; ENOSYS before); return the new descriptor."""
    how = _OpenHow(flags, 0, resolve)
    number = ctypes.c_long(syscall_number("openat2"))
    size = ctypes.c_size_t(ctypes.sizeof(how))
    result = LIBC.syscall(number, ctypes.c_int(dir_fd), _path(path), ctypes.byref(how), size)
    return _check(result, "openat2", path)


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("set", "clr", "propagation", "userns_fd")]


def mount_setattr(dir_fd: int, path: str, flags: int, attr_set: int, attr_clr: int) -> None:
    """Set ``attr_set`` and clear ``attr_clr`` (MOUNT_ATTR_*) on the mount at ``path``
    from ``dir_fd``; with AT_RECURSIVE, on every mount below it too (mount_setattr(2))."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    number = ctypes.c_long(syscall_number("mount_setattr"))
    args = (ctypes.c_int(dir_fd), _path(path), ctypes.c_uint(flags), ctypes.byref(attr))
    result = LIBC.syscall(number, *args, ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(result, "mount_setattr", dir_fd, path, hex(flags))


def bpf(command: int, attr: ctypes.Array) -> int:
    """Run a bpf(2) command on the attribute buffer ``attr``; return its result (an fd)."""
    number = ctypes.c_long(syscall_number("bpf"))
    result = LIBC.syscall(number, ctypes.c_int(command), attr, ctypes.c_uint(len(attr)))
    return _check(result, "bpf", command)
