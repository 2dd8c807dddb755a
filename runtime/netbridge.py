"""The bridge network's plumbing, over netlink: a bridge, veth pairs, addresses, routes.

Every change to the kernel's network configuration, links, addresses and routes, is a
message on a netlink socket (netlink(7), rtnetlink(7)); ``ip link`` and ``ip addr`` are
clients of it, and so is pyroute2, which this module uses. It is imported only for
``--net bridge``: pyroute2 takes ~150 ms to import, more than the rest of ``mycontainer run``.

A netlink socket talks to the network namespace it was *created* in, wherever it is used
afterwards. So to configure a container's network from the outside, we join its namespace
with setns(2) just long enough to open a socket there (:func:`_socket_in`).

Man pages: https://man7.org/linux/man-pages/man7/rtnetlink.7.html,
https://man7.org/linux/man-pages/man4/veth.4.html,
https://man7.org/linux/man-pages/man8/ip-link.8.html (``ip link add ... type bridge``)
"""

from __future__ import annotations

import errno
import os
import socket
from ipaddress import IPv4Interface, IPv4Network, ip_network

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from runtime.syscalls import CLONE_NEWNET, setns


class LinkError(Exception):
    """The bridge or a veth pair could not be set up; the message says what to do."""


def mac_for(address: str) -> str:
    """A locally administered MAC address made of an IPv4 one: 10.199.0.2 -> 02:6d:0a:c7:00:02.

    An address is reused as soon as its container ends. With a MAC address of its own, the
    next container would be unreachable until the neighbours' ARP caches forget the old one;
    deriving the MAC from the IP address (as docker does) keeps the pair stable.
    """
    return "02:6d:" + ":".join(f"{int(byte):02x}" for byte in address.split("."))


def ensure_bridge(name: str, gateway: IPv4Interface) -> None:
    """Create bridge ``name`` with address ``gateway`` (e.g. 10.199.0.1/16), unless it exists.

    A new bridge's subnet must not overlap a route the host already has: packets for those
    addresses would then go two ways. An existing one must have ``gateway``.
    """
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            _check_no_overlap(ipr, gateway.network)
            try:
                ipr.link("add", ifname=name, kind="bridge", address=mac_for(str(gateway.ip)))
            except NetlinkError as error:
                if error.code != errno.EEXIST:  # else another runtime just made it
                    raise LinkError(f"cannot create bridge {name}: {error.args[1]}") from None
            found = ipr.link_lookup(ifname=name)
        index = found[0]
        addresses = {
            (message.get("IFA_ADDRESS"), message["prefixlen"])
            for message in ipr.get_addr(index=index, family=socket.AF_INET)
        }
        if not addresses:
            ipr.addr(
                "add", index=index, address=str(gateway.ip), prefixlen=gateway.network.prefixlen
            )
        elif (str(gateway.ip), gateway.network.prefixlen) not in addresses:
            have = ", ".join(f"{address}/{length}" for address, length in sorted(addresses))
            raise LinkError(
                f"bridge {name} has address {have}, not {gateway}: run 'mycontainer prune' "
                "with no container running to remove it, or set MYCONTAINER_SUBNET to match"
            )
        ipr.link("set", index=index, state="up")


def _check_no_overlap(ipr: IPRoute, subnet: IPv4Network) -> None:
    names = {link["index"]: link.get("IFLA_IFNAME") for link in ipr.get_links()}
    for route in ipr.get_routes(family=socket.AF_INET):
        length = route["dst_len"]
        if length == 0:
            continue  # a default route covers everything; it does not claim the subnet
        routed = ip_network(f"{route.get('RTA_DST')}/{length}", strict=False)
        if routed.overlaps(subnet):
            device = names.get(route.get("RTA_OIF"), "?")
            raise LinkError(
                f"subnet {subnet} overlaps the route to {routed} (dev {device}) on this host: "
                "choose another one with MYCONTAINER_SUBNET, e.g. MYCONTAINER_SUBNET=10.200.0.0/16"
            )


def connect(pid: int, host_end: str, bridge: str, address: IPv4Interface, gateway: str) -> None:
    """Give the network namespace of process ``pid`` an ``eth0`` on ``bridge``.

    One ``veth`` pair (veth(4)) is a virtual cable: what goes in one end comes out of the
    other. We create it with one end, ``host_end``, here, plugged into the bridge, and the
    other end, ``eth0``, straight in the container's namespace; then, from inside, give
    ``eth0`` its ``address`` and a default route via the bridge's address, ``gateway``.
    """
    with IPRoute() as ipr:
        bridge_index = ipr.link_lookup(ifname=bridge)[0]
        peer = {"ifname": "eth0", "net_ns_pid": pid, "address": mac_for(str(address.ip))}
        ipr.link("add", ifname=host_end, kind="veth", peer=peer)
        (index,) = ipr.link_lookup(ifname=host_end)
        ipr.link("set", index=index, master=bridge_index, state="up")
    with _socket_in(pid) as inside:
        (eth0,) = inside.link_lookup(ifname="eth0")
        inside.addr("add", index=eth0, address=str(address.ip), prefixlen=address.network.prefixlen)
        inside.link("set", index=eth0, state="up")
        inside.route("add", dst="0.0.0.0/0", gateway=gateway)


def _socket_in(pid: int) -> IPRoute:
    """A netlink socket in the network namespace of ``pid`` (this thread returns home at once)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target, CLONE_NEWNET)
        try:
            return IPRoute()
        finally:
            setns(home, CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def delete_link(name: str) -> None:
    """Delete link ``name`` if it exists; deleting one end of a veth pair deletes both."""
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=name):
            try:
                ipr.link("del", index=index)
            except NetlinkError as error:
                if error.code != errno.ENODEV:  # gone meanwhile, with its namespace
                    raise
