"""Shared fixtures. Privileged tests (marker ``privileged``) need root on Linux; elsewhere they
are skipped, each with the reason and what to run instead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def privileged_skip_reason() -> str | None:
    """Why privileged tests cannot run on this machine, or None if they can."""
    if sys.platform != "linux":
        return "needs Linux namespaces: run 'invoke test', which runs the suite in the lab VM"
    if os.geteuid() != 0:
        return "needs root for namespaces and mounts: run 'sudo .venv/bin/invoke test'"
    return None


def pytest_configure(config):
    """As root on Linux, run the whole session in a network namespace of its own.

    Containers on the default bridge network create a bridge, veths and NAT rules in the
    network namespace mycontainer runs in. Tests must never change the real host's network,
    so every mycontainer a test starts runs in this session's namespace, which vanishes
    with it (network_namespaces(7)).
    """
    if privileged_skip_reason() is None:
        from runtime import network, syscalls

        syscalls.unshare(syscalls.CLONE_NEWNET)
        network.bring_up("lo")


def pytest_collection_modifyitems(config, items):
    reason = privileged_skip_reason()
    if reason:
        for item in items:
            if "privileged" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def home(tmp_path_factory):
    """A mycontainer home (MYCONTAINER_HOME) whose 'busybox' image is built for this session."""
    from runtime import image, rootfs

    try:
        busybox = rootfs.find_static_busybox()
    except rootfs.RootfsError as error:
        pytest.skip(str(error))
    path = tmp_path_factory.mktemp("home")
    os.environ["MYCONTAINER_HOME"] = str(path)
    try:
        if privileged_skip_reason():  # unpacking an image needs root: the rootfs alone
            rootfs.build_busybox_rootfs(image.built_in_rootfs("busybox"), busybox)
        else:
            rootfs.build_busybox_image(busybox)
    finally:
        del os.environ["MYCONTAINER_HOME"]
    return path


@pytest.fixture
def busybox_rootfs(home):
    """The path of the session's busybox rootfs."""
    return str(home / "rootfs" / "busybox")


@pytest.fixture
def state_root(tmp_path):
    """A state root of this test's own, to check what containers leave in it.

    Its containers' cgroups get a parent of their own (see container.cgroup_parent), removed
    once the test is over, whatever the test did.
    """
    path = tmp_path / "state"
    path.mkdir()
    yield path
    remove_cgroup_parents(path)


@pytest.fixture
def mycontainer(home, state_root):
    """Run ``mycontainer ARGS...`` as a user would, from this checkout; returns CompletedProcess.

    Asserts afterwards that the container left no state directory, no mount and no cgroup.
    """
    watched = (home, state_root, "/var/lib/mycontainer", "/run/mycontainer")
    storage = home / "containers"
    storage_before = sorted(os.listdir(storage)) if storage.is_dir() else []
    mounts_before = host_mounts(*watched)
    groups_before = container_groups(state_root)

    def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(
            mycontainer_command(*args), env=environment(home, state_root), **kwargs
        )

    yield run
    assert os.listdir(state_root) == [], "a container left its state directory behind"
    storage_after = sorted(os.listdir(storage)) if storage.is_dir() else []
    assert storage_after == storage_before, "a container left its writable layer behind"
    assert host_mounts(*watched) == mounts_before, "a container left a mount on the host"
    assert container_groups(state_root) == groups_before, "a container left a cgroup behind"


def mycontainer_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime", *args]


def environment(home, state_root) -> dict[str, str]:
    env = dict(os.environ, MYCONTAINER_HOME=str(home), MYCONTAINER_STATE=str(state_root))
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def container_groups(state_root) -> list[str]:
    """The container cgroups of the containers of ``state_root`` (each root has its parent)."""
    from runtime import cgroups

    return sorted(cgroups.container_groups(cgroups.detect(), cgroup_parent(state_root)))


def cgroup_parent(state_root) -> str:
    from runtime import container

    saved = os.environ.get("MYCONTAINER_STATE")
    os.environ["MYCONTAINER_STATE"] = str(state_root)
    try:
        return container.cgroup_parent()
    finally:
        if saved is None:
            del os.environ["MYCONTAINER_STATE"]
        else:
            os.environ["MYCONTAINER_STATE"] = saved


def remove_cgroup_parents(state_root) -> None:
    """Remove the (empty) cgroup parent directories that ``state_root``'s containers made."""
    from runtime import cgroups

    for parent in cgroups.Cgroup(cgroups.detect(), "_", cgroup_parent(state_root)).parents:
        try:
            os.rmdir(parent)
        except FileNotFoundError:
            pass  # no container of this state root made it


def host_mounts(*under: str) -> list[str]:
    """The host's mount points (as this process sees them), only those ``under`` given paths.

    Other programs on this machine mount and unmount things too: a test looks only at the
    places where its containers could have left something.
    """
    with open("/proc/self/mountinfo") as file:
        points = sorted(line.split()[4] for line in file)
    return [point for point in points if not under or point.startswith(tuple(map(str, under)))]
