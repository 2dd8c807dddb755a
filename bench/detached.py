"""Detached containers: the memory each costs the host, and the time to start them, against
podman with conmon.

    sudo .venv/bin/invoke bench --detached   # or: sudo .venv/bin/python bench/detached.py

What is measured
----------------
N (``--containers``, default 20) detached ``sleep`` containers of the busybox rootfs, started
by each of:

* ``mycontainer run -d --net none IMAGE sleep 86400`` (the subject): each container has a
  monitor on the host, ``python3 -I -S -c '...import monitor'`` (runtime/detached.py);
* ``podman run -d --network none IMAGE sleep 86400`` (the peer), podman's OCI runtime being
  runc (``--podman-runtime``): each container has a conmon on the host; podman itself exits.

IMAGE is the same tarball of the rootfs (``--rootfs``), imported by ``mycontainer load`` and
``podman import`` into a store of the benchmark's own.

1. **Memory.** Once the N containers run (and a second more, for the monitors to settle),
   every process that exists because of them is found: those started with the benchmark's
   mark in their environment (every command it runs gets one, and a monitor or a leftover
   ``mycontainer`` keeps it), those whose command line names the benchmark's directory (a
   conmon), and the parent of every container process. Those inside a container's cgroup
   (its id is in /proc/PID/cgroup) are the container's own, and not counted; the others are
   what the container costs the host. Their PSS (proportional set size: private pages, plus
   each shared page divided by the number of processes that map it; /proc/PID/smaps_rollup,
   proc(5)) summed and divided by N is the memory per container; the largest single one is
   reported too, and the USS (the private pages alone, which a container's end frees) and
   RSS per container. The issue's bar: **PSS per container <= 3 MB (1 MB = 1024 kB)**; the
   report says whether it is met, it does not fail on it. Where mycontainer's PSS goes, by
   mapping (/proc/PID/smaps), is printed below.
2. **Time.** Starting the N containers one after the other (each ``run -d`` returns once
   its container runs), and all N at once (N threads), wall clock from the first start to
   the last return; then ``stop -t 0`` and ``rm`` of all N (one command each), timed too.
   Rounds are interleaved as the other benchmarks' (``common.interleave``): each round runs
   every tool and mode once, starting one further along. Medians and ratios, never asserted.

After each ``stop`` and ``rm`` nothing may be left: no process of the benchmark's but
itself (a monitor's ``mycontainer cleanup`` and conmon's ``podman container cleanup`` are
waited for, up to 10 s), no container listed (``ps -a``), no state, writable layer, cgroup
or mount; else the benchmark stops and says what was left.

Isolation
---------
The benchmark runs itself again under ``unshare --mount --propagation private --net``: the
containers' mounts, and whatever a tool would do to a network, stay in namespaces that end
with it. mycontainer gets a home and a state root in a temporary directory; podman a root,
run root and configuration files there (tests/engines.py does the same), cgroupfs and a
cgroup parent inside the group the benchmark runs in, and a tmpfs on /run/runc in the
benchmark's mount namespace (podman 4.3 cannot give runc a ``--root``). ``podman import``
runs under a tmpfs on /var/lib, since containers/image writes its blob cache to
/var/lib/containers whatever ``--root`` says. On any way out (done, failed, Ctrl-C, SIGTERM)
every container is removed, every process of the benchmark's is ended, and the cgroups,
mounts and directory are removed.

Standard library only (Python >= 3.10), so it runs with any Python on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from common import (
    BenchError,
    add_json_and_mycontainer_options,
    add_rounds_options,
    can_run,
    date_and_machine,
    find_mycontainer,
    isolate,
    machine_notes,
    print_notes,
    run_cleanly,
    times,
)

COMMAND = ["sleep", "86400"]
BAR_KB = 3 * 1024  # the bar: PSS per container, outside the container, <= 3 MB
MARK = "MYCONTAINER_BENCH_DETACHED"  # in the environment of every command the bench runs
SETTLE = 1.0  # seconds between the last start and the memory sample
GONE_WITHIN = 10.0  # seconds a cleanup process may take to finish after rm
MODES = ("sequential", "parallel")
# podman asks the runtime for rlimits above the hard limits of this kind of host (itself a
# container, where even root cannot raise them): ask for less, as tests/engines.py does.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
PODMAN_IMAGE = "localhost/bench-busybox:latest"
MB = 1024  # kB
RUNROOT_MAX = 50  # podman refuses a longer run root (its sockets' paths must fit sun_path)


# --- the processes of the benchmark ------------------------------------------------------


@dataclass
class Process:
    pid: int
    argv: list[str]
    cgroup: str
    ppid: int
    marked: bool  # carries MARK, or names the benchmark's directory

    @property
    def label(self) -> str:
        """What it is: the script or module a Python runs (``monitor.py``), else its
        program."""
        if any("import monitor" in arg for arg in self.argv):
            return "monitor.py"  # imported by -c, so that its bytecode is cached
        scripts = [arg for arg in self.argv[1:] if arg.endswith(".py")]
        return os.path.basename(scripts[0] if scripts else self.argv[0] if self.argv else "?")


def processes(workdir: str) -> list[Process]:
    """Every process on the host but this one, each marked if it is the benchmark's: it
    carries MARK in its environment, or names ``workdir`` on its command line."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as file:
                argv = file.read().decode(errors="replace").split("\0")[:-1]
            with open(f"/proc/{name}/environ", "rb") as file:
                environ = file.read()
            with open(f"/proc/{name}/cgroup") as file:
                cgroup = file.read()
            with open(f"/proc/{name}/stat") as file:
                ppid = int(file.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue  # gone meanwhile, or a kernel thread's
        marked = f"{MARK}={workdir}".encode() in environ.split(b"\0") or any(
            workdir in arg for arg in argv
        )
        found.append(Process(int(name), argv, cgroup, ppid, marked))
    return found


def host_side(ids: list[str], workdir: str) -> tuple[list[Process], list[Process]]:
    """The processes the containers ``ids`` cost the host, outside their cgroups, and those
    inside them (the containers' own)."""
    everyone = processes(workdir)
    inside = [p for p in everyone if any(cid in p.cgroup for cid in ids)]
    parents = {p.ppid for p in inside}
    outside = [
        p for p in everyone if p not in inside and (p.marked or p.pid in parents) and p.pid != 1
    ]
    return outside, inside


def rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup: each field in kB (proc(5)); empty if the process is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                key, _, value = line.partition(":")
                if value.strip().endswith("kB"):
                    fields[key] = int(value.split()[0])
    except OSError:
        pass
    return fields


def pss_by_mapping(pids: list[int]) -> dict[str, int]:
    """The PSS (kB) of ``pids`` summed by what is mapped: a file, [heap], [anon]... (smaps)."""
    totals: dict[str, int] = {}
    for pid in pids:
        mapping = "?"
        try:
            with open(f"/proc/{pid}/smaps") as file:
                for line in file:
                    if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                        parts = line.split(None, 5)
                        mapping = parts[5].strip() if len(parts) > 5 else "[anon]"
                    elif line.startswith("Pss:"):
                        totals[mapping] = totals.get(mapping, 0) + int(line.split()[1])
        except OSError:
            continue
    return totals


def memory_sample(ids: list[str], workdir: str) -> dict:
    """What the N containers ``ids`` hold on the host now, per container (kB)."""
    outside, inside = host_side(ids, workdir)
    rollups = {p.pid: rollup(p.pid) for p in outside}
    count = len(ids)
    labels: dict[str, int] = {}
    for p in outside:
        labels[p.label] = labels.get(p.label, 0) + 1

    def per_container(*keys: str) -> float:
        return sum(r.get(key, 0) for r in rollups.values() for key in keys) / count

    return {
        "pss_kb": per_container("Pss"),
        "uss_kb": per_container("Private_Clean", "Private_Dirty"),
        "rss_kb": per_container("Rss"),
        "max_pss_kb": max((r.get("Pss", 0) for r in rollups.values()), default=0),
        "processes": labels,
        "inside_pss_kb": sum(rollup(p.pid).get("Pss", 0) for p in inside) / count,
        "executables": sorted({os.path.realpath(f"/proc/{p.pid}/exe") for p in outside}),
        "mappings_kb": {
            name: kb / count for name, kb in pss_by_mapping([p.pid for p in outside]).items()
        },
    }


def ours_left(workdir: str, timeout: float = GONE_WITHIN) -> list[Process]:
    """The benchmark's processes still there after ``timeout`` s (cleanups may run a bit)."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes(workdir) if p.marked]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def end_ours(workdir: str) -> list[str]:
    """SIGKILL what is left of the benchmark's processes; return what they were."""
    left = ours_left(workdir)
    for p in left:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [" ".join(p.argv) for p in left]


# --- cgroups and mounts ------------------------------------------------------------------


def cgroup_mounts() -> list[str]:
    """The mount points of the cgroup hierarchies (v1 and v2) this process sees."""
    mounts = []
    with open("/proc/self/mountinfo") as file:
        for line in file:
            if line.split(" - ", 1)[1].split()[0] in ("cgroup", "cgroup2"):
                mounts.append(line.split()[4])
    return mounts


class CgroupParent:
    """A cgroup parent for podman's containers and conmons, in every hierarchy, within the
    part of the tree this process runs in (never outside: https://systemd.io/CGROUP_DELEGATION/):
    on v1 inside our deepest group (which must hold our others), on v2 beside our group, as
    runtime/cgroups.py places mycontainer's. All of it is removed at the end."""

    def __init__(self, name: str):
        with open("/proc/self/cgroup") as file:
            own = {c: path for _, c, path in (line.rstrip("\n").split(":", 2) for line in file)}
        if list(own) == [""]:
            base = os.path.dirname(own[""])
        else:
            base = max(own.values(), key=lambda path: path.count("/"))
            if any(not (base + "/").startswith(path.rstrip("/") + "/") for path in own.values()):
                raise BenchError(f"our cgroups differ between hierarchies: {sorted(own.values())}")
        self.path = os.path.join(base, name)
        self.tops = []  # the highest directory of the path that is new, per hierarchy
        for mount in cgroup_mounts():
            top = mount + self.path
            while os.path.dirname(top) != mount and not os.path.isdir(os.path.dirname(top)):
                top = os.path.dirname(top)
            if not os.path.isdir(top):
                self.tops.append(top)

    def groups(self) -> list[str]:
        """The groups below the parent, but podman's ``conmon`` (which stays until the end)."""
        found = []
        for top in self.tops:
            for directory, _, _ in os.walk(top):
                if directory.endswith(self.path) or os.path.basename(directory) == "conmon":
                    continue
                if self.path in directory:
                    found.append(directory)
        return found

    def remove(self) -> list[str]:
        """rmdir all of it, deepest first; return what could not be removed."""
        left = []
        for top in self.tops:
            for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
                try:
                    os.rmdir(directory)
                except OSError as error:
                    left.append(f"{directory}: {error.strerror}")
        return left


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as file:
        points = [line.split()[4] for line in file]
    return sorted(p for p in points if p == path or p.startswith(path.rstrip("/") + "/"))


# --- the engines -------------------------------------------------------------------------


def run_quietly(argv: list[str], env: dict, what: str) -> str:
    """Run ``argv``; its stdout, or BenchError with its stderr."""
    completed = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    if completed.returncode != 0:
        said = (completed.stderr or completed.stdout).strip()
        raise BenchError(f"{what} failed (exit status {completed.returncode}): {said}")
    return completed.stdout


@dataclass
class Engine:
    """One way to run detached containers, or (``skipped``) why it cannot be measured."""

    name: str
    skipped: str = ""
    env: dict = field(default_factory=dict)
    start_times: dict = field(default_factory=lambda: {mode: [] for mode in MODES})
    remove_times: list = field(default_factory=list)
    memory: list = field(default_factory=list)

    def run_argv(self) -> list[str]:
        raise NotImplementedError

    def command(self, *args: str) -> list[str]:
        raise NotImplementedError

    def start(self) -> str:
        """Start one detached container; its id."""
        return run_quietly(self.run_argv(), self.env, f"{self.name} run -d").split()[-1]

    def stop_and_remove(self, ids: list[str]) -> None:
        run_quietly(self.command("stop", "-t", "0", *ids), self.env, f"{self.name} stop")
        run_quietly(self.command("rm", *ids), self.env, f"{self.name} rm")

    def listed(self) -> list[str]:
        return run_quietly(self.command("ps", "-a", "-q"), self.env, f"{self.name} ps").split()

    def left(self) -> list[str]:
        """What the engine's own state shows of removed containers (ps -a aside)."""
        return []

    def remove_all(self) -> list[str]:
        """On the way out: remove every container; return the problems seen."""
        return []

    def cgroups(self) -> list[str]:
        """The cgroup parents its containers had (removed on the way out)."""
        return []

    def mounts(self, workdir: str) -> list[str]:
        """The mount points in the directories it uses."""
        return mounts_under(workdir)


class Mycontainer(Engine):
    """mycontainer with a home (its image store) and a state root of the benchmark's own."""

    def __init__(self, path: str, workdir: str, env: dict):
        self.home = os.path.join(workdir, "home")
        self.state = os.path.join(workdir, "state")
        os.mkdir(self.home)
        os.mkdir(self.state)
        super().__init__(
            "mycontainer",
            env={**env, "MYCONTAINER_HOME": self.home, "MYCONTAINER_STATE": self.state},
        )
        self.path = path
        self.image = ""
        self.cgroup_parents: set[str] = set()

    def load(self, tarball: str) -> None:
        self.image = run_quietly([self.path, "load", tarball], self.env, "mycontainer load")
        self.image = self.image.split()[-1]

    def command(self, *args: str) -> list[str]:
        return [self.path, *args]

    def run_argv(self) -> list[str]:
        return [self.path, "run", "-d", "--net", "none", self.image, *COMMAND]

    def stop_and_remove(self, ids: list[str]) -> None:
        self.note_cgroups()
        super().stop_and_remove(ids)

    def states(self) -> list[str]:
        return [name for name in os.listdir(self.state) if name != ".names"]

    def note_cgroups(self) -> None:
        """Remember the cgroup parents of the containers (state.json), to remove at the end."""
        for name in self.states():
            try:
                with open(os.path.join(self.state, name, "state.json")) as file:
                    groups = json.load(file).get("cgroups", [])
            except (OSError, ValueError):
                continue
            self.cgroup_parents.update(os.path.dirname(group) for group in groups)

    def left(self) -> list[str]:
        left = [f"state {name}" for name in self.states()]
        names = os.path.join(self.state, ".names")
        if os.path.isdir(names):
            left += [f"name {name}" for name in os.listdir(names)]
        storage = os.path.join(self.home, "containers")
        if os.path.isdir(storage):
            left += [f"writable layer {name}" for name in os.listdir(storage)]
        for parent in self.cgroup_parents:
            if os.path.isdir(parent):
                left += [f"cgroup {parent}/{name}" for name in next(os.walk(parent))[1]]
        return left

    def remove_all(self) -> list[str]:
        self.note_cgroups()
        ids = self.states()
        problems = []
        if ids:
            completed = subprocess.run(
                self.command("rm", "-f", *ids), env=self.env, capture_output=True, text=True
            )
            if completed.returncode != 0:
                problems.append(f"mycontainer rm -f: {completed.stderr.strip()}")
        return problems

    def cgroups(self) -> list[str]:
        return sorted(self.cgroup_parents)

    def remove_cgroup_parents(self) -> list[str]:
        left = []
        for parent in sorted(self.cgroup_parents):
            try:
                os.rmdir(parent)
            except FileNotFoundError:
                pass
            except OSError as error:
                left.append(f"{parent}: {error.strerror}")
        return left


class Podman(Engine):
    """podman with a root, run root, configuration and cgroup parent of the benchmark's own."""

    def __init__(self, runtime: str, workdir: str, env: dict, parent: CgroupParent):
        directory = os.path.join(workdir, "podman")
        self.root = os.path.join(directory, "root")
        self.runroot = os.path.join(directory, "runroot")
        tmp = os.path.join(directory, "tmp")
        for path in (self.root, self.runroot, tmp):
            os.makedirs(path)
        if len(self.runroot) > RUNROOT_MAX:
            self.runroot = tempfile.mkdtemp(prefix="mycontainer-bench-podman-", dir="/tmp")
        conf = os.path.join(directory, "containers.conf")
        with open(conf, "w") as file:
            # As tests/engines.py: loopback only; the CNI backend (never called then:
            # netavark keeps a lock and a database in /run/containers/networks even so);
            # events to a file; every directory podman writes in the benchmark's own.
            file.write(
                '[containers]\nnetns = "none"\nlog_driver = "k8s-file"\n'
                '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                f'events_logfile_path = "{directory}/events.log"\n'
                f'tmp_dir = "{tmp}"\nimage_copy_tmp_dir = "{tmp}"\n'
                f'volume_path = "{self.root}/volumes"\nstatic_dir = "{self.root}/libpod"\n'
                f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{directory}/net"\n'
            )
        storage = os.path.join(directory, "storage.conf")
        with open(storage, "w") as file:
            file.write(
                f'[storage]\ndriver = "overlay"\ngraphroot = "{self.root}"\n'
                f'runroot = "{self.runroot}"\n'
            )
        registries = os.path.join(directory, "registries.conf")
        with open(registries, "w") as file:
            file.write('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')
        super().__init__(
            "podman",
            env={
                **env,
                "CONTAINERS_CONF": conf,
                "CONTAINERS_STORAGE_CONF": storage,
                "CONTAINERS_REGISTRIES_CONF": registries,
            },
        )
        self.directory = directory
        self.runtime = runtime
        self.parent = parent

    def command(self, *args: str) -> list[str]:
        return [
            "podman", "--root", self.root, "--runroot", self.runroot,
            "--cgroup-manager", "cgroupfs", "--events-backend", "file",
            "--runtime", self.runtime, *args,
        ]  # fmt: skip

    def load(self, tarball: str) -> None:
        """``podman import`` under a tmpfs on /var/lib (containers/image's blob cache)."""
        run_quietly(
            [
                "unshare", "--mount", "--propagation", "private",
                "sh", "-c", 'mount -t tmpfs tmpfs /var/lib && exec "$@"', "sh",
                *self.command("import", "--quiet", tarball, PODMAN_IMAGE),
            ],
            self.env,
            "podman import",
        )  # fmt: skip

    def run_argv(self) -> list[str]:
        return self.command(
            "run", "-d", "--network", "none", "--cgroup-parent", self.parent.path,
            *ULIMITS, PODMAN_IMAGE, *COMMAND,
        )  # fmt: skip

    def left(self) -> list[str]:
        return [f"cgroup {group}" for group in self.parent.groups()]

    def cgroups(self) -> list[str]:
        return [mount + self.parent.path for mount in cgroup_mounts()]

    def remove_all(self) -> list[str]:
        completed = subprocess.run(
            self.command("rm", "--all", "--force", "--time", "0"),
            env=self.env,
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            return [f"podman rm --all --force: {completed.stderr.strip()}"]
        return []

    def mounts(self, workdir: str) -> list[str]:
        return mounts_under(workdir) + mounts_under(self.runroot)

    def remove_runroot(self) -> None:
        """The run root, when it could not be in the benchmark's directory."""
        if not self.runroot.startswith(self.directory + "/"):
            for point in reversed(mounts_under(self.runroot)):
                subprocess.run(["umount", "-l", point], capture_output=True)
            shutil.rmtree(self.runroot, ignore_errors=True)


def make_engines(args, workdir: str, env: dict, notes: list[str], engines: list[Engine]) -> None:
    """mycontainer and podman into ``engines`` (at once: the way out removes what each made),
    each with its image loaded; podman skipped, saying why, when it cannot run here."""
    tarball = os.path.join(workdir, "busybox.tar")
    subprocess.run(["tar", "-C", args.rootfs, "-cf", tarball, "."], check=True)
    subject = Mycontainer(args.mycontainer or find_mycontainer(), workdir, env)
    engines.append(subject)
    subject.load(tarball)
    runtime = args.podman_runtime or ("runc" if shutil.which("runc") else "crun")
    missing = [name for name in ("podman", "conmon", runtime) if not shutil.which(name)]
    if missing:
        why = f"{', '.join(missing)} not found on PATH (apt-get install {' '.join(missing)})"
        engines.append(Engine("podman", skipped=why))
        return
    peer = Podman(shutil.which(runtime), workdir, env, CgroupParent(os.path.basename(workdir)))
    engines.append(peer)
    peer.load(tarball)
    notes.append(f"podman ran its containers with {runtime}, and a conmon for each")


# --- rounds ------------------------------------------------------------------------------


def start_all(engine: Engine, count: int, mode: str) -> tuple[float, list[str]]:
    """Start ``count`` detached containers, one after the other or all at once; return the
    seconds it took and their ids. On a failure, the ones started are removed first."""
    ids: list[str] = []
    errors: list[str] = []

    def one() -> None:
        try:
            ids.append(engine.start())
        except BenchError as error:
            errors.append(str(error))

    begun = time.perf_counter()
    if mode == "sequential":
        for _ in range(count):
            one()
            if errors:
                break
    else:
        with ThreadPoolExecutor(max_workers=count) as pool:
            for _ in range(count):
                pool.submit(one)
    elapsed = time.perf_counter() - begun
    if errors:
        engine.remove_all()
        raise BenchError(errors[0])
    return elapsed, ids


def round_of(engine: Engine, count: int, mode: str, workdir: str, mounts: list[str]) -> dict:
    """Start ``count`` containers (timed), sample the memory, stop and remove them (timed),
    and check that nothing is left."""
    started, ids = start_all(engine, count, mode)
    time.sleep(SETTLE)
    sample = memory_sample(ids, workdir)
    begun = time.perf_counter()
    engine.stop_and_remove(ids)
    removed = time.perf_counter() - begun
    problems = [" ".join(p.argv) for p in ours_left(workdir)]
    problems += [f"container {cid} still listed" for cid in engine.listed()]
    problems += engine.left()
    problems += [f"mount {point}" for point in engine.mounts(workdir) if point not in mounts]
    if problems:
        raise BenchError(f"{engine.name} left behind after stop and rm: {'; '.join(problems)}")
    return {"start_s": started, "remove_s": removed, "memory": sample}


def benchmark(args, workdir: str, engines: list[Engine]) -> dict:
    """Make the engines, run the rounds, report."""
    notes: list[str] = []
    make_engines(args, workdir, {**os.environ, MARK: workdir}, notes, engines)
    measured = [engine for engine in engines if not engine.skipped]
    # podman's overlay driver keeps its directory mounted on itself (containers-storage.conf(5))
    mounts = sorted({point for engine in measured for point in engine.mounts(workdir)})
    load_before = os.getloadavg()[0]
    print(
        f"detached: {args.containers} detached `{' '.join(COMMAND)}` containers per tool and "
        f"mode, --net none; {args.warmup} warm-up and {args.runs} timed rounds, interleaved; "
        f"kernel {platform.release()}, {os.cpu_count() or 1} CPUs"
    )
    items = [(engine, mode) for engine in measured for mode in MODES]
    for round_number in range(args.warmup + args.runs):
        timed = round_number >= args.warmup
        first = round_number % len(items)
        for engine, mode in items[first:] + items[:first]:
            result = round_of(engine, args.containers, mode, workdir, mounts)
            if timed:
                engine.start_times[mode].append(result["start_s"])
                engine.remove_times.append(result["remove_s"])
                engine.memory.append(result["memory"])
    # The parallel starts alone make up to N processes runnable at once: the load they add
    # is the benchmark's own.
    notes += machine_notes(load_before, float(args.containers), args.mycontainer)
    return report(engines, args, notes)


# --- the report --------------------------------------------------------------------------


def megabytes(kb: float) -> str:
    return f"{kb / MB:.2f} MB"


def summarize(engine: Engine, count: int) -> dict:
    memory = engine.memory
    processes = memory[-1]["processes"]
    mappings: dict[str, list[float]] = {}
    for sample in memory:
        for name, kb in sample["mappings_kb"].items():
            mappings.setdefault(name, []).append(kb)
    return {
        "pss_kb": statistics.median(s["pss_kb"] for s in memory),
        "uss_kb": statistics.median(s["uss_kb"] for s in memory),
        "rss_kb": statistics.median(s["rss_kb"] for s in memory),
        "max_pss_kb": max(s["max_pss_kb"] for s in memory),
        "inside_pss_kb": statistics.median(s["inside_pss_kb"] for s in memory),
        "processes": processes,
        "executables": memory[-1]["executables"],
        "mappings_kb": {name: statistics.median(kbs) for name, kbs in mappings.items()},
        "start_s": {mode: statistics.median(engine.start_times[mode]) for mode in MODES},
        "remove_s": statistics.median(engine.remove_times),
        "samples": {
            "start_s": {mode: [round(s, 4) for s in engine.start_times[mode]] for mode in MODES},
            "remove_s": [round(s, 4) for s in engine.remove_times],
            "pss_kb": [round(s["pss_kb"], 1) for s in memory],
        },
    }


def report(engines: list[Engine], args, notes: list[str]) -> dict:
    count = args.containers
    stats = {e.name: summarize(e, count) for e in engines if not e.skipped}
    subject, peer = stats["mycontainer"], stats.get("podman")

    def ratio(key, mode=None) -> float | None:
        if peer is None:
            return None
        if mode:
            return subject[key][mode] / peer[key][mode]
        return subject[key] / peer[key] if peer[key] else None

    print(
        f"\nmemory on the host per container, outside the containers "
        f"(/proc/PID/smaps_rollup; median of {args.runs * len(MODES)} samples):"
    )
    print(f"{'tool':<12} {'PSS':>9} {'max PSS':>9} {'USS':>9} {'RSS':>9}  processes")
    for engine in engines:
        if engine.skipped:
            print(f"{engine.name:<12} skipped: {engine.skipped}")
            continue
        s = stats[engine.name]
        kinds = ", ".join(f"{label} x{n}" for label, n in sorted(s["processes"].items()))
        print(
            f"{engine.name:<12} {megabytes(s['pss_kb']):>9} {megabytes(s['max_pss_kb']):>9}"
            f" {megabytes(s['uss_kb']):>9} {megabytes(s['rss_kb']):>9}  {kinds}"
        )
    print(f"mycontainer/conmon: {times(ratio('pss_kb'))} PSS, {times(ratio('uss_kb'))} USS")
    print(f"(the containers' own processes, not counted: {megabytes(subject['inside_pss_kb'])})")
    print(f"monitors run {', '.join(subject['executables'])}")

    top = sorted(subject["mappings_kb"].items(), key=lambda item: -item[1])[:8]
    print("\nwhere mycontainer's PSS per container goes, by mapping (/proc/PID/smaps):")
    for name, kb in top:
        print(f"  {kb:>7.0f} kB  {name}")

    print(
        f"\nstart {count} detached containers (median of {args.runs}), then stop -t 0 and rm them:"
    )
    print(
        f"{'tool':<12} {'sequential':>11} {'per ctr':>9} {'parallel':>9} {'per ctr':>9}"
        f" {'stop+rm':>9}"
    )
    for engine in engines:
        if engine.skipped:
            print(f"{engine.name:<12} skipped: {engine.skipped}")
            continue
        s = stats[engine.name]["start_s"]
        print(
            f"{engine.name:<12} {s['sequential']:>9.2f} s {s['sequential'] / count * 1000:>6.0f} ms"
            f" {s['parallel']:>7.2f} s {s['parallel'] / count * 1000:>6.0f} ms"
            f" {stats[engine.name]['remove_s']:>7.2f} s"
        )
    start_ratios = {mode: ratio("start_s", mode) for mode in MODES}
    print(
        f"mycontainer/podman: {times(start_ratios['sequential'])} sequential, "
        f"{times(start_ratios['parallel'])} parallel, {times(ratio('remove_s'))} stop+rm"
    )

    met = subject["pss_kb"] <= BAR_KB
    judged = (
        f"PSS per container {megabytes(subject['pss_kb'])} (max {megabytes(subject['max_pss_kb'])})"
        f": {'met' if met else 'NOT met'} (<= {megabytes(BAR_KB)} per container)"
    )
    print(f"\nbar: {judged}")
    print_notes(notes)
    return {
        **date_and_machine(),
        "containers": count,
        "command": COMMAND,
        "rootfs": args.rootfs,
        "mycontainer": args.mycontainer or find_mycontainer(),
        "runs": args.runs,
        "warmup": args.warmup,
        "bar_kb": BAR_KB,
        "bar_met": met,
        "verdict": judged,
        "tools": stats,
        "skipped": {e.name: e.skipped for e in engines if e.skipped},
        "ratios": {
            "pss": ratio("pss_kb"),
            "uss": ratio("uss_kb"),
            "start": start_ratios,
            "stop_rm": ratio("remove_s"),
        },
        "cgroups": sorted(group for engine in engines for group in engine.cgroups()),
        "notes": notes,
    }


# --- the way in and out ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description="The host memory and start time of detached containers: mycontainer "
        "against podman with conmon.",
    )
    parser.add_argument(
        "--containers", type=int, default=20, help="detached containers at once (default 20)"
    )
    add_rounds_options(parser, 3, 1, "rounds", "root filesystem")
    add_json_and_mycontainer_options(parser)
    parser.add_argument(
        "--podman-runtime", metavar="NAME", help="podman's OCI runtime (default: runc, else crun)"
    )
    args = parser.parse_args(argv)
    if args.containers < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--containers and --runs need at least 1, --warmup at least 0")
    if not can_run("detached", args, "/bin/sleep", " --detached"):
        return 1
    isolate(__file__, argv)
    if os.path.isdir("/run/runc"):  # runc's state (podman's containers), in our namespace only
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", "/run/runc"], check=True
        )
    workdir = tempfile.mkdtemp(prefix="mycontainer-bench-")
    engines: list[Engine] = []

    def clean_up() -> None:
        problems = []
        for engine in engines:
            problems += engine.remove_all()
        killed = end_ours(workdir)
        if killed:
            problems.append(f"processes still ran, killed: {killed}")
        # Interrupted during parallel starts, some finished after the first removal.
        for engine in engines:
            problems += engine.remove_all()
        for engine in engines:
            if isinstance(engine, Mycontainer):
                problems += engine.remove_cgroup_parents()
            elif isinstance(engine, Podman):
                problems += engine.parent.remove()
                engine.remove_runroot()
        for point in reversed(mounts_under(workdir)):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
        for problem in problems:
            print(f"detached: clean-up: {problem}", file=sys.stderr)

    return run_cleanly("detached", lambda: benchmark(args, workdir, engines), clean_up, args.json)


if __name__ == "__main__":
    sys.exit(main())
