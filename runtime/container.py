"""The container lifecycle: create, start, wait, delete, with the state kept on disk.

The states are the OCI runtime spec's (runtime.md, "State")::

    creating ──create()──> created ──start()──> running ──(init exits)──> stopped ──delete()──> gone

``mycontainer run`` is exactly ``create`` + ``start`` + ``wait`` + ``delete``. Each container
keeps its state in ``<state root>/<id>/state.json`` (id, status, init pid, rootfs, config),
written atomically at every change, so that later commands (``ps``, ``exec``, ``kill``,
``delete``) can find a container that another process created.

Spec: https://github.com/opencontainers/runtime-spec/blob/main/runtime.md
"""

from __future__ import annotations

import json
import os
import sys
import time

from runtime import filesystem, namespaces, network, process
from runtime.process import EXIT_RUNTIME_ERROR, ProcessError

DEFAULT_STATE_ROOT = "/run/mycontainer"  # a tmpfs: state vanishes with a reboot, as it should
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CREATING, CREATED, RUNNING, STOPPED = "creating", "created", "running", "stopped"


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
    ):
        self.rootfs = rootfs
        self.args = args
        self.hostname = hostname
        self.env = env or {}
        self.cwd = cwd

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
        self.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.directory = os.path.join(state_root(), self.id)
        self._init: process.Init | None = None

    @property
    def hostname(self) -> str:
        return self.config.hostname or self.id[:12]

    def create(self) -> None:
        """Build the container: namespaces, mounts, hostname, network; the program waits."""
        os.makedirs(state_root(), mode=0o700, exist_ok=True)
        os.mkdir(self.directory, 0o700)
        try:
            self._save()
            self._init = process.spawn(
                self.config.args,
                namespaces=namespaces.CONTAINER,
                setup=self._setup_inside,
                env=self._environment(),
                cwd=self.config.cwd,
            )
        except ProcessError as error:
            self.delete()
            raise ContainerError(str(error), error.exit_code) from None
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
        return code

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
        try:
            for name in os.listdir(self.directory):  # state.json, and nothing else
                os.unlink(os.path.join(self.directory, name))
            os.rmdir(self.directory)
        except FileNotFoundError:
            pass  # never created, or deleted already

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
        }

    def _setup_inside(self) -> None:
        """Runs in the container's init, inside its new namespaces, before the gate."""
        namespaces.set_hostname(self.hostname)
        network.bring_up("lo")
        filesystem.enter_rootfs(self.config.rootfs)

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
