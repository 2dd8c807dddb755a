"""Containers that outlive their command, as a docker user drives them: ``run -d``, names,
``ps``, ``logs``, ``inspect``, ``wait``, ``stop``, ``kill``, ``rm``, ``start``, and the
monitor that watches each one (runtime.detached, runtime.monitor)."""

import json
import os
import re
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import container_groups, environment, host_mounts, mycontainer_command

pytestmark = pytest.mark.privileged


def wait_for(predicate, timeout: float = 20, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come within {timeout} s")
        time.sleep(0.05)


def status_of(mycontainer, name: str) -> dict:
    result = mycontainer("inspect", name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]["State"]


def monitors(state_root) -> list[int]:
    """The pids of the monitors of this state root's containers."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                argv = file.read().split(b"\0")
        except OSError:
            continue
        if any(b"import monitor" in arg for arg in argv) and any(
            str(state_root).encode() in arg for arg in argv
        ):
            found.append(int(pid))
    return found


def test_run_d_returns_once_running_and_the_container_stays_with_its_exit_code(
    mycontainer, state_root
):
    started = time.monotonic()
    script = "echo out; echo err >&2; until [ -e /go ]; do sleep 0.1; done; exit 3"
    result = mycontainer(
        "run", "-d", "--name", "web", "--net", "none", "busybox", "sh", "-c", script
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[0-9a-f]{64}\n", result.stdout)
    assert time.monotonic() - started < 5
    container_id = result.stdout.strip()
    listed = mycontainer("ps").stdout.splitlines()
    assert listed[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                 "PORTS", "NAMES"]  # fmt: skip
    assert container_id[:12] in listed[1] and listed[1].endswith("web") and "Up " in listed[1]

    assert mycontainer("exec", "web", "touch", "/go").returncode == 0
    waited = mycontainer("wait", "web")
    assert waited.stdout == "3\n"
    assert mycontainer("ps").stdout.count("\n") == 1  # the header only
    every = mycontainer("ps", "-a").stdout
    assert re.search(r"Exited \(3\) .* ago +web$", every, re.M), every
    logs = mycontainer("logs", "web")
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    stamped = mycontainer("logs", "-t", "--tail", "1", container_id[:6])
    assert re.fullmatch(r"\S+Z err\n", stamped.stderr) and stamped.stdout == ""
    state = status_of(mycontainer, "web")
    assert (state["Status"], state["ExitCode"], state["Running"]) == ("exited", 3, False)

    removed = mycontainer("rm", "web")
    assert removed.returncode == 0 and removed.stdout == "web\n"
    assert mycontainer("ps", "-a").stdout.count("\n") == 1
    assert not monitors(state_root)


def test_a_name_is_unique_and_released_on_removal(mycontainer, state_root, home):
    first = mycontainer("run", "-d", "--name", "db", "--net", "none", "busybox", "sleep", "60")
    assert first.returncode == 0, first.stderr
    storage = sorted(os.listdir(home / "containers"))
    again = mycontainer("run", "-d", "--name", "db", "--net", "none", "busybox", "true")
    assert again.returncode == 125
    assert again.stderr == (
        f"mycontainer: error: the name 'db' is already in use by container "
        f"{first.stdout[:12]}: remove it ('mycontainer rm') or choose another name\n"
    )
    assert sorted(os.listdir(home / "containers")) == storage  # nothing was made
    assert len([n for n in os.listdir(state_root) if not n.startswith(".")]) == 1
    bad = mycontainer("run", "--name", "-x/y", "busybox", "true")
    assert bad.returncode == 125 and bad.stderr.count("\n") == 1
    assert mycontainer("rm", "-f", "db").returncode == 0
    reused = mycontainer("run", "--rm", "--name", "db", "--net", "none", "busybox", "true")
    assert reused.returncode == 0, reused.stderr


def test_commands_take_a_name_an_id_or_a_unique_prefix(mycontainer):
    ids = [
        mycontainer("run", "-d", "--net", "none", "busybox", "sleep", "60").stdout.strip()
        for _ in range(2)
    ]
    common = os.path.commonprefix(ids)
    for reference in (ids[0], ids[0][:12], ids[0][: len(common) + 1]):
        assert status_of(mycontainer, reference)["Running"]
    if common:
        ambiguous = mycontainer("stop", common)
        assert ambiguous.returncode == 125
        assert "is the start of 2 container ids" in ambiguous.stderr
    missing = mycontainer("stop", "nosuch")
    assert (missing.returncode, missing.stderr) == (
        125,
        "mycontainer: error: no such container: nosuch\n",
    )


def test_stop_sends_sigterm_then_sigkill_after_the_grace_period(mycontainer):
    handled = "trap 'echo bye; exit 7' TERM; while true; do sleep 0.1; done"
    mycontainer("run", "-d", "--name", "polite", "--net", "none", "busybox", "sh", "-c", handled)
    mycontainer("run", "-d", "--name", "deaf", "--net", "none", "busybox", "sleep", "60")
    wait_for(lambda: "Up" in mycontainer("ps").stdout, what="both running")
    stopped = mycontainer("stop", "polite")
    assert stopped.stdout == "polite\n" and status_of(mycontainer, "polite")["ExitCode"] == 7
    assert mycontainer("logs", "polite").stdout.endswith("bye\n")
    started = time.monotonic()
    assert mycontainer("stop", "-t", "1", "deaf").returncode == 0  # PID 1 ignores SIGTERM
    assert 1 <= time.monotonic() - started < 10
    assert status_of(mycontainer, "deaf")["ExitCode"] == 137
    again = mycontainer("stop", "deaf")
    assert (again.returncode, again.stderr) == (
        125,
        "mycontainer: error: container deaf is not running\n",
    )


def test_rm_refuses_a_running_container_without_force_and_kill_signals(mycontainer, home):
    mycontainer("run", "-d", "--name", "busy", "--net", "none", "busybox", "sleep", "60")
    refused = mycontainer("rm", "busy")
    assert refused.returncode == 125 and refused.stderr.count("\n") == 1
    assert "stop it first, or use 'rm -f'" in refused.stderr
    assert status_of(mycontainer, "busy")["Running"]
    killed = mycontainer("kill", "busy")  # SIGKILL by default
    assert killed.returncode == 0 and killed.stdout == "busy\n"
    assert mycontainer("wait", "busy").stdout == f"{128 + signal.SIGKILL}\n"
    assert mycontainer("kill", "busy").returncode == 125  # not running
    handler = "trap 'exit 5' USR1; while true; do sleep 0.1; done"
    mycontainer("run", "-d", "--name", "hup", "--net", "none", "busybox", "sh", "-c", handler)
    wait_for(lambda: "trap" in mycontainer("ps").stdout, what="it running")
    time.sleep(0.3)  # the trap set
    assert mycontainer("kill", "--signal", "SIGUSR1", "hup").returncode == 0
    assert mycontainer("wait", "hup").stdout == "5\n"
    assert mycontainer("kill", "-s", "NOPE", "hup").returncode == 125
    mycontainer("run", "-d", "--name", "busy2", "--net", "none", "busybox", "sleep", "60")
    assert mycontainer("rm", "-f", "busy", "busy2", "hup").stdout == "busy\nbusy2\nhup\n"
    assert os.listdir(home / "containers") == []


def test_start_runs_a_stopped_container_again_with_its_layer_name_and_log(mycontainer):
    script = "echo run >> /count; wc -l < /count"
    mycontainer("run", "--name", "again", "--net", "none", "busybox", "sh", "-c", script)
    assert mycontainer("start", "again").stdout == "again\n"
    assert mycontainer("wait", "again").stdout == "0\n"
    assert mycontainer("logs", "again").stdout == "2\n"  # a foreground run's output isn't logged
    mycontainer("start", "again")
    mycontainer("wait", "again")
    assert mycontainer("logs", "again").stdout == "2\n3\n"
    mycontainer("run", "-d", "--name", "up", "--net", "none", "busybox", "sleep", "60")
    running = mycontainer("start", "up")
    assert running.returncode == 125 and "is running" in running.stderr


def test_start_right_after_stop_or_wait_works_as_docker_s(mycontainer):
    """``docker stop x && docker start x``: the monitor's cleanup, which still holds the
    container's lock for a moment after its exit is recorded, is waited for, not refused."""
    mycontainer("run", "-d", "--name", "bounce", "--net", "none", "busybox", "sleep", "60")
    for _ in range(3):
        assert mycontainer("stop", "-t", "0", "bounce").returncode == 0
        started = mycontainer("start", "bounce")
        assert (started.returncode, started.stderr) == (0, "")
    mycontainer("run", "-d", "--name", "brief", "--net", "none", "busybox", "true")
    for _ in range(3):
        assert mycontainer("wait", "brief").stdout == "0\n"
        started = mycontainer("start", "brief")
        assert (started.returncode, started.stderr) == (0, "")


def test_rm_f_or_prune_racing_start_never_reports_a_removal_that_did_not_happen(
    mycontainer, home, state_root
):
    """``start x & rm -f x``: either rm wins, and start fails in one line, or start wins
    and rm then removes the running container; ``container prune`` racing start removes
    the container (start fails) or passes it by (it runs). Never both a success and the
    container left (start once took the state directory away and made it again, and
    what found it missing meanwhile took that for a removal)."""

    def launch(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            mycontainer_command(*args),
            env=environment(home, state_root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finished(process: subprocess.Popen) -> tuple:
        out, err = process.communicate(timeout=60)
        return process.returncode, out, err

    def one_line_error(result: tuple) -> bool:
        code, out, err = result
        return (code, out, err.count("\n")) == (125, "", 1) and err.startswith("mycontainer: ")

    for round in range(12):
        script = "[ -e /ran ] && exec sleep 60; touch /ran"  # started again, it runs on
        mycontainer("run", "--name", "rs", "--net", "none", "busybox", "sh", "-c", script)
        identity = json.loads(mycontainer("inspect", "rs").stdout)[0]["Id"]
        start = launch("start", "rs")
        time.sleep(round % 6 * 0.01)  # the other command lands at various points of start
        other = launch(*(("container", "prune", "-f") if round % 2 else ("rm", "-f", "rs")))
        started, removed = (finished(process) for process in (start, other))
        left = mycontainer("ps", "-aq", "--no-trunc").stdout
        assert started == (0, "rs\n", "") or one_line_error(started), started
        if round % 2:  # prune: the id printed if and only if the container went
            assert removed[0] == 0 and removed[2] == "", removed
            assert (removed[1] == f"{identity}\n") == (left == ""), (started, removed, left)
            assert (left == "") == (started[0] != 0), (started, removed, left)
            mycontainer("rm", "-f", "rs")
        else:  # rm -f waits for start, so it always wins in the end
            assert (removed, left) == ((0, "rs\n", ""), ""), started


def test_restart_stops_a_running_container_and_starts_a_stopped_one(mycontainer):
    """docker's ``restart [-t SECONDS]``: a running container is stopped (SIGTERM, then
    SIGKILL after the grace period) and started again; a stopped one is just started."""
    script = "echo run >> /count; echo up; trap 'exit 4' TERM; sleep 60 & wait"
    mycontainer("run", "-d", "--name", "again", "--net", "none", "busybox", "sh", "-c", script)
    wait_for(lambda: mycontainer("logs", "again").stdout, 20, "its first run")
    first = status_of(mycontainer, "again")["Pid"]
    result = mycontainer("restart", "-t", "5", "again")
    assert (result.returncode, result.stdout, result.stderr) == (0, "again\n", "")
    state = status_of(mycontainer, "again")
    assert state["Running"] and state["Pid"] != first
    mycontainer("kill", "again")
    assert mycontainer("wait", "again").stdout == "137\n"
    assert mycontainer("restart", "again").returncode == 0
    assert status_of(mycontainer, "again")["Running"]
    count = mycontainer("exec", "again", "wc", "-l", "/count")
    assert count.stdout.split()[0] == "3"
    missing = mycontainer("restart", "nosuch")
    assert (missing.returncode, missing.stderr) == (
        125,
        "mycontainer: error: no such container: nosuch\n",
    )


def test_container_prune_asks_unless_forced_and_removes_only_stopped_containers(mycontainer):
    """docker's ``container prune``: a question first (no answer is no), ``-f`` to skip it;
    the stopped containers go, their ids printed, and a running one stays."""
    mycontainer("run", "--name", "done", "--net", "none", "busybox", "true")
    mycontainer("run", "-d", "--name", "up", "--net", "none", "busybox", "sleep", "60")
    stopped = json.loads(mycontainer("inspect", "done").stdout)[0]["Id"]
    for answer in ("", "n\n"):
        kept = mycontainer("container", "prune", input=answer)
        assert kept.returncode == 0 and "stopped containers" in kept.stderr
        assert kept.stdout == ""
    assert mycontainer("ps", "-aq").stdout.count("\n") == 2
    pruned = mycontainer("container", "prune", "-f")
    assert (pruned.returncode, pruned.stdout, pruned.stderr) == (0, f"{stopped}\n", "")
    left = mycontainer("ps", "-a").stdout.splitlines()
    assert len(left) == 2 and left[1].endswith(" up")
    mycontainer("stop", "-t", "0", "up")
    assert mycontainer("container", "prune", input="y\n").stdout.split() != []
    assert mycontainer("ps", "-aq").stdout == ""


def test_run_rm_removes_a_detached_container_once_it_stops(mycontainer, state_root):
    result = mycontainer("run", "-d", "--rm", "--net", "none", "busybox", "sleep", "0.5")
    assert result.returncode == 0
    wait_for(lambda: mycontainer("ps", "-aq").stdout == "", 60, "its removal")
    assert not monitors(state_root)


def test_interactive_and_terminal_detached(mycontainer):
    """-i: stdin stays open, so a shell reading it waits; -t: a terminal of its own."""
    mycontainer("run", "-d", "-i", "--name", "reader", "--net", "none", "busybox", "sh")
    mycontainer("run", "-d", "--name", "eof", "--net", "none", "busybox", "sh")
    mycontainer("run", "-dt", "--name", "tty", "--net", "none", "busybox", "sh", "-c", "tty")
    assert mycontainer("wait", "eof").stdout == "0\n"  # stdin was /dev/null: sh read EOF
    assert mycontainer("wait", "tty").stdout == "0\n"
    assert mycontainer("logs", "tty").stdout.rstrip("\r\n") == "/dev/pts/0"
    time.sleep(0.5)
    assert status_of(mycontainer, "reader")["Running"]


def test_logs_follow_until_the_container_exits(mycontainer, home, state_root):
    script = "for i in 1 2 3; do echo line$i; sleep 0.3; done"
    mycontainer("run", "-d", "--name", "talker", "--net", "none", "busybox", "sh", "-c", script)
    follow = subprocess.run(
        mycontainer_command("logs", "-f", "talker"),
        env=environment(home, state_root),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert follow.stdout == "line1\nline2\nline3\n"
    assert mycontainer("logs", "--tail", "2", "talker").stdout == "line2\nline3\n"


def test_the_log_is_bounded(mycontainer, home):
    """runtime.monitor's cap: past it the log turns into <log>.1, so at most twice the cap."""
    from runtime import monitor

    size = 2 * monitor.MAX_LOG + 3 * 2**20
    script = f"head -c {size} /dev/zero | tr '\\0' x; echo; echo last"
    result = mycontainer("run", "-d", "--net", "none", "busybox", "sh", "-c", script)
    container_id = result.stdout.strip()
    assert mycontainer("wait", container_id).stdout == "0\n"
    directory = home / "containers" / container_id
    logs = [directory / "container.log", directory / "container.log.1"]
    assert all(path.exists() for path in logs)
    assert sum(path.stat().st_size for path in logs) <= 2 * monitor.MAX_LOG
    assert mycontainer("logs", "--tail", "1", container_id).stdout == "last\n"


def test_when_the_monitor_is_killed_the_container_can_still_be_stopped_and_removed(
    mycontainer, state_root, home
):
    mycontainer("run", "-d", "--name", "orphan", "--net", "none", "busybox", "sleep", "60")
    [monitor] = wait_for(lambda: monitors(state_root), what="the monitor")  # exec'd
    os.kill(monitor, signal.SIGKILL)
    wait_for(lambda: not monitors(state_root), what="the monitor's end")
    assert "orphan" in mycontainer("ps").stdout  # still listed, still running
    assert mycontainer("stop", "-t", "1", "orphan").returncode == 0
    assert "Exited (unknown)" in mycontainer("ps", "-a").stdout
    assert mycontainer("rm", "orphan").returncode == 0
    prune = mycontainer("prune")
    assert prune.returncode == 0, prune.stderr
    assert os.listdir(home / "containers") == []
    assert container_groups(state_root) == []


def test_after_a_reboot_prune_removes_storage_no_container_owns(mycontainer, state_root, home):
    """/run is a tmpfs: a reboot empties the state root, and the disk keeps the storage."""
    result = mycontainer("run", "--name", "before", "--net", "none", "busybox", "true")
    assert result.returncode == 0
    [container_id] = os.listdir(home / "containers")
    assert mycontainer("prune").returncode == 0
    assert os.listdir(home / "containers") == [container_id]  # a stopped container's: kept
    for name in os.listdir(state_root):  # the reboot
        subprocess.run(["rm", "-rf", str(state_root / name)], check=True)
    assert container_id in mycontainer("prune").stdout.split()
    assert os.listdir(home / "containers") == []


def test_bad_input_changes_nothing(mycontainer, state_root, home):
    for args in (
        ("run", "-d", "--net", "none", "nosuchimage"),
        ("run", "-d", "--name", "x y", "busybox", "true"),
        ("logs", "nosuch"),
        ("rm", "nosuch"),
        ("inspect", "nosuch"),
        ("wait", "nosuch"),
    ):
        result = mycontainer(*args)
        assert result.returncode == 125, (args, result.stderr)
        assert result.stderr.count("\n") == 1, (args, result.stderr)
    assert os.listdir(state_root) == [] and os.listdir(home / "containers") == []


def serve_own_name(name: str) -> list[str]:
    script = f"mkdir /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www"
    return ["run", "-d", "--name", name, "busybox", "sh", "-c", script]


def fetch(address: str) -> str:
    with socket.create_connection((address, 80), timeout=5) as connection:
        connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := connection.recv(4096):
            answer += chunk
    return answer.decode().split("\r\n\r\n", 1)[-1]


def test_twenty_detached_containers_at_once_then_nothing_left(mycontainer, state_root, home):
    """Started in parallel on the bridge (in the test session's own network namespace):
    each is listed, reachable by name at its own address, stopped and removed; nothing of
    any of them is left: mounts, cgroups, veths, leases, state, monitors."""
    names = [f"c{number}" for number in range(20)]
    mounts_before = host_mounts(home, state_root)
    links_before = os.listdir("/sys/class/net")
    with ThreadPoolExecutor(max_workers=20) as pool:
        # (an emulated VM takes minutes for twenty starts at once)
        results = list(
            pool.map(lambda name: mycontainer(*serve_own_name(name), timeout=600), names)
        )
    assert [r.returncode for r in results] == [0] * 20, [r.stderr for r in results]
    listed = mycontainer("ps").stdout
    assert all(re.search(rf" {name}$", listed, re.M) for name in names), listed
    addresses = {}
    for name in names:
        address = json.loads(mycontainer("inspect", name).stdout)[0]["NetworkSettings"]["IPAddress"]
        addresses[name] = address
        served = wait_for(lambda a=address: _try_fetch(a), 120, f"{name}'s server")
        assert served == f"{name}\n"
    assert len(set(addresses.values())) == 20
    wait_for(lambda: len(monitors(state_root)) == 20, 120, "20 monitors")
    with ThreadPoolExecutor(max_workers=20) as pool:
        stopped = list(
            pool.map(lambda name: mycontainer("stop", "-t", "2", name, timeout=600), names)
        )
    assert [r.returncode for r in stopped] == [0] * 20, [r.stderr for r in stopped]
    removed = mycontainer("rm", *names, timeout=600)
    assert removed.returncode == 0, removed.stderr
    assert mycontainer("ps", "-a").stdout.count("\n") == 1
    assert not monitors(state_root)
    assert os.listdir(home / "containers") == []
    assert host_mounts(home, state_root) == mounts_before
    assert container_groups(state_root) == []
    links = [link for link in os.listdir("/sys/class/net") if link not in links_before]
    assert [link for link in links if link.startswith("mc")] == []
    assert [n for n in os.listdir(state_root) if n != ".names"] == []  # leases are in state


def _try_fetch(address: str) -> str | None:
    try:
        return fetch(address)
    except OSError:
        return None
