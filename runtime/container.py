"""The container lifecycle: create, start, wait, kill, delete, over the state on disk.

The states are the OCI runtime spec's (runtime.md, "State")::

    creating ──create──> created ──start──> running ──(init exits)──> stopped ──delete──> gone

A container is a directory of the state root (runtime.state), not a process of ours: after
``create`` any process can load it by its id and ``start``, ``kill`` or ``delete`` it (the
functions at the end of this module), as an engine does through ``mycontainer-oci``.
``mycontainer run`` is the same lifecycle in one process: ``Container.create``, ``start``,
``wait`` (only the creator can: the init is its child), then ``delete`` with ``--rm``, else
``stop``: as docker's, the stopped container stays, with its exit code and writable layer,
until ``mycontainer rm`` (:func:`remove`). ``run -d`` leaves a monitor to wait instead
(runtime.detached); :func:`stop`, :func:`remove` and :func:`wait_exit` are docker's commands.

A foreground ``run`` holds its container's lock for as long as it lives; with ``--rm`` it
marks the container ``autoremove``; the kernel drops the lock when that process dies, even
by SIGKILL. So an autoremove container whose lock can be taken has lost its runtime:
:func:`prune` (called by every ``mycontainer run --rm``, and by ``mycontainer prune``) ends
and removes it. A
container made by ``mycontainer-oci create`` belongs to its engine: prune leaves it alone,
whatever its status, until the engine deletes it; and its create prunes nothing, as runc's
collects nothing: an engine collects its own containers, and starting one must not wait on
the leftovers of others. ``delete`` removes the storage before the state,
so that a runtime killed at any point leaves one of them for ``prune`` to find, and a
reboot (which empties /run) leaves storage that no state owns, which ``prune`` finds by its
lock alone.

Spec: https://github.com/opencontainers/runtime-spec/blob/main/runtime.md
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time

# Imported where used, as only one kind of container needs them: image and removal (a
# container of image layers, and prune), policy (docker's flags), process_settings (a
# bundle's). ``mycontainer-oci run`` starts a bundle's container in tens of milliseconds,
# as runc does; each of these would add to every start (tests/test_imports.py).
from runtime import (
    cgroups,
    devices,
    filesystem,
    mounts,
    namespaces,
    network,
    process,
    rootpath,
    seccomp,
    security,
    state,
    sysctl,
)
from runtime.namespaces import NET
from runtime.process import EXIT_RUNTIME_ERROR, EXIT_SIGNAL_BASE, ProcessError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

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
        layers: list[str],  # the image's directories, top layer first (overlayfs's order)
        args: list[str],
        image: str = "",  # the image's name, for people and `ps`
        hostname: str | None = None,  # default: the container's short id
        env: dict[str, str] | None = None,
        cwd: str = "/",
        user: str | None = None,
        memory: int | None = None,  # bytes
        cpu_weight: int | None = None,  # 1-10000, cgroup v2's cpu.weight
        pids_limit: int | None = None,
        cpus: float | None = None,  # CPUs' worth of time: a CFS quota (cgroups.parse_cpus)
        net: str | None = None,  # bridge (default), none or host
        publish: list[str] | None = None,  # ["8080:80/tcp"]: network.parse_publish's form
        cap_add: list[str] | None = None,  # capability names, or ALL (policy.parse_cap_add)
        cap_drop: list[str] | None = None,
        security_opt: list[str] | None = None,  # policy.parse_security_opt's forms
        rootfs: str | None = None,  # a root directory to use as it is, instead of layers
        namespaces: int = namespaces.CONTAINER,  # the CLONE_NEW* flags of the new ones
        join: list[tuple[int, str]] | None = None,  # (CLONE_NEW* flag, path): to setns(2)
        id_mappings: tuple[list[dict], list[dict]] | None = None,  # a new user namespace's
        annotations: dict[str, str] | None = None,
        hooks: dict[str, list[dict]] | None = None,  # config.json's, by kind (runtime.hooks)
        mounts: list[dict] | None = None,  # config.json's form; default: docker's (filesystem)
        devices: list[dict] | None = None,  # linux.devices: nodes beyond the default ones
        readonly: bool = False,  # root.readonly
        propagation: str | None = None,  # linux.rootfsPropagation
        sysctl: dict[str, str] | None = None,  # linux.sysctl
        spec: dict | None = None,  # a bundle's config.json: its process and security values
        resources: dict | None = None,  # OCI linux.resources; default: from the three above
        cgroups_path: str | None = None,  # OCI linux.cgroupsPath; default: mycontainer/<id>
        tty: bool = False,  # a terminal of its own (process.terminal; runtime.terminal)
        console_size: dict | None = None,  # process.consoleSize; default: our terminal's
        init: bool = False,  # a reaper as PID 1, the program as PID 2 (runtime.reaper)
    ):
        self.layers = layers
        self.args = args
        self.image = image
        self.hostname = hostname
        self.env = env or {}
        self.cwd = cwd
        self.user = user
        self.memory = memory
        self.cpu_weight = cpu_weight
        self.pids_limit = pids_limit
        self.cpus = cpus
        self.net = net or network.DEFAULT_MODE
        self.publish = list(publish or [])
        self.cap_add = list(cap_add or [])
        self.cap_drop = list(cap_drop or [])
        self.security_opt = list(security_opt or [])
        self.rootfs = rootfs
        self.join = list(join or [])
        self.id_mappings = id_mappings  # (uidMappings, gidMappings): runtime.userns
        # --net host: the host's network namespace, so no new one
        self.namespaces = namespaces & ~NET if self.net == "host" else namespaces
        self.annotations = dict(annotations or {})
        self.hooks = dict(hooks or {})
        self.mounts = filesystem.DEFAULT_MOUNTS if mounts is None else list(mounts)
        self.devices = list(devices or [])
        self.readonly = readonly
        self.propagation = propagation
        self.sysctl = dict(sysctl or {})
        self.spec = spec
        if resources is None:
            resources = cgroups.docker_resources(memory, cpu_weight, pids_limit, cpus)
        self.resources = resources
        self.cgroups_path = cgroups_path
        self.tty = tty
        self.console_size = console_size
        self.init = init

    def as_dict(self) -> dict:
        return dict(vars(self))


def boundaries(config: dict, process_config: dict | None = None):
    """(runtime.security.Boundaries, runtime.process_settings.ProcessSettings or None) of a
    container's processes, from its Config as a dict (``vars(config)``, or as its state
    records it): its init's, and those of every process ``exec`` starts in it later.

    A bundle's come from its config.json (``process_config``: an exec's ``process`` object
    in place of config.json's); a container of docker's flags has docker's (runtime.policy),
    whatever ``process_config`` asks: exec cannot widen them.
    """
    spec = config.get("spec")
    if spec is None:
        from runtime import policy

        docker = policy.boundaries(config["cap_add"], config["cap_drop"], config["security_opt"])
        return docker, None
    from runtime import process_settings

    if process_config is not None:
        spec = dict(spec, process=process_config)
    profile = (spec.get("linux") or {}).get("seccomp")
    return (
        security.Boundaries.from_config(spec, seccomp.compile(profile) if profile else None),
        process_settings.ProcessSettings.from_config(spec),
    )


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
    """Where containers keep their state (runtime.state.root_directory)."""
    try:
        return state.root_directory()
    except state.StateError as error:
        raise ContainerError(str(error)) from None


def cgroup_parent(root: str | None = None) -> str:
    """The cgroup parent of state root ``root``'s containers: ``mycontainer`` for the default.

    Each state root gets its own parent, so that pruning the containers of one (say, a test's)
    never touches those of another, whose state it cannot see.
    """
    root = root or state_root()
    if root == state.DEFAULT_ROOT:
        return cgroups.PARENT
    import zlib  # for a state root of its own only (a test's): not on a default run's path

    return f"{cgroups.PARENT}-{zlib.crc32(os.path.abspath(root).encode()):08x}"


def log_path(found: state.State) -> str:
    """A detached container's log (runtime.monitor writes it, ``mycontainer logs`` reads
    it): in its storage, on disk, and removed with it; a container without storage (a
    root directory used as it is) keeps it in its state directory."""
    if found.config.get("layers"):
        return os.path.join(storage_directory(found.id), "container.log")
    return found.path("container.log")


def storage_directory(container_id: str) -> str:
    """Where a container's writable layer and root mount point are: on disk beside the
    images (``<home>/containers/<id>``), not in /run, which is memory."""
    from runtime import image

    return os.path.join(image.home(), "containers", container_id)


def new_id() -> str:
    """A random 64-hex-digit id, as docker makes them; the first 12 digits are its short form."""
    return os.urandom(32).hex()


def make_storage_directory(directory: str, root: str) -> int:
    """Create storage directory ``directory`` (or take the one a stopped container kept,
    to start it again) and return a descriptor holding its lock; record in it the state
    root ``root`` that owns it (:func:`_prune_storage`).

    flock(2) needs the directory to exist, so a concurrent prune may lock and remove it
    between mkdir and flock: then the descriptor names a removed directory (no links left)
    and we make it again.
    """
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    while True:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass  # a stopped container's, started again
        try:
            lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.fstat(lock).st_nlink > 0:
            with open(os.path.join(directory, OWNER), "w") as file:
                file.write(root)
            return lock
        os.close(lock)


OWNER = "owner"  # in a storage directory: the state root of its container


def _now() -> str:
    """The time, as the runtime spec's and docker's records write it (RFC 3339, UTC)."""
    seconds = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds // 10**9)) + (
        f".{seconds % 10**9:09d}Z"
    )


class Container:
    """One container made by this process, from ``create()`` to ``delete()``: the in-memory
    half of the lifecycle. Its state is on disk (runtime.state), so that any later process
    can ``start``, ``kill`` or ``delete`` it with the module's functions below; this object
    adds what only its creator can do: wait for its init (its child) and read its exit."""

    def __init__(
        self,
        config: Config,
        container_id: str | None = None,
        *,
        root: str | None = None,
        bundle: str | None = None,
        autoremove: bool = True,
        inherit: tuple[int, ...] = (),
        console_socket: str | None = None,
        name: str | None = None,
        remove: bool = True,
        state_lock: int = -1,
        created: str | None = None,
    ):
        self.id = container_id or new_id()
        self.name = name  # --name: unique in the state root (state.claim_name)
        self.remove = remove  # --rm: removed once stopped; else kept until 'mycontainer rm'
        # started again (runtime.detached.restart): its creation time, and the lock of its
        # state directory, held since it was found stopped: create renews it in place
        self.created = created or time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        self.config = config
        self.root = root or state_root()
        self.state: state.State | None = None
        self.oom_killed = False
        self.storage = storage_directory(self.id) if config.layers else None
        self.root_directory = config.rootfs or os.path.join(self.storage, "root")
        self.bundle = bundle or self.storage
        self.autoremove = autoremove  # a foreground run's: ended by prune if its runtime dies
        self.inherit = inherit  # descriptors the program gets beyond 0-2 (--preserve-fds)
        # With a terminal: an engine's console socket gets its master (--console-socket);
        # else we do, and relay it to our own terminal (mycontainer run -t).
        self.console_socket_path = console_socket
        self._console = -1  # the master of the container's terminal, when we relay it
        self._console_socket = -1  # the init's end of the socket that carries it
        try:
            self.cgroup = cgroups.Cgroup(
                cgroups.detect(),
                self.id,
                cgroup_parent(self.root),
                config.cgroups_path,
                config.resources,
            )
        except cgroups.CgroupError as error:
            raise ContainerError(str(error)) from None
        self.security, self.settings = boundaries(vars(config))
        self._init: process.Init | None = None
        self._network: network.Network | None = None
        self._lock = state_lock
        self._storage_lock = -1
        self.leftovers = ""  # what delete() could not remove, in one line

    @property
    def hostname(self) -> str | None:
        """The container's hostname: docker's default is its short id; a bundle's is its
        config's, if any (else the copy of the host's that the new namespace starts with)."""
        return self.config.hostname or (self.id[:12] if self.config.layers else None)

    @property
    def pid(self) -> int:
        return self._init.pid if self._init else 0

    def create(self) -> None:
        """Build the container: cgroup, namespaces, mounts, hostname, network; the program waits.

        The state directory comes first (its lock held until delete; a stopped container
        started again brings its own, renewed in place), then each part, each
        recorded before the next is made, so that a crash at any point leaves a state that
        names what to undo.
        """
        directory = os.path.join(self.root, self.id)
        try:  # checks the network settings, before anything exists
            self._network = network.Network(
                self.config.net, self.config.publish, directory, self.id
            )
        except network.NetworkError as error:
            raise ContainerError(str(error)) from None
        if self.autoremove:  # mycontainer's own run (see the module's docstring)
            prune(self.cgroup.layout)
        record = {
            "bundle": self.bundle,
            "rootfs": self.root_directory,
            "created": self.created,
            "annotations": self.config.annotations,
            "config": self.config.as_dict(),
            "cgroups": self.cgroup.directories,
            "autoremove": self.autoremove,
            "rm": self.remove,
            # who collects the exit code: this process (a detached container's monitor is
            # this process too, once it has exec'd: same pid, same start time)
            "watcher_pid": os.getpid(),
            "watcher_start_time": state.process_start_time(os.getpid()),
        }
        if self.name:
            record["name"] = self.name
        if self._lock != -1:
            self.state = state.renew(self.root, self.id, record)
        else:
            self.state, self._lock = state.make(self.root, self.id, record)
        try:
            if self.name:  # checked before anything was made; claimed once the id exists
                state.claim_name(self.root, self.name, self.id)
            self.cgroup.create(self.config.resources)
            devices.restrict(self.cgroup)  # before any of its processes can open a device
            if self.storage:
                self._storage_lock = make_storage_directory(self.storage, self.root)
            self._network.prepare(self.hostname)  # an address, and /etc files to mount
            self._init = process.spawn(
                process.Program(
                    self.config.args,
                    self._environment(),
                    self.config.cwd,
                    self.config.user,
                    self.security,
                    self.inherit,
                    self.settings,
                    init=self.config.init,
                ),
                namespaces=self.config.namespaces,
                join=self.config.join,
                console=self._open_console_socket(),
                id_mappings=self.config.id_mappings,
                before_unshare=self.cgroup.join,
                setup=self._setup_inside,
                gate=self.state.path(state.GATE),
            )
            self._receive_console()
            # The init waits at its gate: plug its network namespace into the bridge.
            self._network.connect(self._init.pid)
            if self.settings:  # a bundle's: boundaries() imported its module
                self._apply_limits()
            self.state.record.update(pid=self.pid, start_time=state.process_start_time(self.pid))
            self.state.save()
            for kind in ("prestart", "createRuntime", "createContainer"):
                _run_hooks(self.config.hooks, kind, self.state)
        except (
            state.StateError,
            mounts.MountError,
            sysctl.SysctlError,
            ProcessError,
            cgroups.CgroupError,
            devices.DeviceError,
            network.NetworkError,
        ) as error:
            self.delete()
            code = getattr(error, "exit_code", EXIT_RUNTIME_ERROR)
            raise ContainerError(str(error), code) from None
        except BaseException:
            self.delete()
            raise

    def _apply_limits(self) -> None:
        """A bundle's rlimits and oomScoreAdj, set on the init from here, as root."""
        from runtime.process_settings import ProcessSettingsError

        try:
            self.settings.apply_limits(self._init.pid)
        except ProcessSettingsError as error:
            raise ProcessError(str(error)) from None

    def detach(self) -> int:
        """Leave the container to whoever watches it from now on: ``mycontainer-oci
        create`` returns, and no process of ours stays behind (the engine's monitor, conmon
        or a containerd shim, is the init's parent from now on); ``run -d`` becomes its
        monitor (runtime.detached). Returns the master of its terminal if we hold one,
        else -1."""
        self._init.close()
        self._init = None
        for lock in (self._storage_lock, self._lock):
            if lock != -1:
                os.close(lock)
        self._lock = self._storage_lock = -1
        console, self._console = self._console, -1
        return console

    def start(self) -> None:
        """Let the container's program run (execve it as the container's PID 1)."""
        _start_hooks(self.state, "startContainer")
        try:
            self._init.start()
        except ProcessError as error:
            raise ContainerError(str(error), error.exit_code) from None
        finally:
            _remove_gate(self.state)
        self.state.record["started"] = _now()
        self.state.save()
        _start_hooks(self.state, "poststart")

    def wait(self) -> int:
        """Wait until the container's PID 1 exits, forwarding signals and the terminal to it."""
        with process.forwarding_signals(self.pid), process.terminal_foreground(self.pid):
            if self._console == -1:
                code = self._init.wait()
            else:
                from runtime import terminal

                with terminal.Relay(self._console):
                    code = self._init.wait()
        # The OOM killer may have picked any process of the container, not only PID 1.
        self.oom_killed = self.cgroup.oom_kills() > 0
        code = EXIT_OOM if self.oom_killed else code
        state.record_exit(
            self.state, {"exitCode": code, "finishedAt": _now(), "oomKilled": self.oom_killed}
        )
        return code

    def stop(self) -> None:
        """Release what a stopped container holds, and keep what ``mycontainer rm`` removes:
        its init (killed if it still runs), terminal, network and cgroups go; its storage,
        state, exit code and name stay (docker's containers do, unless ``--rm``)."""
        self._release()
        for lock in (self._storage_lock, self._lock):
            if lock != -1:
                os.close(lock)
        self._lock = self._storage_lock = -1

    def _release(self) -> None:
        if self._init is not None:
            self._init.kill()  # does nothing to an init already reaped
            self._init.close()
            self._init = None
        for fd in (self._console, self._console_socket):
            if fd != -1:
                os.close(fd)
        self._console = self._console_socket = -1
        if self._network is not None:
            self._network.release()  # its veth, published ports and address lease
        self.cgroup.remove()

    def delete(self) -> None:
        """Remove everything the container made; kill it first if it still runs.

        Its mounts live in its own mount namespace, which the kernel destroys with its last
        process (and which never shared them with the host: ``namespaces.enter_new``); the
        storage is removed by ``removal.remove_tree``, which unmounts anything found there
        all the same, and never enters what stays mounted. What could not be removed is
        kept in ``leftovers``, one line, for the caller to report: it does not change the
        command's exit code, and ``prune`` tries again.
        """
        self._release()
        try:  # storage first: while the state stays, prune finds both
            if self.storage:
                from runtime import removal

                removal.remove_tree(self.storage)
        except OSError as error:
            self.leftovers = f"{error} (then run 'mycontainer prune')"
        except KeyboardInterrupt:  # a huge tree takes a while: Ctrl-C leaves it to prune
            self.leftovers = f"interrupted: run 'mycontainer prune' to remove {self.storage}"
        if self.state is not None:
            state.remove(self.state)
        for lock in (self._storage_lock, self._lock):
            if lock != -1:
                os.close(lock)
        self._lock = self._storage_lock = -1

    def run(self, created=None) -> int:
        """create + start + wait, then delete (``--rm``) or stop: what ``mycontainer run`` does.

        Signals meant for the container wait (blocked) until wait() can forward them.
        ``created()``, if given, runs once the container exists: where the caller lets go of
        what creating it needed (the image store's lock). A container that failed to start
        is removed either way, as docker's is not (it would list one that never ran).
        """
        with process.blocking_forwarded_signals():
            self.create()
            started = False
            try:
                if created:
                    created()
                self.start()
                started = True
                return self.wait()
            finally:
                if self.remove or not started:
                    self.delete()
                else:
                    self.stop()

    def _setup_inside(self) -> None:
        """Runs in the container's init, inside its new namespaces, before the gate."""
        if self.config.namespaces & namespaces.UTS and self.hostname:
            namespaces.set_hostname(self.hostname)
        if self.config.namespaces & NET:  # a new one: its lo starts down
            network.bring_up("lo")
        if self.config.layers:
            filesystem.mount_layers(self.config.layers, self.storage)
            if self.config.readonly:  # the working directory is made while "/" is writable
                root = os.open(self.root_directory, rootpath.DIRECTORY)
                try:
                    os.close(rootpath.open_beneath(root, self.config.cwd, "directory"))
                finally:
                    os.close(root)
        filesystem.enter_rootfs(
            self.root_directory,
            self.config.mounts,
            self.config.devices,
            self.config.readonly,
            self.config.propagation,
            files=self._network.files,
        )
        if self.config.sysctl:
            sysctl.apply(self.config.sysctl)  # before /proc/sys turns read-only
        self.security.protect_paths()  # masked and read-only paths of /proc and /sys
        if self._console_socket != -1:
            from runtime import terminal

            size = self.config.console_size
            if size is None:
                rows, columns = terminal.window_size(0) or terminal.window_size(1) or (0, 0)
                size = {"height": rows, "width": columns}
            terminal.attach_console(self._console_socket, size)
        os.close(rootpath.open_directory(self.config.cwd, create=True))  # as docker does

    def _open_console_socket(self) -> int:
        """The init's end of the socket its terminal's master goes through, or -1 without
        a terminal: the engine's --console-socket, or one end of a pair of ours."""
        if not self.config.tty:
            return -1
        from runtime import terminal  # not imported by runs without a terminal

        try:
            if self.console_socket_path:
                self._console_socket = terminal.connect(self.console_socket_path)
            else:
                self._console, self._console_socket = terminal.socketpair()
        except terminal.TerminalError as error:
            raise ProcessError(str(error)) from None
        return self._console_socket

    def _receive_console(self) -> None:
        """Once the init has sent its terminal: close its end here; keep the master if it
        came to us."""
        if self._console_socket == -1:
            return
        from runtime import terminal

        os.close(self._console_socket)
        self._console_socket = -1
        if self._console == -1:
            return  # the engine has it
        ours, self._console = self._console, -1
        try:
            self._console, _ = terminal.receive(ours)
        except terminal.TerminalError as error:
            raise ProcessError(str(error)) from None
        finally:
            os.close(ours)

    def _environment(self) -> dict[str, str]:
        """A clean environment, as docker gives: nothing of the host's leaks in but TERM.
        A bundle's config.json gives the whole environment itself."""
        if not self.config.layers:
            return dict(self.config.env)
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.hostname}
        if not self.config.user:  # else the user's, from the container's /etc/passwd
            env["HOME"] = "/root"
        if sys.stdin is not None and sys.stdin.isatty() and "TERM" in os.environ:
            env["TERM"] = os.environ["TERM"]
        elif self.config.tty:
            env["TERM"] = "xterm"  # as docker sets it for -t
        env.update(self.config.env)
        return env


def _run_hooks(configured: dict, kind: str, found: state.State, state_json: str = "") -> None:
    """Run the ``kind`` hooks of config.json's ``configured`` hooks (runtime.hooks), if any;
    a failure of a kind that must succeed raises ContainerError. Most containers have none:
    then nothing is imported or computed."""
    if not configured.get(kind):
        return
    from runtime import hooks

    try:
        hooks.run(configured, kind, state_json or json.dumps(found.oci_state()), found.pid)
    except hooks.HookError as error:
        raise ContainerError(str(error)) from None


def _start_hooks(found: state.State, kind: str) -> None:
    """Run a container's startContainer or poststart hooks; a failing startContainer hook
    stops the container, as the spec asks."""
    configured = found.record.get("config", {}).get("hooks", {})
    if not configured.get(kind):
        return
    # poststart: the program was started, whether or not it has exited since
    status = state.RUNNING if kind == "poststart" else state.CREATED
    state_json = json.dumps(dict(found.oci_state(), status=status, pid=found.pid))
    try:
        _run_hooks(configured, kind, found, state_json)
    except ContainerError:
        for group in found.record.get("cgroups", []):
            cgroups.signal_members(group, signal.SIGKILL)
        raise


def _remove_gate(container: state.State) -> None:
    """The gate is passed (or will never be): without it, the status reads running."""
    try:
        os.unlink(container.path(state.GATE))
    except FileNotFoundError:
        pass


def _configs():
    """(id, config) of each container in the state root whose state is written."""
    root = state_root()
    for name in os.listdir(root) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, name, "state.json")) as file:
                yield name, json.load(file)["config"]
        except (FileNotFoundError, NotADirectoryError, ValueError, KeyError):
            continue


def containers_using(image_name: str) -> list[str]:
    """The ids of the containers in the state root made from image ``image_name``."""
    return [name for name, config in _configs() if config.get("image") == image_name]


def layers_in_use() -> set[str]:
    """The layer directories that the containers in the state root stack: an image may have
    been loaded again or removed since they started, but its old layers must stay."""
    return {directory for _, config in _configs() for directory in config.get("layers", [])}


def mount_sources() -> dict[str, list[str]]:
    """The sources of the mounts of the containers in the state root, each with the ids of
    the containers that mount it: a named volume's directory, say (runtime.volumes), must
    stay while they do."""
    sources: dict[str, list[str]] = {}
    for name, config in _configs():
        for entry in config.get("mounts") or ():
            sources.setdefault(entry.get("source"), []).append(name)
    return sources


def prune(layout: cgroups.Layout | None = None, problems: list[str] | None = None) -> list[str]:
    """Remove what dead runtimes left behind; return the ids of the containers removed.

    In the state root, a container directory whose lock we can take is removed when it was
    a foreground run's (``autoremove``: that runtime died), or when it names no init (a
    create cut short); its processes are killed and its cgroups removed with it. Its state
    is read before its lock is tried (state.json is replaced whole), so that the lock of a
    container that is neither (a kept or detached one) is never held, not even for the
    moment of a look: ``start`` and ``mycontainer-oci delete``, which refuse a container
    whose lock another process holds, would fail while another run prunes. One
    without a lock file is a removal cut short: only the empty directory is left. An
    engine's container (``mycontainer-oci create``) is never touched: created, running or
    stopped, it is the engine's to delete. Cgroups of ours with no state directory at all
    are removed too, and storage directories whose lock we can take, whatever state root
    they belonged to. ``layout``: the host's cgroups, if the caller has read them already;
    ``problems`` gets a line for each storage directory that could not be removed.
    """
    root = state_root()
    layout = layout or cgroups.detect()
    pruned = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name == state.NAMES:
            continue
        if not _abandoned(root, name):
            continue  # not ours to take, even for a moment: a start or delete would fail
        path = os.path.join(root, name)
        lock = state.try_lock(path)
        if lock is None:
            continue  # its runtime is alive, or another command is at work on it
        if lock == -1:
            try:
                os.rmdir(path)
            except OSError:
                continue  # ENOTEMPTY: a making that has just begun; or gone meanwhile
        else:
            try:
                if not _abandoned(root, name):  # started again since it was read
                    continue
                _remove_groups(layout, name.lstrip("."), path)
                network.release_leftovers(path)  # veth, ports, lease
                state.remove(state.State(root, name, {}))
            finally:
                os.close(lock)
        if not name.startswith("."):
            pruned.append(name)
    state.prune_names(root)
    pruned += [name for name in _prune_storage(layout, problems) if name not in pruned]

    # A state directory always exists before its container's cgroup is made.
    def alive(name: str) -> bool:
        return os.path.isdir(os.path.join(root, name))

    for path in cgroups.stale_groups(layout, alive, cgroup_parent()):
        try:
            cgroups.remove_group(path)
        except OSError as error:  # left for a later prune; not this create's failure
            if problems is not None:
                problems.append(f"cannot remove cgroup {path}: {error.strerror}")
            continue
        pruned.append(os.path.basename(path))
    return pruned


def _abandoned(root: str, name: str) -> bool:
    """Whether the state directory ``name`` of ``root``, if nobody holds its lock, is left
    over: a making (hidden name, or no init recorded) or a foreground run's container (see
    prune)."""
    try:
        with open(os.path.join(root, name, state.STATE_FILE)) as file:
            record = json.load(file)
    except (OSError, ValueError):
        return True  # no state written: a making cut short
    return name.startswith(".") or not record.get("pid") or bool(record.get("autoremove"))


def _remove_groups(layout: cgroups.Layout, container_id: str, directory: str) -> None:
    """Kill and remove the cgroups of the container whose state is in ``directory``.

    Where they are depends on the cgroup its runtime ran in (cgroups.py), which need not be
    ours: the state names them. Only paths below the root of a hierarchy of this host are
    taken from it (a cgroupsPath names the group: it need not end in the id); where the
    group would be from here is added.
    """
    try:
        with open(os.path.join(directory, "state.json")) as file:
            recorded = json.load(file).get("cgroups", [])
    except (OSError, ValueError, AttributeError):
        recorded = []
    mounts = [layout.v2_mount or "", layout.v1_cpuset or "", *layout.v1_mounts.values()]
    groups = {
        group
        for group in recorded
        if isinstance(group, str)
        and ".." not in group.split("/")
        and any(mount and group.startswith(mount.rstrip("/") + "/") for mount in mounts)
    }
    groups.update(cgroups.Cgroup(layout, container_id, cgroup_parent()).directories)
    cgroups.remove_groups(sorted(groups))


def _prune_storage(layout: cgroups.Layout, problems: list[str] | None) -> list[str]:
    """Remove the storage directories that no living runtime holds locked; return their ids.

    Storage may outlive its state: the runtime was killed between removing the one and the
    other, or the machine rebooted (the state is in /run). Its lock says whether its runtime
    is alive; if not, what may be left of the container in another state root's cgroup
    parent is ended first. Only container ids are looked at: a home shared with other tools
    keeps their directories.
    """
    from runtime import image, removal

    parent = os.path.join(image.home(), "containers")
    pruned = []
    for name in os.listdir(parent) if os.path.isdir(parent) else []:
        if not cgroups.is_container_id(name) or _owned(os.path.join(parent, name), name):
            continue  # not a container's, or one whose container exists
        path = os.path.join(parent, name)
        try:
            lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone meanwhile, or not a directory: not ours
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _end_processes(layout, name)
            removal.remove_tree(path)
            pruned.append(name)
        except BlockingIOError:
            pass  # its runtime is alive
        except OSError as error:  # left for a later prune, which tries again
            if problems is not None:
                problems.append(str(error))
        finally:
            os.close(lock)
    return pruned


def _owned(storage: str, container_id: str) -> bool:
    """Whether the container of storage directory ``storage`` exists: in this state root,
    or in the one its owner file names. A stopped container keeps its storage with no
    process to hold its lock; after a reboot, its state root in /run is gone, and so is
    the container."""
    if os.path.isdir(os.path.join(state_root(), container_id)):
        return True  # most are: the owner file is read for the others only
    try:
        with open(os.path.join(storage, OWNER)) as file:
            owner = file.read()
    except OSError:
        return False
    return bool(owner) and os.path.isdir(os.path.join(owner, container_id))


def _end_processes(layout: cgroups.Layout, container_id: str) -> None:
    """Kill and remove container ``container_id``'s cgroups under the cgroup parent of any
    state root (``mycontainer``, ``mycontainer-<crc>``): its runtime is dead, but the
    container outlives it until its own state root is pruned."""
    for directory in cgroups.Cgroup(layout, container_id).parents:
        base = os.path.dirname(directory)
        for parent in os.listdir(base) if os.path.isdir(base) else []:
            if parent.startswith(cgroups.PARENT):
                cgroups.remove_group(os.path.join(base, parent, container_id))


# --- the operations on a container that any process can load ----------------------------
# Each is what the runtime spec's command of the same name does (runtime.md, "Operations").


def start(root: str, container_id: str) -> None:
    """Run the user's program of a created container: open its gate."""
    found = state.load(root, container_id)
    lock = state.lock(found)
    try:
        status = found.status()
        if status != state.CREATED:
            raise ContainerError(f"cannot start container {container_id!r}: it is {status}")
        _start_hooks(found, "startContainer")
        state.open_gate(found)
        _start_hooks(found, "poststart")
    finally:
        os.close(lock)


def kill(root: str, container_id: str, signum: int, every: bool = False) -> None:
    """Send ``signum`` to the container's init, or with ``every`` to all its processes.

    The spec asks for an error when the container is neither created nor running. A pid
    file descriptor (pidfd_open(2)) pins the init while we check that it is still the one
    the state names: a signal never reaches a process that merely reuses its pid.
    """
    found = state.load(root, container_id)
    status = found.status()
    if status not in (state.CREATED, state.RUNNING, state.PAUSED):
        raise ContainerError(f"cannot kill container {container_id!r}: it is {status}")
    if every:
        for group in found.record.get("cgroups", []):
            cgroups.signal_members(group, signum)
        return
    try:
        pidfd = os.pidfd_open(found.pid)
    except ProcessLookupError:
        raise ContainerError(f"cannot kill container {container_id!r}: it has stopped") from None
    try:
        if not found.init_alive():
            raise ContainerError(f"cannot kill container {container_id!r}: it has stopped")
        signal.pidfd_send_signal(pidfd, signum)
    finally:
        os.close(pidfd)


def delete(root: str, container_id: str, force: bool = False, wait: bool = False) -> None:
    """Remove a stopped container: its cgroups, network leftovers, storage and state.

    A container that is not stopped is an error (the spec: "MUST have no effect"), unless
    ``force``: then all its processes are killed first, as ``runc delete --force`` does.
    With ``wait``, a container another mycontainer holds (a foreground run, ending) is
    waited for rather than refused. The state is read again once the lock is held (a
    ``start`` may have run the container meanwhile), and a detached container's monitor
    is let finish writing (its log, exit.json) before what it writes in is removed.
    """
    found = state.load(root, container_id)
    lock = state.lock(found, wait=wait)
    try:
        found = state.load(root, container_id)  # as it is now: it may have started again
        status = found.status()
        if status != state.STOPPED and not force:
            raise ContainerError(
                f"cannot delete container {container_id!r}: it is {status} "
                "(stop it first, or use --force)"
            )
        layout = cgroups.detect()
        release_stopped(layout, found)  # with force: kills what runs, and waits for it
        wait_exit(found, timeout=10)  # its monitor writes no more: its log, exit.json
        storage = found.record.get("config", {}).get("layers") and storage_directory(container_id)
        if storage:
            from runtime import removal

            removal.remove_tree(storage)
        poststop = json.dumps(dict(found.oci_state(), status=state.STOPPED))
        state.remove(found)
        _run_hooks(found.record.get("config", {}).get("hooks", {}), "poststop", found, poststop)
    finally:
        os.close(lock)


def release_stopped(layout: cgroups.Layout, found: state.State) -> None:
    """Kill what is left of a container and remove its cgroups, veth, ports and lease."""
    _remove_groups(layout, found.id, found.directory)
    network.release_leftovers(found.directory)


def cleanup(root: str, container_id: str, remove: bool = False) -> None:
    """What a detached container's watcher runs once the program has ended (podman's
    ``container cleanup``): note an OOM kill, release the network and cgroups; with
    ``remove`` (``run --rm``), remove the container."""
    found = state.load(root, container_id)
    if remove:
        delete(root, container_id, wait=True)
        return
    lock = state.lock(found)
    try:
        if found.init_alive():
            return  # started again meanwhile
        layout = cgroups.detect()
        ended = found.exit_status()
        if ended is not None and "oomKilled" not in ended:
            group = cgroups.Cgroup(layout, container_id, cgroup_parent(root))
            ended["oomKilled"] = group.oom_kills() > 0
            state.record_exit(found, ended)
        release_stopped(layout, found)
    finally:
        os.close(lock)


def watcher_alive(found: state.State) -> bool:
    """Whether the process that collects the container's exit code still runs: the
    foreground ``mycontainer run``, or a detached container's monitor."""
    pid = found.record.get("watcher_pid", 0)
    return bool(pid) and state.process_start_time(pid) == found.record.get("watcher_start_time")


def wait_exit(found: state.State, timeout: float | None = None) -> dict | None:
    """Wait until the container has stopped and its exit is recorded; return exit.json's
    record, or None when no watcher is left to record it (it was killed). ``timeout``:
    seconds, else wait as long as it runs."""
    deadline = None if timeout is None else time.monotonic() + timeout
    _wait_stopped(found, deadline)
    while True:
        ended = found.exit_status()
        if ended is not None or not watcher_alive(found):
            return ended or found.exit_status()
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def _wait_stopped(found: state.State, deadline: float | None) -> bool:
    """Wait for the init to end (poll(2) on a pidfd: readable once it has exited); return
    whether it did before ``deadline`` (time.monotonic)."""
    import select

    if not found.init_alive():
        return True
    try:
        pidfd = os.pidfd_open(found.pid)
    except ProcessLookupError:
        return True
    try:
        if not found.init_alive():  # the pid was reused between the check and the open
            return True
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while found.init_alive():  # a zombie, exited but not yet reaped, counts as gone
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            poller.poll(None if left is None else max(1, int(left * 1000)))
        return True
    finally:
        os.close(pidfd)


def stop(root: str, container_id: str, seconds: float = 10) -> None:
    """``docker stop``: SIGTERM to the init, SIGKILL to every process after ``seconds``;
    return once the container has stopped and its exit code is recorded."""
    found = state.load(root, container_id)
    status = found.status()
    if status not in (state.RUNNING, state.PAUSED, state.CREATED):
        raise ContainerError(f"container {shown(found)} is not running")
    if status == state.PAUSED:  # a frozen process cannot take a signal's action
        for group in found.record.get("cgroups", []):
            cgroups.signal_members(group, signal.SIGKILL)
    else:
        try:
            kill(root, container_id, signal.SIGTERM)
        except ContainerError:
            pass  # it stopped meanwhile
    if not _wait_stopped(found, time.monotonic() + seconds):
        for group in found.record.get("cgroups", []):
            cgroups.signal_members(group, signal.SIGKILL)
        _wait_stopped(found, None)
    wait_exit(found, timeout=10)


def remove(root: str, container_id: str, force: bool = False) -> None:
    """``docker rm``: a stopped container goes; a running one only with ``force``, killed
    first (with its runtime, if it is a foreground run's, left to finish)."""
    found = state.load(root, container_id)
    status = found.status()
    if status != state.STOPPED:
        if not force:
            raise ContainerError(
                f"cannot remove container {shown(found)}: it is {status} "
                "(stop it first, or use 'rm -f')"
            )
        for group in found.record.get("cgroups", []):
            cgroups.signal_members(group, signal.SIGKILL)
        _wait_stopped(found, time.monotonic() + 10)
    try:
        delete(root, container_id, force=force, wait=True)
    except state.StateError:
        if os.path.isdir(found.directory):
            raise
        # its foreground run had --rm, and removed it meanwhile


def shown(found: state.State) -> str:
    """A container as messages name it: its name, else its short id."""
    return found.name or found.id[:12]


# The namespaces ``exec`` joins, as /proc/PID/ns names them: mnt last, as it changes the root.
EXEC_NAMESPACES = (
    ("user", namespaces.USER),  # first: the others may be its own
    ("cgroup", namespaces.CGROUP),
    ("ipc", namespaces.IPC),
    ("uts", namespaces.UTS),
    ("net", namespaces.NET),
    ("pid", namespaces.PID),
    ("mnt", namespaces.MOUNT),
)
