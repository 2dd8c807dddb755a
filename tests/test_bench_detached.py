"""Smoke test of bench/detached.py: it finds each detached container's monitor (and podman's
conmon), reports their memory and start times, catches what a tool leaves behind, and itself
leaves nothing.

Two containers per tool and one round (the benchmark's default is 20 and three). No memory or
time is asserted (bench/README.md): the benchmark reports the issue's bar, it does not fail on it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import sys

import pytest

from conftest import REPO, run_benchmark

BENCH = os.path.join(REPO, "bench", "detached.py")
PODMAN_RUNROOTS = "/tmp/mycontainer-bench-podman-*"
FAST = ("--containers", "2", "--runs", "1", "--warmup", "0")

pytestmark = pytest.mark.privileged


def processes_mentioning(text: str) -> list[str]:
    """The command lines of the processes (but ours) that name ``text`` in their command
    line or environment (the benchmark marks what it starts with its directory)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                argv = file.read().decode(errors="replace").replace("\0", " ")
            with open(f"/proc/{pid}/environ", "rb") as file:
                environ = file.read().decode(errors="replace")
        except OSError:
            continue
        if text in argv + environ and int(pid) != os.getpid():
            found.append(argv)
    return found


@pytest.fixture
def bench(home, tmp_path):
    """Run the benchmark with ARGS; check that it leaves nothing; return (exit status,
    stdout, stderr, results or None)."""
    scratch = tmp_path / "tmp"  # its directory, stores, states and logs go here
    scratch.mkdir()

    def run(*args: str) -> tuple[int, str, str, dict | None]:
        results = tmp_path / "results.json"
        runroots = set(glob.glob(PODMAN_RUNROOTS))  # podman's, when TMPDIR's path is too long
        completed, data = run_benchmark([BENCH, *FAST, *args], home, scratch, results)
        assert set(glob.glob(PODMAN_RUNROOTS)) == runroots, "podman's run root was left"
        left = processes_mentioning(str(scratch))
        assert left == [], f"processes were left: {left}"
        if data:
            for group in data["cgroups"]:
                assert not os.path.exists(group), f"cgroup {group} was left"
        return completed.returncode, completed.stdout, completed.stderr, data

    return run


def test_detached_reports_each_monitor_and_leaves_nothing(bench):
    status, stdout, stderr, data = bench()
    assert status == 0, stdout + stderr
    first_words = [line.split()[0] for line in stdout.splitlines() if line.split()]
    for tool in ("mycontainer", "podman"):
        assert first_words.count(tool) == 2, f"no memory and time lines for {tool}:\n{stdout}"
    assert "bar:" in first_words

    mycontainer = data["tools"]["mycontainer"]
    # One monitor per container (runtime/monitor.py), and nothing else on the host.
    assert list(mycontainer["processes"].values()) == [2], mycontainer["processes"]
    assert 0 < mycontainer["uss_kb"] <= mycontainer["pss_kb"] <= mycontainer["rss_kb"]
    assert mycontainer["max_pss_kb"] >= mycontainer["pss_kb"]
    assert any("libpython" in name or "python" in name for name in mycontainer["mappings_kb"])
    for mode in ("sequential", "parallel"):
        assert mycontainer["start_s"][mode] > 0
    assert data["bar_met"] == (mycontainer["pss_kb"] <= 3 * 1024)
    assert ("met (<=" if data["bar_met"] else "NOT met (<=") in data["verdict"]

    if "podman" in data["skipped"]:
        assert re.search(r"^podman +skipped: .+ not found on PATH", stdout, re.M), stdout
        return
    podman = data["tools"]["podman"]
    assert podman["processes"] == {"conmon": 2}, "conmon only: podman itself exits"
    assert data["ratios"]["pss"] == pytest.approx(mycontainer["pss_kb"] / podman["pss_kb"])
    assert data["ratios"]["start"]["parallel"] > 0


def test_detached_stops_on_what_a_tool_leaves_behind(bench, tmp_path):
    """A mycontainer whose ``rm`` leaves a process behind (here a wrapper that starts one):
    the benchmark says so, fails, and still ends it."""
    real = os.path.join(os.path.dirname(sys.executable), "mycontainer")
    if not os.access(real, os.X_OK):
        real = shutil.which("mycontainer")
    leaky = tmp_path / "leaky-mycontainer"
    leaky.write_text(
        "#!/bin/sh\n"
        f'{real} "$@" || exit\n'
        'if [ "$1" = rm ]; then setsid sleep 300 </dev/null >/dev/null 2>&1 & fi\n'
    )
    leaky.chmod(leaky.stat().st_mode | stat.S_IXUSR)
    status, stdout, stderr, data = bench("--mycontainer", str(leaky))
    assert status == 1, stdout + stderr
    assert "mycontainer left behind after stop and rm: sleep 300" in stderr, stderr
    assert "clean-up: processes still ran, killed: ['sleep 300']" in stderr, stderr
    assert data is None
