"""The container's network: ``--net bridge`` (the default), ``--net none`` or ``--net host``.

``none``
    A new network namespace starts with a single interface, ``lo``, and even that is down
    (network_namespaces(7)). Bringing it up gives the container docker's ``--network none``:
    127.0.0.1 works, nothing else is reachable.
``host``
    No network namespace of its own: the container shares the host's interfaces and ports.
``bridge``
    A network namespace with ``lo`` and ``eth0``, one end of a veth pair whose other end is
    plugged into a bridge on the host, ``mycontainer0``; the bridge has the subnet's first
    address and is the container's default route; NAT takes packets out of the subnet and
    published ports (``-p 8080:80``) in::

        host (the runtime's network namespace)            container (its own namespace)
        ┌────────────────────────────────────────┐        ┌────────────────────────────┐
        │ eth0 (uplink) <─NAT─> mycontainer0     │        │ eth0 10.199.0.2/16         │
        │                       10.199.0.1/16    │        │ default via 10.199.0.1     │
        │                         └─ mc<id> ─────┼─veth──>┤                            │
        └────────────────────────────────────────┘        └────────────────────────────┘

For ``none`` we flip lo's IFF_UP flag with two ioctls on an ordinary socket
(:mod:`runtime.netdevice`): it is one interface and one bit. ``bridge`` also needs netlink,
for the bridge and the veth pair: its plumbing is in :mod:`runtime.netbridge` (the ``ip``
command, and the same ioctls inside the container) and its NAT rules in
:mod:`runtime.netfilter` (nft or iptables).

Only the first bridge run makes the bridge and the NAT rules (in that order: NAT, then the
bridge); every later run finds the bridge up with its address, with three ioctls, and takes
the NAT made with it as there, as docker's daemon does after its start. So a run costs one
``ip`` for its veth, and one more to delete it at the end. (Should the host's firewall rules
be flushed, ``mycontainer prune`` with no container running removes the bridge, and the next
run makes both again.)

A :class:`Network` goes along the container's lifecycle: ``prepare()`` before the container's
init is made (pick an address, write /etc/hosts, /etc/hostname and /etc/resolv.conf for it
to bind-mount), ``connect(pid)`` while the init waits at its gate (veth, address, route,
published ports), ``release()`` when it is deleted. The address lease, the veth's name and
the published ports are written to ``<state dir>/network.json``, so that ``mycontainer
prune`` can release them after a runtime that was SIGKILLed.

Settings, from the environment: ``MYCONTAINER_SUBNET`` (default 10.199.0.0/16),
``MYCONTAINER_BRIDGE`` (default mycontainer0), ``MYCONTAINER_FIREWALL`` (nft or iptables).

Man pages: https://man7.org/linux/man-pages/man7/network_namespaces.7.html,
https://man7.org/linux/man-pages/man7/netdevice.7.html,
https://man7.org/linux/man-pages/man4/veth.4.html,
https://man7.org/linux/man-pages/man5/resolv.conf.5.html
"""

from __future__ import annotations

import fcntl
import json
import os

from runtime import netdevice
from runtime.syscalls import datagram_socket

MODES = ("bridge", "none", "host")
DEFAULT_MODE = "bridge"
DEFAULT_BRIDGE = "mycontainer0"
DEFAULT_SUBNET = "10.199.0.0/16"  # private (RFC 1918); docker takes 172.17-31, podman 10.88
PROTOCOLS = ("tcp", "udp")
STATE_FILE = "network.json"  # in the container's state directory
# Where a container can send DNS queries when the host only has a local stub resolver
# (docker's choice too); see resolv_conf().
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def bring_up(interface: str = "lo") -> None:
    """Set IFF_UP on ``interface`` in this process's network namespace."""
    sock = datagram_socket()  # any socket will do to ask the kernel about interfaces
    try:
        netdevice.bring_up(sock, interface)
    finally:
        os.close(sock)


class NetworkError(Exception):
    """The container's network could not be set up; the message says what to do."""


# -- the options of ``run`` (cheap: they are checked on every ``mycontainer run``) ------------


def parse_net(text: str) -> str:
    """``--net``: one of MODES."""
    if text not in MODES:
        raise ValueError(f"--net takes bridge, none or host (got {text!r})")
    return text


def parse_publish(text: str) -> str:
    """``-p HOST_PORT:CONTAINER_PORT[/tcp|udp]`` -> ``"8080:80/tcp"``, or raise ValueError."""
    ports, _, protocol = text.partition("/")
    numbers = ports.split(":")
    protocol = protocol or "tcp"
    valid = (
        len(numbers) == 2
        and all(
            number.isascii() and number.isdigit() and len(number) <= 5 and 0 < int(number) < 65536
            for number in numbers
        )
        and protocol in PROTOCOLS
    )
    if not valid:
        raise ValueError(
            "--publish takes HOST_PORT:CONTAINER_PORT[/tcp|udp], ports from 1 to 65535 "
            f"(got {text!r})"
        )
    return f"{int(numbers[0])}:{int(numbers[1])}/{protocol}"


# -- the files every networked container gets ------------------------------------------------


def hosts_file(hostname: str, address: str) -> str:
    """/etc/hosts: localhost, and the container's own name at its address (hosts(5))."""
    return (
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{address}\t{hostname}\n"
    )


def resolv_conf(host: str, upstream: str = "") -> str:
    """The host's resolv.conf(5), made usable from the container's network namespace.

    A loopback nameserver, such as systemd-resolved's stub at 127.0.0.53, answers on the
    host's ``lo``, not on the container's: those lines are replaced by the nameservers of
    ``upstream`` (systemd-resolved's /run/systemd/resolve/resolv.conf, which lists the real
    ones), else by FALLBACK_NAMESERVERS. IPv6 ones go too: the container has IPv4 only.
    """
    kept, servers = [], []
    for line in host.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"]:
            servers += words[1:2]
        else:
            kept.append(line)
    usable = [server for server in servers if _reachable_nameserver(server)]
    if not usable:
        upstream_servers = [
            words[1]
            for words in map(str.split, upstream.splitlines())
            if words[:1] == ["nameserver"] and len(words) > 1
        ]
        usable = [server for server in upstream_servers if _reachable_nameserver(server)]
        usable = usable or list(FALLBACK_NAMESERVERS)
    return "\n".join([*kept, *(f"nameserver {server}" for server in usable)]) + "\n"


def _reachable_nameserver(address: str) -> bool:
    parts = address.split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() for p in parts) and parts[0] != "127"


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""


def _write(path: str, text: str) -> None:
    """Write ``path`` atomically (write, then rename(2)), so that readers never see half."""
    with open(path + ".tmp", "w") as file:
        file.write(text)
    os.replace(path + ".tmp", path)


# -- one container's network, along its lifecycle --------------------------------------------


class Network:
    """The network of one container: what ``Container`` calls, at each step of its life.

    Construction checks the settings and creates nothing, so a bad one is refused before
    anything exists.
    """

    def __init__(self, mode: str, publish: list[str], directory: str, container_id: str):
        self.mode = mode
        self.publish = list(publish)
        self.directory = directory  # the container's state directory
        self.files: dict[str, str] = {}  # path in the container -> file in directory
        self.record: dict | None = None  # what network.json holds, once leased
        if self.publish and mode != "bridge":
            raise NetworkError(f"--publish needs --net bridge, not --net {mode}")
        ports = list(map(_host_side, self.publish))
        for port in ports:
            if ports.count(port) > 1:
                raise NetworkError(
                    f"port {port} is published twice: give each -p a different host port"
                )
        if mode == "bridge":
            self.settings = bridge_settings()
            self.host_end = f"mc{container_id[:12]}"  # IFNAMSIZ: at most 15 characters

    def prepare(self, hostname: str) -> dict[str, str]:
        """Before the container's init exists: lease an address, write its /etc files.

        Returns the files to bind-mount in the container: {path inside: path on the host}.
        """
        if self.mode == "none":
            return {}
        if self.mode == "host":
            address = "127.0.1.1"  # Debian's address for the machine's own name
            resolv = _read("/etc/resolv.conf")  # the host's resolvers are reachable as they are
        else:
            address = self.lease()["address"].split("/")[0]
            resolv = resolv_conf(_read("/etc/resolv.conf"), _read(SYSTEMD_RESOLV_CONF))
        for name, text in (
            ("hosts", hosts_file(hostname, address)),
            ("hostname", hostname + "\n"),
            ("resolv.conf", resolv),
        ):
            path = os.path.join(self.directory, name)
            _write(path, text)
            self.files[f"/etc/{name}"] = path
        return self.files

    def connect(self, pid: int) -> None:
        """While the init of ``pid`` waits at its gate: plug it into the bridge."""
        if self.record is None:
            return
        from runtime import netbridge, netfilter

        record = self.record
        try:
            netbridge.connect(
                pid,
                record["veth"],
                record["bridge"],
                _interface(record["address"]),
                record["gateway"],
            )
            netfilter.publish(record["address"].split("/")[0], self.publish, record["firewall"])
        except (netbridge.LinkError, netfilter.FirewallError) as error:
            raise NetworkError(str(error)) from None
        except OSError as error:  # an ioctl inside the container's namespace
            raise NetworkError(f"cannot configure the container's eth0: {error}") from None

    def release(self) -> None:
        """When the container is deleted: remove its veth and published ports, free its address."""
        if self.record is not None:
            release(self.record)
            self.record = None
        _remove(os.path.join(self.directory, STATE_FILE))  # the lease

    def lease(self) -> dict:
        """Make sure the bridge and NAT exist, and take the lowest free address, under a lock.

        A bridge that is up with its address was made with its NAT (NAT first, then the
        bridge; prune removes them the other way round): only the first run makes them, the
        others check the bridge with three ioctls.

        The lock is an flock(2) on the state root directory: every run that leases an
        address, and prune removing the bridge, takes it, so two runs never pick one address
        and the bridge never vanishes between its check and its use. An address is taken
        as long as ``<state root>/<id>/network.json`` names it: deleting the container's
        state directory frees it. The lease is kept in ``self.record`` too; prepare() calls
        this, and so does step 6, which needs an address but no /etc files.
        """
        from runtime import netbridge, netfilter

        subnet, bridge, firewall = self.settings
        gateway = _interface(f"{subnet[1]}/{subnet.prefixlen}")
        root = os.path.dirname(self.directory)
        with _locked(root):
            try:
                if not netbridge.bridge_ready(bridge, gateway):  # the first run: make them
                    firewall = firewall or netfilter.backend()
                    netfilter.ensure_masquerade(str(subnet), bridge, firewall)
                    netbridge.ensure_bridge(bridge, gateway)
                if self.publish:
                    firewall = firewall or netfilter.backend()
                _enable_forwarding()
            except (netbridge.LinkError, netfilter.FirewallError) as error:
                raise NetworkError(str(error)) from None
            taken = {str(subnet[1])}  # the bridge's own address
            published = {}  # "8080/tcp" -> the id of the container that has it
            for record in leases(root):  # in this network namespace
                if record["bridge"] == bridge:
                    taken.add(record["address"].split("/")[0])
                    published.update(
                        dict.fromkeys(map(_host_side, record["publish"]), record["id"])
                    )
            for port in map(_host_side, self.publish):
                if port in published:
                    raise NetworkError(
                        f"port {port} is published by container {published[port][:12]} already"
                    )
            address = next((host for host in subnet.hosts() if str(host) not in taken), None)
            if address is None:
                raise NetworkError(f"no free address left in {subnet} (MYCONTAINER_SUBNET)")
            record = {
                "id": os.path.basename(self.directory),
                "bridge": bridge,
                "subnet": str(subnet),
                "gateway": str(subnet[1]),
                "address": f"{address}/{subnet.prefixlen}",
                "veth": self.host_end,
                "publish": self.publish,
                "firewall": firewall,
                "netns": netns_id(),
            }
            _write(os.path.join(self.directory, STATE_FILE), json.dumps(record, indent=2))
        self.record = record
        return record


SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"


def bridge_settings():
    """(subnet, bridge name, firewall) from the environment, checked; the firewall is
    MYCONTAINER_FIREWALL's, or "" until a run needs one (netfilter.backend)."""
    from runtime import netfilter

    try:
        firewall = netfilter.setting()
    except netfilter.FirewallError as error:
        raise NetworkError(str(error)) from None
    return (*subnet_and_bridge(), firewall)


def subnet_and_bridge():
    """(subnet, bridge name) from MYCONTAINER_SUBNET and MYCONTAINER_BRIDGE, checked."""
    from ipaddress import ip_network

    text = os.environ.get("MYCONTAINER_SUBNET", DEFAULT_SUBNET)
    try:
        subnet = ip_network(text)
    except ValueError:
        subnet = None
    if subnet is None or subnet.version != 4 or not 8 <= subnet.prefixlen <= 28:
        raise NetworkError(
            f"MYCONTAINER_SUBNET takes an IPv4 network from /8 to /28, such as {DEFAULT_SUBNET} "
            f"(got {text!r})"
        )
    bridge = os.environ.get("MYCONTAINER_BRIDGE", DEFAULT_BRIDGE)
    if not 0 < len(bridge) < 16 or not all(
        c.isascii() and c.isalnum() or c in "-_." for c in bridge
    ):
        raise NetworkError(
            f"MYCONTAINER_BRIDGE takes an interface name of 1 to 15 letters, digits, '-', '_' "
            f"or '.' (got {bridge!r})"
        )
    return subnet, bridge


def leases(root: str) -> list[dict]:
    """The network.json of every container under state root ``root`` that is on a bridge of
    this network namespace.

    One state root may serve runtimes in several network namespaces (tests, ``unshare
    --net``): each has bridges, addresses and ports of its own, which do not clash.
    """
    found = []
    here = netns_id()
    for name in os.listdir(root):
        try:
            with open(os.path.join(root, name, STATE_FILE)) as file:
                record = json.load(file)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue  # no lease, or a container being deleted
        if record.get("netns") == here:
            found.append(record)
    return found


def netns_id() -> str:
    """Which network namespace this process is in: its /proc/self/ns/net device and inode."""
    info = os.stat("/proc/self/ns/net")
    return f"{info.st_dev}:{info.st_ino}"


def release(record: dict) -> None:
    """Remove a container's host veth and published ports (its lease goes with network.json).

    Called while a container is deleted, when nothing can be done about a failure but say
    it: every step is tried, and what failed is a warning on stderr, not an exception that
    would stop the rest of the cleanup.
    """
    from runtime import netbridge, netfilter

    try:
        netbridge.delete_link(record["veth"])
    except Exception as error:  # noqa: BLE001 - report, and go on cleaning up
        _warn(f"cannot delete {record['veth']}: {error}")
    try:
        address = record["address"].split("/")[0]
        if record["publish"]:
            netfilter.unpublish(address, record["publish"], record["firewall"])
    except Exception as error:  # noqa: BLE001
        _warn(f"cannot unpublish {', '.join(record['publish'])}: {error}")


def _warn(message: str) -> None:
    import sys

    sys.stderr.write(f"mycontainer: warning: {message}\n")


def release_leftovers(directory: str) -> None:
    """What prune calls for a dead runtime's container: release what its network.json names."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return  # --net none or host, or no lease yet: nothing to release
    try:
        with open(path) as file:
            record = json.load(file)
    except ValueError:
        return
    if record.get("netns") == netns_id():  # else its veth and rules are not ours to see
        release(record)
    _remove(path)


def remove_unused_bridge(root: str) -> bool:
    """Remove the bridge and our NAT rules if no container holds a lease; True if it did.

    Only ``mycontainer prune`` calls this: the bridge and the masquerade rule are shared by
    every container, so ``run`` leaves them for the next one.
    """
    from runtime import netfilter

    subnet, bridge = subnet_and_bridge()
    os.makedirs(root, mode=0o700, exist_ok=True)
    with _locked(root):
        if leases(root):
            return False
        sock = datagram_socket()
        try:
            exists = netdevice.exists(sock, bridge)
        finally:
            os.close(sock)
        try:
            if exists:
                from runtime import netbridge

                netbridge.delete_link(bridge)
            return netfilter.remove_all(str(subnet), bridge) or exists
        except Exception as error:  # a netlink or firewall failure: one line, not a traceback
            raise NetworkError(f"cannot remove bridge {bridge} or its NAT rules: {error}") from None


class _locked:
    """An exclusive flock(2) on directory ``path``, for as long as the ``with`` lasts."""

    def __init__(self, path: str):
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info) -> None:
        os.close(self.fd)  # closing the last descriptor releases the lock


def _enable_forwarding() -> None:
    """Let this network namespace route packets between its interfaces (the bridge and the
    uplink): net.ipv4.ip_forward, which is per network namespace (proc(5))."""
    path = "/proc/sys/net/ipv4/ip_forward"
    if _read(path).strip() != "1":
        with open(path, "w") as file:
            file.write("1\n")


def _interface(text: str):
    from ipaddress import IPv4Interface

    return IPv4Interface(text)


def _host_side(published: str) -> str:
    """``"8080:80/tcp"`` -> ``"8080/tcp"``: what two containers cannot both publish."""
    from runtime import netfilter

    host_port, _, protocol = netfilter.split_port(published)
    return f"{host_port}/{protocol}"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
