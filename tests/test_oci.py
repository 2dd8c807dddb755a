"""``mycontainer-oci``: the OCI runtime command line over the state layer, as an engine drives it.

Each test makes bundles of its own (the session's busybox rootfs as their root) and a state
root of its own; whatever a test leaves is force-deleted afterwards, and the fixture checks
that no state directory, cgroup or mount is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, bundle_maker, host_mounts, oci_runner

pytestmark = pytest.mark.privileged


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    """Make a bundle: ``bundle(args, edit=f, rootfs=...)`` -> its directory (conftest's
    bundle_maker), its root the session's busybox rootfs unless ``rootfs`` is given."""
    return bundle_maker(tmp_path, busybox_rootfs)


@pytest.fixture
def oci(state_root, home):
    """Run ``mycontainer-oci --root STATE ARGS...`` (conftest's oci_runner); afterwards
    nothing may remain: state, cgroup or mount."""
    with oci_runner(state_root, home) as run:
        yield run


def state_of(oci, container_id: str) -> dict:
    result = oci("state", container_id)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_for_status(oci, container_id: str, status: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = state_of(oci, container_id)
        if state["status"] == status or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def parent_command(pid: int) -> str:
    """The command line of process ``pid``'s parent."""
    with open(f"/proc/{pid}/stat") as file:
        parent = int(file.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{parent}/cmdline", "rb") as file:
        return file.read().replace(b"\0", b" ").decode()


def test_create_start_kill_delete_each_from_a_process_of_its_own(oci, bundle):
    directory = bundle(["sleep", "60"])
    created = oci("create", "--bundle", directory, "box")
    assert created.returncode == 0, created.stderr
    state = state_of(oci, "box")
    assert state["status"] == "created"
    assert state["bundle"] == directory and state["id"] == "box"
    # create has returned: no mycontainer process stays behind as the init's monitor
    assert "runtime.ocicli" not in parent_command(state["pid"])
    assert oci("start", "box").returncode == 0
    assert state_of(oci, "box")["status"] == "running"
    assert oci("kill", "box", "KILL").returncode == 0
    assert wait_for_status(oci, "box", "stopped")["status"] == "stopped"
    assert "pid" not in state_of(oci, "box")
    assert oci("delete", "box").returncode == 0
    gone = oci("state", "box")
    assert gone.returncode == 1 and gone.stderr.strip().endswith("does not exist")


def test_the_status_comes_from_the_init_not_from_a_stored_flag(oci, bundle):
    assert oci("create", "--bundle", bundle(["sleep", "60"]), "box").returncode == 0
    assert oci("start", "box").returncode == 0
    os.kill(state_of(oci, "box")["pid"], signal.SIGKILL)  # from outside: nobody tells
    assert wait_for_status(oci, "box", "stopped")["status"] == "stopped"


def test_a_reused_pid_is_not_the_container(oci, bundle, state_root):
    """A living process with the recorded pid but another start time is someone else."""
    assert oci("create", "--bundle", bundle(["sleep", "60"]), "box").returncode == 0
    path = state_root / "box" / "state.json"
    record = json.loads(path.read_text())
    record["start_time"] -= 1
    path.write_text(json.dumps(record))
    assert state_of(oci, "box")["status"] == "stopped"
    kill = oci("kill", "box", "KILL")
    assert kill.returncode == 1 and "stopped" in kill.stderr
    os.kill(record["pid"], 0)  # the process that only shares the pid was left alone
    os.kill(record["pid"], signal.SIGKILL)


def test_the_program_runs_only_at_start(oci, bundle, busybox_rootfs, tmp_path):
    marker = f"/tmp/started-{tmp_path.name}"
    assert oci("create", "--bundle", bundle(["touch", marker]), "box").returncode == 0
    time.sleep(0.2)
    assert not os.path.exists(busybox_rootfs + marker)
    assert oci("start", "box").returncode == 0
    wait_for_status(oci, "box", "stopped")
    assert os.path.exists(busybox_rootfs + marker)
    os.unlink(busybox_rootfs + marker)


def test_run_is_create_start_wait_delete_and_keeps_the_exit_code(oci, bundle, state_root):
    result = oci("run", "--bundle", bundle(["sh", "-c", "echo hello; exit 3"]), "box")
    assert (result.returncode, result.stdout) == (3, "hello\n")
    assert os.listdir(state_root) == []


def test_exec_joins_the_running_container(oci, bundle):
    directory = bundle(["sleep", "60"], edit=lambda c: c.update(hostname="inside"))
    assert oci("create", "--bundle", directory, "box").returncode == 0
    assert oci("start", "box").returncode == 0
    result = oci("exec", "box", "sh", "-c", "hostname; exit 5")
    assert (result.returncode, result.stdout) == (5, "inside\n")


@pytest.mark.parametrize(
    "command, message",
    [
        (["start", "nobody"], "container 'nobody' does not exist"),
        (["kill", "nobody"], "container 'nobody' does not exist"),
        (["delete", "nobody"], "container 'nobody' does not exist"),
        (["state", "../x"], "invalid container id '../x'"),
    ],
)
def test_an_unknown_id_is_one_line(oci, command, message):
    result = oci(*command)
    assert result.returncode == 1
    assert result.stderr.startswith(f"mycontainer-oci: error: {message}")
    assert len(result.stderr.splitlines()) == 1


def test_the_guards_of_the_state_machine(oci, bundle):
    directory = bundle(["sleep", "60"])
    assert oci("create", "--bundle", directory, "box").returncode == 0
    again = oci("create", "--bundle", directory, "box")
    assert again.returncode == 1 and "already exists" in again.stderr
    refused = oci("delete", "box")  # created, not stopped: the spec says no effect
    assert refused.returncode == 1 and "it is created" in refused.stderr
    assert state_of(oci, "box")["status"] == "created"
    assert oci("start", "box").returncode == 0
    twice = oci("start", "box")
    assert twice.returncode == 1 and "it is running" in twice.stderr
    assert oci("kill", "box", "KILL").returncode == 0
    wait_for_status(oci, "box", "stopped")
    stopped = oci("kill", "box", "TERM")
    assert stopped.returncode == 1 and "it is stopped" in stopped.stderr
    assert oci("delete", "box").returncode == 0


def test_force_deletes_a_running_container_and_its_processes(oci, bundle):
    assert oci("run", "--detach", "--bundle", bundle(["sleep", "60"]), "box").returncode == 0
    pid = state_of(oci, "box")["pid"]
    assert oci("delete", "--force", "box").returncode == 0
    time.sleep(0.2)
    if os.path.exists(f"/proc/{pid}"):
        with open(f"/proc/{pid}/stat") as file:
            assert file.read().rsplit(")", 1)[1].split()[0] == "Z"  # dead, unreaped


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_TEST"), "bounding"),
        (lambda c: c["linux"].update(cgroupsPath="../../escape"), "cgroupsPath"),
        (lambda c: c.update(root={"path": "../.."}), "root.path"),
        (lambda c: c.pop("process"), "process"),
    ],
)
def test_a_bad_config_is_one_line_and_leaves_nothing(oci, bundle, state_root, edit, field):
    result = oci("create", "--bundle", bundle(edit=edit), "box")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and field in result.stderr
    assert os.listdir(state_root) == []


def test_prune_never_touches_an_engines_container(oci, bundle, home, state_root):
    assert oci("create", "--bundle", bundle(["sleep", "60"]), "box").returncode == 0
    env = dict(os.environ, PYTHONPATH=REPO, MYCONTAINER_HOME=str(home))
    env["MYCONTAINER_STATE"] = str(state_root)
    subprocess.run([sys.executable, "-m", "runtime", "prune"], env=env, check=True, timeout=60)
    assert state_of(oci, "box")["status"] == "created"


def test_an_engines_run_imports_nothing_for_images_or_docker_flags(oci, bundle, state_root):
    """Engines run mycontainer-oci several times per container, and every import costs each
    start: a bundle's run loads no code of images, their removal or docker's flags
    (``python -X importtime`` lists what a process imports)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    command = [sys.executable, "-X", "importtime", "-m", "runtime.ocicli"]
    command += ["--root", str(state_root), "run", "--bundle", bundle(), "box"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "runtime.container" in imported  # the list is the run's
    unneeded = {"runtime.image", "runtime.imagespec", "runtime.removal", "runtime.policy"}
    assert imported & unneeded == set()


def test_an_engines_create_prunes_nothing(oci, bundle, tmp_path, monkeypatch):
    """runc collects no garbage, and engines expect none: what ``mycontainer prune`` would
    remove in mycontainer's own state root (here a directory a crash cut short) stays."""
    theirs = tmp_path / "mycontainer-state"
    cut_short = theirs / ("a" * 64)
    cut_short.mkdir(parents=True)
    monkeypatch.setenv("MYCONTAINER_STATE", str(theirs))
    result = oci("run", "--bundle", bundle(), "box")
    assert result.returncode == 0, result.stderr
    assert cut_short.is_dir()


def test_errors_go_to_the_log_in_json(oci, tmp_path):
    log = tmp_path / "log.json"
    result = oci("--log", str(log), "--log-format", "json", "start", "nobody")
    assert result.returncode == 1
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["level"] == "error" and "does not exist" in record["msg"]


def test_hooks_get_the_state_and_a_failing_one_stops_create(oci, bundle, tmp_path, state_root):
    seen = tmp_path / "seen"

    def hooks(config):
        config["hooks"] = {
            "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", f"cat > {seen}"]}],
        }

    assert oci("create", "--bundle", bundle(["true"], edit=hooks), "box").returncode == 0
    assert oci("start", "box").returncode == 0
    state = json.loads(seen.read_text())
    assert (state["id"], state["status"]) == ("box", "running")
    assert oci("delete", "--force", "box").returncode == 0

    def failing(config):
        config["hooks"] = {"createRuntime": [{"path": "/bin/false", "args": ["false"]}]}

    result = oci("create", "--bundle", bundle(["true"], edit=failing), "other")
    assert result.returncode == 1 and "createRuntime hook 0" in result.stderr
    assert os.listdir(state_root) == []


def test_ps_lists_the_containers_processes(oci, bundle):
    assert oci("run", "--detach", "--bundle", bundle(["sleep", "60"]), "box").returncode == 0
    pid = state_of(oci, "box")["pid"]
    assert json.loads(oci("ps", "--format", "json", "box").stdout) == [pid]
    table = oci("ps", "box").stdout.splitlines()
    assert "PID" in table[0] and len(table) == 2 and "sleep 60" in table[1]


def test_preserved_descriptors_reach_the_program(oci, bundle, tmp_path):
    """``--preserve-fds 1``: descriptor 3 of create is the program's descriptor 3 (socket
    activation, as podman passes it); others are closed."""
    passed = tmp_path / "passed"
    passed.write_text("through fd 3\n")
    directory = bundle(["sh", "-c", "cat <&3; ls /proc/self/fd"])
    with open(passed) as file:
        result = oci("run", "--preserve-fds", "1", "--bundle", directory, "box", fd3=file.fileno())
    lines = result.stdout.splitlines()
    assert lines[0] == "through fd 3"
    assert sorted(lines[1:]) == ["0", "1", "2", "3", "4"]  # 4: ls's own directory


def test_a_mount_destination_linked_out_of_the_rootfs_stays_inside(
    oci, bundle, busybox_rootfs, tmp_path
):
    """A bundle whose rootfs has /escape -> /tmp/outside-<test> (absolute, so a host path):
    the tmpfs of config.json's mount on /escape lands inside the rootfs, never on the host."""
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", busybox_rootfs, str(rootfs)], check=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "escape").symlink_to(str(outside))
    mount = {"destination": "/escape", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}

    edit = lambda config: config["mounts"].append(mount)  # noqa: E731
    directory = bundle(["sh", "-c", "touch /escape/made-inside"], edit=edit, rootfs=rootfs)
    result = oci("run", "--bundle", directory, "box")
    assert result.returncode == 0, result.stderr
    assert os.listdir(outside) == []  # the host directory the link names was not touched
    assert os.path.isdir(f"{rootfs}{outside}")  # the link was followed inside the rootfs
    assert not any(str(outside) in point for point in host_mounts(str(tmp_path)))


@pytest.mark.parametrize("how", ["directly", "as a script's interpreter"])
def test_the_runtimes_own_interpreter_is_never_the_program(
    oci, bundle, busybox_rootfs, tmp_path, state_root, how
):
    """CVE-2019-5736: /proc/self/exe in the init is the host's Python interpreter. Run, and
    kept open once no process runs it (after create, none does), it could be overwritten
    from inside. create refuses it, by inode, however it is reached."""
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", busybox_rootfs, str(rootfs)], check=True)
    (rootfs / "script").write_text("#!/proc/self/exe\nprint('escaped')\n")
    (rootfs / "script").chmod(0o755)
    args = ["/proc/self/exe", "-c", "print(1)"] if how == "directly" else ["/script"]

    result = oci("create", "--bundle", bundle(args, rootfs=rootfs), "box")
    assert result.returncode == 1
    assert "mycontainer's own interpreter" in result.stderr and "CVE-2019-5736" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert os.listdir(state_root) == []


@pytest.mark.parametrize("named_by", ["a file", "a link"])
def test_the_program_executed_is_the_file_checked(oci, bundle, busybox_rootfs, tmp_path, named_by):
    """A process that joins a running container's mount namespace (exec) is checked before
    its gate and executed after it. A process of the container that swaps the program's
    name for a link to /proc/self/exe meanwhile never gets the host's interpreter run: a
    program named by a file runs through its descriptor (fexecve(3)), the file checked,
    whatever stands at its name by then; one named by a link (busybox's applets, which keep
    their names that way) is checked once more, and refused."""
    from runtime import namespaces, process
    from runtime.syscalls import PR_SET_CHILD_SUBREAPER, prctl

    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", busybox_rootfs, str(rootfs)], check=True)
    (rootfs / "real").mkdir()
    shutil.copy(rootfs / "bin" / "busybox", rootfs / "real" / "sh")  # a file, named sh
    program_path = "/real/sh" if named_by == "a file" else "/bin/sh"
    started = oci("run", "--detach", "--bundle", bundle(["sleep", "60"], rootfs=rootfs), "a")
    assert started.returncode == 0, started.stderr
    pid = wait_for_status(oci, "a", "running")["pid"]
    program = process.Program([program_path, "-c", "echo checked > /out"], {"PATH": "/bin"})
    join = [(namespaces.MOUNT, f"/proc/{pid}/ns/mnt")]
    try:
        init = process.spawn(program, namespaces=0, join=join)
        swapped = rootfs / program_path.lstrip("/")
        swapped.unlink()  # at its gate: what a process of "a" could do now
        if named_by == "a file":  # another file: the one checked runs all the same
            swapped.write_text("#!/bin/sh\necho swapped > /out\n")
            swapped.chmod(0o755)
        else:
            swapped.symlink_to("/proc/self/exe")
        if named_by == "a file":
            init.start()
            assert init.wait() == 0
            assert (rootfs / "out").read_text() == "checked\n"  # busybox's sh, not Python
        else:
            with pytest.raises(process.ProcessError, match="changed since it was checked"):
                init.start()
            assert not (rootfs / "out").exists()
    finally:
        prctl(PR_SET_CHILD_SUBREAPER, 0)  # spawn made pytest a subreaper: no more
    assert oci("delete", "--force", "a").returncode == 0


def test_an_apparmor_profile_is_never_ignored(oci, bundle, state_root):
    """The suite's linux_process_apparmor_profile: where AppArmor is off, one line, not a
    container running without the profile it asked for."""
    from runtime import security

    edit = lambda config: config["process"].update(apparmorProfile="acme_secure_profile")  # noqa: E731
    result = oci("create", "--bundle", bundle(["true"], edit=edit), "box")
    if security.apparmor_enabled():
        assert result.returncode == 0 or "acme_secure_profile" in result.stderr
    else:
        assert result.returncode == 1 and "AppArmor is not enabled" in result.stderr
        assert os.listdir(state_root) == []
