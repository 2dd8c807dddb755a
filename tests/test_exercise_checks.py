"""invoke check N --exercise K, the checkers of the chapters' exercises: each passes on the
exercise's solution as the chapter gives it (its code taken from the chapter's folded
solution) and fails, with hint 1, on the work not done yet (the untouched step, the script
not written); the hints grow more specific per try; the learner never sees a traceback."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

from workshop.checks import scenes

from conftest import REPO

pytestmark = pytest.mark.privileged

CHAPTERS = {
    1: "step1-uts.md",
    2: "step2-pid.md",
    3: "step3-mount.md",
    4: "step4-cgroups.md",
    5: "step5-image.md",
    6: "step6-veth.md",
    7: "step7-security.md",
    8: "step8-exec.md",
}


def exercises_of(number: int) -> dict:
    return importlib.import_module(f"workshop.checks.step{number}_exercises").EXERCISES


def flat(text: str) -> str:
    """``text`` with its line breaks and indentation as single spaces: hints are wrapped."""
    return " ".join(text.split())


def exercises_in(name: str) -> dict[int, str]:
    """The exercises of docs/NAME by number, each with its folded solution."""
    with open(os.path.join(REPO, "docs", name)) as file:
        text = file.read()
    section = text[text.index("## Exercises") :]
    section = section[: section.index("\n## ", 1)]
    items = re.split(r"^(\d+)\. \*\*", section, flags=re.MULTILINE)
    return dict(zip(map(int, items[1::2]), items[2::2], strict=True))


def chapter_exercise(number: int, exercise: int) -> str:
    """The text of exercise ``exercise`` of step ``number``'s chapter, its solution included."""
    return exercises_in(CHAPTERS[number])[exercise]


def solution_code(number: int, exercise: int, language: str = "python") -> list[str]:
    """The code blocks of the exercise's folded solution in ``language``, dedented."""
    pattern = rf"```{language}\n(.*?)^ *```"
    blocks = re.findall(pattern, chapter_exercise(number, exercise), re.S | re.M)
    return [textwrap.dedent(block) for block in blocks]


def step_source(number: int) -> str:
    (name,) = [
        name
        for name in os.listdir(os.path.join(REPO, "steps"))
        if name.startswith(f"step{number}_")
    ]
    with open(os.path.join(REPO, "steps", name)) as file:
        return file.read()


@pytest.fixture
def check(tmp_path, home):
    """A function (number, exercise, files, module) -> the checker's CompletedProcess:
    ``files`` ({name: source}) are written into a package 'learner' of ``tmp_path``, and
    ``module`` (a dotted name, or None for the learner's default) is checked; the tries
    are kept between calls."""
    package = tmp_path / "learner"
    package.mkdir()
    (package / "__init__.py").write_text("")
    env = dict(
        os.environ,
        MYCONTAINER_HOME=str(home),
        MYCONTAINER_WORKSHOP_TRIES=str(tmp_path / "tries.json"),
        PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]),
    )

    def run(number: int, exercise: int, files: dict[str, str], module: str | None):
        repo = REPO
        for name, source in files.items():
            if "/" in name:  # a file of the repository (a scratch edit): in a copy of it
                repo = copy_of_the_repository(tmp_path)
                with open(os.path.join(repo, name), "w") as file:
                    file.write(source)
            else:
                (package / name).write_text(source)
        which = ["--module", module] if module else []
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "workshop.checks",
                str(number),
                "--exercise",
                str(exercise),
                *which,
            ],
            capture_output=True,
            text=True,
            cwd=repo,  # python -m puts it first: the copy's runtime, if any
            env=env,
            timeout=600,
        )

    return run


def copy_of_the_repository(tmp_path) -> str:
    """The runtime, the steps and the checkers, copied once into ``tmp_path``."""
    repo = str(tmp_path / "repo")
    if not os.path.isdir(repo):
        ignore = shutil.ignore_patterns("__pycache__", ".tries.json")
        for folder in ("runtime", "steps", "workshop"):
            shutil.copytree(os.path.join(REPO, folder), os.path.join(repo, folder), ignore=ignore)
    return repo


def runtime_edited(name: str, *edits: tuple[str, str]) -> dict[str, str]:
    """runtime/NAME with, for each (old, new) of ``edits``, the line that matches ``old``
    (a regular expression) replaced by ``new``, its lines indented as the old one was: an
    exercise's scratch edit."""
    with open(os.path.join(REPO, "runtime", name)) as file:
        source = file.read()
    for old, new in edits:
        lines = new.replace("\n", "\n\\g<1>")
        source, count = re.subn(rf"^( *){old}$", rf"\g<1>{lines}", source, flags=re.M)
        assert count == 1, f"{old!r} matches {count} lines of runtime/{name}"
    return {f"runtime/{name}": source}


def runtime_replaced(name: str, *edits: tuple[str, str]) -> dict[str, str]:
    """runtime/NAME with each (old, new) of ``edits`` replaced, each old found once."""
    with open(os.path.join(REPO, "runtime", name)) as file:
        source = file.read()
    for old, new in edits:
        assert source.count(old) == 1, f"{old!r} is not once in runtime/{name}"
        source = source.replace(old, new)
    return {f"runtime/{name}": source}


FILTER_FIRST = (
    "        if self.seccomp and not self.no_new_privileges:\n"
    "            seccomp.install(self.seccomp)\n"
)
AMBIENT = "                    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)\n"


def step8_opening_late() -> dict[str, str]:
    """Step 8 with exercise 5's loop (the chapter's) in place of its own."""
    loop = (
        "        for _name, flag, fd in target.namespaces:  # user first, mnt last\n"
        "            setns(fd, flag)\n"
        "            os.close(fd)\n"
    )
    source = step_source(8)
    assert source.count(loop) == 1
    return {"step8_exec.py": source.replace(loop, textwrap.indent(solution_code(8, 5)[0], " " * 8))}


def step3_without_ipc() -> dict[str, str]:
    """Step 3 with `| namespaces.IPC` removed from NAMESPACES (exercise 5)."""
    source = step_source(3)
    assert source.count(" | namespaces.IPC") == 1
    return {"step3_mount.py": source.replace(" | namespaces.IPC", "")}


def step1_with_domainname() -> str:
    """Step 1 with exercise 4's solution: the chapter's wrapper (in syscalls, as it says),
    and its setup() and main() in place of the step's."""
    wrapper, step = solution_code(1, 4)
    source = step_source(1)
    source = (
        source[: source.index("def setup(")]
        + step
        + '\n\nif __name__ == "__main__":\n    sys.exit(main())\n'
    )
    source = source.replace(
        "from runtime import namespaces\n",
        "import ctypes\n\nfrom runtime import namespaces, syscalls\n"
        "from runtime.syscalls import LIBC, _check\n",
    )
    return source.replace(
        "\n\ndef setup(",
        f"\n\n{wrapper}\n\nsyscalls.setdomainname = setdomainname\n\n\ndef setup(",
        1,
    )


def step4_with_cpus() -> dict[str, str]:
    """Step 4 with exercise 5's solution: the chapter's two lines, the option and the
    group's resources, and the value passed between them (the chapter's "...")."""
    (block,) = solution_code(4, 5)
    option, create = [line.strip() for line in block.splitlines() if line.strip() != "..."]
    source = step_source(4)
    pids = 'parser.add_argument("--pids-limit", type=common.checked(cgroups.parse_pids_limit))'
    edits = [
        (f"    {pids}\n", f"    {pids}\n    {option}\n"),
        ("group.create(cgroups.docker_resources(memory, cpu_weight, pids_limit))", create),
        (
            "def cgroup(memory: int | None, cpu_weight: int | None, pids_limit: int | None):",
            "def cgroup(memory, cpu_weight, pids_limit, cpus=None):",
        ),
        (
            "cgroup(options.memory, options.cpu_weight, options.pids_limit)",
            "cgroup(options.memory, options.cpu_weight, options.pids_limit, options.cpus)",
        ),
    ]
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return {"step4_cgroups.py": source}


def chapter_python_c(number: int, exercise: int) -> str:
    """The program of the exercise's ``python3 -c '...'`` console command, its prompts gone."""
    text = chapter_exercise(number, exercise)
    start = text.index("$ python3 -c '\n") + len("$ python3 -c '\n")
    lines = []
    for line in text[start:].splitlines():
        code = line.strip().removeprefix("> ")
        lines.append(code.removesuffix("'"))
        if code.endswith("'"):
            return "\n".join(lines) + "\n"
    raise AssertionError("no python3 -c program")


@pytest.fixture
def opaque_image(home, tmp_path):
    """Exercise 4 of step 5 done: the chapter's layer (its own tarfile program) on top of
    busybox, in an OCI layout tagged 'opaque' of a directory 'hello', loaded as hello:opaque
    into the test's store."""
    program = chapter_python_c(5, 4).replace("/tmp/opaque.tar", str(tmp_path / "opaque.tar"))
    subprocess.run([sys.executable, "-c", program], check=True)
    busybox = os.path.join(str(home), "rootfs", "busybox")
    layout = tmp_path / "hello"
    scenes.write_layout(
        str(layout), [scenes.tar([], rootfs=busybox), (tmp_path / "opaque.tar").read_bytes()]
    )
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"] = {"org.opencontainers.image.ref.name": "opaque"}
    (layout / "index.json").write_text(json.dumps(index))
    loaded = subprocess.run(
        [sys.executable, "-m", "runtime", "load", f"{layout}:opaque"],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, MYCONTAINER_HOME=str(home)),
    )  # fmt: skip
    assert loaded.stdout == "hello:opaque\n", loaded.stderr
    yield
    subprocess.run(
        [sys.executable, "-m", "runtime", "rmi", "hello:opaque"],
        cwd=REPO, env=dict(os.environ, MYCONTAINER_HOME=str(home)), check=True,
    )  # fmt: skip


# (step, exercise): (the files of the solution done, the module to check), (the same for
# the work not done yet: the untouched skeleton, or the script not written).
DONE = {
    (1, 1): ({}, "steps.step1_uts"),  # an exercise of looking: the step as it is
    (1, 2): ({"uts_enter.py": solution_code(1, 2)[0]}, "learner.uts_enter"),
    (1, 3): ({}, "steps.step1_uts"),
    (1, 4): ({"step1_uts.py": step1_with_domainname()}, "learner.step1_uts"),
    (1, 5): (
        {"step1_uts.py": step_source(1).replace("NAMESPACES = namespaces.UTS", "NAMESPACES = 0")},
        "learner.step1_uts",
    ),
    (2, 1): ({}, "steps.step2_pid"),  # an exercise of looking: the step as it is
    (2, 3): (  # the chapter: change `if namespaces & CLONE_NEWPID or any(...):` to `if False:`
        runtime_edited("process.py", (r"if namespaces & CLONE_NEWPID or any\(.*\):", "if False:")),
        "steps.step2_pid",
    ),
    (2, 4): (  # the chapter: comment out the prctl(PR_SET_CHILD_SUBREAPER, 1) line
        runtime_edited(
            "process.py",
            (r"prctl\(PR_SET_CHILD_SUBREAPER, 1\)", "# prctl(PR_SET_CHILD_SUBREAPER, 1)"),
        ),
        "steps.step2_pid",
    ),
    (3, 1): (  # the chapter: the mount(None, "/", ...) line of enter_new replaced by pass
        runtime_edited(
            "namespaces.py", (r'mount\(None, "/", None, MS_REC \| MS_PRIVATE\)', "pass")
        ),
        "steps.step3_mount",
    ),
    (3, 2): (  # the chapter: mount(rootfs, rootfs, None, MS_BIND | MS_REC) replaced by pass
        runtime_edited(
            "filesystem.py", (r"mount\(rootfs, rootfs, None, MS_BIND \| MS_REC\)", "pass")
        ),
        "steps.step3_mount",
    ),
    (3, 3): (  # the chapter: pivot_into(rootfs) replaced by os.chroot(rootfs) and os.chdir("/")
        runtime_edited(
            "filesystem.py", (r"pivot_into\(rootfs\)", 'os.chroot(rootfs)\nos.chdir("/")')
        ),
        "steps.step3_mount",
    ),
    (3, 5): (step3_without_ipc(), "learner.step3_mount"),
    (4, 4): (  # the chapter: no before_unshare; the init's pid written after spawn returns
        runtime_edited(
            "container.py",
            (r"before_unshare=self\.cgroup\.join,", ""),
            (r"self\._receive_console\(\)", f"{solution_code(4, 4)[0]}self._receive_console()"),
        ),
        None,
    ),
    (4, 5): (step4_with_cpus(), "learner.step4_cgroups"),
    (6, 1): ({"./byhand.sh": solution_code(6, 1, "sh")[0]}, None),
    (8, 5): (step8_opening_late(), "learner.step8_exec"),
    (7, 4): (  # the chapter: the two lines from before_user_switch to after the ambient loop
        runtime_replaced(
            "security.py",
            (FILTER_FIRST, ""),
            (AMBIENT, AMBIENT + textwrap.indent(FILTER_FIRST, "    ")),
        ),
        None,
    ),
    (5, 4): ({}, None),  # the image hello:opaque in the store: see opaque_image
    (5, 6): (  # the chapter: mount("overlay", ...) replaced by a raise of ENODEV
        runtime_edited(
            "filesystem.py",
            (
                r'mount\("overlay", root, "overlay", 0, options\)',
                'raise OSError(errno.ENODEV, "no overlayfs")',
            ),
        ),
        None,
    ),
}
UNDONE = {
    (1, 1): ({}, "workshop.step1_uts"),  # the skeleton, its TODOs as they come
    (1, 2): ({}, None),  # no uts_enter.py in the repository's top directory
    (1, 3): ({}, "workshop.step1_uts"),
    (1, 4): ({}, "steps.step1_uts"),  # the step without --domainname
    (1, 5): ({}, "steps.step1_uts"),  # the step not broken
    (2, 1): ({}, "workshop.step2_pid"),
    (2, 3): ({}, "steps.step2_pid"),  # runtime/process.py as it is
    (2, 4): ({}, "steps.step2_pid"),
    (3, 1): ({}, "steps.step3_mount"),  # runtime/ as it is
    (3, 2): ({}, "steps.step3_mount"),
    (3, 3): ({}, "steps.step3_mount"),
    (3, 5): ({}, "steps.step3_mount"),  # step 3 with its IPC namespace
    (4, 4): ({}, None),  # runtime/container.py as it is
    (4, 5): ({}, "steps.step4_cgroups"),  # step 4 without --cpus
    (5, 4): ({}, None),  # no hello:opaque in the store
    (5, 6): ({}, None),  # runtime/filesystem.py as it is
    (6, 1): ({}, None),  # no byhand.sh in the repository's top directory
    (7, 4): ({}, None),  # runtime/security.py as it is
    (8, 5): ({}, "steps.step8_exec"),  # step 8 as it is
}


NO_STRACE = "strace is not installed: setup.sh and the lab VM install it"


def needs_strace(number: int, exercise: int) -> None:
    if (number, exercise) == (1, 3) and not shutil.which("strace"):
        pytest.skip(NO_STRACE)


@pytest.mark.parametrize("number, exercise", sorted(DONE))
def test_the_checker_passes_on_the_chapters_solution(number, exercise, check, request):
    needs_strace(number, exercise)
    if (number, exercise) == (5, 4):
        request.getfixturevalue("opaque_image")
    files, module = DONE[number, exercise]
    before = socket.gethostname()
    result = check(number, exercise, files, module)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    checks = exercises_of(number)[exercise].checks
    assert lines[1:-1] == [f"PASS  {one.says}" for one in checks]
    assert lines[-1] == f"step {number}, exercise {exercise}: all {len(checks)} checks pass"
    assert socket.gethostname() == before


@pytest.mark.parametrize("number, exercise", sorted(UNDONE))
def test_the_checker_fails_with_hint_1_on_the_work_not_done(number, exercise, check):
    needs_strace(number, exercise)
    script = {(1, 2): "uts_enter.py", (6, 1): "byhand.sh"}.get((number, exercise), "")
    if script and os.path.exists(os.path.join(REPO, script)):
        pytest.skip(f"{script} exists in the repository: someone did the exercise here")
    files, module = UNDONE[number, exercise]
    result = check(number, exercise, files, module)
    assert result.returncode == 1, result.stdout + result.stderr
    first = exercises_of(number)[exercise].checks[0]
    output = flat(result.stdout)
    assert f"FAIL {first.says} seen: " in output
    assert f"hint 1 of 3, the concept: {flat(first.hints[0])}" in output
    assert "Traceback" not in result.stdout + result.stderr


def test_the_hints_grow_more_specific_per_try(check):
    (first, *_) = exercises_of(1)[4].checks
    for level in (1, 2, 3, 3):
        output = flat(check(1, 4, {}, "steps.step1_uts").stdout)
        assert flat(first.hints[level - 1]) in output
        for other in {1, 2, 3} - {level}:
            assert flat(first.hints[other - 1]) not in output


def test_hint_3_quotes_the_chapter_or_the_step_word_for_word():
    for number in CHAPTERS:
        for exercise, chosen in exercises_of(number).items():
            text = chapter_exercise(number, exercise) + step_source(number)
            for one in chosen.checks:
                quoted = re.findall(r"`([^`]+)`", one.hints[2])
                assert quoted, f"{number}.{exercise} {one.key}: hint 3 quotes no line"
                for code in quoted:
                    assert code in text, f"{number}.{exercise} {one.key}: {code!r} is not in it"


def test_an_exercise_without_a_checker_says_why_in_one_line(tmp_path):
    env = dict(os.environ, MYCONTAINER_WORKSHOP_TRIES=str(tmp_path / "tries.json"))
    run = dict(capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    result = subprocess.run(
        [sys.executable, "-m", "workshop.checks", "1", "--exercise", "9"], **run
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "invoke check: exercise 9 of step 1 has no checker (those with one: 1, 2, 3, 4, 5); "
        "the table of docs/workshop.md, Check an exercise, says why\n"
    )
    both = subprocess.run(
        [sys.executable, "-m", "workshop.checks", "1", "--exercise", "1", "--solution"], **run
    )
    assert both.returncode == 2
    assert "the exercises' solutions are in the chapter" in both.stderr


def test_the_invoke_task_checks_an_exercise(home, tmp_path):
    env = dict(
        os.environ,
        MYCONTAINER_HOME=str(home),
        MYCONTAINER_WORKSHOP_TRIES=str(tmp_path / "tries.json"),
    )
    run = dict(capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "check", "1", "--exercise", "5"], **run
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("step 1, exercise 5: checking workshop.step1_uts")


def test_the_chapters_say_how_to_check_each_exercise():
    for number in CHAPTERS:
        for exercise in exercises_of(number):
            line = f"Check it: `invoke check {number} --exercise {exercise}`"
            assert line in chapter_exercise(number, exercise), f"{number}.{exercise}"


# Step 5's exercise 5 and step 9's exercises 5 and 6 (their checkers: step5_exercises.py,
# step9_exercises.py).

REAL_PARENTS_DOC = '        With ``make``, missing ones are made (as tar does)."""\n'
NO_REAL_PARENTS = (REAL_PARENTS_DOC, REAL_PARENTS_DOC + "        return\n")  # "return at once"


def test_step5_exercise5_passes_with_the_first_defence_off(check):
    result = check(5, 5, runtime_replaced("layer.py", NO_REAL_PARENTS), None)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = exercises_of(5)[5].checks
    assert result.stdout.splitlines()[1:] == [
        *(f"PASS  {one.says}" for one in checks),
        f"step 5, exercise 5: all {len(checks)} checks pass",
    ]


def test_step5_exercise5_fails_with_growing_hints_on_the_importer_as_it_is(check):
    first = exercises_of(5)[5].checks[0]
    for level in (1, 2):
        result = check(5, 5, {}, None)
        assert result.returncode == 1, result.stdout + result.stderr
        output = flat(result.stdout)
        assert f"FAIL {first.says} seen: the load was refused by the first defence" in output
        assert flat(first.hints[level - 1]) in output
        assert "Traceback" not in result.stdout + result.stderr
    assert not os.path.exists("/etc/evil")


def test_step5_exercise5_loads_nothing_without_the_chroot(check):
    chroot = ("            os.chroot(destination)\n", "")
    result = check(5, 5, runtime_replaced("layer.py", NO_REAL_PARENTS, chroot), None)
    assert result.returncode == 2
    assert result.stdout == "step 5, exercise 5: checking runtime (runtime/__main__.py)\n"
    assert result.stderr == (
        "invoke check: runtime/layer.py's start_unpack no longer calls os.chroot: without its "
        "second defence a hostile layer writes on this machine, so the checker loads none (that "
        "edit is for a throw-away VM); put the chroot back to check the first edit\n"
    )


def test_step5_exercise5_sees_a_write_into_etc_in_a_throwaway_etc(check):
    """An unpacker that chroots to / and works in the layer's directory writes through the
    link etc -> /etc: the checker sees it in its throw-away /etc, and the machine's has none."""
    there = os.path.exists("/etc/evil")
    escape = ("            os.chroot(destination)\n", '            os.chroot("/")\n')
    stay = ('            os.chdir("/")\n', "            os.chdir(destination)\n")
    try:
        edited = runtime_replaced("layer.py", NO_REAL_PARENTS, escape, stay)
        result = check(5, 5, edited, None)
        assert not os.path.exists("/etc/evil")
    finally:
        if not there and os.path.exists("/etc/evil"):
            os.remove("/etc/evil")
    assert result.returncode == 1, result.stdout + result.stderr
    output = flat(result.stdout)
    assert "seen: the load wrote evil into the host's /etc (a throw-away one)" in output
    assert "seen: the load succeeded: nothing stopped the hostile layer" in output


def chapter_command(text: str, start: str) -> str:
    """The first console command of ``text`` that starts with ``start``, with its ``> ``
    continuation lines, as sh reads it."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith(f"$ {start}"))
    command = [lines[first].strip().removeprefix("$ ")]
    while command[-1].endswith("\\"):
        first += 1
        command.append(lines[first].strip().removeprefix(">").strip())
    return "\n".join(command)


@pytest.fixture
def step9(tmp_path, home):
    """Step 9's exercises' directory (the chapter's /tmp/step9) in ``tmp_path``, with the
    bundle of Check your work made by its first two commands; a function (exercise,
    commands of the chapter) -> the checker's CompletedProcess, run on it, each command
    (the chapter's, /tmp/step9 its directory) run before; the tries kept between calls."""
    directory = str(tmp_path / "step9")
    with open(os.path.join(REPO, "docs", "step9-oci.md")) as file:
        chapter = file.read()
    env = dict(
        os.environ,
        MYCONTAINER_WORKSHOP_STEP9=directory,
        MYCONTAINER_WORKSHOP_TRIES=str(tmp_path / "tries.json"),
        PYTHONPATH=REPO,
    )

    def shell(command: str) -> None:
        command = command.replace("/tmp/step9", directory).replace(
            "/var/lib/mycontainer", str(home)
        )
        command = command.replace("python3 ", f"{sys.executable} ")  # first: it may be python3
        command = command.replace("mycontainer-oci", f"{sys.executable} -m runtime.ocicli")
        subprocess.run(["sh", "-c", command], check=True, env=env, stdout=subprocess.DEVNULL)

    shell(chapter_command(chapter, "mkdir -p /tmp/step9/bundle"))
    shell(chapter_command(chapter, 'sed -i -e \'s/"terminal"'))

    def run(exercise: int, *commands: str):
        for command in commands:
            shell(command)
        return subprocess.run(
            [sys.executable, "-m", "workshop.checks", "9", "--exercise", str(exercise)],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
        )  # fmt: skip

    run.directory = directory
    yield run
    rootfs = os.path.join(directory, "bundle", "rootfs")
    assert not (os.path.isdir(rootfs) and processes_in(rootfs)), "a container is left"


def processes_in(rootfs: str) -> list[int]:
    """The processes whose root directory is ``rootfs``: a container's, left running. (Its
    /proc/PID/root reads "/", its own view: the directory's device and inode tell.)"""
    wanted = os.stat(rootfs)
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            root = os.stat(f"/proc/{name}/root")
            if (root.st_dev, root.st_ino) == (wanted.st_dev, wanted.st_ino):
                found.append(int(name))
    return found


def step9_solution(exercise: int, start: str) -> str:
    return chapter_command(exercises_in("step9-oci.md")[exercise], start)


def passes(result, exercise: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    checks = exercises_of(9)[exercise].checks
    lines = result.stdout.splitlines()
    assert lines[0] == f"step 9, exercise {exercise}: checking runtime.ocicli (runtime/ocicli.py)"
    assert [line[:6] for line in lines[1:-1]] == ["PASS  "] * len(checks)
    assert lines[-1] == f"step 9, exercise {exercise}: all {len(checks)} checks pass"


def fails_with_hint(result, exercise: int, level: int, seen: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    first = exercises_of(9)[exercise].checks[0]
    output = flat(result.stdout)
    assert f"seen: {seen}" in output
    assert f"hint {level} of 3, {('the concept', 'the call')[level - 1]}: " in output
    assert flat(first.hints[level - 1]).split(" ")[0] in output
    assert "Traceback" not in result.stdout + result.stderr


def test_step9_without_an_exercise_says_its_checks_are_its_exercises():
    for argv in (["9"], ["9", "--solution"]):
        result = subprocess.run(
            [sys.executable, "-m", "workshop.checks", *argv],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (
            "invoke check: step 9 has no program of its own: its checks are its exercises' "
            "(--exercise 5 or --exercise 6)\n"
        )


def test_step9_exercise5_passes_on_the_chapters_program(step9):
    sed = step9_solution(5, "sed -i")
    assert '"ip", "-o", "-4", "addr"' in sed
    passes(step9(5, sed), 5)


def test_step9_exercise5_keeps_the_poststop_file_of_exercise_6(step9):
    """The checker's delete runs exercise 6's hook too: the learner's file stays theirs."""
    mine = os.path.join(step9.directory, "poststop.json")
    with open(mine, "w") as file:
        file.write("my own run's\n")
    sed, hook = step9_solution(5, "sed -i"), step9_solution(6, "python3 -c 'import json")
    passes(step9(5, sed, hook), 5)
    with open(mine) as file:
        assert file.read() == "my own run's\n"


def test_step9_exercise5_fails_with_hint_1_on_check_your_works_bundle(step9):
    result = step9(5)  # sh says hello, then sleeps: still running when the checker gives up
    fails_with_hint(result, 5, 1, "the container's program was still running 10 seconds")
    concept = flat(exercises_of(9)[5].checks[0].hints[0])
    assert f"hint 1 of 3, the concept: {concept}" in flat(result.stdout)


def test_step9_exercise5_hints_grow_without_a_bundle(step9):
    shutil.rmtree(os.path.join(step9.directory, "bundle"))
    for level in (1, 2):
        result = step9(5)
        missing = f"there is no {step9.directory}/bundle/config.json"
        fails_with_hint(result, 5, level, missing)
    hint = exercises_of(9)[5].checks[0].hints[1].replace("/tmp/step9", step9.directory)
    assert flat(hint) in flat(result.stdout)


def test_step9_exercise6_passes_on_the_chapters_hook_and_keeps_the_learners_file(step9):
    mine = os.path.join(step9.directory, "poststop.json")
    with open(mine, "w") as file:
        file.write("my own run's\n")
    hook = step9_solution(6, "python3 -c 'import json")
    assert "poststop" in hook
    passes(step9(6, hook), 6)
    with open(mine) as file:
        assert file.read() == "my own run's\n"


def test_step9_exercise6_fails_with_hint_1_without_a_hook(step9):
    result = step9(6)
    written = os.path.join(step9.directory, "poststop.json")
    fails_with_hint(result, 6, 1, f"after delete, there is no {written}")
    concept = flat(exercises_of(9)[6].checks[0].hints[0])
    assert f"hint 1 of 3, the concept: {concept}" in flat(result.stdout)
    assert not os.path.exists(written)


def test_step9s_chapter_says_how_to_check_and_hint_3_quotes_it():
    for exercise, chosen in exercises_of(9).items():
        text = exercises_in("step9-oci.md")[exercise]
        assert f"Check it: `invoke check 9 --exercise {exercise}`" in text
        for one in chosen.checks:
            for code in re.findall(r"`([^`]+)`", one.hints[2]):
                assert code in text, f"9.{exercise} {one.key}: {code!r} is not in it"
    for exercise in range(1, 7):
        assert "*Checked by a program?*" in exercises_in("step9-oci.md")[exercise]


# Whether a program checks an exercise: every solution of the chapters says so in one
# line, and says "Yes" only where `invoke check` has a checker for it.
SAYS_WHETHER = {**CHAPTERS, 9: "step9-oci.md", "run": "run.md"}
CHECKED_BY = re.compile(r"\*Checked by a program\?\* (Yes|Partly|No checker)\b")


@pytest.mark.parametrize("chapter", sorted(SAYS_WHETHER, key=str))
def test_each_solution_says_whether_a_program_checks_it(chapter):
    checked = exercises_of(chapter) if isinstance(chapter, int) else {}
    for exercise, text in exercises_in(SAYS_WHETHER[chapter]).items():
        verdicts = CHECKED_BY.findall(text)
        where = f"{SAYS_WHETHER[chapter]}, exercise {exercise}"
        assert len(verdicts) == 1, f"{where}: {len(verdicts)} '*Checked by a program?*' lines"
        has_checker = "Check it: `invoke check" in text
        assert has_checker == (exercise in checked), f"{where}: 'Check it:' and EXERCISES differ"
        if has_checker:
            assert verdicts[0] in ("Yes", "Partly"), f"{where}: a checker, yet {verdicts[0]!r}"
        else:
            assert verdicts[0] == "No checker", f"{where}: {verdicts[0]!r}, yet no checker"


def assert_all_pass(result, number: int, exercise: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    checks = exercises_of(number)[exercise].checks
    assert result.stdout.splitlines()[1:] == [f"PASS  {one.says}" for one in checks] + [
        f"step {number}, exercise {exercise}: all {len(checks)} checks pass"
    ]


def assert_fails_with_hint(result, check_, level: int) -> None:
    """``check_`` failed, with hint ``level`` and no other; no traceback anywhere."""
    assert result.returncode == 1, result.stdout + result.stderr
    output = flat(result.stdout)
    assert f"FAIL {check_.says} seen: " in output
    names = ("the concept", "the call", "the line")
    assert f"hint {level} of 3, {names[level - 1]}: {flat(check_.hints[level - 1])}" in output
    for other in {1, 2, 3} - {level}:
        assert flat(check_.hints[other - 1]) not in output
    assert "Traceback" not in result.stdout + result.stderr


needs_strace_here = pytest.mark.skipif(not shutil.which("strace"), reason=NO_STRACE)

# Step 8's exercise 7 done another way: a loop of setns calls, one per /proc/PID/ns file.
PIDFD_LOOP = """\
import os
import sys

from runtime import syscalls

pid, command = sys.argv[1], sys.argv[2:]
for name in ("cgroup", "ipc", "uts", "pid", "mnt"):
    fd = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY)
    syscalls.setns(fd, 0)
    os.close(fd)
if os.fork() == 0:
    os.execv(command[0], command)
_, status = os.wait()
sys.exit(os.waitstatus_to_exitcode(status))
"""


@needs_strace_here
def test_step8_exercise7_passes_on_the_chapters_pidfd_enter(check):
    (script,) = solution_code(8, 7)
    result = check(8, 7, {"pidfd_enter.py": script}, "learner.pidfd_enter")
    assert_all_pass(result, 8, 7)


def test_step8_exercise7_without_the_script_fails_with_hints_growing(check):
    if os.path.exists(os.path.join(REPO, "pidfd_enter.py")):
        pytest.skip("pidfd_enter.py exists in the repository: someone did the exercise here")
    enters = exercises_of(8)[7].checks[0]
    for level in (1, 2, 3, 3):
        result = check(8, 7, {}, None)
        assert_fails_with_hint(result, enters, level)
        assert "No module named pidfd_enter" in flat(result.stdout)


@needs_strace_here
def test_step8_exercise7_a_loop_of_setns_enters_but_is_not_one_call(check):
    result = check(8, 7, {"pidfd_enter.py": PIDFD_LOOP}, "learner.pidfd_enter")
    enters, one_call = exercises_of(8)[7].checks
    assert f"PASS  {enters.says}" in result.stdout.splitlines()
    assert_fails_with_hint(result, one_call, 1)
    assert "strace recorded 5 setns calls, one per namespace" in flat(result.stdout)


def policy_as_the_chapter_changes_it(exercise: int) -> dict[str, str]:
    """runtime/policy.py with step 7's exercise's diff (the chapter's) applied."""
    (diff,) = solution_code(7, exercise, "diff")
    lines = diff.splitlines()
    old = "".join(f"{line[1:]}\n" for line in lines if line.startswith("-"))
    new = "".join(f"{line[1:]}\n" for line in lines if line.startswith("+"))
    return runtime_replaced("policy.py", (old, new))


@pytest.mark.parametrize("exercise", [2, 3])
def test_step7_policy_exercises_pass_on_the_chapters_change(exercise, check):
    result = check(7, exercise, policy_as_the_chapter_changes_it(exercise), None)
    assert_all_pass(result, 7, exercise)


@pytest.mark.parametrize("exercise", [2, 3])
def test_step7_policy_exercises_fail_on_the_policy_as_it_is_with_hints_growing(exercise, check):
    first = exercises_of(7)[exercise].checks[0]
    for level in (1, 2, 3):
        result = check(7, exercise, {}, None)
        assert_fails_with_hint(result, first, level)
    assert "Permission denied" in result.stdout  # a real refusal, not a run that failed


def test_step7_exercise2_the_inheritable_change_does_not_pass_it(check):
    # exercise 3's change gives nobody an inheritable set, and an =ep file still nothing
    result = check(7, 2, policy_as_the_chapter_changes_it(3), None)
    assert_fails_with_hint(result, exercises_of(7)[2].checks[0], 1)


def netbridge_as_the_chapter_changes_it() -> dict[str, str]:
    """runtime/netbridge.py with the arguments step 6's exercise 4 deletes deleted."""
    (deleted,) = re.findall(r"With `([^`]+)` deleted", chapter_exercise(6, 4))
    return runtime_replaced("netbridge.py", (f"{deleted} ", ""))


def test_step6_exercise4_passes_with_the_mac_left_random_and_leaves_nothing(check):
    before = set(os.listdir("/tmp"))
    result = check(6, 4, netbridge_as_the_chapter_changes_it(), None)
    assert_all_pass(result, 6, 4)
    new = set(os.listdir("/tmp")) - before
    assert not {name for name in new if name.startswith("workshop-check-state-")}
    assert not subprocess.run(["pgrep", "-f", "exec sleep [12][0-9]"], capture_output=True).stdout


def test_step6_exercise4_fails_on_the_runtime_as_it_is_with_hints_growing(check):
    (stale,) = exercises_of(6)[4].checks
    for level in (1, 2):
        result = check(6, 4, {}, None)
        assert_fails_with_hint(result, stale, level)
        assert "had the MAC address 02:6d:0a:c7:00:" in flat(result.stdout)


def step8_paused(dumpable: bool) -> dict[str, str]:
    """Step 8 with exercise 6's pause (the chapter's block, and `import time`), and its
    prctl(PR_SET_DUMPABLE, 0) commented out if ``dumpable``."""
    (pause,) = solution_code(8, 6)
    source = step_source(8)
    edits = [
        ("    process.default_signals()\n", textwrap.indent(pause, "    ")),
        ("import os\n", "import os\nimport time\n"),
    ]
    if dumpable:
        edits.append(("prctl(PR_SET_DUMPABLE, 0)\n", "# prctl(PR_SET_DUMPABLE, 0)\n"))
    for old, new in edits:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return {"step8_exec.py": source}


def test_step8_exercise6_passes_on_the_chapters_change(check):
    result = check(8, 6, step8_paused(dumpable=True), "learner.step8_exec")
    assert_all_pass(result, 8, 6)


def test_step8_exercise6_fails_on_the_step_as_it_is_with_hints_growing(check):
    (seen,) = exercises_of(8)[6].checks
    for level in (1, 2):
        result = check(8, 6, {}, "steps.step8_exec")
        assert_fails_with_hint(result, seen, level)
        assert "it did not pause" in flat(result.stdout)


def test_step8_exercise6_the_pause_alone_shows_no_target(check):
    result = check(8, 6, step8_paused(dumpable=False), "learner.step8_exec")
    assert_fails_with_hint(result, exercises_of(8)[6].checks[0], 1)
    assert "it is still non-dumpable" in flat(result.stdout)
