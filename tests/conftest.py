"""Shared fixtures. Privileged tests (marker ``privileged``) need root on Linux; elsewhere they
are skipped, each with the reason and what to run instead."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

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
    """As root on Linux, run the whole session in a network and a mount namespace of its own,
    where ``/`` is a shared mount, as on the machines of mycontainer's users.

    Containers on the default bridge network create a bridge, veths and NAT rules in the
    network namespace mycontainer runs in. Tests must never change the real host's network,
    so every mycontainer a test starts runs in this session's namespace, which vanishes
    with it (network_namespaces(7)).

    systemd makes every mount shared at boot (mount_namespaces(7)), so on users' machines a
    mount made in a badly isolated container shows up on the host. CI's machines boot
    without systemd, with ``/`` private, where such a bug hides: so the session gets a mount
    namespace of its own and makes its mounts shared (``mount --make-rshared /``), and every
    test meets the users' propagation. The ``mycontainer`` fixture checks that no container
    left a mount in it.
    """
    if privileged_skip_reason() is None:
        enter_session_namespaces()


def enter_session_namespaces() -> None:
    """New network and mount namespaces, with ``/`` shared in the session only.

    A new mount namespace's mounts start as peers of the host's where the host's are shared
    (mount_namespaces(7)): so they are made private first, cut off from the host, then
    shared again, among the session's own mounts (as ``unshare --propagation private``
    followed by ``mount --make-rshared /``). A mount made in the session never reaches the
    host, on a systemd machine too.
    """
    from runtime import network, syscalls

    syscalls.unshare(syscalls.CLONE_NEWNET | syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_SHARED)
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
    once the test is over, whatever the test did. Containers it left are removed first, so
    that their writable layers in the session's home fail this test only, not the next ones.
    """
    path = tmp_path / "state"
    path.mkdir()
    yield path
    if "MYCONTAINER_HOME" in os.environ:  # set by the session's home
        remove_containers(os.environ["MYCONTAINER_HOME"], path)
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
    remove_containers(home, state_root)  # as docker's, a run without --rm keeps its container
    assert leftover_state(state_root) == [], "a container left its state directory behind"
    storage_after = sorted(os.listdir(storage)) if storage.is_dir() else []
    assert storage_after == storage_before, "a container left its writable layer behind"
    assert host_mounts(*watched) == mounts_before, "a container left a mount on the host"
    assert container_groups(state_root) == groups_before, "a container left a cgroup behind"


@pytest.fixture
def background(home, state_root, mycontainer):
    """Start ``mycontainer ARGS...`` without waiting for it: ``background(*args, **popen_args)``
    returns the Popen (stdout and stderr piped, as text, unless given otherwise).

    Whatever the test did, its containers are ended at teardown (:func:`stop_containers`),
    before the ``mycontainer`` fixture checks that nothing was left behind.
    """
    runtimes = []

    def start(*args: str, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("env", environment(home, state_root))
        if not {"stdout", "stderr"} & kwargs.keys():
            kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runtimes.append(subprocess.Popen(mycontainer_command(*args), **kwargs))
        return runtimes[-1]

    yield start
    stuck = stop_containers(home, state_root, runtimes)
    assert not stuck, f"mycontainer {stuck} went on running after its container's init died"


def running_containers(
    state_root, count: int = 1, *, runtimes=(), ignore=(), timeout: float = 30
) -> list[dict]:
    """Wait until ``count`` containers of ``state_root`` run; return their state.json contents.

    ``ignore``: names (ids) of containers not to count, e.g. those running before. Fails at
    once if one of ``runtimes`` (the Popen of their ``mycontainer run``) exits meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        states = [s for s in container_states(state_root) if s["id"] not in ignore]
        running = [state for state in states if state["status"] == "running"]
        if len(running) == count:
            return running
        for runtime in runtimes:
            if runtime.poll() is not None:
                try:
                    output = runtime.communicate(timeout=5)
                except subprocess.TimeoutExpired:  # the container holds its pipes open
                    output = "(still open)"
                raise AssertionError(
                    f"mycontainer exited with {runtime.returncode} before {count} container(s)"
                    f" ran; its stdout and stderr: {output}"
                )
        if time.monotonic() > deadline:
            seen = [state["status"] for state in states]
            raise AssertionError(f"{count} container(s) should run, after {timeout} s: {seen}")
        time.sleep(0.02)


def read_until(fd: int, text: bytes, timeout: float = 20) -> bytes:
    """Read from ``fd`` until ``text`` has come; return all that was read."""
    read = b""
    deadline = time.monotonic() + timeout
    while text not in read:
        ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            raise AssertionError(f"no {text!r} within {timeout} s, only {read!r}")
        read += chunk
    return read


def container_states(state_root) -> list[dict]:
    """The state.json of every container of ``state_root`` (those written completely), with
    its id and its status as runtime.state derives it."""
    from runtime import state

    states = []
    for name in state.ids(str(state_root)):
        try:
            with open(os.path.join(state_root, name, "state.json")) as file:
                record = json.load(file)
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
            continue  # being made (written by rename, so never half) or being removed
        found = state.State(str(state_root), name, record)
        states.append(dict(record, id=name, status=found.status()))
    return states


def stop_containers(home, state_root, runtimes=()) -> list[int]:
    """End every container of ``state_root`` and the ``runtimes`` (Popens) that run them.

    SIGKILL each container's init (as PID 1 it ignores SIGTERM), so that its runtime cleans
    up as usual; SIGKILL the runtimes still alive 20 s later; then, if anything is left,
    ``mycontainer prune``. Returns the pids of the runtimes that had to be killed.
    """
    for state in container_states(state_root):
        if state["pid"] and in_container(state["pid"], state["id"]):
            try:
                os.kill(state["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass  # it exited meanwhile
    stuck = []
    for runtime in runtimes:
        try:
            runtime.wait(timeout=20)
        except subprocess.TimeoutExpired:
            runtime.kill()
            runtime.wait()
            stuck.append(runtime.pid)
    if os.listdir(state_root) or container_groups(state_root):
        subprocess.run(
            mycontainer_command("prune"),
            env=environment(home, state_root),
            capture_output=True,
            timeout=60,
        )
    for runtime in runtimes:
        for stream in (runtime.stdin, runtime.stdout, runtime.stderr):
            if stream:
                stream.close()
    return stuck


def in_container(pid: int, container_id: str) -> bool:
    """Is ``pid`` (still) a process of that container, in its cgroup? Not a reused pid."""
    try:
        with open(f"/proc/{pid}/cgroup") as file:
            return container_id in file.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


def remove_containers(home, state_root) -> None:
    """``mycontainer rm -f`` every container of ``state_root``: what a user types to clean up
    (it must leave nothing, as the fixtures then check)."""
    from runtime import state

    ids = state.ids(str(state_root))
    if ids:
        subprocess.run(
            mycontainer_command("rm", "-f", *ids),
            env=environment(home, state_root),
            capture_output=True,
            timeout=60,
        )


def run_benchmark(command: list[str], home, scratch, results) -> tuple:
    """Run ``python COMMAND --json RESULTS`` as the bench tests do: MYCONTAINER_HOME
    ``home``, TMPDIR ``scratch``, which the benchmark must leave empty. Returns the
    CompletedProcess and the results (None if it wrote none)."""
    completed = subprocess.run(
        [sys.executable, *command, "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYCONTAINER_HOME": str(home), "TMPDIR": str(scratch)},
    )
    data = json.loads(results.read_text()) if results.exists() else None
    assert list(scratch.iterdir()) == [], "the benchmark's directory was left"
    return completed, data


def leftover_state(state_root) -> list[str]:
    """What is in ``state_root`` besides an empty names directory."""
    from runtime import state

    names = os.path.join(state_root, state.NAMES)
    left = [name for name in os.listdir(state_root) if name != state.NAMES]
    if os.path.isdir(names):
        left += [f"{state.NAMES}/{name}" for name in os.listdir(names)]
    return left


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
    with open("/proc/self/mountinfo", errors="surrogateescape") as file:
        points = sorted(line.split()[4] for line in file)
    return [point for point in points if not under or point.startswith(tuple(map(str, under)))]


def bundle_maker(directory, rootfs: str, base_edit=None):
    """``make(args, edit=f, rootfs=...)`` -> the path of a new bundle in ``directory`` whose
    config.json (runtime.spec's default) runs ``args`` without a terminal in ``rootfs``;
    ``base_edit(config)``, then ``f(config)``, may change it before it is written."""
    from runtime import spec

    count = 0

    def make(args=("true",), edit=None, rootfs=rootfs) -> str:
        nonlocal count
        count += 1
        bundle = directory / f"bundle{count}"
        bundle.mkdir()
        config = spec.default_config()
        config["process"]["args"] = list(args)
        config["process"]["terminal"] = False
        config["root"] = {"path": str(rootfs)}
        for change in (base_edit, edit):
            if change:
                change(config)
        (bundle / "config.json").write_text(json.dumps(config))
        return str(bundle)

    return make


@contextlib.contextmanager
def oci_runner(state_root, *watched):
    """``run(*args, fd3=None)``: ``mycontainer-oci --root STATE_ROOT ARGS...`` from this
    checkout -> CompletedProcess, with ``fd3`` as the child's fd 3 if given. On the way out
    every container left is force-deleted, and nothing may remain: state, cgroup, or a mount
    under ``state_root`` or the ``watched`` paths."""
    under = (str(state_root), *map(str, watched))
    mounts_before = host_mounts(*under)
    groups_before = container_groups(state_root)

    def run(*args: str, fd3: int | None = None) -> subprocess.CompletedProcess:
        # Files, not pipes: a created container keeps create's stdout and stderr open
        # (they are its own), and a pipe would not reach its end until the container's does.
        env = dict(os.environ, PYTHONPATH=REPO)
        command = [sys.executable, "-m", "runtime.ocicli", "--root", str(state_root), *args]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            result = subprocess.run(
                command,
                env=env,
                stdout=out,
                stderr=err,
                timeout=60,
                pass_fds=() if fd3 is None else [3],  # ``fd3`` becomes the child's 3
                preexec_fn=None if fd3 is None else lambda: os.dup2(fd3, 3),
            )
            out.seek(0)
            err.seek(0)
            result.stdout, result.stderr = out.read(), err.read()
        return result

    yield run
    for name in os.listdir(state_root):
        run("delete", "--force", name)
    assert os.listdir(state_root) == [], "a container left its state directory behind"
    assert container_groups(state_root) == groups_before, "a container left a cgroup behind"
    assert host_mounts(*under) == mounts_before, "a container left a mount on the host"
