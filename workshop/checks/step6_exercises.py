"""The checks of step 6's exercises (docs/step6-veth.md), ``invoke check 6 --exercise K``.

Exercise 1 asks for a script, byhand.sh in the repository's top directory, that builds a
bridge, a veth pair and a second network namespace with ip(8) alone and pings across: the
checker runs it as the chapter does, ``sh byhand.sh``, in the sandbox's network namespace
(never the machine's), and reads busybox ping's summary.

The others change the runtime's network or the namespace's nftables rules and watch what
stops working (2, 3, 5), or watch ARP entries and leftovers as they come and go (4, 6):
what they ask is an explanation, with nothing left behind to observe.
"""

from __future__ import annotations

import re

from workshop.checks.check import Check, Exercise

SCRIPT = "byhand.sh"


def ping_across(program, _scene) -> str | None:
    result = program.run(f"[ -f {SCRIPT} ] || {{ echo 'no {SCRIPT}' >&2; exit 1; }}; sh {SCRIPT}")
    received = re.search(r"(\d+) packets received", result.out)
    if received and int(received.group(1)) > 0:
        return None
    if received:
        return "the ping went unanswered: 100% packet loss"
    return result.seen(f"sh {SCRIPT} printed no ping summary")


BY_HAND = Exercise(
    [
        Check(
            "ex1-ping-across",
            f"sh {SCRIPT} pings across the bridge from its second namespace",
            ping_across,
            (
                "A container's network is a namespace of its own joined to the host by a veth "
                "pair, one end on a bridge, the other moved into the namespace "
                "(network_namespaces(7), veth(4)); both ends and the bridge must be up. Write "
                f"{SCRIPT} in the repository's top directory.",
                "ip link add br0 type bridge, ip link add veth0 type veth peer name veth1, "
                "ip link set veth1 netns PID, ip address add on both sides, ip link set ... up "
                "on every link, and a default route inside.",
                "Write `ip link set veth0 up` (the most forgotten line) and, inside, "
                "`ip link set veth1 up`.",
            ),
        )
    ],
    module=SCRIPT,
)

EXERCISES = {1: BY_HAND}
