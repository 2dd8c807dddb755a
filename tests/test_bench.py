"""Smoke test of bench/start_latency.py: it runs, reports every tool, and cleans up.

No timing is asserted here: performance is reported as ratios by the benchmark itself
(bench/README.md), and a timing assertion would only measure how busy the machine was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, host_mounts

BENCH = os.path.join(REPO, "bench", "start_latency.py")
TOOLS = ("mycontainer", "runc", "crun", "unshare")


@pytest.mark.privileged
def test_bench_prints_a_line_per_tool_and_leaves_nothing_behind(home, state_root, tmp_path):
    results = tmp_path / "results.json"
    scratch = tmp_path / "tmp"  # the benchmark's bundle and runc/crun state go here
    scratch.mkdir()
    # Where the benchmark could leave a mount: not the whole table, which others change too.
    # /sys/fs/cgroup: crun's wrapper unmounts its v2 hierarchy (in a namespace of its own).
    watched = (home, state_root, scratch, "/sys/fs/cgroup", "/run/mycontainer", "/run/runc")
    watched += ("/run/crun", "/var/lib/mycontainer")
    mounts_before = host_mounts(*watched)
    completed = subprocess.run(
        [sys.executable, BENCH, "--runs", "2", "--warmup", "1", "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "MYCONTAINER_HOME": str(home),  # its busybox image is the benchmark's rootfs
            "MYCONTAINER_STATE": str(state_root),
            "TMPDIR": str(scratch),
        },
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    # One line per tool, with its times or why it was skipped (a peer may not be installed).
    first_words = [line.split()[0] for line in completed.stdout.splitlines() if line.split()]
    for tool in TOOLS:
        assert tool in first_words, f"no line for {tool}:\n{completed.stdout}"
    assert "verdict:" in first_words

    data = json.loads(results.read_text())
    assert data["rootfs"] == os.path.realpath(home / "rootfs" / "busybox")
    assert len(data["tools"]["mycontainer"]["samples_ms"]) == 2
    for tool in TOOLS:
        assert tool in data["tools"] or tool in data["skipped"]

    # No bundle, no runc/crun state, no container state, no mount (crun's umount of the
    # cgroup v2 hierarchy happens in a mount namespace of its own) is left behind.
    assert list(scratch.iterdir()) == []
    assert list(state_root.iterdir()) == []
    assert host_mounts(*watched) == mounts_before
