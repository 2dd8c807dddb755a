"""podman and containerd drive the OCI runtime by its command line, as they drive runc.

Issue 13, item 6: ``podman --runtime RUNTIME`` (Debian's podman 4.3, with conmon) runs a
loaded image, propagates the exit code, runs detached, execs into the container, stops it,
allocates a terminal and enforces a memory limit; ``ctr run --runc-binary RUNTIME``
(Debian's containerd 1.6) runs a container and propagates its exit code. Also through
podman, from item 3: ``exec -t`` with a console socket, ``pause`` and ``resume``.

RUNTIME is ``mycontainer-oci``, or ``$MYCONTAINER_OCI_RUNTIME`` (``runc``, ``crun``): the
tests hold for runc, so a failure with mycontainer-oci is mycontainer-oci's. Each engine has
a store, a state and a cgroup parent of its own (tests/engines.py); everything a test starts
is stopped and removed, also when it fails, and the teardown checks that nothing was left.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import uuid

import pytest
from engines import (
    PODMAN_IMAGE,
    CgroupParent,
    Containerd,
    Podman,
    find_oci_runtime,
    require,
    write_archive,
    write_busybox_layout,
)

pytestmark = pytest.mark.privileged

# A container's memory limit as its own cgroup shows it: v2, else v1.
MEMORY_LIMIT = (
    "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
)


@pytest.fixture(scope="module")
def oci_runtime():
    return find_oci_runtime()


@pytest.fixture(scope="module")
def busybox_layout(home, tmp_path_factory):
    """The session's busybox rootfs as an OCI image layout."""
    layout = tmp_path_factory.mktemp("engines") / "busybox-oci"
    return write_busybox_layout(str(home / "rootfs" / "busybox"), str(layout))


@pytest.fixture(scope="module")
def cgroup_parent():
    parent = CgroupParent(f"mycontainer-engines-{uuid.uuid4().hex[:8]}")
    yield parent
    left = parent.remove()
    assert not left, f"cgroups could not be removed: {left}"


@contextlib.contextmanager
def without_problems(close):
    """Then ``close()``, however the block ended: it returns the problems it met (what it
    could not stop or remove), and there may be none."""
    try:
        yield
    finally:
        problems = close()
        assert not problems, problems


def nothing_left_by_the_test(engine):
    """A fixture's body: ``engine`` for the test, then its containers removed; neither they
    nor their cgroups may remain."""
    with without_problems(engine.remove_containers):
        yield engine
    assert containers_groups(engine.cgroup_parent) == [], "a container left its cgroup"


def containers_groups(parent: CgroupParent) -> list[str]:
    """The groups below ``parent`` but conmon's: podman puts every conmon in PARENT/conmon
    (with cgroupfs), which stays until the parent is removed."""
    return [group for group in parent.groups() if os.path.basename(group) != "conmon"]


@pytest.fixture(scope="module")
def podman_store(oci_runtime, busybox_layout, cgroup_parent, tmp_path_factory):
    """A podman store of this module's own, with the busybox image loaded."""
    require("podman", "conmon")
    podman = Podman(oci_runtime, str(tmp_path_factory.mktemp("podman")), cgroup_parent)
    with without_problems(podman.close):
        podman.load(busybox_layout)
        yield podman


@pytest.fixture
def podman(podman_store):
    """``podman(ARGS...)``, ``podman.run(ARGS...)``; no container outlives the test."""
    yield from nothing_left_by_the_test(podman_store)


@pytest.fixture(scope="module")
def containerd(oci_runtime, busybox_layout, cgroup_parent, tmp_path_factory):
    """A containerd of this module's own, busybox imported; stopped, with its shims, at the
    end."""
    require("containerd", "ctr")
    directory = tmp_path_factory.mktemp("containerd")
    daemon = Containerd(oci_runtime, str(directory), cgroup_parent)
    with without_problems(daemon.stop):
        daemon.start()
        daemon.import_image(write_archive(busybox_layout, str(directory / "busybox-oci.tar")))
        yield daemon


@pytest.fixture
def ctr(containerd):
    """``ctr`` of the module's containerd; no container outlives the test."""
    yield from nothing_left_by_the_test(containerd)


# --- podman ----------------------------------------------------------------------------------


def test_podman_runs_the_image_and_propagates_its_exit_code(podman):
    script = "echo hello from $(hostname); exit 3"
    ran = podman.run("--rm", "--hostname", "box", PODMAN_IMAGE, "sh", "-c", script)
    assert ran.returncode == 3, ran.stderr
    assert ran.stdout == "hello from box\n", ran.stdout


def test_podman_says_127_for_a_command_that_is_not_there(podman):
    ran = podman.run("--rm", PODMAN_IMAGE, "/no/such/command")
    assert ran.returncode == 127, ran.stdout + ran.stderr


def test_podman_runs_detached_execs_into_it_and_stops_it(podman):
    # PID 1 leaves on SIGTERM (busybox sh runs the trap once its sleep is over): exit
    # status 0 shows that `podman stop` delivered SIGTERM, not its SIGKILL fallback (137).
    script = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
    started = podman.run("--detach", "--name", "detached", PODMAN_IMAGE, "sh", "-c", script)
    assert started.returncode == 0, started.stderr
    running = podman("inspect", "--format", "{{.State.Status}}", "detached")
    assert running.stdout.strip() == "running", running.stdout + running.stderr

    executed = podman("exec", "detached", "sh", "-c", "cat /proc/1/cmdline; echo; exit 4")
    assert executed.returncode == 4, executed.stderr
    # The exec joined the container's PID namespace: its PID 1 is the container's sh.
    assert executed.stdout.replace("\0", " ").startswith("sh -c trap"), executed.stdout

    stopped = podman("stop", "--time", "30", "detached")
    assert stopped.returncode == 0, stopped.stderr
    state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "detached")
    assert state.stdout.split() == ["exited", "0"], state.stdout + state.stderr


def test_podman_run_t_gives_the_container_a_terminal_of_the_hosts_size(podman):
    status, output = podman.in_terminal(
        *("run", "--rm", "-t", *podman.run_options(), PODMAN_IMAGE),
        *("sh", "-c", "tty; stty size; exit 5"),
        rows=31,
        columns=97,
    )
    lines = output.replace("\r", "").splitlines()
    assert status == 5, output
    assert lines[-2:] == ["/dev/pts/0", "31 97"], output


def test_podman_exec_t_gives_the_exec_a_terminal(podman):
    started = podman.run("--detach", "--name", "execterm", PODMAN_IMAGE, "sleep", "1004")
    assert started.returncode == 0, started.stderr
    status, output = podman.in_terminal(
        "exec", "-t", "execterm", "sh", "-c", "tty; stty size; exit 6", rows=24, columns=81
    )
    lines = output.replace("\r", "").splitlines()
    assert status == 6, output
    assert re.fullmatch(r"/dev/pts/\d+", lines[-2]), output
    assert lines[-1] == "24 81", output


def test_podman_pause_freezes_the_container_and_unpause_thaws_it(podman):
    # The container counts in a file, which the host reads through /proc/PID/root.
    script = "i=0; while :; do i=$((i+1)); echo $i > /count; sleep 0.02; done"
    started = podman.run("--detach", "--name", "paused", PODMAN_IMAGE, "sh", "-c", script)
    assert started.returncode == 0, started.stderr
    pid = podman("inspect", "--format", "{{.State.Pid}}", "paused").stdout.strip()
    count = f"/proc/{pid}/root/count"
    wait_until_changed(count)

    paused = podman("pause", "paused")
    assert paused.returncode == 0, paused.stderr
    state = podman("inspect", "--format", "{{.State.Status}}", "paused")
    assert state.stdout.strip() == "paused", state.stdout + state.stderr
    frozen_at = read(count)
    time.sleep(0.5)  # 25 counts, were it running
    assert read(count) == frozen_at, "the paused container went on counting"

    unpaused = podman("unpause", "paused")
    assert unpaused.returncode == 0, unpaused.stderr
    wait_until_changed(count)
    executed = podman("exec", "paused", "sh", "-c", "exit 7")
    assert executed.returncode == 7, executed.stderr


def read(path: str) -> str:
    with open(path) as file:
        return file.read()


def wait_until_changed(path: str, timeout: float = 30) -> None:
    """Wait until the file at ``path`` exists and its contents change."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        try:
            now = read(path)
        except FileNotFoundError:
            now = None
        if first is not None and now != first:
            return
        first = first if first is not None else now
        assert time.monotonic() < deadline, f"{path} did not change within {timeout} s"
        time.sleep(0.02)


def test_podman_memory_limit_is_set_and_enforced(podman):
    limited = ("--rm", "--memory", "32m", "--memory-swap", "32m", PODMAN_IMAGE)
    shown = podman.run(*limited, "sh", "-c", MEMORY_LIMIT)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == [str(32 * 1024 * 1024)], shown.stdout
    # Past the limit the kernel's OOM killer ends the container: SIGKILL, exit status 137.
    grown = podman.run(*limited, "sh", "-c", "tail /dev/zero")
    assert grown.returncode == 137, grown.stdout + grown.stderr


# --- containerd ------------------------------------------------------------------------------


def test_ctr_runs_a_container_and_propagates_its_exit_code(ctr):
    ran = ctr.run("exits", "sh", "-c", "echo hello from PID $$; exit 3")
    assert ran.returncode == 3, ran.stderr
    assert ran.stdout.strip() == "hello from PID 1", ran.stdout


def test_ctr_kill_reaches_the_container_and_its_status_is_128_plus_the_signal(ctr):
    run = subprocess.Popen(
        ctr.run_command("killed", "sleep", "1003"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while ctr.task_status("killed") != "RUNNING":
            assert run.poll() is None, f"ctr run exited with {run.returncode}: {run.stderr.read()}"
            assert time.monotonic() < deadline, "the task did not run within 30 s"
            time.sleep(0.05)
        killed = ctr.ctr("tasks", "kill", "--signal", "SIGKILL", "killed")
        assert killed.returncode == 0, killed.stderr
        assert run.wait(timeout=30) == 137, run.stderr.read()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        run.stderr.close()
