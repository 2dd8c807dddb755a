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
        f"{' '.join(mycontainer_command('run', '--net', 'none', 'busybox', 'sh', '-c'))} "
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
        with open(f"/proc/{host.pid}/mountinfo") as file:  # the host, during the run
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
    unmounts it before removing the storage, and the command's exit code stands."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("keep me")
    runtime = background("run", "--net", "none", "busybox", "sleep", "60")
    (state,) = running_containers(state_root, runtimes=[runtime])
    target = os.path.join(storage_of(home, state), "upper", "mounted")
    os.mkdir(target)
    subprocess.run(["mount", "--bind", str(outside), target], check=True)
    os.kill(state["pid"], signal.SIGKILL)
    assert runtime.wait(timeout=30) == 137
    assert (outside / "sentinel").read_text() == "keep me"
    assert not os.path.exists(storage_of(home, state))  # and no mount: the fixture checks
    assert runtime.stderr.read() == ""


def test_any_tree_the_container_makes_is_removed_and_its_exit_code_kept(mycontainer, home):
    """1,100 nested directories, a path of over 6,000 bytes, unreadable directories: the run
    exits with the command's code, prints nothing of ours, and leaves no storage."""
    name = "n" * 200
    chain = "/".join([name] * 15)  # 3,015 bytes, under PATH_MAX on its own
    script = (
        "i=0; while [ $i -lt 1100 ]; do mkdir d; cd d; i=$((i+1)); done; cd /; "
        f"mkdir -p /a/{chain} /b/{chain} && touch /b/{chain}/f && mv /b /a/{chain}/ && "
        "mkdir -p /ro/x && touch /ro/x/f && chmod 0 /ro/x /ro && exit 7"
    )
    result = mycontainer("run", "--net", "none", "busybox", "sh", "-c", script)
    assert (result.returncode, result.stderr) == (7, "")


def test_immutable_and_append_only_files_are_removed(home, background, state_root):
    """chattr +i and +a in the writable layer (set from the host, as a container with
    CAP_LINUX_IMMUTABLE could): the storage still goes, the exit code stays."""
    runtime = background("run", "--net", "none", "busybox", "sleep", "60")
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


def test_prune_finds_storage_that_no_state_owns(home, background, state_root, tmp_path):
    """A runtime SIGKILLed after its state went (or a reboot, which empties /run) leaves
    storage only: prune removes it; it spares the storage of a living container of another
    state root."""
    other_root = tmp_path / "other-state"
    other_root.mkdir()
    alive = background("run", "--net", "none", "busybox", "sleep", "60")
    (living,) = running_containers(state_root, runtimes=[alive])
    killed = subprocess.Popen(
        mycontainer_command("run", "--net", "none", "busybox", "sleep", "60"),
        env=environment(home, other_root),
    )
    try:
        (dead,) = running_containers(other_root, runtimes=[killed])
        killed.kill()
        killed.wait()
        os.kill(dead["pid"], signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(other_root / dead["id"])], check=True)  # the state
        assert os.path.isdir(storage_of(home, dead))
        prune = subprocess.run(
            mycontainer_command("prune"),
            env=environment(home, state_root),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert prune.returncode == 0, prune.stderr
        assert dead["id"] in prune.stdout.split()
        assert not os.path.exists(storage_of(home, dead))
        assert os.path.isdir(os.path.join(storage_of(home, living), "upper"))
    finally:
        killed.kill()
        killed.wait()
        subprocess.run(
            mycontainer_command("prune"), env=environment(home, other_root), capture_output=True
        )
        remove_cgroup_parents(other_root)
