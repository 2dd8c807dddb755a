"""Smoke test of bench/oci_run.py: it runs, reports every runtime, and cleans up.

No timing is asserted (bench/README.md): only that the benchmark runs the same bundle with
each runtime, says why one is skipped, judges mycontainer-oci when it is there, and leaves no
bundle, state, container or mount behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, host_mounts

BENCH = os.path.join(REPO, "bench", "oci_run.py")
TOOLS = ("mycontainer-oci", "runc", "crun")

pytestmark = pytest.mark.privileged


@pytest.fixture
def bench(home, tmp_path):
    """Run the benchmark with ARGS; check it leaves nothing behind; return (stdout, json)."""
    scratch = tmp_path / "tmp"  # the benchmark's bundle and runtimes' state go here
    scratch.mkdir()
    watched = (home, scratch, "/sys/fs/cgroup", "/run/runc", "/run/crun", "/run/mycontainer")
    mounts_before = host_mounts(*watched)

    def run(*args: str) -> tuple[str, dict]:
        results = tmp_path / "results.json"
        completed = subprocess.run(
            [sys.executable, BENCH, "--runs", "2", "--warmup", "1", "--json", str(results), *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "MYCONTAINER_HOME": str(home), "TMPDIR": str(scratch)},
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert list(scratch.iterdir()) == [], "the bundle or a runtime's state was left"
        assert host_mounts(*watched) == mounts_before, "a mount was left"
        return completed.stdout, json.loads(results.read_text())

    return run


def test_oci_run_reports_each_runtime_on_one_bundle(bench, home):
    if not (shutil.which("runc") or shutil.which("crun")):
        pytest.skip("neither runc nor crun is installed: apt-get install runc crun")
    stdout, data = bench()
    first_words = [line.split()[0] for line in stdout.splitlines() if line.split()]
    for tool in TOOLS:
        assert tool in first_words, f"no line for {tool}:\n{stdout}"
        assert tool in data["tools"] or tool in data["skipped"]
    assert "verdict:" in first_words
    assert data["rootfs"] == os.path.realpath(home / "rootfs" / "busybox")
    for name in data["tools"]:
        assert len(data["tools"][name]["samples_ms"]) == 2


def test_oci_run_judges_the_subject_against_runc(bench):
    """With --mycontainer-oci (here runc itself, so that this runs before mycontainer-oci is
    built) the subject is measured and the verdict gives its ratio to runc."""
    runc = shutil.which("runc")
    if not runc:
        pytest.skip("runc is not installed: apt-get install runc")
    stdout, data = bench("--mycontainer-oci", runc)
    assert len(data["tools"]["mycontainer-oci"]["samples_ms"]) == 2
    assert data["tools"]["mycontainer-oci"]["ratio_to_runc"] > 0
    assert "verdict: mycontainer-oci takes " in stdout, stdout
    assert "x runc's median" in data["verdict"]
