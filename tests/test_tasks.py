"""tasks.py's own behaviour: what `invoke step` and `invoke check` do with their arguments,
here and on the way to the lab VM.

The VM is not started: a `vagrant` on PATH stands in for Vagrant and records the command
line it was given, which is all that tasks.py hands it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

# Where invoke runs as if on macOS: what runs in the VM there runs here on Linux.
AS_ON_MACOS = "import sys; sys.platform = 'darwin'; from invoke.main import program; program.run()"


@pytest.fixture
def vagrant():
    """A directory with a `vagrant` that writes its arguments, NUL-terminated, to ``calls`` there;
    readable by nobody too (pytest's tmp_path is not)."""
    base = Path(tempfile.mkdtemp(prefix="tasks-test-", dir="/var/tmp"))
    try:
        base.chmod(0o777)
        calls = base / "calls"
        script = base / "vagrant"
        script.write_text(
            f"#!/bin/sh\nfor arg; do printf '%s\\0' \"$arg\"; done >> {calls}\necho >> {calls}\n"
        )
        script.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base)


def invoke(*args: str, vagrant: Path, python_args=("-m", "invoke"), user: int | None = None, **env):
    """Run this checkout's invoke with ``args`` and ``vagrant`` first on PATH; returns the
    vagrant command lines it ran, and the result."""
    environment = {k: v for k, v in os.environ.items() if k != "WORKSHOP_SOLUTION"}
    environment.update(PATH=f"{vagrant}:{os.environ['PATH']}", **env)
    command = [sys.executable, *python_args, *args]
    if user:  # with a home of its own: root's is not readable
        environment["HOME"] = str(vagrant)
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    result = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )
    calls = vagrant / "calls"
    text = calls.read_text() if calls.exists() else ""
    if calls.exists():
        calls.unlink()
    return [call.split("\0") for call in text.split("\0\n")[:-1]], result


@pytest.mark.privileged
def test_invoke_step_takes_workshop_solution_to_the_vm(vagrant):
    """Without root on Linux, `invoke step` runs in the lab VM: with $WORKSHOP_SOLUTION set
    here, the step there sees it (through sudo, which resets the environment); nothing else
    of this environment goes along, and without it the line is as before."""
    expected = ".venv/bin/python -m steps.step4_cgroups --hostname container --rootfs "
    calls, result = invoke(
        "step", "4", "--rootfs-dir", "/r", "--", "true",
        vagrant=vagrant, user=65534, WORKSHOP_SOLUTION="3", OTHER="x",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls == [
        ["ssh", "-c", f"cd /vagrant && sudo env WORKSHOP_SOLUTION=3 {expected}/r -- true"]
    ]
    calls, result = invoke(
        "step", "4", "--rootfs-dir", "/r", "--", "true", vagrant=vagrant, user=65534
    )
    assert calls == [["ssh", "-c", f"cd /vagrant && sudo {expected}/r -- true"]]


def test_invoke_check_takes_workshop_solution_to_the_vm(vagrant):
    """On macOS, `invoke check` runs in the lab VM: $WORKSHOP_SOLUTION goes along, quoted
    for the guest's shell."""
    calls, result = invoke(
        "check", "4", vagrant=vagrant, python_args=("-c", AS_ON_MACOS), WORKSHOP_SOLUTION="3 x"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls == [
        [
            "ssh",
            "-c",
            "cd /vagrant && sudo env WORKSHOP_SOLUTION='3 x' .venv/bin/python -m workshop.checks 4",
        ]
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["step", "--help"],
        ["step", "-h"],
        ["step", "3", "--help"],
        ["step", "3", "-h"],
        ["check", "--help"],
        ["check", "-h"],
        ["check", "4", "--help"],
    ],
)
def test_help_of_step_and_check_is_the_tasks_help(args, vagrant):
    """`invoke step --help` printed a traceback (invoke took --help for the step's number),
    and `invoke step 3 -h` wanted a value for --hostname: each prints the task's help, and
    runs nothing (run as on macOS, where a step would go to the VM)."""
    calls, result = invoke(*args, vagrant=vagrant, python_args=("-c", AS_ON_MACOS))
    assert (result.returncode, result.stderr, calls) == (0, "", [])
    assert result.stdout.startswith(f"Usage: inv[oke] [--core-opts] {args[0]} [--options]")
    assert "Everything after -- is the command" in result.stdout or args[0] == "check"


@pytest.mark.parametrize("task", ["step", "check"])
def test_a_step_that_is_no_number_is_refused_in_one_line(task, vagrant):
    calls, result = invoke(task, "two", vagrant=vagrant, python_args=("-c", AS_ON_MACOS))
    assert (result.returncode, result.stdout, calls) == (2, "", [])
    assert result.stderr == (
        f"invoke {task}: give the step's number, 1 to 8 (got 'two'; 'invoke --help {task}' "
        "lists the options)\n"
    )


def test_invoke_step_9_says_why_there_is_none(vagrant):
    calls, result = invoke("step", "9", vagrant=vagrant, python_args=("-c", AS_ON_MACOS))
    assert (result.returncode, result.stdout, calls) == (2, "", [])
    assert result.stderr == (
        "invoke step: no step 9: the steps are 1 to 8 "
        "(step 9 has no program of its own: docs/step9-oci.md)\n"
    )


def test_invoke_check_9_goes_to_the_checker_with_its_exercise(vagrant):
    """Step 9 has no program, but its exercises have checkers: tasks.py passes 9 on to
    python -m workshop.checks, which knows which exist."""
    calls, result = invoke(
        "check", "9", "--exercise", "5", vagrant=vagrant, python_args=("-c", AS_ON_MACOS)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls == [
        ["ssh", "-c", "cd /vagrant && sudo .venv/bin/python -m workshop.checks 9 --exercise 5"]
    ]
