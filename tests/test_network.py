"""Step 6, networking: --net bridge, none and host, published ports, NAT, and the cleanup.

Nothing here touches this machine's own network. Each privileged test builds a small world
of network namespaces of its own::

    "internet" namespace              "host" namespace (the runtime runs here)
    ┌───────────────────┐   veth     ┌──────────────────────────────────────────┐
    │ out0 198.51.100.2 ├────────────┤ up0 198.51.100.1, default via .2         │
    └───────────────────┘            │ mycontainer0 10.199.0.1/16 (the runtime's)│
                                     └──────────────────────────────────────────┘

(198.51.100.0/24 is a documentation range, RFC 5737.) The runtime runs in "host" through
nsenter(1), which changes its network namespace only, so the bridge, the veths and the NAT
rules it makes live there, and vanish with it. Servers and clients are sockets of this test
process, opened in the namespace they belong to (see :func:`socket_in`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from runtime import launcher, netbridge, network
from runtime.syscalls import CLONE_NEWNET, setns

from conftest import (
    REPO,
    container_groups,
    environment,
    leftover_state,
    mycontainer_command,
    remove_cgroup_parents,
    running_containers,
)

HOST_ADDRESS = "198.51.100.1"
INTERNET_ADDRESS = "198.51.100.2"
GATEWAY = "10.199.0.1"  # the default subnet's first address: the bridge's
FIREWALLS = [name for name in ("nft", "iptables") if shutil.which(name)]

# --- options and files, anywhere ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normal"),
    [("8080:80", "8080:80/tcp"), ("53:53/udp", "53:53/udp"), ("01:2/tcp", "1:2/tcp")],
)
def test_publish_values(text, normal):
    assert network.parse_publish(text) == normal


@pytest.mark.parametrize("text", ["80", "0:80", "8080:65536", "a:b", "80:80/sctp", "1:2:3", ""])
def test_bad_publish_values(text):
    with pytest.raises(ValueError, match="--publish takes HOST_PORT:CONTAINER_PORT"):
        network.parse_publish(text)


def test_short_publish_only_before_image_and_repeatable():
    argv = ["run", "-p", "80:80", "-p8081:81/udp", "busybox", "mkdir", "-p", "/a", "--net=host"]
    image, command, options = launcher.parse_plain_run(argv)
    assert (image, command) == ("busybox", ["mkdir", "-p", "/a"])
    assert options == {"publish": ["80:80/tcp", "8081:81/udp"], "net": "host"}
    _, _, options = launcher.parse_plain_run(["run", "busybox", "true", "--publish", "1:2"])
    assert options == {"publish": ["1:2/tcp"]}


def test_resolv_conf_replaces_loopback_resolvers():
    host = "search example.org\nnameserver 127.0.0.53\noptions edns0 trust-ad\n"
    upstream = "nameserver 192.0.2.53\nnameserver 2001:db8::53\n"
    assert network.resolv_conf(host, upstream) == (
        "search example.org\noptions edns0 trust-ad\nnameserver 192.0.2.53\n"
    )
    assert network.resolv_conf("nameserver 192.0.2.1\nnameserver ::1\n") == "nameserver 192.0.2.1\n"
    assert "nameserver 8.8.8.8" in network.resolv_conf("nameserver 127.0.0.1\n")


def test_mac_follows_the_address():
    assert netbridge.mac_for("10.199.0.2") == "02:6d:0a:c7:00:02"


# --- the world: namespaces of our own ------------------------------------------------------

privileged = pytest.mark.privileged


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


class World:
    """Two network namespaces, "host" and "internet", joined by a veth; see the docstring."""

    def __init__(self, home, state_root, tag: str):
        self.home, self.state_root = home, state_root
        self.host, self.internet = f"mct-{tag}-host", f"mct-{tag}-inet"
        self.processes: list[subprocess.Popen] = []
        self.env = environment(home, state_root)

    def build(self) -> None:
        ip("netns", "add", self.host)
        ip("netns", "add", self.internet)
        ip("-n", self.host, "link", "add", "up0", "type", "veth", "peer", "out0", "netns",
           self.internet)  # fmt: skip
        for namespace, link, address in (
            (self.host, "up0", HOST_ADDRESS),
            (self.internet, "out0", INTERNET_ADDRESS),
        ):
            ip("-n", namespace, "addr", "add", f"{address}/24", "dev", link)
            ip("-n", namespace, "link", "set", link, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", self.host, "route", "add", "default", "via", INTERNET_ADDRESS)

    def destroy(self) -> None:
        """Kill what is left, remove the containers (runs keep theirs, as docker's), let prune
        clean up, and delete the namespaces (also on failure)."""
        from runtime import state

        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        try:
            if os.path.exists(f"/run/netns/{self.host}"):
                ids = state.ids(str(self.state_root))
                if ids:
                    self.run("rm", "-f", *ids, timeout=60)
                self.run("prune", timeout=60)
        finally:
            for namespace in (self.host, self.internet):
                subprocess.run(["ip", "netns", "del", namespace], capture_output=True)

    def command(self, *args: str) -> list[str]:
        """``mycontainer ARGS`` in the "host" namespace (nsenter changes only that)."""
        return ["nsenter", f"--net=/run/netns/{self.host}", "--", *mycontainer_command(*args)]

    def run(self, *args: str, env=None, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("timeout", 60)
        return subprocess.run(
            self.command(*args), env=env or self.env, capture_output=True, text=True, **kwargs
        )

    def start(self, *args: str, env=None) -> tuple[subprocess.Popen, dict]:
        """Start ``mycontainer run ARGS``; return it once its container runs, with its lease."""
        known = set(os.listdir(self.state_root))
        process = subprocess.Popen(
            self.command("run", *args),
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)
        [state] = running_containers(self.state_root, runtimes=[process], ignore=known)
        return process, read_json(self.state_root / state["id"] / "network.json")

    def leases(self) -> list[dict]:
        """The network.json of every container of the state root that has one."""
        found = [read_json(self.state_root / name / "network.json")
                 for name in os.listdir(self.state_root)]  # fmt: skip
        return [lease for lease in found if lease]

    def links(self) -> list[str]:
        return sorted(line.split(":")[1].strip().split("@")[0] for line in
                      ip("-n", self.host, "-o", "link").splitlines())  # fmt: skip

    def published(self) -> str:
        """What is left of published ports in "host", as the firewall lists them."""
        nsenter = ["nsenter", f"--net=/run/netns/{self.host}"]
        nft = subprocess.run([*nsenter, "nft", "list", "table", "ip", "mycontainer"],
                             capture_output=True, text=True).stdout  # fmt: skip
        iptables = subprocess.run([*nsenter, "iptables", "-t", "nat", "-S", "MYCONTAINER"],
                                  capture_output=True, text=True).stdout  # fmt: skip
        lines = (nft + iptables).splitlines()
        return "\n".join(line for line in lines if "elements" in line or "DNAT" in line)


def read_json(path) -> dict | None:
    try:
        with open(path) as file:
            return json.load(file)
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


@pytest.fixture
def world(home, state_root, request):
    """A fresh "host" and "internet", removed afterwards with all that is left in them."""
    if not FIREWALLS or not shutil.which("ip") or not shutil.which("nsenter"):
        pytest.skip("needs nftables (or iptables), iproute2 and util-linux installed")
    groups = container_groups(state_root)
    tag = f"{os.getpid() % 100000}-{request.node.name.__hash__() % 10000:04d}"
    world = World(home, state_root, tag)
    try:
        world.build()
        yield world
    finally:
        world.destroy()
    assert leftover_state(state_root) == [], "a container left its state directory behind"
    assert container_groups(state_root) == groups, "a container left a cgroup behind"
    remove_cgroup_parents(state_root)


class socket_in:
    """A socket opened in network namespace ``namespace``: it stays there wherever it is used.

    setns(2) moves only this thread, and only for as long as socket(2) takes.
    """

    def __init__(self, namespace: str, kind: int = socket.SOCK_STREAM):
        self.namespace, self.kind = namespace, kind

    def __enter__(self) -> socket.socket:
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
        try:
            setns(target, CLONE_NEWNET)
            try:
                self.socket = socket.socket(socket.AF_INET, self.kind)
            finally:
                setns(home, CLONE_NEWNET)
        finally:
            os.close(target)
            os.close(home)
        return self.socket

    def __exit__(self, *exc_info) -> None:
        self.socket.close()


class WhoAmI:
    """An HTTP server in a namespace that answers every request with the client's address."""

    def __init__(self, namespace: str, port: int = 8000):
        self.namespace, self.port = namespace, port
        self.stop = threading.Event()

    def __enter__(self) -> WhoAmI:
        self.context = socket_in(self.namespace)
        self.listener = self.context.__enter__()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("0.0.0.0", self.port))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                client, (peer, _port) = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            with client:
                client.settimeout(5)
                try:
                    client.recv(4096)
                    client.sendall(f"HTTP/1.0 200 OK\r\n\r\n{peer}\n".encode())
                except OSError:
                    pass

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join()
        self.context.__exit__()


def http_get(namespace: str, address: str, port: int, timeout: float = 20) -> str:
    """GET / from ``address:port``, from a socket in ``namespace``; retried until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket_in(namespace) as client:
                client.settimeout(2)
                client.connect((address, port))
                client.sendall(b"GET / HTTP/1.0\r\n\r\n")
                reply = b""
                while chunk := client.recv(4096):
                    reply += chunk
                return reply.decode().split("\r\n\r\n", 1)[1]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


WGET = "wget -q -O - http://{}/"  # (not -T: it crashes static busybox 1.35)
HTTPD = "mkdir -p /www && echo hello from {} > /www/index.html && exec httpd -f -p 80 -h /www"


# --- the bridge ----------------------------------------------------------------------------


@privileged
def test_container_reaches_the_host_over_the_bridge(world):
    with WhoAmI(world.host):
        result = world.run("run", "busybox", "sh", "-c", WGET.format(f"{GATEWAY}:8000"))
    assert result.returncode == 0, result.stderr
    assert ipaddress.ip_address(result.stdout.strip()) in ipaddress.ip_network("10.199.0.0/16")


@privileged
def test_eth0_address_route_and_etc_files(world):
    script = "ip -4 -o addr show eth0; ip route; cat /etc/hostname /etc/hosts /etc/resolv.conf"
    result = world.run("run", "--hostname", "box", "busybox", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    address = result.stdout.split()[3]  # 2: eth0 inet 10.199.0.2/16 ...
    assert address.startswith("10.199.") and address.endswith("/16")
    assert f"default via {GATEWAY} dev eth0" in result.stdout
    assert f"{address.split('/')[0]}\tbox" in result.stdout
    assert "\nbox\n" in result.stdout
    assert "nameserver 127." not in result.stdout


@privileged
def test_two_containers_reach_each_other(world):
    server, lease = world.start("--hostname", "a", "busybox", "sh", "-c", HTTPD.format("a"))
    try:
        address = lease["address"].split("/")[0]
        result = world.run("run", "busybox", "sh", "-c", WGET.format(address))
        assert (result.returncode, result.stdout) == (0, "hello from a\n"), result.stderr
    finally:
        kill_container(world, server, lease)


@privileged
@pytest.mark.parametrize("firewall", FIREWALLS)
def test_nat_to_the_internet_shows_the_host_address(world, firewall):
    env = dict(world.env, MYCONTAINER_FIREWALL=firewall)
    with WhoAmI(world.internet):
        result = world.run("run", "busybox", "sh", "-c", WGET.format(f"{INTERNET_ADDRESS}:8000"),
                           env=env)  # fmt: skip
    assert (result.returncode, result.stdout) == (0, f"{HOST_ADDRESS}\n"), result.stderr


@privileged
@pytest.mark.skipif(
    "iptables" not in FIREWALLS,
    reason="iptables is not installed (apt-get install iptables; setup.sh does)",
)
def test_a_failed_iptables_setup_leaves_no_chain_and_the_next_run_has_nat(world, tmp_path):
    # The real iptables, except that adding the masquerade rule (the last one) fails.
    fails = tmp_path / "bin"
    fails.mkdir()
    (fails / "iptables").write_text(
        "#!/bin/sh\n"
        'case "$*" in *"-A POSTROUTING"*) echo "iptables: made to fail" >&2; exit 1;; esac\n'
        f'exec {shutil.which("iptables")} "$@"\n'
    )
    (fails / "iptables").chmod(0o755)
    env = dict(world.env, MYCONTAINER_FIREWALL="iptables")
    result = world.run("run", "busybox", "true", env=dict(env, PATH=f"{fails}:{env['PATH']}"))
    assert result.returncode == 125 and "made to fail" in result.stderr
    assert result.stderr.count("\n") == 1
    rules = subprocess.run(
        ["nsenter", f"--net=/run/netns/{world.host}", "iptables", "-t", "nat", "-S"],
        capture_output=True,
        text=True,
    ).stdout
    assert "MYCONTAINER" not in rules  # neither the chain nor the jumps into it
    with WhoAmI(world.internet):
        result = world.run("run", "busybox", "sh", "-c", WGET.format(f"{INTERNET_ADDRESS}:8000"),
                           env=env)  # fmt: skip
    assert (result.returncode, result.stdout) == (0, f"{HOST_ADDRESS}\n"), result.stderr


@privileged
@pytest.mark.parametrize("firewall", FIREWALLS)
def test_published_port_reaches_the_container(world, firewall):
    env = dict(world.env, MYCONTAINER_FIREWALL=firewall)
    process, lease = world.start(
        "-p", "8080:80", "busybox", "sh", "-c", HTTPD.format("inside"), env=env
    )
    try:
        assert "8080" in world.published()
        # From the host itself (nft's output hook), and from the internet (prerouting).
        assert http_get(world.host, HOST_ADDRESS, 8080) == "hello from inside\n"
        assert http_get(world.internet, HOST_ADDRESS, 8080) == "hello from inside\n"
    finally:
        kill_container(world, process, lease)
    assert world.published() == "", "the container's DNAT rule outlived it"
    assert world.links() == ["lo", "mycontainer0", "up0"]  # its veth is gone


@privileged
def test_twenty_concurrent_containers_get_distinct_addresses_and_leave_nothing(world):
    # Each waits until it reaches the server, which starts once all twenty run: so all
    # twenty hold their addresses at once.
    script = (
        f"until {WGET.format(f'{GATEWAY}:8000')} > /tmp/seen; do sleep 0.1; done; cat /tmp/seen"
    )
    processes = []
    for number in range(20):
        command = world.command(
            "run", "--rm", "-p", f"{9000 + number}:80", "busybox", "sh", "-c", script
        )  # fmt: skip
        processes.append(subprocess.Popen(command, env=world.env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))  # fmt: skip
    world.processes += processes
    deadline = time.monotonic() + 120
    while len(leases := world.leases()) < 20:
        assert time.monotonic() < deadline, f"only {len(leases)} of 20 containers started"
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        time.sleep(0.1)
    addresses = {lease["address"] for lease in leases}
    assert len(addresses) == 20, sorted(addresses)
    with WhoAmI(world.host):
        outputs = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    seen = {stdout.strip() for stdout, _ in outputs}
    assert {f"{address}/16" for address in seen} == addresses
    assert leftover_state(world.state_root) == []  # and with the directories, the leases
    assert world.links() == ["lo", "mycontainer0", "up0"]  # no veth left
    assert world.published() == ""


@privileged
def test_prune_releases_a_killed_runtime_and_then_the_bridge(world):
    process, lease = world.start("--rm", "-p", "8080:80", "busybox", "sleep", "1626")
    process.kill()  # the runtime, not the container: its veth and DNAT rule stay
    process.wait()
    assert lease["veth"] in world.links() and "8080" in world.published()
    result = world.run("prune")
    assert result.returncode == 0, result.stderr
    assert lease["id"] in result.stdout
    assert world.links() == ["lo", "up0"]  # the veth, and the bridge with no one on it
    assert world.published() == ""
    assert (
        "mycontainer"
        not in subprocess.run(
            ["nsenter", f"--net=/run/netns/{world.host}", "nft", "list", "tables"],
            capture_output=True,
            text=True,
        ).stdout
    )


# --- none, host, and refusals ----------------------------------------------------------------


@privileged
def test_net_none_has_only_loopback(world):
    result = world.run("run", "--net", "none", "busybox", "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in result.stdout.splitlines()] == ["lo"]
    assert "mycontainer0" not in world.links()  # none needs no bridge


@privileged
def test_net_host_shares_the_host_interfaces(world):
    result = world.run("run", "--net", "host", "busybox", "ip", "-o", "link")
    assert "up0" in result.stdout and "eth0" not in result.stdout


@privileged
def test_rootfs_without_etc_gets_mount_points(world, tmp_path, busybox_rootfs):
    rootfs = tmp_path / "bare"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(os.path.join(busybox_rootfs, "bin", "busybox"), rootfs / "bin" / "busybox")
    result = world.run("run", "--hostname", "bare", str(rootfs), "/bin/busybox", "cat",
                       "/etc/hostname")  # fmt: skip
    assert (result.returncode, result.stdout) == (0, "bare\n"), result.stderr


@privileged
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--net", "none", "-p", "8080:80"], {}, "--publish needs --net bridge"),
        (["-p", "8080:99999"], {}, "--publish takes HOST_PORT:CONTAINER_PORT"),
        (["-p", "8080:80", "-p", "8080:81"], {}, "port 8080/tcp is published twice"),
        (["--net", "bridged"], {}, "--net takes bridge, none or host"),
        ([], {"MYCONTAINER_SUBNET": "10.1.2.3"}, "MYCONTAINER_SUBNET takes an IPv4 network"),
        ([], {"MYCONTAINER_SUBNET": "198.51.100.0/25"}, "overlaps the route to 198.51.100.0/24"),
    ],
)
def test_refusals_are_one_line_125_and_create_nothing(world, args, env, message):
    result = world.run("run", *args, "busybox", "true", env=dict(world.env, **env))
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert world.links() == ["lo", "up0"] and os.listdir(world.state_root) == []


@privileged
def test_a_port_published_twice_is_refused(world):
    process, lease = world.start("-p", "8080:80", "busybox", "sleep", "1627")
    try:
        result = world.run("run", "-p", "8080:81", "busybox", "true")
        assert result.returncode == 125
        assert "port 8080/tcp is published by container" in result.stderr
    finally:
        kill_container(world, process, lease)


def kill_container(world: World, process: subprocess.Popen, lease: dict) -> None:
    """End a background container: SIGKILL its init (as PID 1 it ignores SIGTERM), and wait."""
    state = read_json(world.state_root / lease["id"] / "state.json")
    if state and process.poll() is None:
        os.kill(state["pid"], signal.SIGKILL)
    process.wait(timeout=30)


@privileged
def test_step6_plugs_the_container_into_the_bridge(world):
    script = f"ip -4 -o addr show eth0; ip -o link show lo; {WGET.format(f'{GATEWAY}:8000')}"
    step = [sys.executable, "-m", "steps.step6_veth", "busybox", "--", "sh", "-c"]
    with WhoAmI(world.host):
        result = subprocess.run(
            ["nsenter", f"--net=/run/netns/{world.host}", *step, script],
            env=world.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    address = result.stdout.split()[3].split("/")[0]
    assert result.stdout.split()[-1] == address  # what the host saw: the container's address
    assert "<LOOPBACK,UP," in result.stdout  # lo is up too
    assert "step 6: eth0 will be" in result.stderr
    assert world.links() == ["lo", "mycontainer0", "up0"] and world.leases() == []
