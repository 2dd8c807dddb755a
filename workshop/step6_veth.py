# Step 6, for you to write: the TODOs say what to do and which man page to read.
# (skeleton 1bc73e88d59b, made from steps/step6_veth.py by python -m workshop.make)
# ruff: noqa: F401, F841 (what the TODOs need is imported; some of it is yet unused)
"""Step 6: a network of its own, with a network namespace, a veth pair and a bridge.

Adds CLONE_NEWNET to step 5: the container starts with nothing but a loopback interface.
While its init waits at the gate, the step plugs it in from the host's side: a bridge
(``mycontainer0``, 10.199.0.1/16, made once), a veth pair with one end on the bridge and the
other, ``eth0``, in the container's namespace, an address from the runtime's allocator, a
default route via the bridge, IPv4 forwarding and NAT out of the subnet; ``-p 8080:80``
publishes a port. Afterwards the veth, the address and the published ports are released;
the bridge and the NAT rule stay for the next container ('mycontainer prune' removes them).
Try it in a network namespace of its own, so that your machine's network stays as it is:
``sudo unshare --net .venv/bin/python -m workshop.step6_veth busybox
-- sh -c 'ip addr; ip route; ping -c 1 10.199.0.1'``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

import workshop
from runtime import cgroups, container, image, namespaces, network, state
from steps import common

step4_cgroups = workshop.previous("step4_cgroups")  # yours, or the solution's
step5_image = workshop.previous("step5_image")  # yours, or the solution's

NAMESPACES = workshop.Todo(
    "TODO step 6: step 5's namespaces and a new network one, CLONE_NEWNET (network_namespaces(7))"
)


def setup(hostname: str, layers: list[str], storage: str, cgroup_v2: bool) -> None:
    """Step 5's setup, and ``lo`` up; the rest of the network is configured from outside,
    once this is done (see bridge_network)."""
    step5_image.setup(hostname, layers, storage, cgroup_v2)
    raise NotImplementedError(
        "TODO step 6: bring the new namespace's loopback interface up (ip-link(8), netdevice(7))"
    )


def add_publish_option(parser) -> None:
    parser.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        type=common.checked(network.parse_publish),
        help="HOST_PORT:CONTAINER_PORT[/tcp|udp], repeatable",
    )


@contextlib.contextmanager
def bridge_network(publish: list[str]):
    """The bridge, NAT, and an address for the container's eth0, leased now; its
    ``connect(pid)`` makes the veth pair, the address and the route, while the container
    waits at its gate. All but the bridge and NAT are released afterwards."""
    # The address lease lives in a state directory beside mycontainer's containers, so the
    # allocator sees both; locked, like theirs, so that a prune leaves it alone while we run.
    name = f"step6-{os.getpid()}"
    found, lock = state.make(container.state_root(), name, {"autoremove": True})
    net = None
    try:
        net = network.Network("bridge", publish, found.directory, name)
        raise NotImplementedError(
            "TODO step 6: make sure the bridge and its NAT exist, and lease eth0 an address "
            "(net.lease: ip-link(8) type bridge, nft(8) masquerade); print what it will be"
        )
        yield net
    finally:
        if net:
            net.release()  # the veth (if the namespace has not taken it along), ports, lease
        state.remove(found)
        os.close(lock)


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__)
    step5_image.add_image_argument(parser)
    step4_cgroups.add_limit_options(parser)
    add_publish_option(parser)
    options = common.parse(parser, argv, command_required=False)
    try:
        layers, command = step5_image.find_image(options.image, options.command)
        with (
            bridge_network(options.publish) as net,
            step4_cgroups.cgroup(options.memory, options.cpu_weight, options.pids_limit) as group,
            step5_image.writable_layer() as storage,
        ):
            v2 = group.layout.uses_v2
            inside = functools.partial(setup, options.hostname, layers, storage, v2)
            raise NotImplementedError(
                "TODO step 6: run it; while it waits at its gate, plug it in: a veth pair "
                "(veth(4)), eth0 in its namespace, an address, a route (net.connect as ready)"
            )
    except (
        image.ImageError,
        cgroups.CgroupError,
        network.NetworkError,
        container.ContainerError,
    ) as error:
        return common.failed(error)


if __name__ == "__main__":
    sys.exit(main())
