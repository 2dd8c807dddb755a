"""A bundle's cgroup: linux.resources and linux.cgroupsPath, applied on cgroup v1 (this host)
and v2 (the lab VM), refused in one line when unsupported; and ``mycontainer-oci pause``,
``resume`` and ``update`` on a container that runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runtime import cgroups, devices

from conftest import environment

# mycontainer-oci of this checkout (the lab VM's venv may hold another, or none)
OCI = [sys.executable, "-c", "from runtime.ocicli import main; main()"]

# --- input, anywhere -------------------------------------------------------------------------

V1 = cgroups.Layout("hybrid", "/sys/fs/cgroup/unified", {"memory": "/sys/fs/cgroup/memory"})


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"blockIO": {"weight": 500}}, "linux.resources.blockIO "),
        ({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}, "linux.resources.hugepageLimits "),
        ({"network": {"classID": 1}}, "linux.resources.network "),
        ({"rdma": {"mlx5_0": {"hcaHandles": 3}}}, "linux.resources.rdma "),
        ({"memory": {"kernel": 1 << 26}}, "linux.resources.memory.kernel "),
        ({"memory": {"kernelTCP": 1 << 26}}, "linux.resources.memory.kernelTCP "),
        ({"cpu": {"idle": 1}}, "linux.resources.cpu.idle "),
    ],
)
def test_unsupported_resources_are_refused_naming_the_field(resources, field):
    with pytest.raises(cgroups.CgroupError) as error:
        cgroups.check_resources(resources, V1)
    assert f"config.json: {field}is not supported by mycontainer: remove it" == str(error.value)


def test_fields_that_ask_for_nothing_are_no_request():
    """Engines send empty objects and zeros (Go's zero values): nothing to refuse."""
    empty = {"blockIO": {}, "hugepageLimits": [], "memory": {"kernel": 0}, "cpu": {"shares": 0}}
    cgroups.check_resources(empty, V1)


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"memory": {"limit": "64m"}}, "memory.limit must be an integer"),
        ({"memory": {"limit": True}}, "memory.limit must be an integer"),
        ({"cpu": {"cpus": "0-"}}, "cpu.cpus must be a list such as 0-3,6"),
        ({"cpu": {"shares": 1}}, "cpu.shares must be from 2 to 262144"),
        ({"memory": {"limit": 1 << 26, "swap": 1 << 25}}, "must be at least memory.limit"),
        ({"unified": {"memory.max": "1"}}, "unified needs cgroup v2"),
        ({"memory": {"swappiness": 10}}, None),
    ],
)
def test_bad_values_are_refused_in_one_line(resources, message):
    if message is None:
        cgroups.check_resources(resources, V1)  # swappiness: a v1 file, this layout's
        v2 = cgroups.Layout("unified", "/sys/fs/cgroup", {})
        with pytest.raises(cgroups.CgroupError, match="swappiness needs cgroup v1"):
            cgroups.check_resources(resources, v2)
        return
    with pytest.raises(cgroups.CgroupError, match=message):
        cgroups.check_resources(resources, V1)


@pytest.mark.parametrize("path", ["..", "a/../b", "/a/..", "/", "", "a//b", "./a"])
def test_cgroups_paths_with_dot_dot_or_no_name_are_refused(path):
    with pytest.raises(cgroups.CgroupError, match="must name a group: no '..'"):
        cgroups.check_path(path)


def test_an_absolute_path_must_lie_below_the_subtree_we_run_in():
    """In a delegated subtree (here /service, on the memory hierarchy) an absolute path is
    taken from the hierarchy's root only if it lies inside it; relative ones go inside."""
    mount = "/sys/fs/cgroup/memory"
    assert cgroups._place(mount, "/service", ["c"], "c", None) == f"{mount}/service/c"
    assert cgroups._place(mount, "/service", ["service", "c"], "/service/c", None) == (
        f"{mount}/service/c"
    )
    assert cgroups._place(mount, "/", ["c"], "/c", None) == f"{mount}/c"
    for outside in (["c"], ["service"], ["servicex", "c"]):
        with pytest.raises(cgroups.CgroupError, match="lies outside the cgroup subtree"):
            cgroups._place(mount, "/service", outside, "/" + "/".join(outside), None, "memory")
    with pytest.raises(cgroups.CgroupError, match=r"\(/user.slice\)"):  # v2: our own group
        cgroups._place(
            "/sys/fs/cgroup",
            "/user.slice",
            ["user.slice", "s.scope"],
            "/user.slice/s.scope",
            "/user.slice/s.scope",
        )


def test_docker_flags_become_the_oci_object_and_weights_survive_the_trip():
    resources = cgroups.docker_resources(64 << 20, 300, 50)
    assert resources == {
        "memory": {"limit": 64 << 20, "swap": 64 << 20},
        "cpu": {"shares": 3072},
        "pids": {"limit": 50},
    }
    assert cgroups.docker_resources() == {}
    weights = range(1, cgroups.MAX_CPU_WEIGHT + 1)
    assert all(cgroups.shares_to_weight(cgroups.weight_to_shares(w)) == w for w in weights)
    assert cgroups.shares_to_weight(1024) == 100  # the defaults match


def test_device_rules_apply_in_order_then_the_defaults_on_v1():
    rules = devices.oci_rules(
        [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"},
            {"allow": True, "type": "b", "major": 8, "minor": 20, "access": "wr"},
            {"allow": False, "type": "b", "major": 8, "minor": 20, "access": "w"},
        ]
    )
    writes = devices.v1_writes(rules)
    assert writes[:5] == [
        ("devices.deny", "a"),
        ("devices.deny", "a"),
        ("devices.allow", "c 10:229 rwm"),
        ("devices.allow", "b 8:20 rw"),
        ("devices.deny", "b 8:20 w"),
    ]
    assert [line for _, line in writes[5:]] == devices.v1_rules()


def test_a_rule_v1_cannot_express_is_refused_not_dropped():
    """v1 removes only an exception of the same type, major and minor: denying /dev/null
    after allowing every character device would silently not deny it."""
    rules = devices.oci_rules(
        [
            {"allow": True, "type": "c", "access": "rwm"},
            {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        ]
    )
    with pytest.raises(devices.DeviceError, match="cannot be expressed with cgroup v1"):
        devices.v1_writes(rules)


def test_the_v2_filter_stops_at_a_rule_that_matches_everything():
    """The kernel's verifier refuses a program with code it cannot reach: after a deny-all
    (the first rule of most bundles, so the last tested) nothing may follow."""
    deny_all = devices.device_filter(devices.oci_rules([{"allow": False, "access": "rwm"}]))
    assert len(deny_all) == len(devices.device_filter(devices.oci_rules([])))
    assert deny_all[-16:] == devices._insn(devices.MOV64_K, 0, 0, 0, 0) + devices._insn(
        devices.EXIT, 0, 0
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"access": "rwm"}, "allow .true or false. is required"),
        ({"allow": True, "type": "x"}, r"\.type must be a, b or c"),
        ({"allow": True, "access": "rwx"}, r"\.access must be letters of rwm"),
        ({"allow": True, "major": "8"}, r"\.major must be a number"),
    ],
)
def test_bad_device_rules_are_refused(rule, message):
    with pytest.raises(devices.DeviceError, match=message):
        devices.oci_rules([rule])


# --- bundles, as root -----------------------------------------------------------------------

privileged = pytest.mark.privileged


@pytest.fixture
def oci(home, state_root, tmp_path):
    """Run ``mycontainer-oci ARGS`` (the state root: the test's own); CompletedProcess.

    Its output goes to files, not pipes: a created container's init inherits them, as it
    inherits an engine's, and a pipe would stay open as long as the container. Whatever a
    test creates is deleted at the end, failed or not.
    """
    made = []

    def run(*args, input=None, check=True):
        if args[0] in ("create", "run"):
            made.append(args[-1])
        with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
            code = subprocess.run(
                [*OCI, *args],
                env=environment(home, state_root),
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
                timeout=60,
            ).returncode
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(args, code, out.read(), err.read())
        if check:
            assert result.returncode == 0, result.stderr
        return result

    yield run
    for container_id in made:
        run("delete", "--force", container_id, check=False)


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    """Write a bundle's config.json running ``args``, with ``linux`` fields merged in.

    Its root is a copy of the busybox rootfs (``cp -a``: device nodes stay nodes): with no
    /dev mount in the config, the devices are made in the root itself, and the session's
    rootfs must stay as it was built. The copy sits beside it, on the same filesystem: the
    lab VM mounts /tmp nodev, where no device node opens at all."""
    rootfs = f"{busybox_rootfs}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["cp", "-a", busybox_rootfs, rootfs], check=True)

    def write(args, capabilities=(), **linux):
        config = {
            "ociVersion": "1.2.0",
            "process": {
                "args": list(args),
                "cwd": "/",
                "env": ["PATH=/bin:/usr/bin"],
                "capabilities": {"bounding": list(capabilities)},
            },
            "root": {"path": rootfs},
            "linux": {
                "namespaces": [{"type": t} for t in ("mount", "pid", "uts", "ipc")],
                **linux,
            },
        }
        path = tmp_path / f"bundle-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        (path / "config.json").write_text(json.dumps(config))
        return str(path)

    yield write
    subprocess.run(["rm", "-rf", "--one-file-system", rootfs], check=True)


def group_of(pid: int, controller: str) -> str:
    """The directory of ``pid``'s group in ``controller``'s hierarchy (v2: the one)."""
    layout = cgroups.detect()
    with open(f"/proc/{pid}/cgroup") as file:
        lines = [line.rstrip("\n").split(":", 2) for line in file]
    if layout.uses_v2:
        return os.path.join(layout.v2_mount, lines[0][2].lstrip("/"))
    mount = layout.v1_cpuset if controller == "cpuset" else layout.v1_mounts[controller]
    [path] = [p for _, names, p in lines if controller in names.split(",")]
    return os.path.join(mount, path.lstrip("/"))


def read(directory: str, name: str) -> str:
    with open(os.path.join(directory, name)) as file:
        return file.read().strip()


def pid_of(oci, container_id) -> int:
    return json.loads(oci("state", container_id).stdout)["pid"]


@pytest.fixture
def parent_name():
    """A name for a cgroupsPath's parent group; removed at the end from every hierarchy
    (where runc leaves it too), whether the test passed or not."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    layout = cgroups.detect()
    if layout.uses_v2:
        bases = [os.path.join(layout.v2_mount, os.path.dirname(cgroups.own_v2_path())[1:])]
    else:
        mounts = {**layout.v1_mounts, "cpuset": layout.v1_cpuset}
        bases = [os.path.join(m, cgroups.own_v1_path(c)[1:]) for c, m in mounts.items() if m]
    for base in set(bases):
        for directory in (os.path.join(base, name, "box"), os.path.join(base, name)):
            cgroups.remove_group(directory)


@privileged
def test_resources_and_a_relative_cgroups_path_are_applied(oci, bundle, state_root, parent_name):
    name = parent_name
    resources = {
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 128 << 20},
        "cpu": {"shares": 2048, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 77},
    }
    path = bundle(["sleep", "1011"], cgroupsPath=f"{name}/box", resources=resources)
    oci("create", "--bundle", path, "c1")
    pid = pid_of(oci, "c1")
    memory, cpu, cpuset, pids = (group_of(pid, c) for c in ("memory", "cpu", "cpuset", "pids"))
    for group in (memory, cpu, cpuset, pids):
        assert group.endswith(f"/{name}/box")
    if cgroups.detect().uses_v2:
        assert read(memory, "memory.max") == str(64 << 20)
        assert read(memory, "memory.low") == str(32 << 20)
        assert read(memory, "memory.swap.max") == str(64 << 20)  # swap alone: the rest
        assert read(cpu, "cpu.weight") == "200"
        assert read(cpu, "cpu.max") == "50000 100000"
    else:
        assert read(memory, "memory.limit_in_bytes") == str(64 << 20)
        assert read(memory, "memory.soft_limit_in_bytes") == str(32 << 20)
        assert read(memory, "memory.memsw.limit_in_bytes") == str(128 << 20)
        assert read(cpu, "cpu.shares") == "2048"
        assert (read(cpu, "cpu.cfs_quota_us"), read(cpu, "cpu.cfs_period_us")) == (
            "50000",
            "100000",
        )
    assert (read(cpuset, "cpuset.cpus"), read(cpuset, "cpuset.mems")) == ("0", "0")
    assert read(pids, "pids.max") == "77"
    oci("delete", "--force", "c1")
    assert not any(os.path.exists(group) for group in (memory, cpu, cpuset, pids))
    assert os.listdir(state_root) == []


@privileged
@pytest.mark.parametrize(
    ("linux", "message"),
    [
        ({"resources": {"blockIO": {"weight": 500}}}, "linux.resources.blockIO: block I/O"),
        ({"resources": {"memory": {"kernel": 1 << 26}}}, "linux.resources.memory.kernel:"),
        ({"cgroupsPath": "../escape"}, "linux.cgroupsPath: '../escape' has a '..'"),
        ({"resources": {"devices": [{"allow": "yes"}]}}, "devices[0].allow: must be true"),
    ],
)
def test_bad_cgroup_settings_fail_in_one_line_and_leave_nothing(
    oci, bundle, state_root, linux, message
):
    groups = sorted(cgroups.container_groups(cgroups.detect(), "mycontainer"))
    result = oci("create", "--bundle", bundle(["true"], **linux), "bad", check=False)
    assert result.returncode == 1
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert os.listdir(state_root) == []
    assert sorted(cgroups.container_groups(cgroups.detect(), "mycontainer")) == groups
    assert not os.path.exists(os.path.join(cgroups.detect().v1_mounts.get("pids", "/-"), "escape"))


@privileged
def test_a_bundles_device_rules_decide_what_it_may_open(oci, bundle):
    """loop-control (10:237) is none of the defaults: opening a node of it is refused by the
    device controller (EPERM) unless a rule of the bundle allows it. (Whether the driver is
    loaded then decides the rest, which is not the cgroup's business.)"""
    probe = bundle(["true"])  # where its rootfs copy lies
    root = json.loads(Path(probe, "config.json").read_text())["root"]["path"]
    if os.statvfs(root).f_flag & os.ST_NODEV:
        pytest.skip(
            f"{root} is on a filesystem mounted nodev (the lab VM's /tmp): no device"
            " node opens there, whatever the cgroup says"
        )
    script = "mknod /dev/lc c 10 237 && (: < /dev/lc) 2>&1; echo done"
    outputs = {}
    for allowed in (False, True):
        rules = [{"allow": False, "access": "rwm"}]
        if allowed:
            rules.append({"allow": True, "type": "c", "major": 10, "minor": 237, "access": "r"})
        path = bundle(["sh", "-c", script], ["CAP_MKNOD"], resources={"devices": rules})
        outputs[allowed] = oci("run", "--bundle", path, f"dev{int(allowed)}").stdout
    assert "Operation not permitted" in outputs[False]
    assert "Operation not permitted" not in outputs[True] and outputs[True].endswith("done\n")


def cpu_time(pid: int) -> int:
    """CPU time, in clock ticks, of process ``pid`` (utime + stime: proc(5))."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@privileged
def test_pause_freezes_every_process_and_resume_lets_them_go_on(oci, bundle):
    oci("create", "--bundle", bundle(["sh", "-c", "while :; do :; done"]), "busy")
    oci("start", "busy")
    pid = pid_of(oci, "busy")
    assert oci("resume", "busy", check=False).stderr.endswith("it is running\n")
    oci("pause", "busy")
    assert json.loads(oci("state", "busy").stdout)["status"] == "paused"
    before = cpu_time(pid)
    time.sleep(0.5)
    assert cpu_time(pid) == before, "a paused container used the CPU"
    assert oci("pause", "busy", check=False).stderr.endswith("it is paused\n")
    oci("resume", "busy")
    assert json.loads(oci("state", "busy").stdout)["status"] == "running"
    time.sleep(0.3)
    assert cpu_time(pid) > before
    oci("pause", "busy")
    oci("kill", "busy", "KILL")  # a paused container can be killed, and deleted
    oci("delete", "--force", "busy")
    assert oci("state", "busy", check=False).returncode == 1


@privileged
def test_update_changes_the_limits_of_a_running_container(oci, bundle, state_root):
    resources = {"memory": {"limit": 64 << 20, "swap": 64 << 20}, "pids": {"limit": 50}}
    oci("create", "--bundle", bundle(["sleep", "1012"], resources=resources), "upd")
    pid = pid_of(oci, "upd")
    memory, cpu, pids = (group_of(pid, c) for c in ("memory", "cpu", "pids"))
    oci("update", "--memory", "128m", "--memory-swap", "256m", "--pids-limit", "99", "upd")
    oci("update", "--resources", "-", "upd", input='{"cpu": {"quota": 20000, "period": 100000}}')
    assert read(pids, "pids.max") == "99"
    if cgroups.detect().uses_v2:
        assert read(memory, "memory.max") == str(128 << 20)
        assert read(memory, "memory.swap.max") == str(128 << 20)
        assert read(cpu, "cpu.max") == "20000 100000"
    else:
        assert read(memory, "memory.limit_in_bytes") == str(128 << 20)
        assert read(memory, "memory.memsw.limit_in_bytes") == str(256 << 20)
        assert read(cpu, "cpu.cfs_quota_us") == "20000"
    bad = oci("update", "--resources", "-", "upd", input='{"blockIO": {"weight": 10}}', check=False)
    assert bad.stderr == (
        "mycontainer-oci: error: update: linux.resources.blockIO is not supported by"
        " mycontainer: remove it\n"
    )
    assert oci("update", "--pids-limit", "lots", "upd", check=False).stderr.endswith(
        "--pids-limit must be a number (got 'lots')\n"
    )
    assert read(pids, "pids.max") == "99"
    if not cgroups.detect().uses_v2:  # v1: a cpuset group only for those created with one
        late = oci("update", "--cpuset-cpus", "0", "upd", check=False)
        assert late.stderr.endswith("give cpu.cpus or cpu.mems when creating it\n")
    oci("kill", "upd", "KILL")
    while json.loads(oci("state", "upd").stdout)["status"] != "stopped":
        time.sleep(0.05)
    stopped = oci("update", "--pids-limit", "10", "upd", check=False)
    assert stopped.returncode == 1 and stopped.stderr.endswith("it is stopped\n")


@privileged
def test_an_absolute_path_outside_a_delegated_hierarchy_uses_none_of_it(
    oci, bundle, home, state_root, parent_name
):
    """Run from a group of our own in the memory hierarchy (as a sandbox or a service that
    limits only memory places us), at the root of the others: an absolute cgroupsPath
    places the container in the others, keeps it in our memory group when it sets no memory
    limit, and is refused in one line when it does."""
    layout = cgroups.detect()
    if layout.uses_v2 or "memory" not in layout.v1_mounts or cgroups.own_v1_path("cpu") != "/":
        pytest.skip(
            "needs cgroup v1 with this process at the root of the cpu hierarchy: on v2 a"
            " path outside the subtree is always refused (test_an_absolute_path_must_lie...)"
        )
    mount = layout.v1_mounts["memory"]
    runner = os.path.join(mount, cgroups.own_v1_path("memory")[1:], f"{parent_name}-runner")
    os.mkdir(runner)
    script = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'

    def create(container_id, resources):
        path = bundle(["sleep", "1013"], cgroupsPath=f"/{parent_name}/box", resources=resources)
        command = ["sh", "-c", script, "sh", runner, *OCI, "create", "--bundle", path, container_id]
        return subprocess.run(
            command,
            env=environment(home, state_root),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if resources.get("memory") else subprocess.DEVNULL,
            text=True,
            timeout=60,
        )

    try:
        assert create("outside", {"cpu": {"shares": 512}}).returncode == 0
        pid = pid_of(oci, "outside")
        assert group_of(pid, "cpu") == os.path.join(layout.v1_mounts["cpu"], parent_name, "box")
        assert group_of(pid, "memory") == runner
        assert read(group_of(pid, "cpu"), "cpu.shares") == "512"
        oci("delete", "--force", "outside")
        refused = create("limited", {"memory": {"limit": 64 << 20}})
        assert refused.returncode == 1
        assert refused.stderr == (
            f"mycontainer-oci: error: config.json: linux.cgroupsPath /{parent_name}/box lies"
            " outside the cgroup subtree mycontainer runs in"
            f" (memory {cgroups.own_v1_path('memory').rstrip('/')}/{parent_name}-runner),"
            " which it never leaves: give a relative path, or one below it\n"
        )
        assert os.listdir(state_root) == []
    finally:
        oci("delete", "--force", "outside", check=False)
        cgroups.remove_group(runner)
