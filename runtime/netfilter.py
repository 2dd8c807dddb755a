"""NAT for the bridge network: masquerading out of the subnet, and published ports.

A container's address (10.199.0.2, say) is private: a server elsewhere could not answer it.
So packets leaving the subnet get the host's address instead, *masquerading* (source NAT);
the kernel's connection tracking remembers the swap and undoes it on the replies. A
published port (``-p 8080:80``) is the other way round: a connection to the host's port
8080 gets its destination rewritten to the container's address and port 80 (*DNAT*).

Both are netfilter rules (nft(8)). Ours live in a table of their own, ``ip mycontainer``,
so that they never mix with the host's rules and ``mycontainer prune`` can remove them at
once::

    table ip mycontainer {
        map tcp_ports { type inet_service : ipv4_addr . inet_service }   # 8080 : 10.199.0.2 . 80
        map udp_ports { ... }
        chain prerouting  { type nat hook prerouting priority -100; fib daddr type local
                            dnat ip to tcp dport map @tcp_ports; ... }   # from other machines
        chain output      { type nat hook output priority -100; ... }   # from the host itself
        chain postrouting { type nat hook postrouting priority 100;
                            ip saddr 10.199.0.0/16 oifname != "mycontainer0" masquerade }
    }

Publishing a port adds one element to a map and unpublishing removes it, by its key: no rule
handles to remember. Where only iptables(8) exists, the same is done with a chain of DNAT
rules (``MYCONTAINER``) and a MASQUERADE rule. ``MYCONTAINER_FIREWALL=nft|iptables`` picks
one; by default nft when it is installed.

The rules are installed with the nft and iptables commands, not over netlink: their input
is the very text the man pages and the chapter show.

Man pages: https://man7.org/linux/man-pages/man8/nft.8.html,
https://man7.org/linux/man-pages/man8/iptables.8.html,
https://man7.org/linux/man-pages/man8/iptables-extensions.8.html
"""

from __future__ import annotations

import os

TABLE = "mycontainer"  # nft: the table "ip mycontainer"; iptables: the chain MYCONTAINER
CHAIN = "MYCONTAINER"
NAT_PRIORITY = {"prerouting": -100, "output": -100, "postrouting": 100}  # dstnat, srcnat


class FirewallError(Exception):
    """A rule could not be installed or removed; the message says which and why."""


def setting() -> str:
    """``MYCONTAINER_FIREWALL``, checked: ``nft``, ``iptables``, or "" for the default."""
    chosen = os.environ.get("MYCONTAINER_FIREWALL", "")
    if chosen not in ("", "nft", "iptables"):
        raise FirewallError(f"MYCONTAINER_FIREWALL takes nft or iptables (got {chosen!r})")
    return chosen


def backend() -> str:
    """``nft`` or ``iptables``: ``MYCONTAINER_FIREWALL``, else the first one installed."""
    chosen = setting()
    if chosen:
        return chosen
    for name in ("nft", "iptables"):
        if _installed(name):
            return name
    raise FirewallError("neither nft nor iptables is installed: install nftables")


def split_port(published: str) -> tuple[int, int, str]:
    """``"8080:80/tcp"`` -> (8080, 80, "tcp"); the text is runtime.network.parse_publish's."""
    ports, _, protocol = published.partition("/")
    host_port, container_port = ports.split(":")
    return int(host_port), int(container_port), protocol


# -- nft ------------------------------------------------------------------------------------


def _nft(script: str):
    return _run(["nft", "-f", "-"], script)


def _nft_table(subnet: str, bridge: str) -> str:
    """The whole table, as nft -f reads it; ``create`` fails if the table exists already."""
    lines = [f"create table ip {TABLE}"]
    for protocol in ("tcp", "udp"):
        lines.append(
            f"add map ip {TABLE} {protocol}_ports "
            "{ type inet_service : ipv4_addr . inet_service; }"
        )
    for hook in ("prerouting", "output"):
        lines.append(
            f"add chain ip {TABLE} {hook} {{ type nat hook {hook} priority {NAT_PRIORITY[hook]}; }}"
        )
        for protocol in ("tcp", "udp"):
            # Only connections to one of the host's own addresses are published ports.
            lines.append(
                f"add rule ip {TABLE} {hook} fib daddr type local "
                f"dnat ip to {protocol} dport map @{protocol}_ports"
            )
    lines.append(f"add chain ip {TABLE} postrouting {{ type nat hook postrouting priority 100; }}")
    lines.append(
        f'add rule ip {TABLE} postrouting ip saddr {subnet} oifname != "{bridge}" masquerade'
    )
    return "\n".join(lines) + "\n"


def _nft_elements(verb: str, address: str, ports: list[str]) -> str:
    lines = []
    for published in ports:
        host_port, container_port, protocol = split_port(published)
        value = "" if verb == "delete" else f" : {address} . {container_port}"
        lines.append(f"{verb} element ip {TABLE} {protocol}_ports {{ {host_port}{value} }}")
    return "\n".join(lines) + "\n"


# -- iptables -------------------------------------------------------------------------------


def _iptables(*args: str):
    # -w: wait for the xtables lock instead of failing when another run holds it.
    return _run(["iptables", "-w", "-t", "nat", *args])


def _iptables_base_rules(subnet: str, bridge: str) -> list[list[str]]:
    """The rules outside our chain: jumps into it, and the masquerade."""
    local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN]
    return [
        ["PREROUTING", *local],
        ["OUTPUT", *local],
        ["POSTROUTING", "-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE"],
    ]


def _iptables_dnat_rule(address: str, published: str) -> list[str]:
    host_port, container_port, protocol = split_port(published)
    return [
        CHAIN,
        *("-p", protocol, "--dport", str(host_port)),
        *("-j", "DNAT", "--to-destination", f"{address}:{container_port}"),
    ]


# -- what the network module calls -----------------------------------------------------------


def ensure_masquerade(subnet: str, bridge: str, firewall: str) -> None:
    """Install our table (or chain) and the masquerade rule, unless they are there already.

    Later runs take an existing table or chain for complete, so a failure leaves none: nft -f
    applies its whole script or nothing (nft(8)), and with iptables we undo what we added.
    """
    if firewall == "nft":
        result = _nft(_nft_table(subnet, bridge))
        if result.returncode and "File exists" not in result.stderr:
            _check_nft(result, f"cannot create table ip {TABLE}")
        return
    created = _iptables("-N", CHAIN)
    if created.returncode:
        if "exists" in created.stderr:
            return
        raise FirewallError(f"iptables: cannot create chain {CHAIN}: {_first_line(created)}")
    added = []
    try:
        for rule in _iptables_base_rules(subnet, bridge):
            _check_iptables(_iptables("-A", *rule))
            added.append(rule)
    except FirewallError:
        for rule in added:
            _iptables("-D", *rule)
        _iptables("-F", CHAIN)
        _iptables("-X", CHAIN)
        raise


def publish(address: str, ports: list[str], firewall: str) -> None:
    """DNAT the host's ``ports`` to ``address``: ``["8080:80/tcp"]``."""
    if not ports:
        return
    if firewall == "nft":
        _check_nft(_nft(_nft_elements("add", address, ports)), f"cannot publish {', '.join(ports)}")
        return
    for published in ports:
        _check_iptables(_iptables("-A", *_iptables_dnat_rule(address, published)))


def unpublish(address: str, ports: list[str], firewall: str) -> None:
    """Remove what :func:`publish` added; rules already gone are fine."""
    if not ports:
        return
    if firewall == "nft":
        # One element per command, so that a missing one does not keep the others.
        for published in ports:
            _nft(_nft_elements("delete", address, [published]))
        return
    for published in ports:
        _iptables("-D", *_iptables_dnat_rule(address, published))


def remove_all(subnet: str, bridge: str) -> bool:
    """Remove our table and our chain, whichever exist (for prune); True if one did."""
    removed = False
    if _installed("nft") and _nft(f"list table ip {TABLE}\n").returncode == 0:
        _check_nft(_nft(f"delete table ip {TABLE}\n"), f"cannot delete table ip {TABLE}")
        removed = True
    if _installed("iptables") and _iptables("-S", CHAIN).returncode == 0:
        for rule in _iptables_base_rules(subnet, bridge):
            _iptables("-D", *rule)
        _check_iptables(_iptables("-F", CHAIN))
        _check_iptables(_iptables("-X", CHAIN))
        removed = True
    return removed


def _check_iptables(result) -> None:
    if result.returncode:
        command = " ".join(result.args[1:])
        raise FirewallError(f"{command}: {_first_line(result)}")


def _check_nft(result, what: str) -> None:
    if result.returncode:
        raise FirewallError(f"nft: {what}: {_first_line(result)}")


def _run(command: list[str], script: str | None = None):
    """Run a firewall command to completion (a subprocess.CompletedProcess, output as text).

    The subprocess module is imported here, not at the top: a run that publishes no port
    and finds the bridge ready never calls nft or iptables (see runtime.network).
    """
    import subprocess

    return subprocess.run(command, input=script, capture_output=True, text=True)


def _installed(name: str) -> bool:
    import shutil  # as subprocess above

    return shutil.which(name) is not None


def _first_line(result) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[0] if lines else f"exit status {result.returncode}"
