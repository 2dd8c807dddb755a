"""macOS (or any non-Linux host): the package imports, --help works, run says what to do,
and privileged tests skip with the reason. Simulated by setting sys.platform before import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

SIMULATE_MACOS = "import sys; sys.platform = 'darwin'; "


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SIMULATE_MACOS + code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=120,
    )


def test_every_module_imports():
    linux_only = {"__main__.py"}
    modules = [
        "runtime." + name[:-3]
        for name in os.listdir(os.path.join(REPO, "runtime"))
        if name.endswith(".py") and name not in linux_only
    ]
    modules += [
        "steps." + name[:-3]
        for name in os.listdir(os.path.join(REPO, "steps"))
        if name.startswith("step") and name.endswith(".py")
    ]
    result = python(f"import {', '.join(modules)}; print('ok')")
    assert result.stdout == "ok\n", result.stderr


def test_help_works():
    result = python("from runtime.launcher import main; main(['run', '--help'])")
    assert result.returncode == 0
    assert "in a new container made from IMAGE" in result.stdout


def test_run_says_to_use_the_vm():
    result = python("from runtime.launcher import main; main(['run', 'busybox', 'true'])")
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: containers need a Linux kernel")
    assert "invoke vm.up" in result.stderr
    assert result.stderr.count("\n") == 1


def test_steps_say_to_use_the_vm():
    result = python("from steps import step1_uts; sys.exit(step1_uts.main(['--', 'hostname']))")
    assert result.returncode == 125
    assert "invoke vm.up" in result.stderr


def test_privileged_tests_skip_with_the_reason():
    args = ["-q", "-rs", "-p", "no:cacheprovider", "tests/test_steps.py"]
    code = f"import pytest; sys.exit(pytest.main({args!r}))"
    result = python(code)
    assert result.returncode == 0, result.stdout
    assert "passed" not in result.stdout
    assert "skipped" in result.stdout
    assert "needs Linux namespaces: run 'invoke test'" in result.stdout


def test_not_root_says_to_use_sudo(monkeypatch, capsys):
    from runtime import launcher

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(SystemExit) as exit:
        launcher.main(["run", "busybox", "true"])
    assert exit.value.code == 125
    assert capsys.readouterr().err == (
        "mycontainer: error: mycontainer run needs root: use sudo, or the lab VM ('invoke vm.up')\n"
    )
