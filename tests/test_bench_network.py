"""Smoke test of bench/network.py: it runs bridge, none, a host's first bridge run and runc,
one at a time and several at once, reports each and every bar of issue 15, and leaves
nothing behind: not in its directory, not in the cgroups, and nothing on this host's network
(it works in a network namespace of its own).

Tiny counts (2 runs, 2 and 3 at once, one round); no time or memory is asserted
(bench/README.md): the benchmark reports the bars, it does not fail on them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from conftest import REPO, cgroup_parent, host_mounts, run_benchmark

BENCH = os.path.join(REPO, "bench", "network.py")
FAST = ("--runs", "2", "--warmup", "0", "--parallel", "2,3", "--parallel-runs", "1")
TOOLS = ("mycontainer-none", "mycontainer-bridge", "mycontainer-first", "runc")

pytestmark = pytest.mark.privileged


def host_network() -> tuple[list[str], str]:
    """This host's interfaces and ip_forward, which the benchmark must leave as they are."""
    with open("/proc/sys/net/ipv4/ip_forward") as file:
        return sorted(name for _, name in socket.if_nameindex()), file.read()


def cgroup_parents_left(state_root: str) -> list[str]:
    """The cgroup parent directories of ``state_root``'s containers that still exist."""
    from runtime import cgroups

    parents = cgroups.Cgroup(cgroups.detect(), "_", cgroup_parent(state_root)).parents
    return [path for path in parents if os.path.exists(path)]


@pytest.fixture
def bench(home, tmp_path):
    """Run the benchmark with ARGS; check that it leaves nothing; return (exit status,
    stdout, stderr, results or None)."""
    scratch = tmp_path / "tmp"  # its directory: home, state root, runc's bundle and state
    scratch.mkdir()

    def run(*args: str) -> tuple[int, str, str, dict | None]:
        results = tmp_path / "results.json"
        watched = (home, scratch, "/sys/fs/cgroup", "/run/runc", "/run/mycontainer")
        mounts_before = host_mounts(*watched)
        network_before = host_network()
        completed, data = run_benchmark([BENCH, *FAST, *args], home, scratch, results)
        assert host_mounts(*watched) == mounts_before, "a mount was left"
        assert host_network() == network_before, "the host's network changed"
        if data:
            for group in data["cgroups"]:
                assert not os.path.exists(group), f"cgroup {group} was left"
        return completed.returncode, completed.stdout, completed.stderr, data

    return run


def test_network_bench_reports_every_tool_and_bar_and_leaves_nothing(bench):
    if not shutil.which("runc"):
        pytest.skip("runc is not installed: apt-get install runc")
    status, stdout, stderr, data = bench()
    assert status == 0, stdout + stderr

    first_words = [line.split()[0] for line in stdout.splitlines() if line.split()]
    for tool in TOOLS:
        assert tool in first_words, f"no line for {tool}:\n{stdout}"
    for tool in ("mycontainer-bridge", "mycontainer-none", "runc"):
        assert first_words.count(tool) == 3, f"not one line each at once for {tool}:\n{stdout}"
    assert first_words.count("bar:") == 7, stdout

    for tool in TOOLS:
        assert len(data["tools"][tool]["samples_ms"]) == 2
    if shutil.which("time"):  # GNU time measures the peaks (bench/common.py, gnu_time)
        peaks = {tool: data["tools"][tool]["peak_kb"] for tool in TOOLS}
        assert all(kb > 0 for kb in peaks.values()), peaks
        # The busybox container's runtime, not the benchmark's own Python (~14 MB).
        assert peaks["runc"] < 14 * 1024, peaks
    for n in ("2", "3"):
        for kind in ("bridge", "none", "runc"):
            assert data["at_once"][kind][n]["median_s"] > 0
        addresses = data["addresses"][n]
        assert len(set(addresses)) == len(addresses) == int(n), addresses
    assert data["cgroups"], "the cgroup parents of its containers are reported (and removed)"
    judged = {bar["bar"]: bar for bar in data["bars"]}
    ratio = data["tools"]["mycontainer-bridge"]["ratio_to_none"]
    assert judged["bridge run / none run"]["met"] == (round(ratio, 2) <= 1.5)


def test_network_bench_stops_when_prune_leaves_the_bridge(bench, tmp_path):
    """A mycontainer whose ``prune`` does nothing: a host's first run cannot be measured.
    The benchmark says so, fails, and still removes all it made (its cgroup parents too)."""
    real = os.path.join(os.path.dirname(sys.executable), "mycontainer")
    if not os.access(real, os.X_OK):
        real = shutil.which("mycontainer")
    roots = tmp_path / "state-roots"
    idle = tmp_path / "idle-prune-mycontainer"
    idle.write_text(
        "#!/bin/sh\n"
        f'echo "$MYCONTAINER_STATE" >> {roots}\n'
        'if [ "$1" = prune ]; then exit 0; fi\n'
        f'exec {real} "$@"\n'
    )
    idle.chmod(idle.stat().st_mode | stat.S_IXUSR)
    status, stdout, stderr, data = bench("--mycontainer", str(idle))
    assert status == 1, stdout + stderr
    assert "network: mycontainer prune left the bridge mycontainer0" in stderr, stderr
    assert data is None
    (state_root,) = set(roots.read_text().split())
    assert cgroup_parents_left(state_root) == []


def children(pid: int) -> int:
    """How many processes ``pid`` has started and not yet reaped."""
    count = 0
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as file:
                count += int(file.read().rsplit(")", 1)[1].split()[1]) == pid
        except OSError:
            continue
    return count


def test_network_bench_interrupted_while_containers_start_leaves_nothing(home, tmp_path):
    """SIGTERM while many containers start at once: the benchmark ends them (also one whose
    start the signal cut short), removes them and their cgroups, and exits 130."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    network_before = host_network()
    bench = subprocess.Popen(
        [sys.executable, BENCH, *FAST, "--parallel", "12", "--parallel-runs", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MYCONTAINER_HOME": str(home), "TMPDIR": str(scratch)},
    )
    try:
        deadline = time.monotonic() + 120
        while children(bench.pid) < 6 and bench.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        (workdir,) = scratch.iterdir()
        bench.send_signal(signal.SIGTERM)
        stdout, stderr = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 130, stdout + stderr
    assert "network: interrupted" in stderr and "clean-up" not in stderr, stderr
    assert list(scratch.iterdir()) == [], "the benchmark's directory was left"
    assert children(bench.pid) == 0
    assert cgroup_parents_left(str(workdir / "state")) == []
    assert host_network() == network_before
