"""The container lifecycle: create, start, wait, delete, with the state kept on disk.

The states are the OCI runtime spec's (runtime.md, "State")::

    creating ──create()──> created ──start()──> running ──(init exits)──> stopped ──delete()──> gone

``mycontainer run`` is exactly ``create`` + ``start`` + ``wait`` + ``delete``. Each container
keeps its state in ``<state root>/<id>/state.json`` (id, status, init pid, rootfs, config),
written atomically at every change, so that later commands (``ps``, ``exec``, ``kill``,
``delete``) can find a container that another process created.

The process that created a container holds an exclusive flock(2) on ``<id>/lock`` for as long
as it lives; the kernel drops it when that process dies, even by SIGKILL. So a container
directory whose lock can be taken belongs to no one any more: :func:`prune` (called by every
``create``, and by ``mycontainer prune``) stops what is left of it and removes it.

Spec: https://github.com/opencontainers/runtime-spec/blob/main/runtime.md
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time

from runtime import cgroups, filesystem, namespaces, network, process
from runtime.process import EXIT_RUNTIME_ERROR, EXIT_SIGNAL_BASE, ProcessError

DEFAULT_STATE_ROOT = "/run/mycontainer"  # a tmpfs: state vanishes with a reboot, as it should
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CREATING, CREATED, RUNNING, STOPPED = "creating", "created", "running", "stopped"
EXIT_OOM = EXIT_SIGNAL_BASE + 9  # 137: SIGKILLed, by the kernel's OOM killer


class ContainerError(Exception):
    """A container operation failed; ``exit_code`` is what ``mycontainer`` exits with."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME_ERROR):
        super().__init__(message)
        self.exit_code = exit_code


class Config:
    """What to run and how: the part of an OCI ``config.json`` that mycontainer supports."""

    def __init__(
        self,
        rootfs: str,
        args: list[str],
        hostname: str | None = None,  # default: the container's short id
        env: dict[str, str] | None = None,
        cwd: str = "/",
        memory: int | None = None,  # bytes
        cpu_weight: int | None = None,  # 1-10000, cgroup v2's cpu.weight
        pids_limit: int | None = None,
    ):
        self.rootfs = rootfs
        self.args = args
        self.hostname = hostname
        self.env = env or {}
        self.cwd = cwd
        self.memory = memory
        self.cpu_weight = cpu_weight
        self.pids_limit = pids_limit

    def as_dict(self) -> dict:
        return dict(vars(self))


def check_host() -> None:
    """Refuse early, with what to do instead, where containers cannot run."""
    if sys.platform != "linux":
        raise ContainerError(
            "containers need a Linux kernel: start the lab VM with 'invoke vm.up', "
            "then run mycontainer inside it ('invoke vm.ssh')"
        )
    if os.geteuid() != 0:
        raise ContainerError("mycontainer run needs root: use sudo, or the lab VM ('invoke vm.up')")


def state_root() -> str:
    """Where containers keep their state; ``MYCONTAINER_STATE`` overrides it (for tests)."""
    return os.environ.get("MYCONTAINER_STATE", DEFAULT_STATE_ROOT)


def new_id() -> str:
    """A random 64-hex-digit id, as docker makes them; the first 12 digits are its short form."""
    return os.urandom(32).hex()


class Container:
    """One container, from ``create()`` to ``delete()``."""

    def __init__(self, config: Config, container_id: str | None = None):
        self.id = container_id or new_id()
        self.config = config
        self.status = CREATING
        self.pid = 0
        self.oom_killed = False
        self.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.directory = os.path.join(state_root(), self.id)
        self.cgroup = cgroups.Cgroup(cgroups.detect(), self.id)
        self._init: process.Init | None = None
        self._lock = -1

    @property
    def hostname(self) -> str:
        return self.config.hostname or self.id[:12]

    def create(self) -> None:
        """Build the container: cgroup, namespaces, mounts, hostname, network; the program waits."""
        prune()
        self._make_directory()
        try:
            self._save()
            self.cgroup.create(self.config.memory, self.config.cpu_weight, self.config.pids_limit)
            self._init = process.spawn(
                self.config.args,
                namespaces=namespaces.CONTAINER,
                before_unshare=self.cgroup.join,
                setup=self._setup_inside,
                env=self._environment(),
                cwd=self.config.cwd,
            )
        except (ProcessError, cgroups.CgroupError) as error:
            self.delete()
            code = getattr(error, "exit_code", EXIT_RUNTIME_ERROR)
            raise ContainerError(str(error), code) from None
        except BaseException:
            self.delete()
            raise
        self.pid = self._init.pid
        self._set_status(CREATED)

    def start(self) -> None:
        """Let the container's program run (execve it as the container's PID 1)."""
        try:
            self._init.start()
        except ProcessError as error:
            self._set_status(STOPPED)
            raise ContainerError(str(error), error.exit_code) from None
        self._set_status(RUNNING)

    def wait(self) -> int:
        """Wait until the container's PID 1 exits, forwarding signals and the terminal to it."""
        with process.forwarding_signals(self.pid), process.terminal_foreground(self.pid):
            code = self._init.wait()
        self._set_status(STOPPED)
        # The OOM killer may have picked any process of the container, not only PID 1.
        self.oom_killed = self.cgroup.oom_kills() > 0
        return EXIT_OOM if self.oom_killed else code

    def delete(self) -> None:
        """Remove everything the container made; kill it first if it still runs.

        Its mounts need no unmounting: they live in its own mount namespace, which the
        kernel destroys with its last process.
        """
        if self._init is not None:
            if self.status != STOPPED:
                self._init.kill()
            self._init.close()
            self._init = None
        self.cgroup.remove()
        remove_directory(self.directory)
        if self._lock != -1:
            os.close(self._lock)
            self._lock = -1

    def run(self) -> int:
        """create + start + wait + delete: what ``mycontainer run`` does."""
        self.create()
        try:
            self.start()
            return self.wait()
        finally:
            self.delete()

    def state(self) -> dict:
        """The OCI runtime spec's state object, plus the config we were given."""
        return {
            "ociVersion": "1.0.2",
            "id": self.id,
            "status": self.status,
            "pid": self.pid,
            "bundle": self.config.rootfs,
            "created": self.created,
            "config": self.config.as_dict(),
            "cgroups": self.cgroup.directories,
        }

    def _make_directory(self) -> None:
        """Create the state directory, locked: made under a hidden name, locked, then renamed,
        so that a concurrent prune never sees it unlocked."""
        os.makedirs(state_root(), mode=0o700, exist_ok=True)
        making = os.path.join(state_root(), f".{self.id}")
        os.mkdir(making, 0o700)
        self._lock = os.open(os.path.join(making, "lock"), os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        os.rename(making, self.directory)

    def _setup_inside(self) -> None:
        """Runs in the container's init, inside its new namespaces, before the gate."""
        namespaces.set_hostname(self.hostname)
        network.bring_up("lo")
        filesystem.enter_rootfs(self.config.rootfs, cgroup2=self.cgroup.layout.uses_v2)

    def _environment(self) -> dict[str, str]:
        """A clean environment, as docker gives: nothing of the host's leaks in but TERM."""
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.hostname, "HOME": "/root"}
        if sys.stdin is not None and sys.stdin.isatty() and "TERM" in os.environ:
            env["TERM"] = os.environ["TERM"]
        env.update(self.config.env)
        return env

    def _set_status(self, status: str) -> None:
        self.status = status
        self._save()

    def _save(self) -> None:
        """Write state.json atomically (write, then rename(2)), so readers never see half."""
        path = os.path.join(self.directory, "state.json")
        with open(path + ".tmp", "w") as file:
            json.dump(self.state(), file, indent=2)
        os.replace(path + ".tmp", path)


def remove_directory(directory: str) -> None:
    """Remove a container's state directory (it holds only files); missing is fine."""
    try:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
    except FileNotFoundError:
        pass  # never created, or removed already


def prune() -> list[str]:
    """Remove containers whose ``mycontainer`` died (e.g. SIGKILLed); return their ids.

    A container directory whose lock we can take belongs to no living runtime: its processes
    are killed, its cgroups and state removed. Cgroups of ours with no state directory at all
    are removed too.
    """
    root = state_root()
    layout = cgroups.detect()
    pruned = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if not name.startswith(".") and _take_lock(os.path.join(root, name)):
            cgroups.Cgroup(layout, name).remove()
            remove_directory(os.path.join(root, name))
            pruned.append(name)
    # A state directory always exists before its container's cgroup is made.
    for path in cgroups.stale_groups(layout, lambda name: os.path.isdir(os.path.join(root, name))):
        cgroups.remove_group(path)
        pruned.append(os.path.basename(path))
    return pruned


def _take_lock(directory: str) -> bool:
    """True if no living process holds the container's lock (we briefly take it ourselves)."""
    try:
        lock = os.open(os.path.join(directory, "lock"), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False  # its runtime is alive
    finally:
        os.close(lock)
