"""The container's filesystem: a private mount table whose root is the container's rootfs.

Runs inside the container's new mount namespace (mount_namespaces(7)), which
``namespaces.enter_new`` made private the moment it was created, so nothing mounted here
propagates to the host, even where systemd made ``/`` shared. Then, in this order:

1. bind-mount the rootfs onto itself, because pivot_root(2) needs a mount point;
2. mount the config's ``mounts`` inside it, in order (``runtime.mounts``): docker's are
   ``DEFAULT_MOUNTS``, a /proc, a read-only /sys and a minimal /dev among them, as the OCI
   runtime spec lists them (config-linux.md, "Default Filesystems");
3. make the device nodes in /dev, the spec's ("Default Devices") and the config's, and
   its links, unless /dev is a bind mount of the host's;
4. pivot_root(2) into it and detach the old root, so the host's mounts are not merely hidden
   (as chroot(2) would leave them) but gone from this namespace;
5. with ``root.readonly``, remount "/" read-only; with ``linux.rootfsPropagation``, give
   "/" that propagation (mount_namespaces(7), "Shared subtrees").

Man pages: https://man7.org/linux/man-pages/man2/pivot_root.2.html,
https://man7.org/linux/man-pages/man7/mount_namespaces.7.html,
https://man7.org/linux/man-pages/man2/mknod.2.html,
https://man7.org/linux/man-pages/man5/proc.5.html
"""

from __future__ import annotations

import errno
import os
import stat

from runtime import mounts as config_mounts
from runtime import rootpath
from runtime.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    mount,
    pivot_root,
    umount2,
)


def _entry(destination: str, kind: str, source: str, options: str) -> dict:
    """A mount in config.json's form; ``options`` comma-separated, as mount(8) takes them."""
    return {
        "destination": destination,
        "type": kind,
        "source": source,
        "options": options.split(","),
    }


# docker's default mounts (moby's oci/defaults.go), in config.json's form. /sys is
# read-only: writing to it could reconfigure the host's hardware. /dev is not the host's
# (that would hand the container every disk of the machine) but a small tmpfs.
DEFAULT_MOUNTS = (
    _entry("/proc", "proc", "proc", "nosuid,noexec,nodev"),
    _entry("/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro"),
    _entry("/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k"),
    # A devpts instance of its own, so the container cannot reach the host's terminals.
    _entry(
        "/dev/pts", "devpts", "devpts", "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5"
    ),
    _entry("/dev/shm", "tmpfs", "shm", "nosuid,noexec,nodev,mode=1777,size=65536k"),
    _entry("/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev"),
    # Its own groups, read-only: it may watch its limits and usage, not change them.
    _entry("/sys/fs/cgroup", "cgroup", "cgroup", "ro,nosuid,noexec,nodev"),
)

# The devices every container gets (OCI runtime spec, "Default Devices"), in config.json's
# form (linux.devices): "c" is a character device.
DEFAULT_DEVICES = (
    {"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
    {"path": "/dev/zero", "type": "c", "major": 1, "minor": 5},
    {"path": "/dev/full", "type": "c", "major": 1, "minor": 7},
    {"path": "/dev/random", "type": "c", "major": 1, "minor": 8},
    {"path": "/dev/urandom", "type": "c", "major": 1, "minor": 9},
    {"path": "/dev/tty", "type": "c", "major": 5, "minor": 0},
)

# Symbolic links the runtime spec requires in /dev, pointing into the container's own /proc.
DEFAULT_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)

# linux.devices' types: c and u (unbuffered) are character devices, b block, p a FIFO.
DEVICE_TYPES = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}


def enter_rootfs(
    rootfs: str,
    mounts=DEFAULT_MOUNTS,
    devices=(),
    readonly: bool = False,
    propagation: str | None = None,
    files: dict[str, str] | None = None,
) -> None:
    """Steps 1 to 5 of this module's docstring: after this, "/" is ``rootfs``.

    ``mounts`` and ``devices`` are config.json's ``mounts`` and ``linux.devices``;
    ``readonly`` and ``propagation``, its ``root.readonly`` and ``linux.rootfsPropagation``.
    ``files`` maps paths in the container to host files bind-mounted there after the
    mounts (the network's /etc/hosts, /etc/hostname and /etc/resolv.conf).
    """
    mount(rootfs, rootfs, None, MS_BIND | MS_REC)
    root = os.open(rootfs, rootpath.DIRECTORY)
    try:
        binds = [{"destination": path, "source": source, "options": ["bind"]}
                 for path, source in (files or {}).items()]  # fmt: skip
        config_mounts.apply(root, [*mounts, *binds])
        if not any(_binds_dev(entry) for entry in mounts):
            make_devices(root, devices)
    finally:
        os.close(root)
    pivot_into(rootfs)
    if readonly:
        config_mounts.remount("/", config_mounts.mount_flags("/") | MS_RDONLY, bind=True)
    if propagation:
        mount(None, "/", None, config_mounts.PROPAGATION[propagation])


def make_devices(root: int, devices=()) -> None:
    """Make the spec's default devices and ``devices`` (linux.devices; one at the path of a
    default replaces it) inside directory ``root`` (a descriptor), then /dev's links."""
    for device in {device["path"]: device for device in (*DEFAULT_DEVICES, *devices)}.values():
        try:
            make_device(root, device)
        except config_mounts.MountError:
            raise
        except OSError as error:
            reason = str(error) if isinstance(error, rootpath.PathError) else error.strerror
            message = f"cannot make device {device['path']}: {reason}"
            raise config_mounts.MountError(error.errno, message) from None
    dev = rootpath.open_beneath(root, "/dev", "directory")
    try:
        for name, target in DEFAULT_DEV_LINKS:
            try:
                os.symlink(target, name, dir_fd=dev)
            except FileExistsError:
                pass  # the image's own /dev has it: runc leaves it too
    finally:
        os.close(dev)


def make_device(root: int, device: dict) -> None:
    """Make the node of ``device`` (an entry of linux.devices) with mknod(2), inside
    directory ``root``: its type, major and minor, ``fileMode`` (default 0666, not
    narrowed by the umask), owner ``uid`` and ``gid``. A file already there stays.

    The kernel refuses mknod(2) to a user namespace's root, however capable inside: there
    the host's node at the same path is bind-mounted instead, as runc does."""
    path = device["path"]
    kind = DEVICE_TYPES.get(device.get("type"))
    if kind is None:
        raise config_mounts.MountError(
            errno.EINVAL, f"device {path}: its type must be c, u, b or p"
        )
    mode = device.get("fileMode", 0o666) & 0o7777
    number = 0 if kind == stat.S_IFIFO else os.makedev(device["major"], device["minor"])
    parent = rootpath.open_beneath(root, os.path.dirname(path), "directory")
    name = os.path.basename(path)
    try:
        try:
            os.mknod(name, kind | mode, number, dir_fd=parent)
        except FileExistsError:
            return
        except PermissionError:  # in a user namespace (runtime.userns)
            _bind_host_device(root, path)
            return
        os.chmod(name, mode, dir_fd=parent)  # mknod(2) applies the umask; the spec does not
        uid, gid = device.get("uid", 0), device.get("gid", 0)
        os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(parent)


def mount_cgroup2(path: str) -> None:
    """Mount the cgroup v2 tree read-only at ``path``, as the calling process's cgroup
    namespace shows it (cgroup_namespaces(7)): its own group is the root."""
    mount("cgroup2", path, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)


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


def _bind_host_device(root: int, path: str) -> None:
    """Bind-mount the host's device node ``path`` at ``path`` inside directory ``root``."""
    if not os.path.exists(path):
        raise OSError(errno.ENOENT, f"no {path} on the host to bind (mknod is refused here)")
    target = rootpath.open_beneath(root, path, "file")
    try:
        mount(path, f"/proc/self/fd/{target}", None, MS_BIND)
    finally:
        os.close(target)


def _binds_dev(entry: dict) -> bool:
    """Whether mount ``entry`` binds a host directory at /dev: then the devices are the
    host's, and none is made (as runc decides)."""
    options = entry.get("options") or ()
    bind = entry.get("type") == "bind" or "bind" in options or "rbind" in options
    return bind and os.path.normpath(entry["destination"]) == "/dev"
