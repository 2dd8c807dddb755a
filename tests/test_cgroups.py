"""Step 4, cgroups: limits that the kernel really enforces, on cgroup v1 (this host) and v2
(the lab VM), and input refused before anything is created."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid

import pytest

from runtime import cgroups

from conftest import (
    cgroup_parent,
    container_groups,
    environment,
    mycontainer_command,
    running_containers,
)

# --- input, anywhere -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64m", 64 << 20),
        ("64M", 64 << 20),
        ("64mb", 64 << 20),
        ("64MiB", 64 << 20),
        ("1g", 1 << 30),
        ("1.5g", 3 << 29),
        ("6144k", 6 << 20),
        (str(7 << 20), 7 << 20),
    ],
)
def test_memory_sizes(text, size):
    assert cgroups.parse_memory(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1k", "at least 6m"),
        ("0", "at least 6m"),
        ("5m", "at least 6m"),
        ("-64m", "takes a size"),
        ("lots", "takes a size"),
        ("64x", "takes a size"),
        ("", "takes a size"),
        ("99999999999g", "too large"),
    ],
)
def test_bad_memory_sizes(text, message):
    with pytest.raises(ValueError, match=message):
        cgroups.parse_memory(text)


@pytest.mark.parametrize("text", ["0", "10001", "-1", "1.5", "high", ""])
def test_bad_cpu_weights(text):
    with pytest.raises(ValueError, match="from 1 to 10000"):
        cgroups.parse_cpu_weight(text)


def test_weight_to_shares_keeps_the_default_and_the_ratios():
    assert cgroups.weight_to_shares(100) == 1024
    assert cgroups.weight_to_shares(400) == 4 * cgroups.weight_to_shares(100)
    assert cgroups.weight_to_shares(1) == 10
    assert cgroups.weight_to_shares(10000) == 102400


MOUNTINFO = {
    "unified": "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    "hybrid": (
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    ),
    "v1": (
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    ),
    "none": "22 1 0:21 / /proc rw - proc proc rw\n",
}


@pytest.mark.parametrize("version", MOUNTINFO)
def test_detect_tells_the_layouts_apart(tmp_path, version):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO[version])
    assert cgroups.detect(str(path)).version == version


def test_the_v2_tree_is_told_from_a_bind_mounted_part_of_it(tmp_path):
    """systemd-nspawn and LXC mount the tree read-only and a container's own group writable
    on top: the groups' paths are relative to the whole tree."""
    path = tmp_path / "mountinfo"
    path.write_text(
        "30 23 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "31 30 0:26 /machine.slice/c.scope /sys/fs/cgroup/machine.slice/c.scope rw,nosuid"
        " - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    assert cgroups.detect(str(path)).v2_mount == "/sys/fs/cgroup"


def test_a_hierarchy_mounted_again_in_a_chroot_is_used_where_it_was_first(tmp_path):
    """An image builder's chroot gets the host's cgroups (``mount --rbind /sys/fs/cgroup``)
    for a while: containers started meanwhile must not use that copy, which goes away."""
    path = tmp_path / "mountinfo"
    again = "/var/tmp/build/rootfs/sys/fs/cgroup"
    path.write_text(
        MOUNTINFO["hybrid"]
        + "36 31 0:33 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset\n"
        + f"90 80 0:32 / {again}/memory rw - cgroup cgroup rw,memory\n"
        + f"91 80 0:33 / {again}/cpuset rw - cgroup cgroup rw,cpuset\n"
        + f"92 80 0:38 / {again}/unified rw - cgroup2 cgroup2 rw\n"
    )
    layout = cgroups.detect(str(path))
    assert layout.v1_mounts["memory"] == "/sys/fs/cgroup/memory"
    assert layout.v1_cpuset == "/sys/fs/cgroup/cpuset"
    assert layout.v2_mount == "/sys/fs/cgroup/unified"


def test_own_v1_groups_are_read_once_for_every_controller(tmp_path):
    path = tmp_path / "cgroup"
    path.write_text("5:name=systemd:/s\n4:cpu,cpuacct:/a\n3:memory:/b\n0::/c\n")
    paths = cgroups.own_v1_paths(str(path))
    assert (paths["cpu"], paths["cpuacct"], paths["memory"]) == ("/a", "/a", "/b")
    assert cgroups.own_v1_path("pids", str(path)) == "/"  # not mounted: the root


def test_co_mounted_v1_controllers_share_one_group(tmp_path):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO["v1"])
    layout = cgroups.detect(str(path))
    assert layout.v1_mounts["cpu"] == layout.v1_mounts["cpuacct"]


# --- limits, as root -------------------------------------------------------------------------

privileged = pytest.mark.privileged


@privileged
def test_memory_hog_is_oom_killed_with_137_and_one_line(mycontainer):
    result = mycontainer("run", "--memory", "32m", "busybox", "tail", "/dev/zero")
    assert result.returncode == 137
    assert result.stderr == "mycontainer: container killed: out of memory (limit 32 MiB)\n"


@privileged
def test_oom_kill_of_a_process_other_than_pid1_is_reported(mycontainer):
    script = "tail /dev/zero; echo PID 1 survived"
    result = mycontainer("run", "busybox", "sh", "-c", script, "--memory", "32m")
    assert result.stdout == "PID 1 survived\n"
    assert result.returncode == 137
    assert "out of memory (limit 32 MiB)" in result.stderr


@privileged
def test_within_the_limit_nothing_is_killed(mycontainer):
    script = "head -c 8m /dev/zero | tail > /dev/null && echo fine"
    result = mycontainer("run", "--memory", "32m", "busybox", "sh", "-c", script)
    assert (result.returncode, result.stdout, result.stderr) == (0, "fine\n", "")


@privileged
def test_container_sees_its_cgroup_as_root(mycontainer):
    result = mycontainer("run", "busybox", "cat", "/proc/self/cgroup")
    assert result.returncode == 0
    assert {line.split(":", 2)[2] for line in result.stdout.splitlines()} == {"/"}


@privileged
def test_memory_limit_visible_inside(mycontainer):
    """The container sees its own group, read-only: on v1, in the memory hierarchy's mount."""
    v2 = cgroups.detect().uses_v2
    limit = "/sys/fs/cgroup/" + ("memory.max" if v2 else "memory/memory.limit_in_bytes")
    result = mycontainer("run", "--memory", "64m", "busybox", "cat", limit)
    assert result.stdout == f"{64 << 20}\n"


@privileged
def test_pids_limit_stops_a_fork_loop(mycontainer):
    script = "for i in $(seq 1 60); do sleep 1 & done; wait; echo all 60 started"
    result = mycontainer("run", "--pids-limit", "20", "busybox", "sh", "-c", script)
    assert "can't fork" in result.stderr  # busybox sh gives up at the first failed fork
    assert result.returncode != 0 and result.stdout == ""
    unlimited = mycontainer("run", "busybox", "sh", "-c", script)
    assert unlimited.stdout == "all 60 started\n"  # the limit, not the host, stopped it


@privileged
def test_cpus_is_a_quota_in_the_containers_own_group(mycontainer):
    """docker's --cpus 1.5: 150 ms of CPU time per 100 ms period (cpu.max on v2)."""
    v2 = cgroups.detect().uses_v2
    files = ["cpu.max"] if v2 else ["cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us"]
    show = ["cat", *(f"/sys/fs/cgroup/{name}" for name in files)]
    result = mycontainer("run", "--net", "none", "--cpus", "1.5", "busybox", *show)
    assert result.stdout == ("150000 100000\n" if v2 else "150000\n100000\n"), result.stderr


@privileged
def test_cpus_caps_a_busy_loop_on_an_idle_cpu(background, state_root):
    """A quota caps CPU time even when no one else wants the CPU (--cpu-weight would not):
    a busy loop held to 0.2 CPUs uses at most about that, however idle the host."""
    busy = ["sh", "-c", "while :; do :; done"]
    process = background("run", "--net", "none", "--cpus", "0.2", "busybox", *busy)
    (state,) = running_containers(state_root, runtimes=[process])
    group = cgroups.Cgroup(cgroups.detect(), state["id"], cgroup_parent(state_root))
    before, start = group.cpu_usage_usec(), time.monotonic()
    time.sleep(2)
    used = (group.cpu_usage_usec() - before) / 1e6 / (time.monotonic() - start)
    os.kill(state["pid"], signal.SIGKILL)
    assert process.wait(timeout=20) == 137
    assert used <= 0.25, f"the loop used {used:.2f} CPUs, above its 0.2"


@privileged
@pytest.mark.parametrize(
    "option",
    [
        ["--memory", "1k"],
        ["--memory", "-1"],
        ["--memory", "zillion"],
        ["--cpu-weight", "0"],
        ["--cpu-weight", "10001"],
        ["--pids-limit", "0"],
        ["--cpus", "0"],
        ["--cpus", "-1"],
        ["--cpus", "0.001"],
        ["--cpus", str(len(os.sched_getaffinity(0)) + 1)],
        ["--cpus", "two"],
    ],
)
def test_bad_values_exit_125_and_create_nothing(mycontainer, state_root, option):
    groups = container_groups(state_root)
    result = mycontainer("run", *option, "busybox", "true")
    assert result.returncode == 125
    assert result.stderr.startswith(f"mycontainer: error: {option[0]} ")
    assert result.stderr.count("\n") == 1
    assert os.listdir(state_root) == [] and container_groups(state_root) == groups


def start_busy(background, weight, cpu):
    """A CPU-bound container pinned to ``cpu`` (taskset inside: joining a cgroup v2 with the
    cpuset controller resets a process's CPU affinity to the cpuset's)."""
    busy_loop = ["taskset", "-c", str(cpu), "sh", "-c", "while :; do :; done"]
    return background("run", "--net", "none", "--cpu-weight", str(weight), "busybox", *busy_loop)


@privileged
def test_cpu_weight_shares_one_cpu_one_to_four(background, state_root):
    cpu = min(os.sched_getaffinity(0))  # one this test may use: its cpuset may exclude CPU 0
    processes = [start_busy(background, 100, cpu), start_busy(background, 400, cpu)]
    states = running_containers(state_root, 2, runtimes=processes)
    parent = cgroup_parent(state_root)
    groups = {
        s["config"]["cpu_weight"]: cgroups.Cgroup(cgroups.detect(), s["id"], parent) for s in states
    }
    before = {weight: group.cpu_usage_usec() for weight, group in groups.items()}
    time.sleep(3)
    used = {weight: group.cpu_usage_usec() - before[weight] for weight, group in groups.items()}
    for state in states:
        os.kill(state["pid"], signal.SIGKILL)  # its PID 1, which ignores SIGTERM
    for process in processes:
        assert process.wait(timeout=20) == 137
    ratio = used[400] / used[100]
    assert 3.0 <= ratio <= 5.0, f"CPU time 400:100 was {ratio:.2f}:1, expected about 4:1"


@privileged
def test_cgroups_of_a_killed_runtime_are_pruned(background, state_root, mycontainer):
    """SIGKILL mycontainer itself: its container's cgroups stay until prune removes them."""
    process = background("run", "--rm", "--memory", "64m", "busybox", "sleep", "60")
    [state] = running_containers(state_root, runtimes=[process])
    process.kill()
    process.wait()
    leftover = [path for path in container_groups(state_root) if state["id"] in path]
    assert leftover, "expected the killed runtime's cgroups to be left behind"
    result = mycontainer("prune")
    assert result.returncode == 0, result.stderr
    assert state["id"] in result.stdout
    assert not [path for path in container_groups(state_root) if state["id"] in path]
    assert not alive(state["pid"])


def alive(pid: int) -> bool:
    """Is ``pid`` a running process (not gone, not a zombie waiting to be reaped)?"""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- where the groups go, on a host laid out by systemd ---------------------------------------


def require_v2() -> cgroups.Layout:
    layout = cgroups.detect()
    if not layout.uses_v2:
        pytest.skip(
            "cgroup v1 host: where a container's group goes beside the runtime's own is a"
            " cgroup v2 rule; 'invoke test --qemu' runs this in a v2 VM laid out as systemd does"
        )
    return layout


def beside_us() -> str:
    """The parent of this process's cgroup v2 group, from /proc/self/cgroup's ``0::`` line."""
    with open("/proc/self/cgroup") as file:
        [own] = [line[3:].strip() for line in file if line.startswith("0::")]
    return os.path.dirname(own)


@pytest.fixture
def own_group():
    """An empty cgroup v2 group of this test's own, beside the test's group (where
    mycontainer puts its groups too); removed at the end with everything in it."""
    layout = require_v2()
    path = os.path.join(layout.v2_mount, beside_us().lstrip("/"), f"test-{uuid.uuid4().hex[:12]}")
    os.mkdir(path)
    yield path
    for directory, _, _ in os.walk(path, topdown=False):  # children first
        cgroups.remove_group(directory)
    assert not os.path.exists(path)


def run_from(group, home, state_root, *args, prefix=()) -> subprocess.CompletedProcess:
    """``mycontainer ARGS`` started from a shell in cgroup ``group`` (made if missing), as
    if a user's shell or a service sat there; ``prefix``: a command to exec it through."""
    script = 'mkdir -p "$1" && echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
    command = ["sh", "-c", script, "sh", group, *prefix, *mycontainer_command(*args)]
    env = environment(home, state_root)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def enable_down_to(group: str) -> None:
    """Let ``group``'s children use memory, cpu and pids, as systemd does for Delegate=yes."""
    mount = cgroups.detect().v2_mount
    below = os.path.relpath(group, mount).split(os.sep)
    for depth in range(len(below) + 1):
        directory = os.path.join(mount, *below[:depth])
        cgroups.write_file(directory, "cgroup.subtree_control", "+memory +cpu +pids")


@privileged
def test_group_lies_beside_the_runtimes_own_with_every_limit(background, state_root):
    """A sudo shell on a systemd host runs in user.slice/user-N.slice/session-M.scope, which
    holds processes: its containers' groups go beside it, and every limit still works, cpu
    included, which systemd's slices do not enable."""
    require_v2()
    limits = ["--memory", "64m", "--cpu-weight", "300", "--pids-limit", "50"]
    process = background("run", "--net", "none", *limits, "busybox", "sleep", "60")
    [state] = running_containers(state_root, runtimes=[process])
    with open(f"/proc/{state['pid']}/cgroup") as file:
        where = file.read()
    assert where == f"0::{os.path.join(beside_us(), cgroup_parent(state_root), state['id'])}\n"
    group = cgroups.Cgroup(cgroups.detect(), state["id"], cgroup_parent(state_root))
    values = {}
    for name in ("memory.max", "cpu.weight", "pids.max"):
        with open(os.path.join(group.directories[0], name)) as file:
            values[name] = file.read().strip()
    assert values == {"memory.max": str(64 << 20), "cpu.weight": "300", "pids.max": "50"}


@privileged
def test_a_parent_holding_processes_is_refused_in_one_line(home, state_root, own_group):
    """Run from X/runner while X itself holds a process (a Delegate=yes service's main
    process, say): X cannot hand controllers to a group beside us. One line says why, and
    nothing is left; the root, outside what we were given, is not used instead."""
    script = f"echo $$ > {own_group}/cgroup.procs && echo in && exec sleep 60"
    sleeper = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout.readline() == "in\n", "the sleeper could not join its group"
        runner = os.path.join(own_group, "runner")
        result = run_from(runner, home, state_root, "run", "--net", "none", "busybox", "true")
    finally:
        sleeper.kill()
        sleeper.wait()
        sleeper.stdout.close()
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: cannot enable the cgroup controllers "), (
        result.stderr
    )
    assert f" in {own_group}: it holds processes" in result.stderr
    assert result.stderr.count("\n") == 1
    assert os.listdir(state_root) == []
    assert [name for name in os.listdir(own_group) if cgroups.is_container_id(name)] == []


@privileged
def test_runs_in_a_delegated_subtree_below_a_read_only_tree(home, state_root, own_group):
    """As systemd-nspawn and LXC give a container its cgroup: the tree mounted read-only,
    the container's own group bind-mounted writable on top, and the controllers already
    enabled down to it. Our runtime, run in there, keeps to that group."""
    enable_down_to(own_group)
    mount = cgroups.detect().v2_mount
    lock_tree = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$2" && shift 2 && exec "$@"'
    prefix = ["unshare", "--mount", "sh", "-c", lock_tree, "sh", own_group, mount]
    show = ["cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.weight"]
    limits = ["--memory", "32m", "--cpu-weight", "300"]
    runner = os.path.join(own_group, "payload")
    result = run_from(
        runner,
        home,
        state_root,
        "run",
        "--rm",
        "--net",
        "none",
        *limits,
        "busybox",
        *show,
        prefix=prefix,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout == f"{32 << 20}\n300\n"
    parent = os.path.join(own_group, cgroup_parent(state_root))
    assert os.listdir(state_root) == [] and not os.path.exists(parent)  # gone with its last group


@privileged
def test_a_state_root_s_cgroup_parent_goes_with_its_last_container(mycontainer, state_root):
    """A state root of its own (a test's, an engine's --root) gets a cgroup parent of its
    own: it stays while a container is in it, and its last container's removal takes it."""
    from runtime import cgroups

    parents = cgroups.Cgroup(cgroups.detect(), "_", cgroup_parent(state_root)).parents
    assert (
        mycontainer(
            "run", "-d", "--name", "stays", "--net", "none", "busybox", "sleep", "60"
        ).returncode
        == 0
    )
    assert mycontainer("run", "--rm", "--net", "none", "busybox", "true").returncode == 0
    assert all(os.path.isdir(parent) for parent in parents), "removed while a group was in it"
    assert mycontainer("rm", "-f", "stays").returncode == 0
    assert [parent for parent in parents if os.path.exists(parent)] == []
