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
        rootfs.build_busybox_rootfs(image.built_in_rootfs("busybox"), busybox)
    finally:
        del os.environ["MYCONTAINER_HOME"]
    return path


@pytest.fixture
def busybox_rootfs(home):
    """The path of the session's busybox rootfs."""
    return str(home / "rootfs" / "busybox")


@pytest.fixture
def state_root(tmp_path):
    """A state root of this test's own, to check what containers leave in it."""
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def mycontainer(home, state_root):
    """Run ``mycontainer ARGS...`` as a user would, from this checkout; returns CompletedProcess.

    Asserts afterwards that the container left no state directory, no mount and no cgroup.
    """
    mounts_before = host_mounts()
    groups_before = container_groups()

    def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(
            mycontainer_command(*args), env=environment(home, state_root), **kwargs
        )

    yield run
    assert os.listdir(state_root) == [], "a container left its state directory behind"
    assert host_mounts() == mounts_before, "a container left a mount on the host"
    assert container_groups() == groups_before, "a container left a cgroup behind"


def mycontainer_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime", *args]


def environment(home, state_root) -> dict[str, str]:
    env = dict(os.environ, MYCONTAINER_HOME=str(home), MYCONTAINER_STATE=str(state_root))
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def container_groups() -> list[str]:
    """Every container cgroup of mycontainer's on this host."""
    from runtime import cgroups

    return sorted(cgroups.container_groups(cgroups.detect()))


def host_mounts() -> list[str]:
    """The mount points of the host's mount namespace, as this process sees them."""
    with open("/proc/self/mountinfo") as file:
        return sorted(line.split()[4] for line in file)
