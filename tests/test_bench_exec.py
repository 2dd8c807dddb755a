"""Smoke test of bench/exec.py: it runs, reports every tool, and cleans up.

No timing is asserted (bench/README.md): only that the benchmark execs into a container of
each tool, says why one is skipped, judges mycontainer against runc, and leaves no
container, state, cgroup or mount behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, host_mounts

BENCH = os.path.join(REPO, "bench", "exec.py")
TOOLS = ("mycontainer", "mycontainer-oci", "runc", "crun")

pytestmark = pytest.mark.privileged


def test_exec_bench_reports_each_tool_and_leaves_nothing_behind(home, tmp_path):
    if not shutil.which("runc"):
        pytest.skip("runc is not installed: apt-get install runc")
    scratch = tmp_path / "tmp"  # the benchmark's bundle and every tool's state go here
    scratch.mkdir()
    watched = (home, scratch, "/sys/fs/cgroup", "/run/runc", "/run/crun", "/run/mycontainer")
    mounts_before = host_mounts(*watched)
    results = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, BENCH, "--runs", "2", "--warmup", "1", "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MYCONTAINER_HOME": str(home), "TMPDIR": str(scratch)},
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert list(scratch.iterdir()) == [], "a bundle or a tool's state was left"
    assert host_mounts(*watched) == mounts_before, "a mount was left"
    data = json.loads(results.read_text())
    first_words = [line.split()[0] for line in completed.stdout.splitlines() if line.split()]
    for tool in TOOLS:
        assert tool in first_words, f"no line for {tool}:\n{completed.stdout}"
        assert tool in data["tools"] or tool in data["skipped"]
    assert len(data["tools"]["mycontainer"]["samples_ms"]) == 2
    assert data["tools"]["mycontainer"]["ratio_to_runc"] > 0
    assert "x runc exec's median" in data["verdict"]
    assert data["rootfs"] == os.path.realpath(home / "rootfs" / "busybox")
