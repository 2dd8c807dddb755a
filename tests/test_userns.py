"""User namespaces for bundles: linux.uidMappings and gidMappings, as runc and crun run them.

Each bundle's root is a copy of the session's busybox rootfs in a directory that the
container's root (an ordinary user to the host) can reach: the session's own directories
are 0700, host root's. What is checked is what a user sees: the IDs inside and on the host,
the maps, what the container's root may and may not do, and nothing left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import bundle_maker, oci_runner

pytestmark = pytest.mark.privileged

HOST_ID = 100000  # the host's uid and gid for the container's 0, as podman's default range
MAPPINGS = [{"containerID": 0, "hostID": HOST_ID, "size": 65536}]


@pytest.fixture
def reachable_rootfs(busybox_rootfs):
    """A copy of the busybox rootfs under /var/tmp, on a path every user may search."""
    top = tempfile.mkdtemp(dir="/var/tmp", prefix="mycontainer-userns-")
    os.chmod(top, 0o755)
    rootfs = os.path.join(top, "rootfs")
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    yield rootfs
    shutil.rmtree(top)


@pytest.fixture
def bundle(tmp_path, reachable_rootfs):
    """``bundle(args, edit=f, rootfs=...)`` -> a bundle directory whose container has a new
    user namespace (MAPPINGS) beside the default ones; ``f(config)`` may change it."""

    def user_namespace(config: dict) -> None:
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = MAPPINGS
        config["linux"]["gidMappings"] = MAPPINGS

    return bundle_maker(tmp_path, reachable_rootfs, user_namespace)


@pytest.fixture
def oci(state_root, home, reachable_rootfs):
    """``mycontainer-oci --root STATE ARGS...`` -> CompletedProcess (conftest's oci_runner);
    afterwards no state, cgroup or mount may remain."""
    with oci_runner(state_root, home, os.path.dirname(reachable_rootfs)) as run:
        yield run


def init_pid(oci, container_id: str) -> int:
    result = oci("state", container_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["pid"]


def ids_on_host(pid: int) -> tuple[list[str], list[str]]:
    """The real, effective, saved and filesystem uids, then gids, of process ``pid``."""
    with open(f"/proc/{pid}/status") as file:
        fields = dict(line.split(":", 1) for line in file)
    return fields["Uid"].split(), fields["Gid"].split()


NS_GET_USERNS = 0xB701  # ioctl_ns(2): _IO(0xb7, 0x1), the user namespace owning a namespace


def owner(path: str) -> int:
    """The inode number of the user namespace that owns namespace file ``path``."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        owning = fcntl.ioctl(fd, NS_GET_USERNS)
    finally:
        os.close(fd)
    try:
        return os.fstat(owning).st_ino
    finally:
        os.close(owning)


def test_inside_the_container_is_root_with_the_configured_maps(oci, bundle):
    script = "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; hostname"
    directory = bundle(["sh", "-c", script], edit=lambda c: c.update(hostname="inside"))
    result = oci("run", "--bundle", directory, "box")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines == [
        ["0"],
        ["0"],
        ["0", str(HOST_ID), "65536"],
        ["0", str(HOST_ID), "65536"],
        ["inside"],
    ]


def test_on_the_host_it_is_an_ordinary_user_owning_the_other_namespaces(oci, bundle):
    assert oci("create", "--bundle", bundle(["sleep", "60"]), "box").returncode == 0
    pid = init_pid(oci, "box")
    assert ids_on_host(pid) == ([str(HOST_ID)] * 4, [str(HOST_ID)] * 4)
    user = os.stat(f"/proc/{pid}/ns/user").st_ino
    assert user != os.stat("/proc/self/ns/user").st_ino
    # Made after the user namespace, every other namespace is its own (owned by it): that
    # is what lets the container's root mount, set the hostname, bring up lo in them.
    for kind in ("mnt", "uts", "ipc", "net", "pid", "cgroup"):
        assert owner(f"/proc/{pid}/ns/{kind}") == user, kind
        assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")


def test_files_made_inside_belong_to_the_mapped_ids_and_host_roots_stay_closed(
    oci, bundle, reachable_rootfs
):
    scratch = os.path.join(reachable_rootfs, "tmp")
    os.makedirs(scratch, exist_ok=True)
    os.chown(scratch, HOST_ID, HOST_ID)  # the container's root's, seen from the host
    script = "touch /tmp/made-inside && touch /made-in-root"
    result = oci("run", "--bundle", bundle(["sh", "-c", script]), "box")
    info = os.stat(os.path.join(scratch, "made-inside"))
    assert (info.st_uid, info.st_gid) == (HOST_ID, HOST_ID)
    # / is host root's, 0755: to the container's root it is a stranger's directory, whatever
    # its capabilities inside.
    assert result.returncode == 1
    assert "Permission denied" in result.stderr
    assert not os.path.exists(os.path.join(reachable_rootfs, "made-in-root"))


def test_the_default_devices_work(oci, bundle):
    # mknod(2) is refused in a user namespace: each is the host's node, bind-mounted.
    script = "echo x > /dev/null && head -c 3 /dev/zero | wc -c && stat -c %t:%T /dev/null"
    result = oci("run", "--bundle", bundle(["sh", "-c", script]), "box")
    assert (result.returncode, result.stdout.split()) == (0, ["3", "1:3"]), result.stderr


def test_without_a_network_namespace_it_owns_sys_is_the_hosts_read_only(oci, bundle):
    # The kernel lets a user namespace's root mount sysfs only with its own network
    # namespace: here the host's /sys is bind-mounted instead, as runc does.
    def no_network(config):
        namespaces = config["linux"]["namespaces"]
        namespaces[:] = [ns for ns in namespaces if ns["type"] != "network"]

    script = "ls /sys/class >/dev/null && grep -c ' /sys ro,' /proc/self/mountinfo; touch /sys/x"
    result = oci("run", "--bundle", bundle(["sh", "-c", script], edit=no_network), "box")
    assert (result.returncode, result.stdout) == (1, "1\n"), result.stderr
    assert "Read-only file system" in result.stderr


def test_a_map_of_root_alone_still_gets_a_devpts(oci, bundle):
    # devpts refuses gid=5 (tty) where group 5 is not mapped: then new terminals get the
    # opener's group, as on a devpts mounted without it.
    alone = [{"containerID": 0, "hostID": HOST_ID, "size": 1}]
    directory = bundle(
        ["sh", "-c", "id -u; grep -c ' /dev/pts .* devpts ' /proc/self/mountinfo"],
        edit=lambda c: c["linux"].update(uidMappings=alone, gidMappings=alone),
    )
    result = oci("run", "--bundle", directory, "box")
    assert (result.returncode, result.stdout) == (0, "0\n1\n"), result.stderr


def test_exec_joins_the_user_namespace(oci, bundle):
    assert oci("create", "--bundle", bundle(["sleep", "60"]), "box").returncode == 0
    assert oci("start", "box").returncode == 0
    result = oci("exec", "box", "sh", "-c", "id -u; cat /proc/self/uid_map; exit 4")
    assert result.returncode == 4, result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["0"],
        ["0", str(HOST_ID), "65536"],
    ]


@pytest.fixture
def user_namespace():
    """The pid of a process in a user namespace of its own, made outside mycontainer, whose
    0 is the host's 200000."""
    holder = subprocess.Popen(["unshare", "--user", "sleep", "1000"])
    try:
        while os.readlink(f"/proc/{holder.pid}/ns/user") == os.readlink("/proc/self/ns/user"):
            pass  # unshare(1) has not unshared yet
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{holder.pid}/{name}", "w") as file:
                file.write("0 200000 65536\n")
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_user_namespace_joined_by_path(oci, bundle, user_namespace):
    def join(config):
        linux = config["linux"]
        linux["namespaces"][-1] = {"type": "user", "path": f"/proc/{user_namespace}/ns/user"}
        del linux["uidMappings"], linux["gidMappings"]

    assert oci("create", "--bundle", bundle(["sleep", "60"], edit=join), "box").returncode == 0
    pid = init_pid(oci, "box")
    assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink(f"/proc/{user_namespace}/ns/user")
    assert ids_on_host(pid) == (["200000"] * 4, ["200000"] * 4)
    assert owner(f"/proc/{pid}/ns/mnt") == os.stat(f"/proc/{pid}/ns/user").st_ino


def test_a_rootfs_the_containers_root_cannot_reach_is_one_line(
    oci, bundle, busybox_rootfs, state_root
):
    # The session's directories are 0700, host root's: the container's root cannot pass.
    result = oci("create", "--bundle", bundle(rootfs=busybox_rootfs), "box")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert f"host uid {HOST_ID}" in result.stderr and "is mode 0700" in result.stderr
    assert os.listdir(state_root) == []


def test_bad_mappings_are_one_line_and_leave_nothing(oci, bundle, state_root):
    overlapping = [*MAPPINGS, {"containerID": 70000, "hostID": HOST_ID + 10, "size": 1}]
    directory = bundle(edit=lambda c: c["linux"].update(uidMappings=overlapping))
    result = oci("create", "--bundle", directory, "box")
    assert result.returncode == 1
    assert "linux.uidMappings[1].hostID: overlaps linux.uidMappings[0]" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert os.listdir(state_root) == []
