"""Many containers at once, as a workshop room or a test suite starts them: every one runs,
gets what is its own (an id, a hostname, an address), and leaves nothing behind; and what
one ``run`` does to tidy up after others (``prune``) never gets in another command's way.

Timings are not asserted here (``bench/`` measures them): these tests check what a user
sees. The ``mycontainer`` fixture checks that no state, storage, mount or cgroup is left.
"""

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import bundle_maker, environment, mycontainer_command, oci_runner

pytestmark = pytest.mark.privileged

COUNT = 50


def all_at_once(mycontainer, *args: str) -> list[subprocess.CompletedProcess]:
    """``mycontainer ARGS`` COUNT times, all started together; each result, in order."""
    with ThreadPoolExecutor(max_workers=COUNT) as pool:
        # (an emulated VM takes minutes for this many starts at once)
        return list(pool.map(lambda _: mycontainer(*args, timeout=900), range(COUNT)))


def test_fifty_runs_at_once_without_a_network_each_its_own_then_nothing_left(
    mycontainer, state_root
):
    results = all_at_once(mycontainer, "run", "--rm", "--net", "none", "busybox", "hostname")
    assert [r.returncode for r in results] == [0] * COUNT, [r.stderr for r in results]
    assert [r.stderr for r in results] == [""] * COUNT
    hostnames = {r.stdout for r in results}  # docker's default: the short id
    assert len(hostnames) == COUNT and all(re.fullmatch(r"[0-9a-f]{12}\n", h) for h in hostnames)
    assert mycontainer("ps", "-a", "-q").stdout == ""
    assert os.listdir(state_root) == []


def test_fifty_runs_at_once_on_the_bridge_each_its_own_address_then_nothing_left(
    mycontainer, state_root, tmp_path
):
    """In the test session's own network namespace (conftest): fifty containers, all alive
    at once (each writes what eth0 has, then waits for the others), each with an address
    of its own in the bridge's subnet; no veth, lease or state stays."""
    shared = tmp_path / "shared"
    shared.mkdir()
    script = (
        "ip -4 -o addr show eth0 > /shared/$(hostname).tmp && mv /shared/$(hostname).tmp"
        " /shared/$(hostname); until [ -e /shared/go ]; do sleep 0.05; done"
    )
    links_before = set(os.listdir("/sys/class/net"))
    with ThreadPoolExecutor(max_workers=1) as waiter:
        go = waiter.submit(_when_all_have_written, shared)
        results = all_at_once(
            mycontainer, "run", "--rm", "-v", f"{shared}:/shared", "busybox", "sh", "-c", script
        )
        go.result()
    assert [r.returncode for r in results] == [0] * COUNT, [r.stderr for r in results]
    addresses = []
    for name in sorted(set(os.listdir(shared)) - {"go"}):
        text = (shared / name).read_text()
        found = re.findall(r"^\d+: eth0\s+inet (\d+\.\d+\.\d+\.\d+)/(\d+)", text, re.M)
        assert len(found) == 1, text
        addresses.append(found[0])
    assert len({address for address, _ in addresses}) == COUNT, addresses
    bridge = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "mycontainer0"], capture_output=True, text=True
    ).stdout
    gateway, length = re.search(r"inet (\S+)/(\d+)", bridge).groups()
    subnet = ipaddress.ip_network(f"{gateway}/{length}", strict=False)
    assert all(ipaddress.ip_address(a) in subnet and p == length for a, p in addresses)
    assert gateway not in {address for address, _ in addresses}
    new_links = set(os.listdir("/sys/class/net")) - links_before - {"mycontainer0"}
    assert new_links == set()
    assert os.listdir(state_root) == []  # leases are kept in the state root


def _when_all_have_written(shared, timeout: float = 900) -> None:
    """Let the containers end (touch ``go``) once all COUNT have written their address, or
    after ``timeout`` seconds, so that a failed start never leaves the others waiting."""
    deadline = time.monotonic() + timeout
    while len(os.listdir(shared)) < COUNT and time.monotonic() < deadline:
        time.sleep(0.05)
    (shared / "go").touch()


def test_twenty_runs_of_one_image_file_at_once_unpack_it_once(state_root, tmp_path, busybox_rootfs):
    """Twenty ``run IMAGE.tar`` started together on a store without the image: each layer
    is unpacked by one of them while the others wait for it (never two copies of it being
    unpacked at once, as twenty were, each a copy on disk); all run; nothing is left."""
    from runtime import rootfs

    tree = tmp_path / "tree"
    shutil.copytree(busybox_rootfs, tree, symlinks=True)
    (tree / "big").write_bytes(os.urandom(32 << 20))  # long enough to unpack for overlaps
    rootfs.write_oci_layout(str(tree), str(tmp_path / "layout"), "big:1", ["true"])
    archive = tmp_path / "big.tar"
    subprocess.run(["tar", "-C", str(tmp_path / "layout"), "-cf", str(archive), "."], check=True)
    store = tmp_path / "store"
    env = dict(environment(store, state_root))
    layers = store / "layers"
    most, done = [0], threading.Event()

    def watch() -> None:  # how many copies of a layer are being unpacked at once
        while not done.is_set():
            names = os.listdir(layers) if layers.is_dir() else []
            unpacking = [n for n in names if n.startswith(".unpacking-") and "." not in n[1:]]
            most[0] = max(most[0], len(unpacking))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        command = mycontainer_command("run", "--rm", "--net", "none", str(archive), "true")
        with ThreadPoolExecutor(max_workers=20) as pool:
            results = list(
                pool.map(
                    lambda _: subprocess.run(
                        command, env=env, capture_output=True, text=True, timeout=900
                    ),
                    range(20),
                )
            )
    finally:
        done.set()
        watcher.join()
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results]
    assert most[0] == 1
    assert [n for n in os.listdir(layers) if n.startswith(".")] == []
    assert len(os.listdir(layers)) == 1 and os.listdir(store / "containers") == []
    assert os.listdir(state_root) == []


@pytest.fixture
def pruning(home, state_root):
    """Loops of the prune that every ``run --rm`` does first, two at once, in the background:
    they stand for many runs starting together. Fails the test if a loop itself failed."""
    loop = "from runtime import container\nwhile True:\n    container.prune()\n"
    pruners = [
        subprocess.Popen(
            [sys.executable, "-c", loop], env=environment(home, state_root), stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    try:
        yield
        for pruner in pruners:
            assert pruner.poll() is None, pruner.stderr.read()
    finally:
        for pruner in pruners:
            pruner.kill()
            pruner.wait()
            pruner.stderr.close()


def test_start_is_never_refused_while_other_runs_prune(mycontainer, pruning):
    """Every ``run --rm`` prunes what dead runtimes left in the state root. A kept, stopped
    container is not left over, and its lock is not prune's to take: ``start`` (which does
    not wait for a lock, to refuse a container another command is at) once failed with
    'in use by another mycontainer' whenever a prune of another run was looking at it."""
    assert mycontainer("run", "--name", "kept", "--net", "none", "busybox", "true").returncode == 0
    for _ in range(20):
        started = mycontainer("start", "kept")
        assert (started.returncode, started.stderr) == (0, ""), started.stderr
        assert mycontainer("wait", "kept").stdout == "0\n"


def test_an_engines_delete_is_never_refused_while_other_runs_prune(
    state_root, home, tmp_path, busybox_rootfs, pruning
):
    """An engine deletes its stopped container (``mycontainer-oci delete``, which does not
    wait for a lock either) while ``mycontainer run``s start beside it."""
    bundle = bundle_maker(tmp_path, busybox_rootfs)(["true"])
    with oci_runner(state_root, home) as oci:
        for number in range(10):
            name = f"engine{number}"
            try:
                assert oci("create", "--bundle", bundle, name).returncode == 0
                assert oci("start", name).returncode == 0
                deadline = time.monotonic() + 20
                while json.loads(oci("state", name).stdout)["status"] != "stopped":
                    assert time.monotonic() < deadline, f"{name} did not stop"
                    time.sleep(0.02)
                deleted = oci("delete", name)
                assert (deleted.returncode, deleted.stderr) == (0, ""), deleted.stderr
            finally:  # a failed test leaves nothing either (an error if deleted already)
                for _ in range(100):  # (refused while a prune holds its lock, before the fix)
                    if oci("delete", "--force", name).returncode == 0 or not os.path.isdir(
                        state_root / name
                    ):
                        break
