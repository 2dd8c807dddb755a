"""What a container leaves behind, as the host sees it: no mount, whatever the host's mount
propagation; no storage, whatever tree the container made; and for a killed runtime,
nothing that ``prune`` cannot find.

The whole session runs with ``/`` shared, as under systemd (tests/conftest.py); the tests
here also try the other propagation types, each in a mount namespace of its own.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess

import pytest

from conftest import (
    environment,
    host_mounts,
    in_container,
    mycontainer_command,
    read_until,
    remove_cgroup_parents,
    running_containers,
)

pytestmark = pytest.mark.privileged

FS_IOC_SETFLAGS = 0x40086602  # ioctl_iflags(2)
FS_IMMUTABLE_FL, FS_APPEND_FL = 0x10, 0x20


def storage_of(home, state: dict) -> str:
    return str(home / "containers" / state["id"])


@pytest.mark.parametrize("propagation", ["shared", "slave", "private", "unbindable"])
def test_no_mount_reaches_the_host_whatever_its_propagation(
    home, state_root, mycontainer, propagation
):
    """The host's mount table, read while the container runs and after it, holds nothing of
    it; the run exits 0 and leaves no storage (the fixture checks the latter)."""
    script = (
        f"mount --make-r{propagation} / && "
        f"{' '.join(mycontainer_command('run', '--rm', '-i', '--net', 'none', 'busybox'))} sh -c "
        "'echo ready; read line'; echo exit=$?; cat /proc/self/mountinfo"
    )
    host = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script],
        env=environment(home, state_root),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        read_until(host.stdout.fileno(), b"ready\n")
        (state,) = running_containers(state_root)
        with open(f"/proc/{host.pid}/mountinfo", errors="surrogateescape") as file:  # during
            during = [line for line in file if state["id"] in line or "overlay" in line]
        out, err = host.communicate(b"\n", timeout=60)
    finally:
        host.kill()
        host.wait()
    assert during == []
    lines = out.decode().splitlines()
    assert "exit=0" in lines, err.decode()
    after = lines[lines.index("exit=0") + 1 :]
    assert after and not [line for line in after if state["id"] in line or "overlay" in line]
    assert err == b""


def test_delete_unmounts_and_never_enters_what_is_mounted_in_the_storage(
    home, background, state_root, tmp_path
):
    """A directory bind-mounted into a container's storage keeps its files: the runtime
    unmounts it before removing the storage, and the command's exit code stands. Reached
    through a symbolic link to the home, as a store moved to a bigger disk is."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("keep me")
    linked_home = tmp_path / "linked-home"
    linked_home.symlink_to(home)
    runtime = background(
        "run", "--rm", "--net", "none", "busybox", "sleep", "60",
        env=environment(linked_home, state_root),
    )  # fmt: skip
    (state,) = running_containers(state_root, runtimes=[runtime])
    target = os.path.join(storage_of(home, state), "upper", "mounted")
    os.mkdir(target)
    subprocess.run(["mount", "--bind", str(outside), target], check=True)
    try:
        os.kill(state["pid"], signal.SIGKILL)
        assert runtime.wait(timeout=30) == 137
        assert (outside / "sentinel").read_text() == "keep me"
        assert not os.path.exists(storage_of(home, state))  # no mount left: the fixture checks
        assert runtime.stderr.read() == ""
    finally:
        subprocess.run(["umount", "-l", target], capture_output=True)


def test_unmounting_the_storage_never_unmounts_the_host(home, background, state_root, tmp_path):
    """A recursive bind mount in the storage, of a tree whose mounts are shared (as all are
    under systemd, and in this session): removing it leaves the host's mounts in place."""
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "host-tmpfs", str(source / "sub")], check=True)
    try:
        runtime = background("run", "--rm", "--net", "none", "busybox", "sleep", "60")
        (state,) = running_containers(state_root, runtimes=[runtime])
        target = os.path.join(storage_of(home, state), "upper", "bound")
        os.mkdir(target)
        subprocess.run(["mount", "--rbind", str(source), target], check=True)
        os.kill(state["pid"], signal.SIGKILL)
        assert runtime.wait(timeout=30) == 137
        assert runtime.stderr.read() == ""
        assert str(source / "sub") in host_mounts(str(tmp_path))
    finally:
        subprocess.run(["umount", "-l", str(source / "sub")], capture_output=True)


def test_a_mount_point_that_is_not_utf8_anywhere_is_no_traceback(mycontainer, tmp_path):
    """Mount points are bytes: one named with invalid UTF-8 elsewhere on the host must not
    break run or prune (mountinfo is read by both)."""
    odd = os.path.join(os.fsencode(tmp_path), b"odd\xff")
    os.mkdir(odd)
    subprocess.run([b"mount", b"-t", b"tmpfs", b"odd", odd], check=True)
    try:
        result = mycontainer("run", "--rm", "--net", "none", "busybox", "true")
        assert (result.returncode, result.stderr) == (0, "")
        result = mycontainer("prune")
        assert (result.returncode, result.stderr) == (0, "")
    finally:
        subprocess.run([b"umount", b"-l", odd], capture_output=True)


def test_any_tree_the_container_makes_is_removed_and_its_exit_code_kept(mycontainer, home):
    """1,100 nested directories, a path of over 6,000 bytes, unreadable directories: the run
    exits with the command's code, prints nothing of ours, and leaves no storage."""
    name = "n" * 200
    chain = "/".join([name] * 15)  # 3,015 bytes, under PATH_MAX on its own
    deep = "/".join(["d"] * 1100)  # 2,200 bytes: one mkdir -p
    script = (
        f"mkdir -p /{deep} && "
        f"mkdir -p /a/{chain} /b/{chain} && touch /b/{chain}/f && mv /b /a/{chain}/ && "
        "mkdir -p /ro/x && touch /ro/x/f && chmod 0 /ro/x /ro && exit 7"
    )
    result = mycontainer("run", "--rm", "--net", "none", "busybox", "sh", "-c", script)
    assert (result.returncode, result.stderr) == (7, "")


def test_immutable_and_append_only_files_are_removed(home, background, state_root):
    """chattr +i and +a in the writable layer (set from the host, as a container with
    CAP_LINUX_IMMUTABLE could): the storage still goes, the exit code stays."""
    runtime = background("run", "--rm", "--net", "none", "busybox", "sleep", "60")
    (state,) = running_containers(state_root, runtimes=[runtime])
    upper = os.path.join(storage_of(home, state), "upper")
    os.makedirs(os.path.join(upper, "dir"))
    for path, flag in (("dir/file", FS_IMMUTABLE_FL), ("dir", FS_APPEND_FL), ("top", 0)):
        full = os.path.join(upper, path)
        if not os.path.exists(full):
            open(full, "w").close()
        fd = os.open(full, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, (flag or FS_IMMUTABLE_FL).to_bytes(4, "little"))
        except OSError as error:
            pytest.skip(f"this filesystem has no immutable flag ({error.strerror})")
        finally:
            os.close(fd)
    os.kill(state["pid"], signal.SIGKILL)
    assert runtime.wait(timeout=30) == 137
    assert runtime.stderr.read() == ""
    assert not os.path.exists(storage_of(home, state))


def test_prune_finds_storage_that_no_state_owns(
    home, mycontainer, background, state_root, tmp_path
):
    """A runtime SIGKILLed after its state went (or a reboot, which empties /run) leaves
    storage only: prune ends what runs of that container and removes the storage; it spares
    the storage of a living container of another state root, and what is not a container's."""
    other_root = tmp_path / "other-state"
    other_root.mkdir()
    not_ours = home / "containers" / "storage"
    alive = background("run", "--rm", "--net", "none", "busybox", "sleep", "60")
    (living,) = running_containers(state_root, runtimes=[alive])
    orphaned = subprocess.Popen(
        mycontainer_command("run", "--rm", "--net", "none", "busybox", "sleep", "60"),
        env=environment(home, other_root),
    )
    try:
        (dead,) = running_containers(other_root, runtimes=[orphaned])
        orphaned.kill()  # the runtime; its container goes on running
        orphaned.wait()
        subprocess.run(["rm", "-rf", str(other_root / dead["id"])], check=True)  # the state
        not_ours.mkdir()
        (not_ours / "file").write_text("another tool's")
        prune = mycontainer("prune")
        assert prune.returncode == 0, prune.stderr
        assert dead["id"] in prune.stdout.split()
        assert not os.path.exists(storage_of(home, dead))
        assert not in_container(dead["pid"], dead["id"])
        assert os.path.isdir(os.path.join(storage_of(home, living), "upper"))
        assert (not_ours / "file").read_text() == "another tool's"
    finally:
        orphaned.kill()
        orphaned.wait()
        subprocess.run(["rm", "-rf", str(not_ours)])
        subprocess.run(
            mycontainer_command("prune"), env=environment(home, other_root), capture_output=True
        )
        remove_cgroup_parents(other_root)


def test_prune_removes_state_directories_a_crash_cut_short(mycontainer, state_root):
    """A runtime killed just before rmdir leaves its state directory without a lock file; one
    killed while making it leaves a hidden, unlocked one. prune removes both."""
    cut_short = state_root / ("a" * 64)
    cut_short.mkdir()
    being_made = state_root / ("." + "b" * 64)
    being_made.mkdir()
    (being_made / "lock").write_text("")
    result = mycontainer("prune")
    assert (result.returncode, result.stderr) == (0, "")
    assert os.listdir(state_root) == []


def test_prune_from_another_cgroup_removes_a_dead_containers_groups(
    home, background, state_root, tmp_path
):
    """Where a container's groups are depends on the cgroup its runtime ran in; a prune run
    from elsewhere (another shell, a service) finds them through the container's state."""
    from runtime import cgroups

    layout = cgroups.detect()
    if layout.uses_v2:
        own = [os.path.join(layout.v2_mount, cgroups.own_v2_path().lstrip("/"))]
    else:
        own = [
            os.path.join(mount, cgroups.own_v1_path(controller).lstrip("/"))
            for controller, mount in layout.v1_mounts.items()
        ]
    probes = sorted({os.path.join(directory, "prune-probe") for directory in own})
    runtime = background("run", "--rm", "--net", "none", "busybox", "sleep", "60")
    (state,) = running_containers(state_root, runtimes=[runtime])
    runtime.kill()  # the runtime only: its container goes on, its state is left
    runtime.wait()
    try:
        for probe in probes:
            os.mkdir(probe)
        join = "; ".join(f"echo $$ > {probe}/cgroup.procs" for probe in probes)
        prune = subprocess.run(
            ["sh", "-c", f'{join}; exec "$@"', "sh", *mycontainer_command("prune")],
            env=environment(home, state_root),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert prune.returncode == 0, prune.stderr
        assert state["id"] in prune.stdout.split()
        assert not in_container(state["pid"], state["id"])
    finally:
        for probe in probes:
            os.rmdir(probe)  # the prune's process has exited: the group is empty
