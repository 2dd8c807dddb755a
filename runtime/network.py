"""The container's network.

A new network namespace starts with a single interface, ``lo``, and even that is down
(network_namespaces(7)). Bringing it up gives the container docker's ``--network none``:
127.0.0.1 works, nothing else is reachable.

We flip the flag with two ioctls on an ordinary socket (netdevice(7)) rather than netlink:
it is one interface and one bit, and it keeps ``mycontainer run`` from importing a netlink
library on its hot path.

Man pages: https://man7.org/linux/man-pages/man7/network_namespaces.7.html,
https://man7.org/linux/man-pages/man7/netdevice.7.html
"""

from __future__ import annotations

import fcntl
import socket
import struct

SIOCGIFFLAGS = 0x8913  # get an interface's flags, <linux/sockios.h>
SIOCSIFFLAGS = 0x8914  # set them
IFF_UP = 0x1  # <net/if.h>

# struct ifreq: a 16-byte interface name, then a union whose first member we use as flags;
# the union is 24 bytes on 64-bit kernels, which the padding keeps.
_IFREQ = struct.Struct("16sH22x")


def bring_up(interface: str = "lo") -> None:
    """Set IFF_UP on ``interface`` in this process's network namespace."""
    name = interface.encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        reply = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(name, 0))
        flags = _IFREQ.unpack(reply)[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(name, flags | IFF_UP))
