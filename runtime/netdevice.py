"""One network interface, configured with ioctls on an ordinary socket (netdevice(7)).

Before netlink, ``ifconfig`` and ``route`` configured interfaces with a handful of ioctls,
and the kernel still answers them: bring a link up, give it an IPv4 address and netmask, add
a route. They take no library and no program, only a socket and ``struct ifreq``, so the
container's side of its network costs microseconds. What they cannot do, making a bridge or a
veth pair, is netlink's, which :mod:`runtime.netbridge` asks of ``ip``.

An ioctl acts on the network namespace its socket was *created* in, wherever it is used
afterwards (network_namespaces(7)): :func:`socket_in` joins a container's namespace just
long enough for one socket(2), and every call here takes the socket to use.

Man pages: https://man7.org/linux/man-pages/man7/netdevice.7.html,
https://man7.org/linux/man-pages/man8/route.8.html (SIOCADDRT, ``struct rtentry`` in
<linux/route.h>), https://man7.org/linux/man-pages/man7/network_namespaces.7.html
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from runtime.syscalls import CLONE_NEWNET, datagram_socket, setns

# <linux/sockios.h>, the same on every architecture
SIOCADDRT = 0x890B  # add a route (struct rtentry)
SIOCGIFFLAGS = 0x8913  # get an interface's flags
SIOCSIFFLAGS = 0x8914  # set them
SIOCGIFADDR = 0x8915  # get its IPv4 address
SIOCSIFADDR = 0x8916  # set it
SIOCGIFNETMASK = 0x891B  # get its netmask
SIOCSIFNETMASK = 0x891C  # set it
IFF_UP = 0x1  # <net/if.h>
RTF_UP, RTF_GATEWAY = 0x1, 0x2  # <linux/route.h>: a usable route, through a gateway
AF_INET = 2

# struct ifreq: a 16-byte interface name, then a 24-byte union (on 64-bit kernels) of which
# we use the flags (a short) or an address (a struct sockaddr_in: family, port, 4 bytes).
_IFREQ_FLAGS = struct.Struct("16sH22x")
_IFREQ_ADDRESS = struct.Struct("16s16s8x")
_SOCKADDR_IN = struct.Struct("=HH4s8x")
# struct rtentry, native layout (LP64: x86_64 and aarch64): pad, destination, gateway,
# netmask, flags, pad, pad, pad, metric, device, mtu, window, irtt, and trailing padding.
_RTENTRY = struct.Struct("@L16s16s16sHhLPhPLLH0L")


def flags(sock: int, name: str) -> int:
    """The flags of interface ``name`` (IFF_UP...); OSError ENODEV if there is none."""
    reply = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ_FLAGS.pack(name.encode(), 0))
    return _IFREQ_FLAGS.unpack(reply)[1]


def exists(sock: int, name: str) -> bool:
    try:
        flags(sock, name)
    except OSError as error:
        if error.errno == errno.ENODEV:
            return False
        raise
    return True


def bring_up(sock: int, name: str) -> None:
    """Set IFF_UP on interface ``name`` (``ip link set NAME up``)."""
    fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ_FLAGS.pack(name.encode(), flags(sock, name) | IFF_UP))


def ipv4(sock: int, name: str) -> tuple[str, int] | None:
    """The primary IPv4 address of ``name`` and its prefix length, or None if it has none."""
    try:
        address = _get_address(sock, SIOCGIFADDR, name)
    except OSError as error:
        if error.errno == errno.EADDRNOTAVAIL:
            return None
        raise
    mask = _get_address(sock, SIOCGIFNETMASK, name)
    prefixlen = bin(int.from_bytes(bytes(map(int, mask.split("."))), "big")).count("1")
    return address, prefixlen


def set_ipv4(sock: int, name: str, address: str, prefixlen: int) -> None:
    """Give ``name`` the IPv4 ``address``/``prefixlen`` (``ip addr add`` of the first address).

    SIOCSIFADDR gives it the netmask of its old address class (/8 for 10.x.x.x), which
    SIOCSIFNETMASK then narrows; both happen before the interface is up.
    """
    _set_address(sock, SIOCSIFADDR, name, address)
    mask = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF
    _set_address(sock, SIOCSIFNETMASK, name, ".".join(str(b) for b in mask.to_bytes(4, "big")))


def add_default_route(sock: int, gateway: str) -> None:
    """``ip route add default via GATEWAY``: destination and netmask 0.0.0.0, through
    ``gateway``; the kernel picks the interface that reaches it."""
    anywhere = _sockaddr("0.0.0.0")
    route = _RTENTRY.pack(
        0, anywhere, _sockaddr(gateway), anywhere, RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0
    )
    fcntl.ioctl(sock, SIOCADDRT, route)


def socket_in(pid: int) -> int:
    """A datagram socket in the network namespace of ``pid``, for the calls above.

    setns(2) moves this thread there for the time of one socket(2) call, then back home.
    """
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target, CLONE_NEWNET)
        try:
            return datagram_socket()
        finally:
            setns(home, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def _sockaddr(address: str) -> bytes:
    return _SOCKADDR_IN.pack(AF_INET, 0, bytes(map(int, address.split("."))))


def _get_address(sock: int, request: int, name: str) -> str:
    reply = fcntl.ioctl(sock, request, _IFREQ_ADDRESS.pack(name.encode(), b""))
    return ".".join(map(str, _SOCKADDR_IN.unpack(_IFREQ_ADDRESS.unpack(reply)[1])[2]))


def _set_address(sock: int, request: int, name: str, address: str) -> None:
    fcntl.ioctl(sock, request, _IFREQ_ADDRESS.pack(name.encode(), _sockaddr(address)))
