"""The tutorial cannot drift from the code: its transcripts are run, its quotes are looked up.

Two kinds of checked blocks, described for authors in docs/contributing.md ("Writing docs"):

* A transcript: a ```` ```console ```` block right after ``<!-- check-transcript -->``. Each
  ``$ command`` runs with ``sh -c`` from the repository's top directory, as root, and its
  output (stdout and stderr together) must match the lines below it, where ``<id>`` stands
  for a container id, ``<n>`` for a number, ``<any>`` for any text on one line, and a line
  ``...`` for any number of lines. ``mycontainer``, ``mycontainer-oci`` and ``python3`` are
  this interpreter's.
* A quote: a fenced block titled with a repository file, ```` ```python title="runtime/x.py" ````.
  Its text must appear in that file; a line ``...`` separates quoted pieces.

Plus: ``mkdocs build --strict`` passes.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MARKER = "<!-- check-transcript -->"
COMMAND_TIMEOUT = 60  # seconds, per command
DEFAULT_HOME = "/var/lib/mycontainer"  # runtime.image.DEFAULT_HOME, as the docs spell it

PLACEHOLDERS = {
    "<id>": "[0-9a-f]{12,64}",
    "<n>": "-?[0-9]+",
    "<any>": ".*",
}
ANY_LINES = "..."
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
_TITLE = re.compile(r"""title=(?:"([^"]*)"|'([^']*)')""")


# -- reading the docs ---------------------------------------------------------------------


@dataclass
class Command:
    line: int  # where it starts in the markdown file, 1-based
    text: str  # for sh -c
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    path: Path
    line: int  # the line of the opening fence, 1-based
    info: str  # what follows the fence: "console", 'python title="..."'
    lines: list[str]  # the content, dedented by the fence's indentation
    checked: bool  # preceded by MARKER

    @property
    def where(self) -> str:
        return f"{shorter(self.path)}:{self.line}"


def shorter(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def read_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, knowing which ones follow MARKER."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    marked = 0  # the line of a MARKER waiting for its block
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = _FENCE.match(line)
        if line.strip() == MARKER:
            marked = index + 1
        elif opening:
            indent, fence = opening["indent"], opening["fence"]
            start = index
            content: list[str] = []
            index += 1
            while index < len(lines) and lines[index].strip() != fence:
                text = lines[index]
                content.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
                index += 1
            blocks.append(Block(path, start + 1, opening["info"].strip(), content, bool(marked)))
            marked = 0
        elif line.strip() and marked:  # the marker applies to the very next block only
            blocks.append(Block(path, marked, "(no code block)", [], True))
            marked = 0
        index += 1
    return blocks


def parse_transcript(block: Block) -> list[Command]:
    """``$ command`` lines (continued by a trailing backslash) and the output expected of them."""
    if block.info.split()[:1] != ["console"]:
        raise ValueError(f"{block.where}: {MARKER} must be followed by a ```console block")
    commands: list[Command] = []
    lines = iter(enumerate(block.lines, start=block.line + 1))
    for number, line in lines:
        if line.startswith("$ "):
            text = line[2:]
            while text.endswith("\\"):
                _, continued = next(lines, (0, ""))
                text += "\n" + (continued[2:] if continued.startswith("> ") else continued)
            commands.append(Command(number, text))
        elif not commands:
            raise ValueError(f"{block.where}: a transcript must start with a '$ ' command line")
        else:
            commands[-1].expected.append(line.rstrip())
    for command in commands:
        while command.expected and not command.expected[-1]:
            command.expected.pop()
    return commands


def block_title(block: Block) -> str | None:
    found = _TITLE.search(block.info)
    return (found[1] or found[2]) if found else None


def all_blocks() -> list[Block]:
    return [block for path in sorted(DOCS.rglob("*.md")) for block in read_blocks(path)]


BLOCKS = all_blocks()
TRANSCRIPTS = [block for block in BLOCKS if block.checked]
QUOTES = [block for block in BLOCKS if (title := block_title(block)) and (REPO / title).is_file()]


# -- matching output ----------------------------------------------------------------------


def line_pattern(expected: str) -> re.Pattern:
    """An expected line as a regular expression: literal text, placeholders as patterns."""
    parts, last = [], 0
    for found in _PLACEHOLDER.finditer(expected):
        parts += [re.escape(expected[last : found.start()]), PLACEHOLDERS[found[0]]]
        last = found.end()
    parts.append(re.escape(expected[last:]))
    return re.compile("".join(parts))


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Do the ``actual`` lines match the ``expected`` ones, placeholders and ``...`` included?"""
    patterns = [None if line == ANY_LINES else line_pattern(line) for line in expected]
    memo: dict[tuple[int, int], bool] = {}

    def match(e: int, a: int) -> bool:
        if (e, a) not in memo:
            if e == len(patterns):
                result = a == len(actual)
            elif patterns[e] is None:  # "...": skip zero or more actual lines
                result = any(match(e + 1, skip) for skip in range(a, len(actual) + 1))
            else:
                result = a < len(actual) and bool(patterns[e].fullmatch(actual[a]))
                result = result and match(e + 1, a + 1)
            memo[e, a] = result
        return memo[e, a]

    return match(0, 0)


def shown(expected: list[str], actual: list[str]) -> list[str]:
    """``expected`` for a diff: a line that matches the actual one beside it shows as that."""
    return [
        actual[i]
        if i < len(actual) and line != ANY_LINES and line_pattern(line).fullmatch(actual[i])
        else line
        for i, line in enumerate(expected)
    ]


# -- running commands ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def transcript_env(tmp_path_factory) -> dict[str, str]:
    """The environment transcripts run in: this interpreter as ``python3``, ``mycontainer``
    and ``mycontainer-oci``.

    The docs are written for a root shell with the project's venv activated; in a CI VM the
    interpreter may be another venv with the repository on PYTHONPATH, so wrappers stand in.
    When the busybox rootfs (for the steps) or image (for ``mycontainer run busybox``) is not
    built at its usual place, both are built in a temporary MYCONTAINER_HOME (and the
    commands' spelling of the usual place is rewritten to it).
    """
    bin_dir = tmp_path_factory.mktemp("bin")
    python = shlex.quote(sys.executable)
    for name, line in (
        ("python3", f'exec {python} "$@"'),
        ("mycontainer", f'exec {python} -m runtime "$@"'),
        ("mycontainer-oci", f'exec {python} -m runtime.ocicli "$@"'),
    ):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{line}\n")
        script.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LC_ALL"] = "C"
    env.pop("MYCONTAINER_STATE", None)  # the docs show /run/mycontainer
    env.pop("MYCONTAINER_HOME", None)
    if not busybox_is_built(DEFAULT_HOME):
        from runtime import rootfs

        home = str(tmp_path_factory.mktemp("home"))
        saved = os.environ.get("MYCONTAINER_HOME")
        os.environ["MYCONTAINER_HOME"] = home  # where runtime.image.home() builds it
        try:
            rootfs.build_busybox_image()
        finally:
            if saved is None:
                del os.environ["MYCONTAINER_HOME"]
            else:
                os.environ["MYCONTAINER_HOME"] = saved
        env["MYCONTAINER_HOME"] = home
    return env


def busybox_is_built(home: str) -> bool:
    """Are the busybox rootfs and the image ``busybox:latest`` (its record) both in ``home``?"""
    return os.path.isdir(f"{home}/rootfs/busybox") and os.path.isfile(
        f"{home}/images/busybox:latest.json"
    )


def run_command(command: str, env: dict[str, str]) -> list[str]:
    home = env.get("MYCONTAINER_HOME")
    if home:
        command = command.replace(DEFAULT_HOME, home)
    result = subprocess.run(
        ["sh", "-c", command],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=COMMAND_TIMEOUT,
    )
    output = result.stdout.decode(errors="replace")
    if home:
        output = output.replace(home, DEFAULT_HOME)
    lines = [line.rstrip() for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stored_images(env: dict[str, str]) -> set[str]:
    """The image records in the store the transcripts use."""
    try:
        return set(os.listdir(os.path.join(env.get("MYCONTAINER_HOME", DEFAULT_HOME), "images")))
    except FileNotFoundError:
        return set()


def state_dirs() -> set[str]:
    from runtime import state

    return set(state.ids(state.DEFAULT_ROOT))


def leftovers(before: set[str], env: dict[str, str], patience: float = 3.0) -> set[str]:
    """Containers that appeared and still run (patience lets concurrent runs elsewhere
    finish). Those that stopped, a run without --rm keeps, as docker's: removed here with
    ``mycontainer rm``, as a reader would."""
    from runtime import state

    deadline = time.monotonic() + patience
    while True:
        new = state_dirs() - before
        stopped = set()
        for name in new:
            try:
                if state.load(state.DEFAULT_ROOT, name).status() == state.STOPPED:
                    stopped.add(name)
            except state.StateError:
                stopped.add(name)  # removed meanwhile
        if stopped:
            run_command(f"mycontainer rm {' '.join(sorted(stopped))} >/dev/null 2>&1", env)
        if not new - stopped or time.monotonic() > deadline:
            return state_dirs() & (new - stopped)
        time.sleep(0.1)


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.privileged
@pytest.mark.parametrize("block", TRANSCRIPTS, ids=lambda block: block.where)
def test_transcript(block: Block, transcript_env: dict[str, str]) -> None:
    commands = parse_transcript(block)
    hostname, containers = socket.gethostname(), state_dirs()
    images = stored_images(transcript_env)
    try:
        for command in commands:
            actual = run_command(command.text, transcript_env)
            if not output_matches(command.expected, actual):
                documented = shown(command.expected, actual)
                diff = "\n".join(
                    difflib.unified_diff(documented, actual, "documented", "actual", lineterm="")
                )
                pytest.fail(
                    f"{shorter(block.path)}:{command.line}: the output of\n"
                    f"    $ {command.text}\ndiffers from the documented one:\n{diff}",
                    pytrace=False,
                )
    finally:  # what it kept, a failed transcript too
        left = leftovers(containers, transcript_env)
    assert socket.gethostname() == hostname, "the transcript renamed the host"
    assert not left, f"the transcript left containers behind in /run/mycontainer: {left}"
    added = stored_images(transcript_env) - images
    assert not added, f"the transcript left images in the store (mycontainer rmi): {added}"


@pytest.mark.parametrize("block", QUOTES, ids=lambda block: block.where)
def test_quote(block: Block) -> None:
    """A code block titled with a repository file quotes that file, word for word."""
    title = block_title(block)
    source = (REPO / title).read_text().splitlines()
    pieces: list[list[str]] = [[]]
    for line in block.lines:
        if line.strip() == ANY_LINES:
            pieces.append([])
        else:
            pieces[-1].append(line)
    for piece in filter(None, pieces):
        wanted = textwrap.dedent("\n".join(piece))
        size = len(piece)
        windows = (
            textwrap.dedent("\n".join(source[i : i + size])) for i in range(len(source) - size + 1)
        )
        if wanted not in windows:
            pytest.fail(f"{block.where}: this is not in {title} any more:\n{wanted}", False)


def test_transcripts_are_well_formed() -> None:
    """Every marker is followed by a console block of commands (caught even without root)."""
    assert TRANSCRIPTS, "no checked transcripts found in docs/"
    for block in TRANSCRIPTS:
        assert parse_transcript(block), f"{block.where}: a checked transcript with no command"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    # Not with -q: mkdocs then drops warnings before --strict counts them, and passes.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode:
        problems = [line for line in result.stderr.splitlines() if line.startswith(("WARN", "ERR"))]
        pytest.fail(
            "mkdocs build --strict failed:\n" + "\n".join(problems or [result.stderr]), False
        )


# -- the matcher itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        (["a", "b"], ["a", "b"], True),
        (["a", "b"], ["a"], False),
        (["a"], ["a", "b"], False),
        (["hello from <id>, PID <n>"], ["hello from 0123456789ab, PID 1"], True),
        (["hello from <id>"], ["hello from box"], False),
        (["pid <n>"], ["pid 12a"], False),
        (["/ <any>"], ["/ ext4"], True),
        (["a.b (c)"], ["aXb (c)"], False),  # literal text is literal
        (["first", "...", "last"], ["first", "last"], True),
        (["first", "...", "last"], ["first", "x", "y", "last"], True),
        (["first", "...", "last"], ["first", "x", "y"], False),
        (["..."], [], True),
        ([], [""], False),
    ],
)
def test_output_matches(expected: list[str], actual: list[str], matches: bool) -> None:
    assert output_matches(expected, actual) is matches


def test_parse_transcript(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n"
        f"{MARKER}\n"
        "```console\n"
        "$ echo one \\\n"
        "> two\n"
        "one two\n"
        "$ true\n"
        "\n"
        "```\n\n"
        "```console\n"
        "$ not checked\n"
        "```\n\n"
        f"{MARKER}\n"
        "Prose.\n"
    )
    blocks = read_blocks(page)
    assert [block.checked for block in blocks] == [True, False, True]
    with pytest.raises(ValueError, match="must be followed by"):
        parse_transcript(blocks[2])  # a marker before prose
    commands = parse_transcript(blocks[0])
    assert [(c.line, c.text, c.expected) for c in commands] == [
        (5, "echo one \\\ntwo", ["one two"]),
        (8, "true", []),
    ]


def test_blocks_inside_collapsed_blocks(tmp_path: Path) -> None:
    """A transcript or a quote folded into a ``??? info`` block (indented 4 spaces) is found
    and checked like one in the open: its content loses the indentation, not its own."""
    page = tmp_path / "page.md"
    page.write_text(
        '??? info "Going deeper: a detail"\n\n'
        "    Prose.\n\n"
        f"    {MARKER}\n"
        "    ```console\n"
        "    $ echo one\n"
        "\n"
        "    one\n"
        "    ```\n\n"
        '    ```python title="runtime/x.py"\n'
        "    def f():\n"
        "        pass\n"
        "    ```\n"
    )
    transcript, quote = read_blocks(page)
    assert (transcript.line, transcript.checked, transcript.info) == (6, True, "console")
    assert [(c.line, c.text, c.expected) for c in parse_transcript(transcript)] == [
        (7, "echo one", ["", "one"])
    ]
    assert (quote.checked, block_title(quote), quote.lines) == (
        False,
        "runtime/x.py",
        ["def f():", "    pass"],
    )
