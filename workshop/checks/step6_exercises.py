"""The checks of step 6's exercises (docs/step6-veth.md), ``invoke check 6 --exercise K``.

Exercise 1 asks for a script, byhand.sh in the repository's top directory, that builds a
bridge, a veth pair and a second network namespace with ip(8) alone and pings across: the
checker runs it as the chapter does, ``sh byhand.sh``, in the sandbox's network namespace
(never the machine's), and reads busybox ping's summary.

Exercise 4 removes the MAC address that runtime.netbridge.connect derives from the
container's IP address: its checker runs ``mycontainer`` (``python -m runtime``) in the
sandbox's network namespace, with a state root of its own, as the chapter's arp.sh does:
one container keeps the bridge up while a second one is started twice at the same
address; the sandbox pings each. With random MAC addresses, the second ping goes to the
first one's, which the neighbour cache still holds as reachable (arp(7)), and is lost.

2, 3 and 5 change rules or forwarding by hand and ask why something stops; 6 watches
mycontainer's leftovers: nothing of the learner's to observe.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

from workshop.checks import sandbox
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

WAIT = 20  # seconds for a container to start; polled every 0.1
# One container keeps the bridge up; a second, started twice, writes its MAC and address
# to a file and sleeps; the sandbox pings it. Sleeps of unusual lengths ($$) find them.
TWICE = f"""started() {{  # until file $1 holds $2
  tries=0
  until grep -q "$2" "$1" || [ $tries -ge {WAIT * 10} ]; do sleep 0.1; tries=$((tries + 1)); done
  grep -q "$2" "$1"
}}
stop() {{  # SIGKILL the container whose PID 1 is "sleep $1", once it is: PID 1 ignores SIGTERM
  tries=0
  until pkill -KILL -xf "sleep $1" || [ $tries -ge {WAIT * 10} ]; do
    sleep 0.1; tries=$((tries + 1))
  done
}}
keep=$(mktemp); second=$(mktemp)
step run --rm -v "$keep:/out" busybox sh -c "echo up >/out; exec sleep 1$$" >/dev/null 2>&1 &
if started "$keep" up; then
  for run in 1 2; do
    : >"$second"
    step run --rm -v "$second:/out" busybox sh -c \\
      "cat /sys/class/net/eth0/address >/out; ip -o -4 addr show eth0 >>/out; exec sleep 2$$" &
    started "$second" inet || break
    address=$(sed -n 's|.* inet \\([0-9.]*\\)/.*|\\1|p' "$second")
    echo "run $run $(head -1 "$second") $address" \\
      "$(busybox ping -c 1 -W 2 "$address" | grep -o '[0-9]* packets received')"
    stop 2$$; wait $!
  done
fi
stop 1$$; pkill -KILL -xf "sleep 2$$"; wait
rm -f "$keep" "$second"
"""
RUN = re.compile(r"^run (\d) (\S+) (\S+) (\d+) packets received$", re.MULTILINE)


@contextlib.contextmanager
def state_root():
    """A state root of the checker's own, MYCONTAINER_STATE: what a run killed on a
    timeout leaves in it is pruned (in a throw-away network namespace), then removed."""
    root = tempfile.mkdtemp(prefix="workshop-check-state-")
    try:
        yield root
    finally:
        subprocess.run(
            [*sandbox.SANDBOX, sys.executable, "-m", "runtime", "prune"],
            cwd=sandbox.REPO, env=dict(os.environ, MYCONTAINER_STATE=root),
            capture_output=True, timeout=sandbox.TIMEOUT,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


def stale_entry_loses(program, root) -> str | None:
    result = program.run(TWICE, MYCONTAINER_STATE=root)
    runs = RUN.findall(result.out)
    if len(runs) != 2:
        return result.seen("the second container did not start twice, with an address, to ping")
    (_, first_mac, first_ip, first), (_, second_mac, second_ip, second) = runs
    if first_ip != second_ip:
        return f"the two containers got {first_ip} and {second_ip}, not the same address"
    if first_mac == second_mac:
        return (
            f"both containers at {first_ip} had the MAC address {first_mac}: the runtime still "
            "gives eth0 one made of its IP address, so the host's neighbour entry stays right"
        )
    if first == "1" and second == "0":
        return None
    return f"the pings received {first} and {second} packets, not 1 then 0"


RANDOM_MAC = Exercise(
    [
        Check(
            "ex4-stale-entry-loses",
            "with eth0's MAC left random, a second container at the same address gets a new "
            "one, and the host's next ping, sent to the old one, is lost",
            stale_entry_loses,
            (
                "The host keeps each neighbour's MAC address in its cache, and trusts an entry "
                "that is REACHABLE for up to a minute (arp(7)): a new container at an old "
                "address with a new MAC is unreachable meanwhile. The runtime gives eth0 a "
                "MAC made of its IP address, so that this never happens.",
                "In runtime/netbridge.py, connect: the ip link add line sets the container's "
                "end's MAC with address, mac_for(...): delete those two arguments.",
                'Delete `"address", mac_for(str(address.ip)),` from the `ip link add` line; '
                "put it back after (git checkout runtime/netbridge.py).",
            ),
        )
    ],
    module="runtime",
    scene=state_root,
)

EXERCISES = {1: BY_HAND, 4: RANDOM_MAC}
