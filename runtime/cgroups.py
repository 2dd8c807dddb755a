"""Control groups: what a container may use of the machine (memory, CPU time, processes).

Namespaces decide what a container *sees*; cgroups decide how much it may *use*
(cgroups(7)). The kernel offers two interfaces:

- **cgroup v2** (the unified hierarchy, the one this lab teaches): one tree mounted at
  /sys/fs/cgroup; a group is a directory; a controller works in a group once its parent
  lists it in ``cgroup.subtree_control``. Limits are files: ``memory.max``, ``cpu.weight``,
  ``pids.max``. (https://docs.kernel.org/admin-guide/cgroup-v2.html)
- **cgroup v1**: one tree *per controller* (``/sys/fs/cgroup/memory``, ``.../cpu``...), with
  other file names (``memory.limit_in_bytes``, ``cpu.shares``). Older hosts, and "hybrid"
  hosts that mount an empty v2 tree beside the v1 ones, still use it.

Each container gets a group of its own, ``mycontainer/<id>``, near the group the runtime
itself runs in (the one /proc/self/cgroup names), so that we never move a process out of
the part of the tree we were started in, as systemd asks of every cgroup user
(https://systemd.io/CGROUP_DELEGATION/):

- **v2**: *beside* our own group, in its parent: a ``sudo`` shell's mycontainer, in
  ``/user.slice/user-1000.slice/session-1.scope``, makes
  ``/user.slice/user-1000.slice/mycontainer/<id>``. Not inside it: our group holds processes
  (ours, the shell's), and a v2 group with processes cannot hand controllers to child groups
  (the *no-internal-process* rule: ``cgroup.subtree_control`` answers EBUSY). Its parent holds
  none (a systemd slice never does; nor does a service's delegated cgroup when its processes
  sit in ``DelegateSubgroup=``). Run from the root, or from the root of a cgroup namespace,
  the parent is that root. Each group on the way down must list our controllers in its
  ``cgroup.subtree_control``; we add them where they are missing (systemd's slices enable
  only what their units need). runc places a relative cgroupsPath the same way
  (libcontainer/cgroups/fs2/defaultpath.go).
- **v1**: *inside* our own group, in each hierarchy: v1 has no such rule.

The container joins its group before it executes anything, then unshares a cgroup
namespace so that it sees its group as ``/`` (cgroup_namespaces(7)).
"""

from __future__ import annotations

import errno
import os
import time

V2_ROOT = "/sys/fs/cgroup"
PARENT = "mycontainer"  # our groups' parent, in each hierarchy
CONTROLLERS = ("memory", "cpu", "pids")
# cpuacct reports CPU time on v1; devices holds the device allow-list (runtime.devices).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices")
MIN_MEMORY = 6 * 1024 * 1024  # docker's minimum: below it a container cannot even start
MAX_CPU_WEIGHT = 10000
PID_MAX_LIMIT = 4 * 1024 * 1024  # <linux/threads.h>, on 64-bit machines
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


class CgroupError(Exception):
    """A cgroup could not be made or configured; the message says what to do."""


# --- input -------------------------------------------------------------------------------


def parse_memory(text: str) -> int:
    """Bytes from a docker-style size: ``64m``, ``1g``, ``512k``, ``1.5g``, bytes when bare.

    Units are binary (k = 1024), as in docker; a trailing ``b`` or ``ib`` is accepted. Digits
    are ASCII ones: str.isdigit() also takes ``²`` and ``١``, which int() refuses or reads.
    """
    value = text.strip().lower()
    for suffix in ("ib", "b"):
        if value.endswith(suffix) and value[: -len(suffix)][-1:].isalpha():
            value = value[: -len(suffix)]
            break
    unit = value[-1:] if value[-1:].isalpha() else ""
    number = value[: len(value) - len(unit)]
    if unit not in SIZE_UNITS or not _is_number(number.replace(".", "", 1)):
        raise ValueError(f"--memory takes a size such as 64m, 1g or 512k (got {text})")
    size = (
        int(float(number) * SIZE_UNITS[unit]) if "." in number else int(number) * SIZE_UNITS[unit]
    )
    if size < MIN_MEMORY:
        raise ValueError(f"--memory must be at least 6m (got {text})")
    if size >= 1 << 62:
        raise ValueError(f"--memory is too large (got {text})")
    return size


def parse_cpu_weight(text: str) -> int:
    """A cgroup v2 ``cpu.weight``: an integer from 1 to 10000 (the kernel's default is 100)."""
    if not _is_number(text) or not 1 <= int(text) <= MAX_CPU_WEIGHT:
        raise ValueError(f"--cpu-weight must be an integer from 1 to 10000 (got {text})")
    return int(text)


def parse_pids_limit(text: str) -> int:
    """The most processes (and threads) the container may have at once: a positive integer,
    at most the kernel's PID_MAX_LIMIT (4194304), which is all pids.max accepts."""
    if not _is_number(text) or not 1 <= int(text) <= PID_MAX_LIMIT:
        raise ValueError(f"--pids-limit must be an integer from 1 to {PID_MAX_LIMIT} (got {text})")
    return int(text)


def _is_number(text: str) -> bool:
    """Only ASCII digits (spaces around them aside), as parse_memory explains, and at most
    19 of them: no limit needs more, and int() refuses over 4,300 with its own message."""
    digits = text.strip()
    return digits.isascii() and digits.isdigit() and len(digits) <= 19


def weight_to_shares(weight: int) -> int:
    """cgroup v1 ``cpu.shares`` for a v2 ``cpu.weight``: shares = weight * 1024 / 100.

    systemd's conversion: the defaults match (weight 100 = 1024 shares) and ratios are kept
    (100:400 is 1024:4096). The OCI runtimes' linear map of [2, 262144] onto [1, 10000]
    would turn the default weight 100 into 2597 shares, not 1024.
    """
    return max(2, weight * 1024 // 100)  # 2 is the smallest value cpu.shares accepts


def format_size(size: int) -> str:
    """``67108864`` -> ``64 MiB``, for messages."""
    for unit in ("GiB", "MiB", "KiB"):
        scale = SIZE_UNITS[unit[0].lower()]
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


# --- the host's layout -------------------------------------------------------------------


class Layout:
    """Which cgroup interface this host offers, and where (from /proc/self/mountinfo)."""

    def __init__(self, version: str, v2_mount: str | None, v1_mounts: dict[str, str]):
        self.version = version  # "unified", "hybrid", "v1" or "none"
        self.v2_mount = v2_mount
        self.v1_mounts = v1_mounts  # controller -> mount point of its v1 hierarchy

    @property
    def uses_v2(self) -> bool:
        return self.version == "unified"

    def controllers(self) -> set[str]:
        """The controllers a container's group can use here."""
        if self.uses_v2:
            with open(os.path.join(self.v2_mount, "cgroup.controllers")) as file:
                return set(file.read().split())
        return set(self.v1_mounts)


def detect(mountinfo: str = "/proc/self/mountinfo") -> Layout:
    """Tell unified v2, hybrid (v1 controllers beside an empty v2 tree), v1 or none apart."""
    v2_mount = None
    v1_mounts: dict[str, str] = {}
    v2_root = None
    with open(mountinfo, errors="surrogateescape") as file:  # mount points need not be UTF-8
        for line in file:
            root, mount_point = line.split()[3:5]
            rest = line.split(" - ", 1)[1].split()
            fstype, super_options = rest[0], rest[2].split(",")
            if fstype == "cgroup2" and v2_root != "/":
                # The whole tree, not a part of it bind-mounted (as systemd-nspawn and LXC
                # give a container its own group, writable below a read-only tree).
                v2_mount, v2_root = mount_point, root
            elif fstype == "cgroup":
                for controller in super_options:
                    if controller in V1_CONTROLLERS:
                        v1_mounts[controller] = mount_point
    if v1_mounts:
        return Layout("hybrid" if v2_mount else "v1", v2_mount, v1_mounts)
    return Layout("unified" if v2_mount else "none", v2_mount, {})


def own_v2_path(proc_cgroup: str = "/proc/self/cgroup") -> str:
    """Our cgroup v2 group, relative to our cgroup namespace's root (the ``0::`` line)."""
    with open(proc_cgroup) as file:
        for line in file:
            if line.startswith("0::"):
                return line[3:].rstrip("\n")
    return "/"


def own_v1_path(controller: str, proc_cgroup: str = "/proc/self/cgroup") -> str:
    """The v1 group this process is in, for ``controller`` (from /proc/self/cgroup)."""
    with open(proc_cgroup) as file:
        for line in file:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return "/"


# --- one container's group -----------------------------------------------------------------


class Cgroup:
    """A container's cgroup: one directory on v2, one per controller hierarchy on v1."""

    def __init__(self, layout: Layout, container_id: str, parent: str = PARENT):
        self.layout = layout
        self.id = container_id
        if layout.uses_v2:
            beside = os.path.dirname(own_v2_path()).lstrip("/")  # "/" for "/" and "/init.scope"
            group = os.path.join(layout.v2_mount, beside, parent, container_id)
            self.paths = {controller: group for controller in layout.controllers()}
            self.directories = [group]
        else:
            self.paths = {
                controller: os.path.join(
                    mount, own_v1_path(controller).lstrip("/"), parent, self.id
                )
                for controller, mount in layout.v1_mounts.items()
            }
            self.directories = sorted(set(self.paths.values()))  # co-mounted ones share one
        self.parents = sorted({os.path.dirname(directory) for directory in self.directories})

    def create(
        self,
        memory: int | None = None,
        cpu_weight: int | None = None,
        pids_limit: int | None = None,
    ) -> None:
        """Make the group(s) and write the limits; undo everything if any step fails."""
        wanted = {"memory": memory, "cpu": cpu_weight, "pids": pids_limit}
        missing = [c for c, value in wanted.items() if value is not None and c not in self.paths]
        if missing:
            raise CgroupError(
                f"the {', '.join(missing)} cgroup controller is not available on this host "
                "(see /sys/fs/cgroup/cgroup.controllers): use the lab VM ('invoke vm.up')"
            )
        try:
            if self.layout.uses_v2:
                self._enable_v2_controllers()
            for directory in self.directories:
                os.makedirs(directory)
            if self.layout.uses_v2:
                self._limit_v2(memory, cpu_weight, pids_limit)
            else:
                self._limit_v1(memory, cpu_weight, pids_limit)
        except CgroupError:
            self.remove()
            raise
        except OSError as error:
            self.remove()
            raise CgroupError(f"cannot set up the container's cgroup: {error}") from None

    def join(self) -> None:
        """Move the calling process into the group(s); its children are born there.

        Call it from a single-threaded process (a freshly forked child is one). On v1 we
        write "0" (ourselves) to ``tasks``, which moves just the calling thread: the kernel
        then skips the lock that stabilises a whole thread group, whose first taker waits
        for an RCU grace period (~15 ms here, on every ``mycontainer run``). v2 has no
        ``tasks`` file; ``cgroup.procs`` it is.
        """
        members = "cgroup.procs" if self.layout.uses_v2 else "tasks"
        for directory in self.directories:
            write_file(directory, members, "0")  # "0": the writing process itself

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in this group."""
        if "memory" not in self.paths:
            return 0
        name = "memory.events" if self.layout.uses_v2 else "memory.oom_control"
        return _read_keyed(self.paths["memory"], name).get("oom_kill", 0)

    def cpu_usage_usec(self) -> int:
        """CPU time used by the group so far, in microseconds."""
        if self.layout.uses_v2:
            return _read_keyed(self.paths["cpu"], "cpu.stat")["usage_usec"]
        with open(os.path.join(self.paths["cpuacct"], "cpuacct.usage")) as file:
            return int(file.read()) // 1000  # nanoseconds

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left in the group(s), then remove them (rmdir(2) needs them empty)."""
        for directory in self.directories:
            remove_group(directory, timeout)

    # v2 ----------------------------------------------------------------------------------

    def _enable_v2_controllers(self) -> None:
        """Let our groups use the controllers: list them in subtree_control down the tree.

        Every group from the root to our parent must list them; where one already does
        (a read-only root, as in systemd-nspawn, often does), we write nothing.
        """
        wanted = {c for c in CONTROLLERS if c in self.paths}
        parent = self.parents[0]
        os.makedirs(parent, exist_ok=True)
        below = os.path.relpath(parent, self.layout.v2_mount).split(os.sep)
        for depth in range(len(below) + 1):
            directory = os.path.join(self.layout.v2_mount, *below[:depth])
            with open(os.path.join(directory, "cgroup.subtree_control")) as file:
                missing = sorted(wanted - set(file.read().split()))
            try:
                if missing:
                    write_file(directory, "cgroup.subtree_control", "+" + " +".join(missing))
            except OSError as error:
                raise CgroupError(_why_not_enabled(directory, missing, error)) from None

    def _limit_v2(self, memory, cpu_weight, pids_limit) -> None:
        if memory is not None:
            path = self.paths["memory"]
            write_file(path, "memory.max", str(memory))
            if os.path.exists(os.path.join(path, "memory.swap.max")):
                write_file(path, "memory.swap.max", "0")  # else the limit is just a swap threshold
        if cpu_weight is not None:
            write_file(self.paths["cpu"], "cpu.weight", str(cpu_weight))
        if pids_limit is not None:
            write_file(self.paths["pids"], "pids.max", str(pids_limit))

    # v1 ----------------------------------------------------------------------------------

    def _limit_v1(self, memory, cpu_weight, pids_limit) -> None:
        if memory is not None:
            path = self.paths["memory"]
            write_file(path, "memory.limit_in_bytes", str(memory))
            if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
                write_file(path, "memory.memsw.limit_in_bytes", str(memory))  # memory + swap
        if cpu_weight is not None:
            write_file(self.paths["cpu"], "cpu.shares", str(weight_to_shares(cpu_weight)))
        if pids_limit is not None:
            write_file(self.paths["pids"], "pids.max", str(pids_limit))


def _why_not_enabled(directory: str, controllers: list[str], error: OSError) -> str:
    """One line: why ``directory`` refused to pass ``controllers`` on, and what to do."""
    what = f"cannot enable the cgroup controllers {', '.join(controllers)} in {directory}"
    if error.errno == errno.EBUSY:
        return (
            f"{what}: it holds processes, and a cgroup v2 group with processes cannot hand"
            " controllers to child groups (no-internal-process rule): move them into a child"
            " group, or run mycontainer from a group whose parent holds none"
        )
    if error.errno == errno.EOPNOTSUPP:
        with open(os.path.join(directory, "cgroup.type")) as file:
            kind = file.read().strip()
        return f"{what}: its cgroup.type is {kind!r}, and memory needs 'domain' groups"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"{what}: it is not ours to change ({error.strerror}): enable them there, or run"
            " mycontainer in a subtree delegated with them (systemd: Delegate=yes)"
        )
    return f"{what}: {error.strerror}"


def remove_group(path: str, timeout: float = 5.0) -> None:
    """Kill every process in the group at ``path`` and remove it; missing is fine."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as error:
            if error.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        _kill_members(path)
        time.sleep(0.01)


def _kill_members(path: str) -> None:
    """SIGKILL the group's processes: with cgroup.kill (Linux 5.14+) or one by one."""
    if os.path.exists(os.path.join(path, "cgroup.kill")):
        write_file(path, "cgroup.kill", "1")
        return
    signal_members(path, 9)


def signal_members(path: str, signum: int) -> None:
    """Send ``signum`` to every process of the group at ``path`` (``kill --all``)."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as file:
            pids = [int(pid) for pid in file.read().split()]
    except FileNotFoundError:
        return
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def is_container_id(name: str) -> bool:
    """Container ids are 64 hex digits; other groups under our parent are not ours to prune."""
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def container_groups(layout: Layout, parent: str = PARENT) -> list[str]:
    """The paths of every container group under ``parent``, in every hierarchy.

    Those of the runtimes started where we run, or beside it: the groups of containers
    started from elsewhere (another user's session, a service) lie elsewhere.
    """
    found = []
    for directory in Cgroup(layout, "_", parent).parents:
        names = os.listdir(directory) if os.path.isdir(directory) else []
        found += [os.path.join(directory, name) for name in names if is_container_id(name)]
    return found


def stale_groups(layout: Layout, alive, parent: str = PARENT) -> list[str]:
    """Paths of the groups under ``parent`` whose container is not ``alive(id)``."""
    groups = container_groups(layout, parent)
    return [path for path in groups if not alive(os.path.basename(path))]


def write_file(directory: str, name: str, value: str) -> None:
    """Write ``value`` to the control file ``name`` of cgroup ``directory`` (devices too)."""
    with open(os.path.join(directory, name), "w") as file:
        file.write(value)


def _read_keyed(directory: str, name: str) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` per line) as a dict."""
    with open(os.path.join(directory, name)) as file:
        pairs = (line.split() for line in file)
        return {pair[0]: int(pair[1]) for pair in pairs if len(pair) == 2 and pair[1].isdigit()}
