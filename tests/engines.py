"""Container engines for tests/test_engines.py: podman and containerd, each with a store, a
state and a cgroup parent of its own, driving an OCI runtime by its command line.

The runtime is ``mycontainer-oci`` (the console script next to the Python that runs the
tests), or whatever ``MYCONTAINER_OCI_RUNTIME`` names (``runc``, ``crun`` or a path), which is
how these tests were proven against runc before ``mycontainer-oci`` existed.

Nothing here touches the machine's own engine state (/var/lib/containers, /run/containers,
/run/libpod, /var/lib/containerd, /run/containerd, ~/.config/containers): podman gets
``--root``, ``--runroot`` and its configuration files through CONTAINERS_CONF,
CONTAINERS_STORAGE_CONF and CONTAINERS_REGISTRIES_CONF (containers.conf(5),
containers-storage.conf(5)), no network but loopback, and pulls with a tmpfs on /var/lib
(:meth:`Podman.load`); containerd gets a generated config.toml with its own root, state and
socket, and runs in a mount namespace of its own with a tmpfs on /run, since its shims put
their sockets in /run/containerd/s whatever the config says. The test session already runs
in private network and mount namespaces (tests/conftest.py). What the runtime itself keeps
is its own affair: under podman, runc keeps its default /run/runc (podman 4.3 cannot pass
``--root`` to every call), mycontainer-oci gets MYCONTAINER_STATE; under containerd, both
keep theirs in containerd's /run.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import termios
import time

import pytest

RUNTIME_VARIABLE = "MYCONTAINER_OCI_RUNTIME"
# podman asks the runtime for rlimits above the hard limits of this kind of host (itself a
# container, where even root cannot raise them), and setrlimit(2) fails: ask for less.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
PODMAN_IMAGE = "localhost/busybox:latest"
CTR_IMAGE = "docker.io/library/busybox:latest"
# containerd in a mount namespace of its own (unshare --mount makes its mounts private) with
# a tmpfs on /run: its shims' sockets (/run/containerd/s/...) and runc's state go there.
CONTAINERD_IN_PRIVATE_RUN = (
    'mount -t tmpfs -o mode=0755 tmpfs /run && exec containerd --config "$1"'
)
SNAPSHOTTER = "native"  # plain copies: no overlay mounts to leak, on any filesystem


def find_oci_runtime() -> str:
    """The runtime under test: $MYCONTAINER_OCI_RUNTIME, else the venv's mycontainer-oci.

    Skips the test when neither is there.
    """
    named = os.environ.get(RUNTIME_VARIABLE)
    if named:
        path = shutil.which(named)
        if not path:
            pytest.fail(f"{RUNTIME_VARIABLE}={named}: no such executable")
        return os.path.realpath(path)
    path = os.path.join(os.path.dirname(sys.executable), "mycontainer-oci")
    if not os.access(path, os.X_OK):
        pytest.skip("mycontainer-oci not built yet")
    return path


def require(*programs: str) -> None:
    """Skip, saying what to install, unless every one of ``programs`` is on PATH."""
    missing = [program for program in programs if not shutil.which(program)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install {' '.join(missing)}")


def write_busybox_layout(rootfs: str, layout: str) -> str:
    """The busybox rootfs as a one-layer OCI image layout at ``layout``; returns ``layout``."""
    from runtime import rootfs as rootfs_module

    rootfs_module.write_oci_layout(rootfs, layout, CTR_IMAGE, ["sh"])
    return layout


def write_archive(layout: str, archive: str) -> str:
    """The OCI layout as an OCI archive (a tar of the layout), as ``ctr images import``
    takes it; returns ``archive``."""
    with tarfile.open(archive, "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(os.path.join(layout, name), arcname=name)
    return archive


# --- cgroups -----------------------------------------------------------------------------


class CgroupParent:
    """An absolute cgroup path for the engines' containers (and podman's conmon), made
    inside the part of the tree this process runs in, and removed at the end.

    Engines name a cgroup parent by its absolute path, from each hierarchy's root; their
    default (podman's /libpod_parent, containerd's /default) would put containers outside
    the subtree the tests were started in, which the tests must never do
    (https://systemd.io/CGROUP_DELEGATION/). So the parent is, as runtime/cgroups.py
    explains: on cgroup v1, inside our own group (the deepest of our groups, which must
    contain the others); on v2, beside it, since a v2 group holding processes cannot give
    controllers to children.
    """

    def __init__(self, name: str):
        self.mounts = cgroup_mounts()
        own = own_groups()
        if "" in own and len(own) == 1:  # unified: the 0:: line only
            base = os.path.dirname(own[""])
        else:
            base = max(own.values(), key=lambda path: path.count("/"))
            outside = [path for path in own.values() if not is_within(base, path)]
            if outside:
                pytest.skip(f"our cgroups differ between hierarchies ({sorted(own.values())})")
        self.path = os.path.join(base, name)
        # The highest directory of the path that does not exist yet, in each hierarchy:
        # all that is below it, the engines made.
        self.tops = []
        for mount in self.mounts:
            top = mount + self.path
            while os.path.dirname(top) != mount and not os.path.isdir(os.path.dirname(top)):
                top = os.path.dirname(top)
            if not os.path.isdir(top):
                self.tops.append(top)

    def remove(self) -> list[str]:
        """Kill what is left in the groups made below the parent, remove them; return
        those that could not be removed."""
        left = []
        for top in self.tops:
            if not os.path.isdir(top):
                continue
            for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
                if not remove_group(directory):
                    left.append(directory)
        return left

    def groups(self) -> list[str]:
        """The groups below the parent now, in every hierarchy (the parent itself aside)."""
        found = []
        for mount in self.mounts:
            for directory, _, _ in os.walk(mount + self.path):
                if directory != mount + self.path:
                    found.append(directory)
        return sorted(found)


def cgroup_mounts() -> list[str]:
    """The mount points of the cgroup hierarchies (v1 and v2) this process sees."""
    mounts = []
    with open("/proc/self/mountinfo", errors="surrogateescape") as file:
        for line in file:
            fstype = line.split(" - ", 1)[1].split()[0]
            if fstype in ("cgroup", "cgroup2"):
                mounts.append(line.split()[4])
    return mounts


def own_groups() -> dict[str, str]:
    """Our group in each hierarchy, by its controllers ("" for v2), from /proc/self/cgroup."""
    groups = {}
    with open("/proc/self/cgroup") as file:
        for line in file:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            groups[controllers] = path
    return groups


def is_within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor.rstrip("/") + "/")


def remove_group(directory: str, timeout: float = 10) -> bool:
    """rmdir a cgroup once the processes in it (SIGKILLed: the tests made them) are gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(directory)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
        try:
            with open(os.path.join(directory, "cgroup.procs")) as file:
                pids = [int(pid) for pid in file.read().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


# --- processes -----------------------------------------------------------------------------


def processes_mentioning(text: str) -> list[int]:
    """The pids of the processes whose command line contains ``text`` (a path of a test's
    own: a store, a socket), such as the conmon or shim an engine left running."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as file:
                if text.encode() in file.read():
                    pids.append(int(name))
        except OSError:
            pass  # gone meanwhile
    return pids


def end_processes_mentioning(text: str, timeout: float = 10) -> list[int]:
    """Wait for the processes ``processes_mentioning(text)`` to exit; SIGKILL those still
    there after ``timeout`` seconds, and return their pids."""
    deadline = time.monotonic() + timeout
    while processes_mentioning(text) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = processes_mentioning(text)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def unmount_under(path: str) -> list[str]:
    """Lazily unmount what is mounted under ``path`` (deepest first); return the mount points."""
    with open("/proc/self/mountinfo", errors="surrogateescape") as file:
        points = [line.split()[4] for line in file]
    under = sorted({p for p in points if is_within(p, path)}, key=len, reverse=True)
    for point in under:
        subprocess.run(["umount", "-l", point], capture_output=True)
    return under


def run_text(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(argv)`` as an engine's commands run here, unless ``kwargs`` say
    otherwise: output captured as text, at most two minutes (a pull or a stop may be slow)."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 120)
    return subprocess.run(argv, **kwargs)


def in_terminal(
    argv: list[str], rows: int, columns: int, timeout: float = 60, **popen_args
) -> tuple[int, str]:
    """Run ``argv`` with a new pty as its controlling terminal, of ``rows`` x ``columns``,
    as in a terminal emulator (pty(7)); return its exit status and all it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=controlling_terminal,
        **popen_args,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([master], [], [], left)[0]:
                raise AssertionError(f"{argv[0]} still ran after {timeout} s: {output!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every process holding the terminal closed it
                break
            if not chunk:
                break
            output += chunk
        return process.wait(timeout=max(1, deadline - time.monotonic())), output.decode(
            errors="replace"
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


# --- podman --------------------------------------------------------------------------------


class Podman:
    """``podman`` with a store, a run root, configuration files and a cgroup parent of its
    own, and ``--runtime`` the runtime under test."""

    def __init__(self, runtime: str, directory: str, cgroup_parent: CgroupParent):
        self.runtime = runtime
        self.directory = directory
        self.cgroup_parent = cgroup_parent
        self.root = os.path.join(directory, "root")
        self.runroot = os.path.join(directory, "runroot")
        tmp = os.path.join(directory, "tmp")
        for path in (self.root, self.runroot, tmp):
            os.makedirs(path, exist_ok=True)
        conf = os.path.join(directory, "containers.conf")
        with open(conf, "w") as file:
            # No network but loopback: a bridge would change the session's network
            # namespace and need what this host may lack. The CNI backend, never called
            # then: netavark keeps a lock and a database in /run/containers/networks even
            # so. Events to a file: no journald.
            file.write(
                "[containers]\n"
                'netns = "none"\n'
                'log_driver = "k8s-file"\n'
                "[engine]\n"
                'cgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n'
                f'events_logfile_path = "{directory}/events.log"\n'
                f'tmp_dir = "{tmp}"\n'
                f'volume_path = "{self.root}/volumes"\n'
                f'static_dir = "{self.root}/libpod"\n'
                "[network]\n"
                'network_backend = "cni"\n'
                f'network_config_dir = "{directory}/networks"\n'
            )
        storage = os.path.join(directory, "storage.conf")
        with open(storage, "w") as file:
            file.write(
                f'[storage]\ndriver = "overlay"\ngraphroot = "{self.root}"\n'
                f'runroot = "{self.runroot}"\n'
            )
        registries = os.path.join(directory, "registries.conf")
        with open(registries, "w") as file:  # a mistyped image name never goes to a registry
            file.write('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        # The runtime's state directory: podman 4.3 cannot name it (its --runtime-flag
        # root=DIR is not passed on to `podman container cleanup`, whose delete then misses
        # the container), so the runtime keeps its default (runc: /run/runc), but
        # mycontainer-oci is given one of the test's own as mycontainer is, by environment.
        self.env = dict(
            os.environ,
            CONTAINERS_CONF=conf,
            CONTAINERS_STORAGE_CONF=storage,
            CONTAINERS_REGISTRIES_CONF=registries,
            MYCONTAINER_STATE=os.path.join(directory, "runtime"),
        )

    def command(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root", self.root,
            "--runroot", self.runroot,
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--runtime", self.runtime,
            *args,
        ]  # fmt: skip

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """``podman ARGS...``; the CompletedProcess, output as text."""
        kwargs.setdefault("cwd", self.directory)  # conmon leaves a file "oom" in its cwd
        return run_text(self.command(*args), env=self.env, **kwargs)

    def in_terminal(self, *args: str, rows: int, columns: int) -> tuple[int, str]:
        """``podman ARGS...`` in a terminal of ``rows`` x ``columns`` (:func:`in_terminal`)."""
        return in_terminal(self.command(*args), rows, columns, env=self.env, cwd=self.directory)

    def run_options(self) -> list[str]:
        """What every ``podman run`` here needs: the cgroup parent and the rlimits."""
        return ["--cgroup-parent", self.cgroup_parent.path, *ULIMITS]

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """``podman run OPTIONS ARGS...``."""
        return self("run", *self.run_options(), *args, **kwargs)

    def load(self, layout: str) -> None:
        """Pull the OCI layout into the store and name it PODMAN_IMAGE.

        As root, containers/image records every copy in /var/lib/containers/cache, whatever
        ``--root`` says: the pull runs in a mount namespace of its own with a tmpfs on
        /var/lib, so that nothing of the machine's changes.
        """
        pulled = subprocess.run(
            [
                "unshare", "--mount", "--propagation", "private",
                "sh", "-c", 'mount -t tmpfs tmpfs /var/lib && exec "$@"',
                "sh", *self.command("pull", "--quiet", f"oci:{layout}"),
            ],
            env=self.env, cwd=self.directory, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        tagged = self("tag", pulled.stdout.strip(), PODMAN_IMAGE)
        assert tagged.returncode == 0, tagged.stderr

    def remove_containers(self) -> list[str]:
        """Remove every container (running or not) at once; return the problems seen."""
        problems = []
        removed = self("rm", "--all", "--force", "--time", "0")
        if removed.returncode != 0:
            problems.append(f"podman rm --all --force failed: {removed.stderr.strip()}")
        left = self("ps", "--all", "--quiet")
        if left.stdout.strip():
            problems.append(f"containers left: {left.stdout.split()}")
        # conmon outlives podman by design; once its container is gone, so should it be.
        killed = end_processes_mentioning(self.root)
        if killed:
            problems.append(f"processes of the store still ran, killed: {killed}")
        return problems

    def close(self) -> list[str]:
        """Remove containers, images and the store's mounts; return the problems seen.

        Not ``podman system reset``, which also rewrites ~/.config/containers.
        """
        problems = self.remove_containers()
        removed = self("rmi", "--all", "--force")
        if removed.returncode != 0:
            problems.append(f"podman rmi --all --force failed: {removed.stderr.strip()}")
        # The overlay driver keeps its directory mounted on itself, made private, for as
        # long as the store is used (containers-storage.conf(5)): that one is no leftover.
        own = os.path.join(self.root, "overlay")
        mounted = [point for point in unmount_under(self.directory) if point != own]
        if mounted:
            problems.append(f"mounts left under the store: {mounted}")
        return problems


# --- containerd ----------------------------------------------------------------------------


class Containerd:
    """A containerd of the test's own (root, state, socket from a generated config.toml),
    in a mount namespace of its own with a tmpfs on /run, and ``ctr`` talking to it."""

    def __init__(self, runtime: str, directory: str, cgroup_parent: CgroupParent):
        self.runtime = runtime
        self.directory = directory
        self.cgroup_parent = cgroup_parent
        self.socket = os.path.join(directory, "containerd.sock")
        self.fifos = os.path.join(directory, "fifo")
        self.config = os.path.join(directory, "config.toml")
        self.log = os.path.join(directory, "containerd.log")
        # Plugins this host cannot or need not run: CRI (Kubernetes), the snapshotters of
        # other filesystems. (config.toml(5) of containerd 1.6)
        disabled = ", ".join(
            f'"io.containerd.{name}"'
            for name in (
                "grpc.v1.cri",
                "snapshotter.v1.aufs",
                "snapshotter.v1.btrfs",
                "snapshotter.v1.devmapper",
                "snapshotter.v1.zfs",
            )
        )
        with open(self.config, "w") as file:
            file.write(
                "version = 2\n"
                f'root = "{directory}/root"\n'
                f'state = "{directory}/state"\n'
                f"disabled_plugins = [{disabled}]\n"
                f'[grpc]\naddress = "{self.socket}"\n'
                f'[ttrpc]\naddress = "{self.socket}.ttrpc"\n'
                f'[plugins."io.containerd.internal.v1.opt"]\npath = "{directory}/opt"\n'
            )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        """Start containerd and wait until it answers on its socket."""
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [
                    "unshare", "--mount", "--propagation", "private",
                    "sh", "-c", CONTAINERD_IN_PRIVATE_RUN, "sh", self.config,
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while self.ctr("version", timeout=10).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                with open(self.log) as log:
                    said = log.read()[-2000:]
                raise AssertionError(f"containerd did not start; its log ends:\n{said}")
            time.sleep(0.1)

    def ctr(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """``ctr --address SOCKET ARGS...``; the CompletedProcess, output as text."""
        return run_text(["ctr", "--address", self.socket, *args], **kwargs)

    def run_command(self, container_id: str, *command: str) -> list[str]:
        """``ctr run --rm --runc-binary RUNTIME ... IMAGE ID COMMAND...``."""
        return [
            "ctr", "--address", self.socket,
            "run", "--rm",
            "--runc-binary", self.runtime,
            "--snapshotter", SNAPSHOTTER,
            "--fifo-dir", self.fifos,
            "--cgroup", f"{self.cgroup_parent.path}/{container_id}",
            CTR_IMAGE, container_id, *command,
        ]  # fmt: skip

    def run(self, container_id: str, *command: str, **kwargs) -> subprocess.CompletedProcess:
        """Run ``run_command``; the CompletedProcess, output as text."""
        return run_text(self.run_command(container_id, *command), **kwargs)

    def task_status(self, container_id: str) -> str | None:
        """The task's status as ``ctr tasks list`` shows it (RUNNING, STOPPED...), or None."""
        for line in self.ctr("tasks", "list").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == container_id:
                return fields[-1]
        return None

    def import_image(self, archive: str) -> None:
        imported = self.ctr("images", "import", "--snapshotter", SNAPSHOTTER, archive)
        assert imported.returncode == 0, imported.stderr

    def remove_containers(self) -> list[str]:
        """Kill and remove every task and container; return the problems seen."""
        problems = []
        listed = self.ctr("containers", "list", "--quiet")
        for container_id in listed.stdout.split():
            problems.append(f"container {container_id} was left")
            self.ctr("tasks", "kill", "--signal", "SIGKILL", container_id)
            self.ctr("tasks", "delete", "--force", container_id)
            self.ctr("containers", "delete", container_id)
        return problems

    def stop(self) -> list[str]:
        """Stop containerd and its shims; return the problems seen. Its mounts end with its
        mount namespace."""
        problems = self.remove_containers() if self.process else []
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                problems.append("containerd did not stop on SIGTERM")
        # Shims are started with the containerd socket address: one left is ours.
        killed = end_processes_mentioning(self.socket)
        if killed:
            problems.append(f"shims still ran after containerd stopped, killed: {killed}")
        return problems
