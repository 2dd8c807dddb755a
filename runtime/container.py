"""The container lifecycle: create, start, wait, delete, with the state kept on disk.

The states are the OCI runtime spec's (runtime.md, "State")::

    creating ──create()──> created ──start()──> running ──(init exits)──> stopped ──delete()──> gone

``mycontainer run`` is exactly ``create`` + ``start`` + ``wait`` + ``delete``. Each container
keeps its state in ``<state root>/<id>/state.json`` (id, status, init pid, image, config),
written atomically at every change, so that later commands (``ps``, ``exec``, ``kill``,
``delete``) can find a container that another process created.

The process that created a container holds an exclusive flock(2) on ``<id>/lock`` for as long
as it lives, and another on the container's storage directory (``<home>/containers/<id>``);
the kernel drops them when that process dies, even by SIGKILL. So a state or storage
directory whose lock can be taken belongs to no one any more: :func:`prune` (called by every
``create``, and by ``mycontainer prune``) stops what is left of it and removes it. ``delete``
removes the storage before the state, so that a runtime killed at any point leaves one of
them for ``prune`` to find, and a reboot (which empties /run) leaves storage that no state
owns, which ``prune`` finds by its lock alone.

Spec: https://github.com/opencontainers/runtime-spec/blob/main/runtime.md
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import zlib

from runtime import (
    cgroups,
    devices,
    filesystem,
    image,
    namespaces,
    network,
    process,
    removal,
    rootpath,
    security,
)
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
        net: str | None = None,  # bridge (default), none or host
        publish: list[str] | None = None,  # ["8080:80/tcp"]: network.parse_publish's form
        cap_add: list[str] | None = None,  # capability names, or ALL (security.parse_cap_add)
        cap_drop: list[str] | None = None,
        security_opt: list[str] | None = None,  # security.parse_security_opt's forms
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
        self.net = net or network.DEFAULT_MODE
        self.publish = list(publish or [])
        self.cap_add = list(cap_add or [])
        self.cap_drop = list(cap_drop or [])
        self.security_opt = list(security_opt or [])

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
    """Where containers keep their state; ``MYCONTAINER_STATE`` overrides it (for tests;
    empty: unset)."""
    path = os.environ.get("MYCONTAINER_STATE") or DEFAULT_STATE_ROOT
    if not os.path.isabs(path):
        raise ContainerError(f"MYCONTAINER_STATE must be an absolute path (got {path!r})")
    return path


def cgroup_parent() -> str:
    """The cgroup parent of this state root's containers: ``mycontainer`` for the default one.

    Each state root gets its own parent, so that pruning the containers of one (say, a test's)
    never touches those of another, whose state it cannot see.
    """
    root = state_root()
    if root == DEFAULT_STATE_ROOT:
        return cgroups.PARENT
    return f"{cgroups.PARENT}-{zlib.crc32(os.path.abspath(root).encode()):08x}"


def storage_directory(container_id: str) -> str:
    """Where a container's writable layer and root mount point are: on disk beside the
    images (``<home>/containers/<id>``), not in /run, which is memory."""
    return os.path.join(image.home(), "containers", container_id)


def new_id() -> str:
    """A random 64-hex-digit id, as docker makes them; the first 12 digits are its short form."""
    return os.urandom(32).hex()


def make_state_directory(directory: str) -> int:
    """Create state directory ``directory`` and return the descriptor of its locked lock.

    It is made under a hidden name, its lock file created and locked, then renamed
    (rename(2)): a directory of that name never lacks a held lock while its runtime lives.
    A concurrent prune may take the hidden directory for an abandoned one before it is
    locked; prune unlinks a lock file before it lets go of it, so a lock file with no links
    left, or a directory gone, means: start again. The lock holds as long as the descriptor
    stays open.
    """
    root, name = os.path.split(directory)
    os.makedirs(root, mode=0o700, exist_ok=True)
    making = os.path.join(root, f".{name}")
    while True:
        os.mkdir(making, 0o700)
        try:
            lock = os.open(
                os.path.join(making, "lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600
            )
        except FileNotFoundError:
            continue
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.fstat(lock).st_nlink > 0:
                os.rename(making, directory)
                return lock
        except FileNotFoundError:
            pass
        os.close(lock)


def make_storage_directory(directory: str) -> int:
    """Create storage directory ``directory`` and return a descriptor holding its lock.

    flock(2) needs the directory to exist, so a concurrent prune may lock and remove it
    between mkdir and flock: then the descriptor names a removed directory (no links left)
    and we make it again.
    """
    os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
    while True:
        os.mkdir(directory, 0o700)
        try:
            lock = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.fstat(lock).st_nlink > 0:
            return lock
        os.close(lock)


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
        self.storage = storage_directory(self.id)
        self.root_directory = os.path.join(self.storage, "root")
        self.cgroup = cgroups.Cgroup(cgroups.detect(), self.id, cgroup_parent())
        self.security = security.Security(config.cap_add, config.cap_drop, config.security_opt)
        self._init: process.Init | None = None
        self._network: network.Network | None = None
        self._lock = -1
        self._storage_lock = -1
        self.leftovers = ""  # what delete() could not remove, in one line

    @property
    def hostname(self) -> str:
        return self.config.hostname or self.id[:12]

    def create(self) -> None:
        """Build the container: cgroup, namespaces, mounts, hostname, network; the program waits."""
        try:  # checks the network settings, before anything exists
            self._network = network.Network(
                self.config.net, self.config.publish, self.directory, self.id
            )
        except network.NetworkError as error:
            raise ContainerError(str(error)) from None
        prune(self.cgroup.layout)
        self._make_directory()
        try:
            self._save()
            self.cgroup.create(self.config.memory, self.config.cpu_weight, self.config.pids_limit)
            devices.restrict(self.cgroup)  # before any of its processes can open a device
            self._storage_lock = make_storage_directory(self.storage)
            self._network.prepare(self.hostname)  # an address, and /etc files to mount
            self._init = process.spawn(
                process.Program(
                    self.config.args,
                    self._environment(),
                    self.config.cwd,
                    self.config.user,
                    self.security,
                ),
                namespaces=(
                    namespaces.CONTAINER & ~namespaces.NET
                    if self.config.net == "host"
                    else namespaces.CONTAINER
                ),
                before_unshare=self.cgroup.join,
                setup=self._setup_inside,
            )
            # The init waits at its gate: plug its network namespace into the bridge.
            self._network.connect(self._init.pid)
        except (
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

        Its mounts live in its own mount namespace, which the kernel destroys with its last
        process (and which never shared them with the host: ``namespaces.enter_new``); the
        storage is removed by ``removal.remove_tree``, which unmounts anything found there
        all the same, and never enters what stays mounted. What could not be removed is
        kept in ``leftovers``, one line, for the caller to report: it does not change the
        command's exit code, and ``prune`` tries again.
        """
        if self._init is not None:
            if self.status != STOPPED:
                self._init.kill()
            self._init.close()
            self._init = None
        if self._network is not None:
            self._network.release()  # its veth, published ports and address lease
        self.cgroup.remove()
        try:  # storage first: while the state stays, prune finds both
            removal.remove_tree(self.storage)
        except OSError as error:
            self.leftovers = f"{error} (then run 'mycontainer prune')"
        except KeyboardInterrupt:  # a huge tree takes a while: Ctrl-C leaves it to prune
            self.leftovers = f"interrupted: run 'mycontainer prune' to remove {self.storage}"
        remove_directory(self.directory)
        for lock in (self._storage_lock, self._lock):
            if lock != -1:
                os.close(lock)
        self._lock = self._storage_lock = -1

    def run(self, created=None) -> int:
        """create + start + wait + delete: what ``mycontainer run`` does.

        Signals meant for the container wait (blocked) until wait() can forward them.
        ``created()``, if given, runs once the container exists: where the caller lets go of
        what creating it needed (the image store's lock).
        """
        with process.blocking_forwarded_signals():
            self.create()
            try:
                if created:
                    created()
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
            "bundle": self.root_directory,
            "created": self.created,
            "config": self.config.as_dict(),
            "cgroups": self.cgroup.directories,
        }

    def _make_directory(self) -> None:
        """The state directory, locked until delete() closes ``self._lock``."""
        self._lock = make_state_directory(self.directory)

    def _setup_inside(self) -> None:
        """Runs in the container's init, inside its new namespaces, before the gate."""
        namespaces.set_hostname(self.hostname)
        if self.config.net != "host":  # with --net host, lo is the host's
            network.bring_up("lo")
        filesystem.mount_layers(self.config.layers, self.storage)
        filesystem.enter_rootfs(self.root_directory, files=self._network.files)
        self.security.protect_paths()  # masked and read-only paths of /proc and /sys
        os.close(rootpath.open_directory(self.config.cwd, create=True))  # as docker does

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
            file.write("\n")
        os.replace(path + ".tmp", path)


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


def remove_directory(directory: str) -> None:
    """Remove a container's state directory (it holds only files); missing is fine.

    The caller holds its lock, whose file goes last: a directory without one is then only
    ever a removal cut short (or a making barely begun), which prune recognises.
    """
    try:
        for name in sorted(os.listdir(directory), key=lambda name: name == "lock"):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
    except FileNotFoundError:
        pass  # never created, or removed already


def prune(layout: cgroups.Layout | None = None, problems: list[str] | None = None) -> list[str]:
    """Remove containers whose ``mycontainer`` died (e.g. SIGKILLed); return their ids.

    A container directory whose lock we can take belongs to no living runtime: its processes
    are killed, its cgroups and state removed (one without a lock file is a removal cut
    short: only the empty directory is left to remove). Cgroups of ours with no state
    directory at all are removed too, and storage directories whose lock we can take,
    whatever state root they belonged to. ``layout``: the host's cgroups, if the caller has
    read them already; ``problems`` gets a line for each storage directory that could not be
    removed.
    """
    root = state_root()
    layout = layout or cgroups.detect()
    pruned = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        lock = _lock_if_abandoned(path)
        if lock is None:
            continue  # its runtime is alive
        if lock == -1:
            try:
                os.rmdir(path)
            except OSError:
                continue  # ENOTEMPTY: a making that has just begun; or gone meanwhile
        else:
            try:
                _remove_groups(layout, name.lstrip("."), path)
                network.release_leftovers(path)  # veth, ports, lease
                remove_directory(path)
            finally:
                os.close(lock)
        if not name.startswith("."):
            pruned.append(name)
    pruned += [name for name in _prune_storage(layout, problems) if name not in pruned]

    # A state directory always exists before its container's cgroup is made.
    def alive(name: str) -> bool:
        return os.path.isdir(os.path.join(root, name))

    for path in cgroups.stale_groups(layout, alive, cgroup_parent()):
        cgroups.remove_group(path)
        pruned.append(os.path.basename(path))
    return pruned


def _remove_groups(layout: cgroups.Layout, container_id: str, directory: str) -> None:
    """Kill and remove the cgroups of the container whose state is in ``directory``.

    Where they are depends on the cgroup its runtime ran in (cgroups.py), which need not be
    ours: the state names them. Only paths in a hierarchy of this host, ending in the
    container's id, are taken from it; where the group would be from here is added.
    """
    try:
        with open(os.path.join(directory, "state.json")) as file:
            recorded = json.load(file).get("cgroups", [])
    except (OSError, ValueError, AttributeError):
        recorded = []
    mounts = [layout.v2_mount or "", *layout.v1_mounts.values()]
    groups = {
        group
        for group in recorded
        if isinstance(group, str)
        and os.path.basename(group) == container_id
        and ".." not in group.split("/")
        and any(mount and group.startswith(mount.rstrip("/") + "/") for mount in mounts)
    }
    groups.update(cgroups.Cgroup(layout, container_id, cgroup_parent()).directories)
    for group in sorted(groups):
        cgroups.remove_group(group)


def _prune_storage(layout: cgroups.Layout, problems: list[str] | None) -> list[str]:
    """Remove the storage directories that no living runtime holds locked; return their ids.

    Storage may outlive its state: the runtime was killed between removing the one and the
    other, or the machine rebooted (the state is in /run). Its lock says whether its runtime
    is alive; if not, what may be left of the container in another state root's cgroup
    parent is ended first. Only container ids are looked at: a home shared with other tools
    keeps their directories.
    """
    parent = os.path.join(image.home(), "containers")
    pruned = []
    for name in os.listdir(parent) if os.path.isdir(parent) else []:
        if not cgroups.is_container_id(name) or os.path.isdir(os.path.join(state_root(), name)):
            continue  # not a container's, or a living container of this state root
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


def _end_processes(layout: cgroups.Layout, container_id: str) -> None:
    """Kill and remove container ``container_id``'s cgroups under the cgroup parent of any
    state root (``mycontainer``, ``mycontainer-<crc>``): its runtime is dead, but the
    container outlives it until its own state root is pruned."""
    for directory in cgroups.Cgroup(layout, container_id).parents:
        base = os.path.dirname(directory)
        for parent in os.listdir(base) if os.path.isdir(base) else []:
            if parent.startswith(cgroups.PARENT):
                cgroups.remove_group(os.path.join(base, parent, container_id))


def _lock_if_abandoned(directory: str) -> int | None:
    """The state directory's lock, taken, if no living process holds it; -1 if it has no
    lock file (see remove_directory); None while its runtime lives."""
    try:
        lock = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    except NotADirectoryError:
        return None  # not a container's
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return None
    return lock
