"""Kernel parameters of a container (config.json's ``linux.sysctl``), in its own namespaces.

A sysctl is a file under /proc/sys: ``net.ipv4.ip_forward`` is /proc/sys/net/ipv4/ip_forward
(sysctl(8)). Most of them are global to the machine, and a container must not retune the
host; only those a namespace of the container's own holds are allowed, as runc allows them
(libcontainer/configs/validate): the System V IPC limits (``kernel.msg*``, ``kernel.sem``,
``kernel.shm*``) and POSIX queues' (``fs.mqueue.*``) with a new IPC namespace,
``net.*`` with a network namespace other than the host's, ``kernel.domainname`` with a new
UTS namespace (``kernel.hostname`` has the config's ``hostname``). ``check`` refuses the
others before anything is made; ``apply`` writes the values inside the container, after
its /proc is mounted and before /proc/sys is made read-only.

Man pages: https://man7.org/linux/man-pages/man8/sysctl.8.html,
https://man7.org/linux/man-pages/man5/proc.5.html,
https://man7.org/linux/man-pages/man7/ipc_namespaces.7.html
"""

from __future__ import annotations

import os

IPC_SYSCTLS = frozenset(
    ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem")
    + ("kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")
)


class SysctlError(ValueError):
    """A sysctl of the config is not allowed, or could not be set."""


def check(sysctl: dict[str, str], namespaces: list[dict]) -> None:
    """Refuse, in one line, a sysctl that the container's ``namespaces`` (config.json's
    ``linux.namespaces``) do not make its own, or a key that is no sysctl's name."""
    kinds = {entry.get("type"): entry.get("path") for entry in namespaces}
    for key, value in sysctl.items():
        name = dotted(key)
        path(key)  # a well-formed name
        if not isinstance(value, str):
            raise SysctlError(f"linux.sysctl: the value of {key} must be a string")
        if name in IPC_SYSCTLS or name.startswith("fs.mqueue."):
            if "ipc" in kinds:
                continue
            raise SysctlError(f"linux.sysctl: {key} needs a new ipc namespace: add one")
        if name.startswith("net."):
            if "network" in kinds and not _is_own_network(kinds["network"]):
                raise SysctlError(f"linux.sysctl: {key} would change the host's network")
            if "network" in kinds:
                continue
            raise SysctlError(f"linux.sysctl: {key} needs a new network namespace: add one")
        if name == "kernel.domainname" and "uts" in kinds:
            continue
        if name == "kernel.hostname":
            raise SysctlError("linux.sysctl: set kernel.hostname with the config's hostname")
        raise SysctlError(f"linux.sysctl: {key} is not in a namespace of the container's own")


def apply(sysctl: dict[str, str], proc_sys: str = "/proc/sys") -> None:
    """Write each value to its file under ``proc_sys``, in the container's namespaces."""
    for key, value in sysctl.items():
        try:
            fd = os.open(os.path.join(proc_sys, path(key)), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        except OSError as error:
            raise SysctlError(f"cannot set sysctl {key} to {value!r}: {error.strerror}") from None


def dotted(key: str) -> str:
    """``key`` with dots between its names, as sysctl(8) reads a key whose first separator
    is "/": then a dot is part of a name (``net/ipv4/conf/eth0.100/forwarding``)."""
    if "/" in key and ("." not in key or key.index("/") < key.index(".")):
        return key.translate(str.maketrans("./", "/."))
    return key


def path(key: str) -> str:
    """The file of ``key`` under /proc/sys: ``net.ipv4.ip_forward`` -> net/ipv4/ip_forward."""
    names = [name.replace("/", ".") for name in dotted(key).split(".")]
    if any(name in ("", ".", "..") for name in names):
        raise SysctlError(f"linux.sysctl: {key!r} is not the name of a sysctl")
    return "/".join(names)


def _is_own_network(namespace_path: str | None) -> bool:
    """Whether the network namespace at ``namespace_path`` (None: a new one) is not the
    runtime's own, which is the host's."""
    if not namespace_path:
        return True
    try:
        joined, host = os.stat(namespace_path), os.stat("/proc/self/ns/net")
    except OSError:
        return True  # joining it will fail, and say why
    return (joined.st_dev, joined.st_ino) != (host.st_dev, host.st_ino)
