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

A bundle's ``linux.cgroupsPath`` names the group instead (config-linux.md, "Cgroups path"),
placed as runc places it: a relative path where ``mycontainer/<id>`` would be (beside our
group on v2, inside it on v1); an absolute one from the hierarchy's root. Either must lie
below the place we may use: we never move a process out of the subtree we were started in.
Run from the root of a hierarchy (a root shell on most hosts), any absolute path does; run
from a delegated subtree (a systemd service with Delegate=yes, a user session, a sandbox's
group), an absolute path outside it is refused in one line, and a relative path works. On
v1, where each hierarchy has its own tree, the runtime may sit at the root of some and in a
delegated group of others (a sandbox that limits only memory): a hierarchy where the path
lies outside and whose controller the container's resources do not use gets no group, the
container staying in ours there, as any process we start would; one they use is refused.

The limits are the OCI ``linux.resources`` object, in the spec's own field names, whatever
the container came from: ``mycontainer run``'s flags become one (:func:`docker_resources`).
A field mycontainer does not support is refused, never ignored (:func:`check_resources`).

The container joins its group before it executes anything, then unshares a cgroup
namespace so that it sees its group as ``/`` (cgroup_namespaces(7)).
"""

from __future__ import annotations

import errno
import os
import re
import time

V2_ROOT = "/sys/fs/cgroup"
PARENT = "mycontainer"  # our groups' parent, in each hierarchy
CONTROLLERS = ("memory", "cpu", "pids")
# cpuacct reports CPU time on v1; devices holds the device allow-list (runtime.devices);
# freezer pauses a container. cpuset is joined only when a container asks for CPUs or nodes:
# its new groups start with none, and must be filled in before anything can join them.
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "devices", "freezer")
MIN_MEMORY = 6 * 1024 * 1024  # docker's minimum: below it a container cannot even start
MAX_CPU_WEIGHT = 10000
CPU_PERIOD = 100000  # µs: docker's period for --cpus, the kernel's default cfs_period_us
MIN_CPU_QUOTA = 1000  # µs: the smallest quota the kernel accepts (1 ms per period)
PID_MAX_LIMIT = 4 * 1024 * 1024  # <linux/threads.h>, on 64-bit machines
SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

# The linux.resources fields mycontainer applies, per object; "v1"/"v2": on that one only.
# Any other field holding a value is refused (check_resources): blockIO, hugepageLimits,
# network, rdma, memory.kernel (gone from Linux 6.x)...
SUPPORTED = {
    "memory": {
        "limit": "",
        "reservation": "",
        "swap": "",
        "swappiness": "v1",
        "disableOOMKiller": "v1",
    },
    "cpu": {
        "shares": "",
        "quota": "",
        "period": "",
        "cpus": "",
        "mems": "",
        "realtimePeriod": "v1",
        "realtimeRuntime": "v1",
    },
    "pids": {"limit": ""},
}
MAX_SHARES = 262144  # the kernel's MAX_SHARES for cpu.shares
CPU_LIST = r"\d+(-\d+)?(,\d+(-\d+)?)*"  # cpuset(7)'s list format: 0-3,6 (compiled if used)


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


def parse_cpus(text: str) -> float:
    """``--cpus``: how many CPUs' worth of time the container may use, as docker's: a decimal
    such as ``1.5`` (one and a half CPUs, spread over any of them), from 0.01 (the kernel's
    smallest quota, 1 ms per 100 ms period) to the CPUs this process may run on, as docker
    refuses more than the host has."""
    available = len(os.sched_getaffinity(0))
    number = text.strip()
    if not _is_number(number.replace(".", "", 1)):
        raise ValueError(f"--cpus takes a number of CPUs such as 1 or 0.5 (got {text})")
    cpus = float(number)
    if not MIN_CPU_QUOTA <= cpu_quota(cpus) <= available * CPU_PERIOD:
        raise ValueError(
            f"--cpus must be from 0.01 to {available}, the CPUs available here (got {text})"
        )
    return cpus


def cpu_quota(cpus: float) -> int:
    """The CPU time (µs) a container of ``cpus`` CPUs may use per CPU_PERIOD, as docker
    computes it: cpu.max's quota on v2, cpu.cfs_quota_us on v1."""
    return round(cpus * CPU_PERIOD)


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


def shares_to_weight(shares: int) -> int:
    """The cgroup v2 ``cpu.weight`` for OCI ``cpu.shares``: weight_to_shares reversed,
    rounded up, so that a weight survives the trip (300 -> 3072 -> 300) and the default
    1024 shares is the default weight 100."""
    return min(MAX_CPU_WEIGHT, max(1, (shares * 100 + 1023) // 1024))  # 1023: rounded up


def docker_resources(
    memory: int | None = None,
    cpu_weight: int | None = None,
    pids_limit: int | None = None,
    cpus: float | None = None,
) -> dict:
    """The OCI linux.resources object for ``mycontainer run``'s flags.

    ``--memory`` gives no swap on top (``swap``, memory + swap, equals the limit): else the
    limit would only be the point where the container starts swapping. ``--cpus`` is a
    quota of CPU time per period (the CFS bandwidth controller: cpu.max on v2,
    cpu.cfs_quota_us and cpu.cfs_period_us on v1); ``--cpu-weight`` only shares the CPU
    time that containers compete for, while a quota caps it even on an idle machine.
    """
    resources: dict = {}
    if memory is not None:
        resources["memory"] = {"limit": memory, "swap": memory}
    if cpu_weight is not None:
        resources["cpu"] = {"shares": weight_to_shares(cpu_weight)}
    if cpus is not None:
        resources.setdefault("cpu", {}).update(quota=cpu_quota(cpus), period=CPU_PERIOD)
    if pids_limit is not None:
        resources["pids"] = {"limit": pids_limit}
    return resources


def check_resources(resources: dict, layout: Layout) -> None:
    """Refuse, in one line naming the field, what mycontainer cannot apply on this host.

    A field that asks for nothing (null, 0, empty) is no request: engines send those.
    Device rules are runtime.devices's to check.
    """
    if not isinstance(resources, dict):
        raise CgroupError("config.json: linux.resources must be an object")
    version = "v2" if layout.uses_v2 else "v1"
    for name, value in resources.items():
        where = f"linux.resources.{name}"
        if name == "devices" or not value:
            continue
        if name == "unified":
            _check_unified(value, layout)
            continue
        if name not in SUPPORTED:
            raise CgroupError(f"config.json: {where} is not supported by mycontainer: remove it")
        if not isinstance(value, dict):
            raise CgroupError(f"config.json: {where} must be an object")
        for field, number in value.items():
            only = SUPPORTED[name].get(field)
            if number is None or number == 0 or number == "" or number is False:
                continue
            if only is None:
                raise CgroupError(
                    f"config.json: {where}.{field} is not supported by mycontainer: remove it"
                )
            if only and only != version:
                raise CgroupError(
                    f"config.json: {where}.{field} needs cgroup {only}, and this host runs"
                    f" cgroup {version}: remove it"
                )
            _check_value(f"{where}.{field}", number)
    cpu = resources.get("cpu") or {}
    if cpu.get("shares") and not 2 <= cpu["shares"] <= MAX_SHARES:
        raise CgroupError(f"config.json: linux.resources.cpu.shares must be from 2 to {MAX_SHARES}")
    memory = resources.get("memory") or {}
    limit, swap = memory.get("limit"), memory.get("swap")
    if swap and swap != -1 and (not limit or limit == -1 or swap < limit):
        raise CgroupError(
            "config.json: linux.resources.memory.swap (memory + swap) must be at least"
            " memory.limit, which it needs"
        )


def _check_value(where: str, value) -> None:
    """Numbers are integers (-1: no limit); cpus and mems are lists such as ``0-3,6``."""
    if where.endswith((".cpus", ".mems")):
        if not isinstance(value, str) or not re.fullmatch(CPU_LIST, value):
            raise CgroupError(f"config.json: {where} must be a list such as 0-3,6 (got {value!r})")
    elif where.endswith(".disableOOMKiller"):
        if not isinstance(value, bool):
            raise CgroupError(f"config.json: {where} must be true or false")
    elif isinstance(value, bool) or not isinstance(value, int) or value < -1 or value >= 1 << 63:
        raise CgroupError(f"config.json: {where} must be an integer, -1 for no limit")


def _check_unified(unified, layout: Layout) -> None:
    """linux.resources.unified: cgroup v2 files and their values, written as they are."""
    if not layout.uses_v2:
        raise CgroupError(
            "config.json: linux.resources.unified needs cgroup v2, and this host runs"
            " cgroup v1: remove it"
        )
    for name, value in unified.items():
        if "/" in name or name.startswith(("cgroup.", ".")) or "." not in name:
            raise CgroupError(
                f"config.json: linux.resources.unified: {name!r} is not a controller's file"
            )
        if not isinstance(value, str) or "\n" in value.rstrip("\n"):
            raise CgroupError(f"config.json: linux.resources.unified.{name} must be one line")


def check_path(path: str) -> list[str]:
    """The components of an OCI ``linux.cgroupsPath``; ``..``, ``.`` and the root refused."""
    parts = path.strip("/").split("/") if isinstance(path, str) else []
    if not parts or parts == [""] or any(part in ("", ".", "..") for part in parts):
        raise CgroupError(
            f"config.json: linux.cgroupsPath {path!r} must name a group: no '..', '.' or"
            " empty components, and not the root"
        )
    return parts


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

    def __init__(
        self,
        version: str,
        v2_mount: str | None,
        v1_mounts: dict[str, str],
        v1_cpuset: str | None = None,
    ):
        self.version = version  # "unified", "hybrid", "v1" or "none"
        self.v2_mount = v2_mount
        self.v1_mounts = v1_mounts  # controller -> mount point of its v1 hierarchy
        self.v1_cpuset = v1_cpuset  # the v1 cpuset hierarchy's, joined only when asked for

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
    """Tell unified v2, hybrid (v1 controllers beside an empty v2 tree), v1 or none apart.

    A hierarchy mounted more than once is used where it was mounted first (mountinfo lists
    a namespace's mounts in the order they joined it): later mounts are often a chroot's
    (``mount --rbind /sys/fs/cgroup``, as image builders do), which vanish while
    containers run.
    """
    v2_mount = None
    v1_mounts: dict[str, str] = {}
    v1_cpuset = None
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
                        v1_mounts.setdefault(controller, mount_point)
                if "cpuset" in super_options:
                    v1_cpuset = v1_cpuset or mount_point
    if v1_mounts:
        return Layout("hybrid" if v2_mount else "v1", v2_mount, v1_mounts, v1_cpuset)
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
    return own_v1_paths(proc_cgroup).get(controller, "/")


def own_v1_paths(proc_cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """The v1 groups this process is in, by controller: /proc/self/cgroup read once (a
    container's groups are placed in every hierarchy, at every run)."""
    paths: dict[str, str] = {}
    with open(proc_cgroup) as file:
        for line in file:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                paths.setdefault(controller, path)
    return paths


# --- one container's group -----------------------------------------------------------------


class Cgroup:
    """A container's cgroup: one directory on v2, one per controller hierarchy on v1.

    ``path``: the bundle's linux.cgroupsPath, if any (see the module's docstring);
    ``resources``: its linux.resources, whose cpus or mems bring in v1's cpuset hierarchy.
    """

    def __init__(
        self,
        layout: Layout,
        container_id: str,
        parent: str = PARENT,
        path: str | None = None,
        resources: dict | None = None,
    ):
        self.layout = layout
        self.id = container_id
        self.resources = resources or {}
        inner = check_path(path) if path else [parent, container_id]
        if layout.uses_v2:
            own = own_v2_path()
            beside = os.path.dirname(own)  # "/" for "/" and "/init.scope"
            group = _place(layout.v2_mount, beside, inner, path, own)
            self.paths = {controller: group for controller in layout.controllers()}
            self.directories = [group]
        else:
            cpu = self.resources.get("cpu") or {}
            mounts = dict(layout.v1_mounts)
            if (cpu.get("cpus") or cpu.get("mems")) and layout.v1_cpuset:
                mounts["cpuset"] = layout.v1_cpuset
            self.paths = {}
            owns = own_v1_paths()
            for controller, mount in mounts.items():
                try:
                    own = owns.get(controller, "/")
                    self.paths[controller] = _place(mount, own, inner, path, own, controller)
                except CgroupError:
                    if controller in _used_v1_controllers(self.resources):
                        raise  # else the container stays in our group there, as we do
            self.directories = sorted(set(self.paths.values()))  # co-mounted ones share one
        self.parents = sorted({os.path.dirname(directory) for directory in self.directories})

    @classmethod
    def at(cls, layout: Layout, container_id: str, directories: list[str]) -> Cgroup:
        """The group of a container that exists, from the directories its state records
        (where it is depends on the cgroup its creator ran in, not ours)."""
        group = cls.__new__(cls)
        group.layout, group.id, group.resources = layout, container_id, {}
        group.directories = list(directories)
        group.parents = sorted({os.path.dirname(directory) for directory in directories})
        if layout.uses_v2:
            group.paths = {c: directories[0] for c in layout.controllers()} if directories else {}
        else:
            mounts = {**layout.v1_mounts, "cpuset": layout.v1_cpuset or "//"}
            group.paths = {
                controller: directory
                for controller, mount in mounts.items()
                for directory in directories
                if directory.startswith(mount.rstrip("/") + "/")
            }
        return group

    def create(self, resources: dict | None = None) -> None:
        """Make the group(s) and apply ``resources`` (OCI linux.resources); undo everything
        if any step fails. A group that exists already is used only if it is empty."""
        self.resources = resources if resources is not None else self.resources
        check_resources(self.resources, self.layout)
        for directory in self.directories:
            _check_unused(directory)
        made: list[str] = []  # what we make, parents first: removed deepest first on failure
        try:
            for directory in self.directories:
                chain, missing = [], directory
                while not os.path.isdir(missing):
                    chain.append(missing)
                    missing = os.path.dirname(missing)
                made += reversed(chain)
                _make_group(directory)
            if self.layout.uses_v2:  # once our group is in it: then no remove() can take the parent
                self._enable_v2_controllers()
            if "cpuset" in self.paths and not self.layout.uses_v2:
                _fill_v1_cpuset(self.layout.v1_cpuset, self.paths["cpuset"])
            self.set(self.resources)
        except CgroupError:
            self._undo(made)
            raise
        except OSError as error:
            self._undo(made)
            raise CgroupError(f"cannot set up the container's cgroup: {error}") from None

    def set(self, resources: dict) -> None:
        """Write ``resources`` (checked by check_resources) to the group's files: at create,
        and by ``mycontainer-oci update`` while the container runs."""
        wanted = {"memory": "memory", "cpu": "cpu", "pids": "pids"}
        cpu = resources.get("cpu") or {}
        missing = [
            controller
            for name, controller in wanted.items()
            if any(value for value in (resources.get(name) or {}).values())
            and controller not in self.paths
        ]
        if (cpu.get("cpus") or cpu.get("mems")) and "cpuset" not in self.paths:
            missing.append("cpuset")
        if "cpuset" in missing and self.layout.v1_cpuset and self.directories:
            raise CgroupError(
                "the container was created without CPUs or memory nodes, so in no v1 cpuset"
                " group: give cpu.cpus or cpu.mems when creating it"
            )
        if missing:
            raise CgroupError(
                f"the {', '.join(missing)} cgroup controller is not available on this host "
                "(see /sys/fs/cgroup/cgroup.controllers): use the lab VM ('invoke vm.up')"
            )
        if self.layout.uses_v2:
            self._limit_v2(resources)
        else:
            self._limit_v1(resources)

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

    def freeze(self, frozen: bool = True, timeout: float = 5.0) -> None:
        """Stop (or let go on) every process of the group at once: ``pause`` and ``resume``.

        v1: the freezer controller's ``freezer.state``, FROZEN or THAWED; it reads FREEZING
        until every task has stopped. v2: ``cgroup.freeze``, 1 or 0, and ``frozen 1`` in
        ``cgroup.events`` once done. (https://docs.kernel.org/admin-guide/cgroup-v1/freezer-subsystem.html)
        """
        if self.layout.uses_v2:
            directory, name, value = self.directories[0], "cgroup.freeze", "1" if frozen else "0"
        elif "freezer" in self.paths:
            directory, name = self.paths["freezer"], "freezer.state"
            value = "FROZEN" if frozen else "THAWED"
        else:
            raise CgroupError("this host has no freezer cgroup controller: cannot pause")
        deadline = time.monotonic() + timeout
        while True:
            write_file(directory, name, value)  # v1: again, if a task was forking
            if is_frozen([directory]) == frozen:
                return
            if time.monotonic() > deadline:
                raise CgroupError(f"the container's processes did not stop within {timeout} s")
            time.sleep(0.001)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left in the group(s), then remove them (rmdir(2) needs them empty)."""
        remove_groups(self.directories, timeout)

    def _undo(self, made: list[str]) -> None:
        """Remove the directories a failed create made, deepest first: our groups with
        whatever joined them, the parents above them if nothing else came meanwhile."""
        for directory in reversed(made):
            if directory in self.directories:
                remove_group(directory)
                continue
            try:
                os.rmdir(directory)
            except OSError:
                pass  # another container's group appeared in it

    # v2 ----------------------------------------------------------------------------------

    def _enable_v2_controllers(self) -> None:
        """Let our groups use the controllers: list them in subtree_control down the tree.

        Every group from the root to our parent must list them; where one already does
        (a read-only root, as in systemd-nspawn, often does), we write nothing.
        """
        cpu = self.resources.get("cpu") or {}
        wanted = set(CONTROLLERS) | ({"cpuset"} if cpu.get("cpus") or cpu.get("mems") else set())
        wanted |= {name.split(".")[0] for name in self.resources.get("unified") or {}}
        wanted &= set(self.paths)
        parent = self.parents[0]
        below = os.path.relpath(parent, self.layout.v2_mount).split(os.sep)
        below = [] if below == ["."] else below
        for depth in range(len(below) + 1):
            directory = os.path.join(self.layout.v2_mount, *below[:depth])
            with open(os.path.join(directory, "cgroup.subtree_control")) as file:
                missing = sorted(wanted - set(file.read().split()))
            try:
                if missing:
                    write_file(directory, "cgroup.subtree_control", "+" + " +".join(missing))
            except OSError as error:
                raise CgroupError(_why_not_enabled(directory, missing, error)) from None

    def _limit_v2(self, resources: dict) -> None:
        memory = resources.get("memory") or {}
        cpu = resources.get("cpu") or {}
        pids = resources.get("pids") or {}
        if memory.get("limit"):
            path = self.paths["memory"]
            _write(path, "memory.max", _v2_number(memory["limit"]))
            swap = memory.get("swap")
            if swap and os.path.exists(os.path.join(path, "memory.swap.max")):
                # The spec's swap is memory + swap (v1's memsw); v2 limits the swap alone.
                _write(path, "memory.swap.max", _v2_number(swap, memory["limit"]))
            elif swap and swap != memory["limit"]:
                raise CgroupError(_NO_SWAP_ACCOUNTING)
        if memory.get("reservation"):
            _write(self.paths["memory"], "memory.low", _v2_number(memory["reservation"]))
        if cpu.get("shares"):
            _write(self.paths["cpu"], "cpu.weight", str(shares_to_weight(cpu["shares"])))
        if cpu.get("quota") or cpu.get("period"):
            with open(os.path.join(self.paths["cpu"], "cpu.max")) as file:
                quota, period = file.read().split()  # what is set now: "max 100000"
            quota = _v2_number(cpu["quota"]) if cpu.get("quota") else quota
            _write(self.paths["cpu"], "cpu.max", f"{quota} {cpu.get('period') or period}")
        for name in ("cpus", "mems"):
            if cpu.get(name):
                _write(self.paths["cpuset"], f"cpuset.{name}", cpu[name])
        if pids.get("limit"):
            _write(self.paths["pids"], "pids.max", _v2_number(pids["limit"]))
        for name, value in (resources.get("unified") or {}).items():
            _write(self.directories[0], name, value)

    # v1 ----------------------------------------------------------------------------------

    def _limit_v1(self, resources: dict) -> None:
        memory = resources.get("memory") or {}
        cpu = resources.get("cpu") or {}
        pids = resources.get("pids") or {}
        if memory:
            self._limit_v1_memory(memory)
        files = [  # (controller, file, value), in the order they must be written
            ("cpu", "cpu.shares", cpu.get("shares")),
            ("cpu", "cpu.cfs_period_us", cpu.get("period")),
            ("cpu", "cpu.cfs_quota_us", cpu.get("quota")),
            ("cpu", "cpu.rt_period_us", cpu.get("realtimePeriod")),
            ("cpu", "cpu.rt_runtime_us", cpu.get("realtimeRuntime")),
            ("cpuset", "cpuset.cpus", cpu.get("cpus")),
            ("cpuset", "cpuset.mems", cpu.get("mems")),
            ("pids", "pids.max", "max" if pids.get("limit") == -1 else pids.get("limit")),
        ]
        for controller, name, value in files:
            if value:
                _write(self.paths[controller], name, str(value))

    def _limit_v1_memory(self, memory: dict) -> None:
        path = self.paths["memory"]
        limit, swap = memory.get("limit"), memory.get("swap")
        pair = []
        if limit:
            pair.append(("memory.limit_in_bytes", limit))
        if swap:
            if os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
                pair.append(("memory.memsw.limit_in_bytes", swap))  # memory + swap
            elif swap != limit:
                raise CgroupError(_NO_SWAP_ACCOUNTING)
        try:  # memory.limit_in_bytes may never exceed memsw: raising both, memsw goes first
            for name, value in pair:
                write_file(path, name, str(value))
        except OSError as error:
            if error.errno != errno.EINVAL or len(pair) < 2:
                raise CgroupError(
                    f"cannot set the memory limits of {path}: {error.strerror}"
                    " (memory + swap must stay at least the memory limit)"
                ) from None
            for name, value in reversed(pair):
                _write(path, name, str(value))
        for name, value in (
            ("memory.soft_limit_in_bytes", memory.get("reservation")),
            ("memory.swappiness", memory.get("swappiness")),
            ("memory.oom_control", "1" if memory.get("disableOOMKiller") else None),
        ):
            if value:
                _write(path, name, str(value))


_NO_SWAP_ACCOUNTING = (
    "linux.resources.memory.swap: this kernel does not account swap (boot it with"
    " swapaccount=1), so only a swap equal to the memory limit (no swap) can be given"
)


def _used_v1_controllers(resources: dict) -> set[str]:
    """The v1 controllers ``resources`` sets something in; devices always (its rules)."""
    used = {"devices"}
    for name in ("memory", "cpu", "pids"):
        if any(value for value in (resources.get(name) or {}).values()):
            used.add(name)
    cpu = resources.get("cpu") or {}
    if cpu.get("cpus") or cpu.get("mems"):
        used.add("cpuset")
    return used


def _place(mount: str, base: str, inner: list[str], path, own, controller="") -> str:
    """The directory of a group: ``inner`` below ``base`` (the part of the tree we may use),
    or for an absolute cgroupsPath ``path`` that path, if it lies strictly below the parent
    of ``own``, our own group, and does not hold it. Beside us, not only below: an engine's
    monitor runs the runtime from a group of its own (conmon's ``<parent>/conmon``) and asks
    for the container's beside it (``<parent>/libpod-<id>``)."""
    if path and path.startswith("/"):
        group = "/" + "/".join(inner)
        allowed = os.path.dirname(own) if own else base
        inside = allowed == "/" or group.startswith(allowed.rstrip("/") + "/")
        ours = own and (group == own or own.startswith(group + "/"))
        if not inside or ours:
            hierarchy = f"{controller} " if controller else ""
            raise CgroupError(
                f"config.json: linux.cgroupsPath {path} lies outside the cgroup subtree"
                f" mycontainer runs in ({hierarchy}{base}), which it never leaves: give a"
                " relative path, or one below it"
            )
        return os.path.join(mount, *inner)
    return os.path.join(mount, base.lstrip("/"), *inner)


def _check_unused(directory: str) -> None:
    """An existing group may become a container's only if empty: another container's, or
    groups below it, would be killed with it at delete."""
    try:
        with open(os.path.join(directory, "cgroup.procs")) as file:
            busy = bool(file.read().strip())
        busy = busy or any(entry.is_dir() for entry in os.scandir(directory))
    except FileNotFoundError:
        return
    if busy:
        raise CgroupError(
            f"the cgroup {directory} is in use (it holds processes or groups): give the"
            " container a cgroupsPath of its own"
        )


def _fill_v1_cpuset(mount: str, group: str) -> None:
    """A new v1 cpuset group has no CPUs and no memory nodes, and no process can join it
    until it has: copy them down from the nearest group that has some."""
    below = os.path.relpath(group, mount).split(os.sep)
    for depth in range(1, len(below) + 1):
        directory = os.path.join(mount, *below[:depth])
        for name in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(directory, name)) as file:
                if file.read().strip():
                    continue
            with open(os.path.join(os.path.dirname(directory), name)) as file:
                write_file(directory, name, file.read().strip())


def _write(directory: str, name: str, value: str) -> None:
    """write_file, failing with a line that names the file and the value it refused."""
    try:
        write_file(directory, name, value)
    except OSError as error:
        raise CgroupError(
            f"cannot set {name} to {value} in {directory}: {error.strerror}"
        ) from None


def _v2_number(value: int, minus: int = 0) -> str:
    """A v2 limit file's value: ``max`` for the spec's -1 (no limit)."""
    return "max" if value == -1 else str(value - minus)


def is_frozen(directories: list[str]) -> bool:
    """Whether the container whose groups are ``directories`` is paused (see freeze)."""
    for directory in directories:
        state = _read_if_there(os.path.join(directory, "freezer.state"))  # v1
        if state is not None:
            return state.strip() == "FROZEN"
        events = _read_if_there(os.path.join(directory, "cgroup.events"))  # v2
        if events is not None:
            return "frozen 1" in events.splitlines()
    return False


def _read_if_there(path: str) -> str | None:
    """The file's text; None if it is missing, or is a file of a group being removed, which
    answers ENODEV (cgroups(7)): as good as gone."""
    try:
        with open(path) as file:
            return file.read()
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENODEV):
            return None
        raise


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


def _make_group(directory: str, tries: int = 5) -> None:
    """os.makedirs(directory), again if a parent went meanwhile: the last group of a state
    root of its own takes its parent with it (remove_groups), between our two mkdir(2)s."""
    for _ in range(tries - 1):
        try:
            os.makedirs(directory, exist_ok=True)
            return
        except FileNotFoundError:
            continue
    os.makedirs(directory, exist_ok=True)


def remove_groups(paths: list[str], timeout: float = 5.0) -> None:
    """Remove the groups of one container, which may be paused: on v1 a frozen process
    dies of SIGKILL only once thawed, and its freezer group is but one of its groups.

    The parent of a state root of its own (``mycontainer-<crc>``: a test's, or an engine's
    ``--root``) goes with its last group: rmdir(2) refuses one that still has a group in it,
    which is how we know it was the last. A create that comes meanwhile makes it again
    (``Cgroup.create`` makes its group before it enables the parent's controllers). The
    default root's ``mycontainer`` stays, as docker's parent does.
    """
    for path in paths:
        _kill_members(path)
    for path in paths:
        if os.path.exists(os.path.join(path, "freezer.state")):
            write_file(path, "freezer.state", "THAWED")
    for path in paths:
        remove_group(path, timeout)
    for parent in sorted({os.path.dirname(path) for path in paths}):
        if os.path.basename(parent).startswith(PARENT + "-"):
            try:
                os.rmdir(parent)
            except OSError:
                pass  # another container's group is in it (EBUSY), or it is gone


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
    if not os.path.isdir(path):
        return
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
    return len(name) == 64 and not name.strip("0123456789abcdef")  # (strip: in C)


def container_groups(layout: Layout, parent: str = PARENT) -> list[str]:
    """The paths of every container group under ``parent``, in every hierarchy.

    Those of the runtimes started where we run, or beside it: the groups of containers
    started from elsewhere (another user's session, a service) lie elsewhere.
    """
    return [
        os.path.join(directory, name)
        for directory, names in _container_groups_by_parent(layout, parent)
        for name in names
    ]


def _container_groups_by_parent(layout: Layout, parent: str) -> list[tuple[str, list[str]]]:
    """(parent directory, ids of the container groups in it), for each hierarchy."""
    found = []
    for directory in Cgroup(layout, "_", parent).parents:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:  # none yet, or its last group's removal took it
            names = []
        found.append((directory, [name for name in names if is_container_id(name)]))
    return found


def stale_groups(layout: Layout, alive, parent: str = PARENT) -> list[str]:
    """Paths of the groups under ``parent`` whose container is not ``alive(id)``.

    Every run's prune asks: so ``alive`` is asked once per container, after every hierarchy
    is listed (on v1 a container has a group in each), and only stale paths are made.
    """
    listed = _container_groups_by_parent(layout, parent)
    dead = {name for name in {name for _, names in listed for name in names} if not alive(name)}
    return [
        os.path.join(directory, name)
        for directory, names in listed
        for name in names
        if name in dead
    ]


def write_file(directory: str, name: str, value: str) -> None:
    """Write ``value`` to the control file ``name`` of cgroup ``directory`` (devices too)."""
    with open(os.path.join(directory, name), "w") as file:
        file.write(value)


def _read_keyed(directory: str, name: str) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` per line) as a dict."""
    with open(os.path.join(directory, name)) as file:
        pairs = (line.split() for line in file)
        return {pair[0]: int(pair[1]) for pair in pairs if len(pair) == 2 and pair[1].isdigit()}
