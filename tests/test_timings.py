"""``MYCONTAINER_TIMINGS=1``: one line on stderr per phase of a run, the container's init's
included, that add up to the total; nothing at all without it."""

from __future__ import annotations

import importlib
import re

import pytest

from runtime import timings

pytestmark = pytest.mark.privileged

LINE = re.compile(r"mycontainer: timing: ( *)(\S.*?) +(\d+\.\d) ms  (.*)")
TOP_LEVEL = ["startup", "imports", "options", "image", "cgroup layout", "create", "start"]
TOP_LEVEL += ["program", "delete", "other", "total"]
# nested in spawn: the intermediate's, then the init's, after fork(2) and unshare(2)
SPAWN = ["join cgroup", "namespaces", "hostname", "loopback", "overlay", "rootfs", "masked paths"]
DELETE = ["network release", "cgroup removal", "storage removal", "state removal"]


def phases(stderr: str) -> list[tuple[int, str, float]]:
    """(depth, phase, milliseconds) of each timing line, in order."""
    found = []
    for line in stderr.splitlines():
        match = LINE.fullmatch(line)
        assert match or not line.startswith("mycontainer: timing"), line
        if match:
            indent, phase, milliseconds, _what = match.groups()
            found.append((len(indent) // 2, phase, float(milliseconds)))
    return found


def nested(found: list[tuple[int, str, float]], depth: int, phase: str) -> list[str]:
    """The phases one level inside ``phase`` (at ``depth``), which come right before it."""
    end = found.index(next(entry for entry in found if entry[:2] == (depth, phase)))
    inside = []
    for inner_depth, inner, _ in reversed(found[:end]):
        if inner_depth <= depth:
            break
        if inner_depth == depth + 1:
            inside.insert(0, inner)
    return inside


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--rm", "--net", "none", "busybox", "echo", "hi"],  # the fast path
        ["run", "--rm", "--net", "none", "--", "busybox", "echo", "hi"],  # click's
    ],
    ids=["fast-path", "click"],
)
def test_every_phase_of_a_run_is_timed(mycontainer, monkeypatch, args):
    monkeypatch.setenv("MYCONTAINER_TIMINGS", "1")
    result = mycontainer(*args)
    assert (result.returncode, result.stdout) == (0, "hi\n"), result.stderr
    found = phases(result.stderr)
    assert [phase for depth, phase, _ in found if depth == 0] == TOP_LEVEL, result.stderr
    assert nested(found, 1, "spawn") == SPAWN, result.stderr
    assert nested(found, 0, "delete") == DELETE, result.stderr
    top = [ms for depth, phase, ms in found if depth == 0 and phase != "total"]
    total = found[-1][2]
    assert total > 0 and abs(sum(top) - total) < 0.1 * len(top), result.stderr


@pytest.mark.parametrize("value", [None, "", "0"])
def test_no_timings_unless_asked(mycontainer, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("MYCONTAINER_TIMINGS", raising=False)
    else:
        monkeypatch.setenv("MYCONTAINER_TIMINGS", value)
    result = mycontainer("run", "--rm", "--net", "none", "busybox", "true")
    assert (result.returncode, result.stderr) == (0, "")


def test_every_timed_function_exists():
    """A function renamed must be renamed in PHASES too: instrument() would fail."""
    for _phase, _what, module, attribute in timings.PHASES:
        owner = importlib.import_module(module)
        for name in attribute.split("."):
            owner = getattr(owner, name)
        assert callable(owner), (module, attribute)
