"""Kernel parameters of a container (config.json's ``linux.sysctl``), in its own namespaces.

A sysctl is a file under /proc/sys: ``net.ipv4.ip_forward`` is /proc/sys/net/ipv4/ip_forward
(sysctl(8)). Most of them are global to the machine, and a container must not retune the
host: ``runtime.spec`` allows only those that a namespace of the container's own holds, as
runc does (the IPC limits, ``fs.mqueue.*``, ``net.*``, the UTS names). ``apply`` writes
them inside the container, after its /proc is mounted and before /proc/sys is made
read-only, where the container's namespaces are the ones its /proc/sys shows.

Man pages: https://man7.org/linux/man-pages/man8/sysctl.8.html,
https://man7.org/linux/man-pages/man5/proc.5.html,
https://man7.org/linux/man-pages/man7/ipc_namespaces.7.html
"""

from __future__ import annotations

import os


class SysctlError(ValueError):
    """A sysctl could not be set."""


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


def _dotted(key: str) -> str:
    """``key`` with dots between its names, as sysctl(8) reads a key whose first separator
    is "/": then a dot is part of a name (``net/ipv4/conf/eth0.100/forwarding``)."""
    if "/" in key and ("." not in key or key.index("/") < key.index(".")):
        return key.translate(str.maketrans("./", "/."))
    return key


def path(key: str) -> str:
    """The file of ``key`` under /proc/sys: ``net.ipv4.ip_forward`` -> net/ipv4/ip_forward."""
    names = [name.replace("/", ".") for name in _dotted(key).split(".")]
    if any(name in ("", ".", "..") for name in names):
        raise SysctlError(f"linux.sysctl: {key!r} is not the name of a sysctl")
    return "/".join(names)
