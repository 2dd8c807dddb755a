"""The conformance page and its runner (lab/conformance.py) against the suite they describe.

The suite itself runs in CI (.ci/run, ~70 s); here: the page lists exactly the suite's
groups with a verdict each and a reason for each failure, its counts agree with the
suite's own README, and the runner never removes a directory something is mounted in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from lab import conformance

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "conformance.md"
VERDICTS = {"pass", "fail", "error"}
WHY = ("**runtime**", "**suite**", "**host**")


def suite_tarball() -> Path:
    tarballs = sorted(conformance.SUITE.glob("runtime-tools-*.tar.gz"))
    if not tarballs:
        pytest.skip(f"no runtime-tools suite in {conformance.SUITE} (MYCONTAINER_RUNTIME_TOOLS)")
    return tarballs[0]


def page_rows() -> dict[str, list[str]]:
    """Group -> [what it checks, runc, crun, mycontainer, why], from the page's tables."""
    rows = {}
    for line in PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] != "group" and re.fullmatch(r"[a-z_]+", cells[0]):
            assert cells[0] not in rows, f"{cells[0]} has two rows"
            rows[cells[0]] = cells[1:]
    return rows


def test_the_page_has_a_row_for_every_group_of_the_suite():
    with tarfile.open(suite_tarball()) as tar:
        names = tar.getnames()
    groups = {m.group(1) for n in names if (m := re.fullmatch(r"validation/(\w+)/\1\.go", n))}
    assert len(groups) == 58
    assert set(page_rows()) == groups


def test_every_failure_on_the_page_says_why():
    for group, (checks, runc, crun, mine, why) in page_rows().items():
        assert checks, f"{group}: what does it check?"
        assert {runc, crun} <= VERDICTS, f"{group}: runc {runc!r}, crun {crun!r}"
        assert mine in VERDICTS | {"pending"}, f"{group}: mycontainer {mine!r}"
        failing = {runc, crun, mine} - {"pass", "pending"}
        assert bool(failing) == any(w in why for w in WHY), f"{group}: {why!r}"


def test_the_page_counts_what_the_suite_readme_measured():
    suite_tarball()
    readme = (conformance.SUITE / "README.md").read_text()
    measured = dict(re.findall(r"^\| (runc|crun) [^|]*\| (\d+) / 58 \|$", readme, re.M))
    rows = page_rows().values()
    assert sum(row[1] == "pass" for row in rows) == int(measured["runc"])
    assert sum(row[2] == "pass" for row in rows) == int(measured["crun"])


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


def write_results(workdir: Path, groups: dict[str, tuple[str, int, str]]) -> None:
    """run.sh's results: summary.tsv and each group's stderr."""
    results = workdir / "results"
    results.mkdir()
    lines = ["group\texit\tok\tnot_ok\tskip\tstatus"]
    for group, (status, oks, stderr) in groups.items():
        lines.append(f"{group}\t0\t{oks}\t0\t0\t{status}")
        (results / f"{group}.err").write_text(stderr)
    (results / "summary.tsv").write_text("\n".join(lines) + "\n")


def test_passes_that_checked_nothing_do_not_count(tmp_path):
    write_results(
        tmp_path,
        {
            "default": ("ERROR", 0, "failed to create the container\n"),
            "process_capabilities": ("PASS", 0, ""),
            "poststart": ("PASS", 0, "WARNING: The poststart hook invoke fails\n"),
            "poststop_fail": ("PASS", 0, ""),
            "process_rlimits_fail": ("PASS", 0, "failed to create the container\n"),
            "state": ("PASS", 3, ""),
        },
    )
    groups = conformance.summary(str(tmp_path))
    assert sorted(conformance.hollow(groups, str(tmp_path))) == [
        "poststart",
        "process_capabilities",
        "process_rlimits_fail",
    ]


def test_a_refusal_counts_once_the_default_config_runs(tmp_path):
    write_results(
        tmp_path,
        {
            "default": ("FAIL", 277, ""),
            "process_rlimits_fail": ("PASS", 0, "failed to create the container\n"),
        },
    )
    assert conformance.hollow(conformance.summary(str(tmp_path)), str(tmp_path)) == {}
