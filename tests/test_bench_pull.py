"""Smoke test of bench/pull.py: it starts its registry, pushes the image, times a pull by
every tool (mycontainer pull once the command exists, skopeo copy + mycontainer load, podman
pull), reports each and both bars of issue 16, and leaves nothing behind: no directory, no
mount, no registry, no podman run root.

``--small`` pulls the busybox rootfs split into three layers, once. No time is asserted
(bench/README.md): the benchmark reports the bars, it does not fail on them.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import REPO, host_mounts, run_benchmark

BENCH = os.path.join(REPO, "bench", "pull.py")

pytestmark = [
    pytest.mark.privileged,
    pytest.mark.skipif(
        not (shutil.which("docker-registry") and shutil.which("skopeo")),
        reason="needs docker-registry and skopeo (apt-get install docker-registry skopeo)",
    ),
]


def podman_run_roots() -> list[str]:
    return sorted(
        name for name in os.listdir("/run") if name.startswith("mycontainer-bench-podman-")
    )


def registries_serving(scratch) -> list[str]:
    """The benchmark's registries still running (their config is in its directory)."""
    pattern = f"docker-registry serve {scratch}/"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return found.stdout.split()


def test_pull_bench_reports_every_tool_and_leaves_nothing(home, tmp_path):
    scratch = tmp_path / "tmp"  # its layout, registry, filesystem and outputs go here
    scratch.mkdir()
    watched = (home, scratch, "/run", "/var/lib/mycontainer", "/var/cache/mycontainer-bench")
    mounts_before = host_mounts(*watched)
    roots_before = podman_run_roots()
    completed, data = run_benchmark([BENCH, "--small"], home, scratch, tmp_path / "results.json")
    assert completed.returncode == 0, completed.stdout + completed.stderr

    lines = {line.split()[0]: line for line in completed.stdout.splitlines() if line.split()}
    assert "skopeo+load" in lines and "s" in lines["skopeo+load"].split()
    assert "skopeo copy" in completed.stdout and "load" in completed.stdout  # its two parts
    pull = subprocess.run([data["mycontainer"], "pull", "--help"], capture_output=True)
    if pull.returncode == 0:  # issue 16's pull is there: it is timed and judged
        assert "pull" in data["tools"]
        assert set(data["verdicts"]) == {"skopeo+load", "podman"} - set(data["skipped"])
        assert "verdict against skopeo+load: mycontainer pull takes" in completed.stdout
    else:
        assert data["skipped"]["pull"] == "this mycontainer has no 'pull' command yet (issue 16)"
        assert "no 'pull' command yet" in lines["pull"]
    if shutil.which("podman"):
        assert len(data["tools"]["podman"]["samples_s"]) == 1
    assert len(data["tools"]["skopeo+load"]["samples_s"]) == 1
    assert set(data["parts"]) == {"skopeo copy", "load"}
    assert data["image"] == "small"

    assert host_mounts(*watched) == mounts_before, "a mount was left"
    assert registries_serving(scratch) == [], "the registry went on running"
    assert podman_run_roots() == roots_before, "podman's run root was left"
