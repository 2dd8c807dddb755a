"""The runner of the OCI runtime-tools suite (lab/conformance.py).

The suite itself runs in CI (.ci/run, ~70 s); here: bad input makes nothing, and the
runner never removes a directory something is mounted in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lab import conformance

REPO = Path(__file__).resolve().parents[1]


def test_the_runner_refuses_a_runtime_that_is_not_there_and_makes_nothing():
    before = set(Path("/var/tmp").glob("mycontainer-conformance-*"))
    result = subprocess.run(
        [sys.executable, "-m", "lab.conformance", "--runtime", "/nonexistent/runc"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("lab.conformance: ")
    assert set(Path("/var/tmp").glob("mycontainer-conformance-*")) == before


@pytest.mark.privileged
def test_the_run_directory_stays_while_something_is_mounted_in_it():
    workdir = tempfile.mkdtemp(prefix="mycontainer-conformance-test-")
    dev = Path(workdir, "tmp", "ocitest1", "dev")
    dev.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "leak", str(dev)], check=True)
    try:
        (dev / "null").write_text("what rm -r would reach through the mount")
        assert conformance.remove_workdir(workdir) == [
            f"mounts still under {workdir} (kept): {dev}"
        ]
        assert (dev / "null").exists()
    finally:
        subprocess.run(["umount", str(dev)], check=True)
    assert conformance.remove_workdir(workdir) == []
    assert not os.path.exists(workdir)
