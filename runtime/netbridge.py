"""The bridge network's plumbing: a bridge, veth pairs, addresses, routes.

Two interfaces to the kernel's network configuration, each where it is the simpler one:

* ``ip`` (iproute2, ip-link(8)) for what only netlink can do (netlink(7), rtnetlink(7)):
  create a bridge, create a veth pair with one end in another namespace, delete a link. Its
  arguments are the very commands the man page and the chapter show, as nft's are in
  :mod:`runtime.netfilter`; one run of ``ip`` takes ~3 ms, where importing a netlink library
  for Python (pyroute2) took ~130 ms, more than all the rest of ``mycontainer run``.
* ioctls on a socket (:mod:`runtime.netdevice`) for one interface's flags, address and
  route: no program at all, so the container's side costs microseconds.

A container's run makes one ``ip`` call and, once it is over, one more to delete its veth;
the bridge is made by the first run only (see :mod:`runtime.network`).

Man pages: https://man7.org/linux/man-pages/man8/ip-link.8.html,
https://man7.org/linux/man-pages/man4/veth.4.html,
https://man7.org/linux/man-pages/man8/ip-address.8.html,
https://man7.org/linux/man-pages/man3/posix_spawn.3.html
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Interface, IPv4Network, ip_network

from runtime import netdevice
from runtime.syscalls import datagram_socket


class LinkError(Exception):
    """The bridge or a veth pair could not be set up; the message says what to do."""


def mac_for(address: str) -> str:
    """A locally administered MAC address made of an IPv4 one: 10.199.0.2 -> 02:6d:0a:c7:00:02.

    An address is reused as soon as its container ends. With a MAC address of its own, the
    next container would be unreachable until the neighbours' ARP caches forget the old one;
    deriving the MAC from the IP address (as docker does) keeps the pair stable.
    """
    return "02:6d:" + ":".join(f"{int(byte):02x}" for byte in address.split("."))


def bridge_ready(name: str, gateway: IPv4Interface) -> bool:
    """Is bridge ``name`` there, up, with address ``gateway``? Three ioctls, no program."""
    sock = datagram_socket()
    try:
        return (
            netdevice.exists(sock, name)
            and netdevice.flags(sock, name) & netdevice.IFF_UP != 0
            and netdevice.ipv4(sock, name) == (str(gateway.ip), gateway.network.prefixlen)
        )
    finally:
        os.close(sock)


def ensure_bridge(name: str, gateway: IPv4Interface) -> None:
    """Create bridge ``name`` with address ``gateway`` (e.g. 10.199.0.1/16), unless it exists.

    A new bridge's subnet must not overlap a route the host already has: packets for those
    addresses would then go two ways. An existing one must have ``gateway``.
    """
    sock = datagram_socket()
    try:
        if not netdevice.exists(sock, name):
            _check_no_overlap(gateway.network)
            try:
                ip("link", "add", name, "address", mac_for(str(gateway.ip)), "type", "bridge")
            except LinkError as error:
                if "File exists" not in str(error):  # else another runtime just made it
                    raise
        have = netdevice.ipv4(sock, name)
        if have is None:
            ip("address", "add", str(gateway), "dev", name)
        elif have != (str(gateway.ip), gateway.network.prefixlen):
            raise LinkError(
                f"bridge {name} has address {have[0]}/{have[1]}, not {gateway}: run 'mycontainer "
                "prune' with no container running to remove it, or set MYCONTAINER_SUBNET to match"
            )
        netdevice.bring_up(sock, name)
    finally:
        os.close(sock)


def _check_no_overlap(subnet: IPv4Network) -> None:
    """Refuse ``subnet`` if a route of this host's main table overlaps it (``ip route``)."""
    import subprocess  # the first run only: every other run finds the bridge

    listed = subprocess.run(["ip", "-j", "-4", "route", "show"], capture_output=True, text=True)
    if listed.returncode:
        raise LinkError(f"ip route show: {listed.stderr.strip() or listed.returncode}")
    for route in json.loads(listed.stdout or "[]"):
        if route["dst"] == "default":
            continue  # a default route covers everything; it does not claim the subnet
        routed = ip_network(route["dst"], strict=False)
        if routed.overlaps(subnet):
            raise LinkError(
                f"subnet {subnet} overlaps the route to {routed} (dev {route.get('dev', '?')}) on "
                "this host: choose another one with MYCONTAINER_SUBNET, e.g. "
                "MYCONTAINER_SUBNET=10.200.0.0/16"
            )


def connect(pid: int, host_end: str, bridge: str, address: IPv4Interface, gateway: str) -> None:
    """Give the network namespace of process ``pid`` an ``eth0`` on ``bridge``.

    One ``veth`` pair (veth(4)) is a virtual cable: what goes in one end comes out of the
    other. One ``ip link add`` creates it with one end, ``host_end``, here, up and plugged
    into the bridge, and the other end, ``eth0``, straight in the container's namespace
    (``netns PID``), with a MAC address of its IP address. Then, from inside, ioctls give
    ``eth0`` its ``address``, bring it up, and add a default route via the bridge's address,
    ``gateway``.
    """
    ip("link", "add", host_end, "up", "master", bridge, "type", "veth",
       "peer", "name", "eth0", "address", mac_for(str(address.ip)), "netns", str(pid))  # fmt: skip
    inside = netdevice.socket_in(pid)
    try:
        netdevice.set_ipv4(inside, "eth0", str(address.ip), address.network.prefixlen)
        netdevice.bring_up(inside, "eth0")
        netdevice.add_default_route(inside, gateway)
    finally:
        os.close(inside)


def delete_link(name: str) -> None:
    """Delete link ``name`` if it exists; deleting one end of a veth pair deletes both.

    A veth whose other end was in a namespace that ended goes with it; the kernel does that
    a little after the last process of the namespace exits, hence the check, and a link
    gone between the check and ``ip link del`` is no error either.
    """
    sock = datagram_socket()
    try:
        if not netdevice.exists(sock, name):
            return
    finally:
        os.close(sock)
    try:
        ip("link", "del", name)
    except LinkError as error:
        if "Cannot find device" not in str(error):
            raise


def ip(*args: str) -> None:
    """Run ``ip ARGS`` to completion; LinkError with the first line ip wrote if it fails.

    posix_spawn(3) rather than the subprocess module, which takes longer to import than
    ``ip`` takes to run; ip's output goes to /dev/null, its errors to a pipe we read.
    """
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawnp(
            "ip",
            ["ip", *args],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, write_end, 2),
            ],
        )
    except FileNotFoundError:
        os.close(read_end)
        raise LinkError("ip not found: install iproute2") from None
    finally:
        os.close(write_end)
    with open(read_end, "rb") as pipe:
        errors = pipe.read().decode(errors="replace").strip()
    _, status = os.waitpid(pid, 0)
    if status:
        reason = errors.splitlines()[0] if errors else f"status {os.waitstatus_to_exitcode(status)}"
        raise LinkError(f"ip {' '.join(args)}: {reason}")
