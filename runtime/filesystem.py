"""The container's filesystem: a private mount table whose root is the container's rootfs.

Runs inside the container's new mount namespace (mount_namespaces(7)), which
``namespaces.enter_new`` made private the moment it was created, so nothing mounted here
propagates to the host, even where systemd made ``/`` shared. Then, in this order:

1. bind-mount the rootfs onto itself, because pivot_root(2) needs a mount point;
2. mount ``/proc``, ``/sys`` (read-only) and a minimal ``/dev`` inside it, as the OCI runtime
   spec lists them (config-linux.md, "Default Filesystems" and "Default Devices");
3. pivot_root(2) into it and detach the old root, so the host's mounts are not merely hidden
   (as chroot(2) would leave them) but gone from this namespace.

Man pages: https://man7.org/linux/man-pages/man2/pivot_root.2.html,
https://man7.org/linux/man-pages/man7/mount_namespaces.7.html,
https://man7.org/linux/man-pages/man5/proc.5.html
"""

from __future__ import annotations

import errno
import os
import stat

from runtime.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_STRICTATIME,
    mount,
    pivot_root,
    umount2,
)

# The devices every container gets (OCI runtime spec, "Default Devices"): name, major, minor.
DEFAULT_DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)

# Symbolic links the runtime spec requires in /dev, pointing into the container's own /proc.
DEFAULT_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


def mount_proc(rootfs: str) -> None:
    """Mount a procfs that shows the PID namespace of the calling process (proc(5))."""
    mount("proc", _mount_point(rootfs, "proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_sys(rootfs: str, cgroup2: bool = False) -> None:
    """Mount sysfs read-only: the container may look at the kernel's objects, not change them.

    The kernel lets a user namespace's root mount a sysfs only where it owns the network
    namespace (sysfs shows its devices): elsewhere the host's /sys is bind-mounted
    instead, read-only, as runc does, its cgroup tree covered by the container's own.

    With ``cgroup2``, also mount the cgroup v2 tree, read-only, at /sys/fs/cgroup: in the
    container's cgroup namespace it shows the container's own group as its root, so the
    container can watch its limits (memory.max, memory.events, cpu.stat) but not change them.
    """
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY
    sys_dir = _mount_point(rootfs, "sys")
    try:
        mount("sysfs", sys_dir, "sysfs", flags)
    except OSError as error:  # EPERM: a user namespace's, without a network namespace it owns
        if error.errno != errno.EPERM:
            raise
        mount("/sys", sys_dir, None, MS_BIND | MS_REC)
        mount(None, sys_dir, None, MS_BIND | MS_REMOUNT | flags)
        if cgroup2:  # the host's whole tree came along: cover it (and the kernel refuses
            # to stack the same cgroup2 right on it: EBUSY)
            mount("tmpfs", os.path.join(sys_dir, "fs/cgroup"), "tmpfs", flags, "size=4k,mode=555")
    if cgroup2:
        mount_cgroup2(os.path.join(sys_dir, "fs/cgroup"))


def mount_cgroup2(path: str) -> None:
    """Mount the cgroup v2 tree read-only at ``path``, as the calling process's cgroup
    namespace shows it (cgroup_namespaces(7)): its own group is the root."""
    mount("cgroup2", path, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)


def mount_dev(rootfs: str) -> None:
    """Give the container a /dev of its own: a tmpfs holding only harmless devices.

    Bind-mounting the host's /dev would hand the container every disk on the machine. The
    kernel refuses mknod(2) to a user namespace's root, however capable inside: there each
    device is the host's node, bind-mounted alone (as runc does).
    """
    dev = _mount_point(rootfs, "dev")
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    try:
        for name, major, minor in DEFAULT_DEVICES:
            path = os.path.join(dev, name)
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            os.chmod(path, 0o666)  # mknod(2) applies the umask; the spec wants 0666
    except PermissionError:  # in a user namespace (runtime.userns), from the first one on
        for name, _, _ in DEFAULT_DEVICES:
            bind_file(os.path.join("/dev", name), rootfs, os.path.join("dev", name))
    # A devpts instance of its own, so the container cannot reach the host's terminals.
    pts = os.path.join(dev, "pts")
    os.mkdir(pts, 0o755)
    options = "newinstance,ptmxmode=0666,mode=0620"
    try:
        mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, options + ",gid=5")  # tty
    except OSError as error:  # EINVAL: a user namespace that does not map group 5
        if error.errno != errno.EINVAL:
            raise
        mount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC, options)  # the opener's group
    os.mkdir(os.path.join(dev, "shm"), 0o1777)
    shm_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    mount("shm", os.path.join(dev, "shm"), "tmpfs", shm_flags, "mode=1777,size=65536k")
    for name, target in DEFAULT_DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))


def mount_layers(layers: list[str], storage: str) -> str:
    """Stack an image's ``layers`` (top first) with a writable layer: ``storage``/root.

    overlayfs(5) merges read-only *lower* directories with one writable *upper*: a file
    the container changes is copied up, one it deletes gets a whiteout, and the image's
    layers stay untouched and shared. ``storage`` also holds upper/ and work/ (overlayfs's
    scratch space, on the same filesystem as upper). Where overlayfs cannot be mounted,
    the layers are copied into root/ instead, whiteouts applied. Returns the root.
    """
    root, upper, work = (os.path.join(storage, name) for name in ("root", "upper", "work"))
    for directory in (root, upper, work):
        os.makedirs(directory, 0o755, exist_ok=True)
    # Relative lower paths keep the mount options under their one-page limit (4096 bytes).
    parents = {os.path.dirname(path) for path in layers}
    lowers = [os.path.basename(path) for path in layers] if len(parents) == 1 else layers
    os.chdir(parents.pop() if len(parents) == 1 else "/")
    options = f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
    try:
        mount("overlay", root, "overlay", 0, options)
    except OSError as error:
        if error.errno not in (errno.ENODEV, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        from runtime.layer import copy_layers  # the rare fallback: import it only then

        copy_layers(layers, root)
    return root


def pivot_into(rootfs: str) -> None:
    """Make ``rootfs`` this mount namespace's root and detach the old root.

    We use the ``pivot_root(".", ".")`` form that pivot_root(2) describes: the old root ends
    up stacked on top of the new one at "/", and one lazy unmount removes it. Unlike the
    classic ``put_old`` directory, this writes nothing into the rootfs, so two containers
    can share one rootfs directory.
    """
    os.chdir(rootfs)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")


def enter_rootfs(rootfs: str, cgroup2: bool = False, files: dict[str, str] | None = None) -> None:
    """Steps 1 to 3 of this module's docstring: after this, "/" is ``rootfs``.

    ``files`` maps paths in the container to host files bind-mounted there before the pivot
    (the network's /etc/hosts, /etc/hostname and /etc/resolv.conf).
    """
    mount(rootfs, rootfs, None, MS_BIND | MS_REC)
    mount_proc(rootfs)
    mount_sys(rootfs, cgroup2)
    mount_dev(rootfs)
    for target, source in (files or {}).items():
        bind_file(source, rootfs, target)
    pivot_into(rootfs)


def bind_file(source: str, rootfs: str, target: str) -> None:
    """Bind-mount the host file ``source`` over ``target`` in ``rootfs`` (mount(2), MS_BIND).

    A bind mount can cover a single file: the container sees ``source`` at ``target``, and
    the image's own file stays untouched underneath. A missing ``target`` (or its directory)
    is created empty, as a mount point. A symbolic link on the way is refused: before
    pivot_root, an absolute one would resolve against the host's root.
    """
    path = rootfs
    for name in target.strip("/").split("/"):
        path = os.path.join(path, name)
        if os.path.islink(path):
            raise OSError(f"refusing to mount on {path}: it is a symbolic link")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
    mount(source, path, None, MS_BIND)


def _mount_point(rootfs: str, name: str) -> str:
    """``rootfs/name``, created if the rootfs lacks it (as runc does)."""
    path = os.path.join(rootfs, name)
    if os.path.islink(path):
        raise OSError(f"refusing to mount on {path}: it is a symbolic link")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OSError(f"the image's /{name} is not a directory: it cannot be mounted on")
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path
