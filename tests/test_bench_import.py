"""Smoke test of bench/image_import.py: it runs, reports every tool, and cleans up.

``--small`` imports the busybox rootfs split into three layers instead of a Debian image
(no debootstrap, no network), once. No timing is asserted: the benchmark reports ratios
(bench/README.md), and a timing assertion would only measure how busy the machine was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, host_mounts

BENCH = os.path.join(REPO, "bench", "image_import.py")
TOOLS = ("mycontainer", "umoci", "tar", "tar-parallel")


@pytest.mark.privileged
@pytest.mark.skipif(
    not shutil.which("umoci"), reason="umoci is not installed (apt-get install umoci)"
)
def test_import_bench_prints_a_line_per_tool_and_leaves_nothing_behind(home, state_root, tmp_path):
    results = tmp_path / "results.json"
    scratch = tmp_path / "tmp"  # the benchmark's layouts, filesystem and outputs go here
    scratch.mkdir()
    # Where the benchmark could leave a mount: not the whole table, which others change too.
    watched = (home, state_root, scratch, "/var/cache/mycontainer-bench")
    watched += ("/var/lib/mycontainer", "/run/mycontainer")
    mounts_before = host_mounts(*watched)
    completed = subprocess.run(
        [sys.executable, BENCH, "--small", "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "MYCONTAINER_HOME": str(home),  # its busybox rootfs is what --small imports
            "MYCONTAINER_STATE": str(state_root),  # its warm runs' containers
            "TMPDIR": str(scratch),
        },
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    first_words = [line.split()[0] for line in completed.stdout.splitlines() if line.split()]
    for tool in (*TOOLS, "run-image", "run-busybox"):
        assert tool in first_words, f"no line for {tool}:\n{completed.stdout}"
    assert "import verdict:" in completed.stdout
    assert "run verdict:" in completed.stdout

    data = json.loads(results.read_text())
    assert data["image"] == "small"
    assert len(data["layers"]) == 3
    for tool in TOOLS:
        assert len(data["import"]["tools"][tool]["samples_s"]) == 1
    assert set(data["run"]["tools"]) == {"image", "busybox"}

    # The loop-mounted filesystem is gone, and so is everything the imports wrote.
    assert host_mounts(*watched) == mounts_before
    assert list(scratch.iterdir()) == []
    assert list(state_root.iterdir()) == []
