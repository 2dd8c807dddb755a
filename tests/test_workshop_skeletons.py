"""The learners' skeletons, workshop/stepN_*.py: made from the steps, importable, runnable up
to their TODOs, and built on the learner's earlier steps or on the solutions (one switch)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_steps import step7_container  # noqa: F401 (a fixture: a running container of step 7)

from workshop import make

from conftest import REPO, host_mounts

STEPS = make.solutions()
ROOTFS_STEPS = (3, 4)
IMAGE_STEPS = (5, 6, 7)


def skeleton(number: int, *args: str, solved: int | str | None = None, **kwargs):
    """Run ``python -m workshop.stepN_x ARGS``, steps 1 to ``solved`` being the solutions'."""
    env = dict(kwargs.pop("env", os.environ))
    env.pop("WORKSHOP_SOLUTION", None)
    if solved is not None:
        env["WORKSHOP_SOLUTION"] = str(solved)
    return subprocess.run(
        [sys.executable, "-m", f"workshop.{STEPS[number]}", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        **kwargs,
    )


def command_line(number: int, busybox_rootfs: str) -> list[str]:
    """Step N's command line, as README.md shows it."""
    if number in ROOTFS_STEPS:
        return ["--rootfs", busybox_rootfs, "--", "true"]
    if number in IMAGE_STEPS:
        return ["busybox", "--", "true"]
    return ["--hostname", "box", "--", "hostname"]


def test_the_committed_skeletons_are_what_the_steps_make():
    assert sorted(STEPS) == list(range(1, 9))
    for number, name in STEPS.items():
        solution = Path(REPO, "steps", f"{name}.py").read_text()
        wanted = make.skeleton(number, name, solution)
        assert Path(REPO, "workshop", f"{name}.py").read_text() == wanted, (
            f"workshop/{name}.py is stale: run python -m workshop.make"
        )
        assert "# workshop" not in wanted and f"TODO step {number}: " in wanted
    check = subprocess.run(
        [sys.executable, "-m", "workshop.make", "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert (check.returncode, check.stdout) == (0, "")


@pytest.mark.parametrize("solved", [None, 0, 7])
def test_every_skeleton_imports(solved):
    """A skeleton imports whatever the state of the learner's other steps: a top-level TODO
    (step 2's NAMESPACES, say) raises only when used."""
    env = {key: value for key, value in os.environ.items() if key != "WORKSHOP_SOLUTION"}
    if solved is not None:
        env["WORKSHOP_SOLUTION"] = str(solved)
    modules = ", ".join(f"workshop.{name}" for name in STEPS.values())
    result = subprocess.run(
        [sys.executable, "-c", f"import {modules}; print('imported')"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert (result.returncode, result.stdout) == (0, "imported\n"), result.stderr


@pytest.mark.privileged
@pytest.mark.parametrize("number", range(1, 8))
def test_each_skeleton_runs_to_its_own_todo(number, home, busybox_rootfs):
    """On the solutions of the steps before it, step N's skeleton runs with its command line
    until its first TODO, which says what to do and which man page to read; it leaves
    nothing behind (no cgroup, no storage, no mount)."""
    env = dict(os.environ, MYCONTAINER_HOME=str(home))
    before = host_mounts()
    args = command_line(number, busybox_rootfs)
    result = skeleton(number, *args, solved=number - 1, env=env)
    assert result.returncode != 0
    last = result.stderr.splitlines()[-1]
    assert f"TODO step {number}: " in last and "(" in last, result.stderr
    assert last.startswith(("NotImplementedError: TODO", "error: TODO")), result.stderr
    assert not [name for name in os.listdir(home) if name.startswith(".step5-")]
    assert host_mounts() == before


def only_top_level_todos(source: str) -> str:
    """A step's source with the markers of its TODOs inside functions taken out: what the
    skeleton is once a learner has written all of it but its top-level TODO."""
    kept, inside = [], False
    for line in source.splitlines():
        indented = line.startswith(" ")
        if indented and make.TODO.match(line):
            inside = True
        elif not (inside and make.MORE.match(line)) and not (indented and make.END.match(line)):
            kept.append(line)
            inside = False
    return "\n".join(kept) + "\n"


TOP_LEVEL_TODOS = [
    number
    for number, name in STEPS.items()
    if "= workshop.Todo(" in Path(REPO, "workshop", f"{name}.py").read_text()
]


@pytest.mark.privileged
@pytest.mark.parametrize("number", TOP_LEVEL_TODOS)
def test_a_top_level_todo_is_named_by_its_own_line(number, home, busybox_rootfs):
    """A learner has written all of step N but its NAMESPACES = workshop.Todo(...), which
    main() uses: the traceback of the step ends at the TODO's line, with its text, and the
    checker names the file and that line (both named main()'s line before)."""
    name = STEPS[number]
    text = make.skeleton(
        number, name, only_top_level_todos(Path(REPO, "steps", f"{name}.py").read_text())
    )
    (line,) = [
        i + 1
        for i, code in enumerate(text.splitlines())
        if code.startswith("NAMESPACES = workshop.Todo(")
    ]
    assert text.count("workshop.Todo(") == 1 and "NotImplementedError" not in text
    folder = Path(tempfile.mkdtemp(prefix="todo-", dir="/tmp"))  # short: the checker wraps lines
    try:
        path = folder / f"{name}.py"
        path.write_text(text)
        env = dict(os.environ, MYCONTAINER_HOME=str(home), PYTHONPATH=str(folder))
        env.update(WORKSHOP_SOLUTION=str(number - 1), MYCONTAINER_WORKSHOP_TRIES=str(folder / "t"))
        run = dict(capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        ran = subprocess.run(
            [sys.executable, "-m", name, *command_line(number, busybox_rootfs)], **run
        )
        said = ran.stderr.splitlines()
        last = max(i for i, text in enumerate(said) if text.startswith('  File "'))
        assert said[last : last + 2] == [
            f'  File "{path}", line {line}, in <module>',
            "    NAMESPACES = workshop.Todo(",
        ], ran.stderr
        assert said[-1].startswith(f"NotImplementedError: TODO step {number}: "), ran.stderr
        checked = subprocess.run(
            [sys.executable, "-m", "workshop.checks", str(number), "--module", name], **run
        )
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert f"({path}, line {line})" in " ".join(checked.stdout.split()), checked.stdout
    finally:
        shutil.rmtree(folder)


@pytest.mark.privileged
def test_the_step8_skeleton_runs_to_its_todo(step7_container):  # noqa: F811
    result = skeleton(8, str(step7_container), "--", "true")
    assert result.returncode == 125
    assert result.stderr.splitlines()[-1].startswith("error: TODO step 8: join the init's cgroups")


@pytest.mark.privileged
def test_a_step_builds_on_the_learners_steps_or_with_the_switch_on_the_solutions(home):
    """Step 5 of a learner who has not written step 4 stops at step 4's TODO; with
    WORKSHOP_SOLUTION=4 it stands on the solutions of steps 1 to 4 and reaches its own."""
    env = dict(os.environ, MYCONTAINER_HOME=str(home))
    own = skeleton(5, "busybox", "--", "true", env=env)
    assert own.stderr.splitlines()[-1].startswith("NotImplementedError: TODO step 4: ")
    switched = skeleton(5, "busybox", "--", "true", solved=4, env=env)
    assert switched.stderr.splitlines()[-1].startswith("error: TODO step 5: "), switched.stderr
    assert "step 4: the container's cgroup is" in switched.stderr  # the solution's step 4 ran
    code = (
        "import workshop.step7_security as s; "
        "print(s.step4_cgroups.__name__, s.step5_image.__name__, s.step6_veth.__name__)"
    )
    for solved, wanted in (
        (None, "workshop.step4_cgroups workshop.step5_image workshop.step6_veth"),
        (5, "steps.step4_cgroups steps.step5_image workshop.step6_veth"),
    ):
        names = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**env, "WORKSHOP_SOLUTION": str(solved or 0)},
        )
        assert names.stdout.split() == wanted.split(), names.stderr


def test_a_bad_switch_is_one_clear_line():
    result = skeleton(3, "--rootfs", "/", "--", "true", solved="x")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "error: WORKSHOP_SOLUTION is a step number, 1 to 8 (got 'x'): steps up to it are the "
        "solutions'"
    ]


def test_make_keeps_a_learners_edits(tmp_path):
    """Regenerating overwrites the skeletons nobody touched, and refuses to overwrite one a
    learner has edited, unless told to."""
    for folder in ("steps", "workshop"):
        shutil.copytree(
            Path(REPO, folder),
            tmp_path / folder,
            ignore=shutil.ignore_patterns("__pycache__", "checks"),
        )
    mine = tmp_path / "workshop" / "step1_uts.py"
    untouched = tmp_path / "workshop" / "step2_pid.py"
    mine.write_text(mine.read_text().replace("raise NotImplementedError(", "print(  # mine\n"))
    solution = tmp_path / "steps" / "step2_pid.py"  # changed since its skeleton was made
    solution.write_text(solution.read_text().replace("CLONE_NEWPID", "CLONE_NEWPID, with care"))
    gone = tmp_path / "workshop" / "step3_mount.py"
    gone.unlink()

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "workshop.make", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )

    result = run()
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "workshop/step1_uts.py has your edits: left as it is (--force overwrites it)",
        "wrote workshop/step2_pid.py",
        "wrote workshop/step3_mount.py",
    ]
    assert "# mine" in mine.read_text()
    assert "CLONE_NEWPID, with care" in untouched.read_text() and gone.exists()
    assert run("--check").stdout == (
        "workshop/step1_uts.py is not what steps/step1_uts.py makes: run python -m workshop.make\n"
    )
    assert run("--force").returncode == 0 and "# mine" not in mine.read_text()
    assert run("--check").returncode == 0


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("x = 1\n# workshop TODO: do it\nx = 2\n", "line 2: a TODO without its '# workshop end'"),
        ("def f():\n    return 1\n    # workshop end\n", "line 3: an end without a TODO"),
        (
            "# workshop TODO: do it\nx = 1\ny = 2\n# workshop end\n",
            "line 2: a top-level TODO must mark one assignment",
        ),
    ],
)
def test_malformed_markers_are_refused_saying_where(source, error):
    with pytest.raises(make.MarkerError, match=error):
        make.skeleton(1, "step1_x", source)
