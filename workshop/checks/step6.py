"""Step 6's checks: a packet goes through the veth to the bridge, and the container has a
network of its own (eth0 and lo, nothing of the host's).

The sandbox (sandbox.SANDBOX) has a network namespace of its own: the bridge, the NAT rule
and the veth the step makes live and die there, and this machine's network stays as it is."""

from __future__ import annotations

from workshop.checks import step1
from workshop.checks.check import Check

scene = step1.scene
PING = 'gw=$(ip route | awk "/^default/ {print \\$3}"); ping -c 1 -W 5 ${gw:-10.199.0.1}'


def packet_through_veth(program, _scene) -> str | None:
    result = program.run(f"step busybox -- sh -c '{PING}'")
    if result.code == 0 and " 1 packets received" in result.out:
        return None
    if "packets transmitted" in result.out:
        return "ping got no answer from the bridge, the container's default gateway"
    return result.seen("the container could not ping its gateway (no eth0, no default route?)")


def own_network(program, _scene) -> str | None:
    result = program.run("step busybox -- ls /sys/class/net")
    names = sorted(result.out.split())
    if result.code == 0 and names == ["eth0", "lo"]:
        return None
    if result.code == 0 and "eth0" not in names:
        return f"the container has no eth0: it sees {' '.join(names) or 'no interface'}"
    if result.code == 0:
        return f"the container sees the interfaces {' '.join(names)}, not eth0 and lo only"
    return result.seen("the container's interfaces could not be listed")


def loopback_up(program, _scene) -> str | None:
    result = program.run("step busybox -- cat /sys/class/net/lo/flags")
    flags = result.last_line()
    if result.code == 0 and flags.startswith("0x") and int(flags, 16) & 1:
        return None  # IFF_UP
    if result.code == 0 and flags.startswith("0x"):
        return "the container's lo is down: 127.0.0.1 reaches nothing inside"
    return result.seen("the container's lo could not be read")


CHECKS = [
    Check(
        "packet-through-veth",
        "a packet from the container reaches the bridge through the veth",
        packet_through_veth,
        (
            "A new network namespace has only lo (network_namespaces(7)). A veth pair is a "
            "cable (veth(4)): one end goes into the container as eth0, the other joins a "
            "bridge on the host, the container's gateway; this is done from outside, while "
            "the container waits at its gate.",
            "runtime.network.Network(...).lease() picks an address, makes the bridge and NAT; "
            "its connect(pid) makes the veth pair, moves eth0 into the namespace of pid, "
            "gives it the address and the default route. Pass it to step4_cgroups.run as "
            "ready=.",
            "In main(), write "
            "`return step4_cgroups.run(group, NAMESPACES, inside, command, ready=net.connect)`.",
        ),
    ),
    Check(
        "own-network",
        "the container has a network of its own: eth0 and lo, nothing of the host's",
        own_network,
        (
            "Without a network namespace of its own the container shares the host's "
            "interfaces, addresses and ports (network_namespaces(7)).",
            "CLONE_NEWNET (runtime.namespaces.NET) among the step's NAMESPACES; setup() brings "
            "its lo up (runtime.network.bring_up).",
            "At the top of the step, write `NAMESPACES = step5_image.NAMESPACES | namespaces.NET`.",
        ),
    ),
    Check(
        "loopback-up",
        "the container's lo is up: a server inside answers on 127.0.0.1",
        loopback_up,
        (
            "A new network namespace has its own loopback interface, lo, and it starts down: "
            "nothing answers on 127.0.0.1 until it is brought up (network_namespaces(7)).",
            "runtime.network.bring_up(name) sets IFF_UP on an interface with an ioctl "
            "(SIOCSIFFLAGS, netdevice(7)), as `ip link set lo up` does; call it in setup(), "
            "inside the new namespace, after step 5's setup.",
            "In setup(), after `step5_image.setup(hostname, layers, storage, cgroup_v2)`, "
            'write `network.bring_up("lo")`.',
        ),
    ),
]
