"""``python -m workshop.make``: write the learners' skeletons, workshop/stepN_*.py, from the
solutions, steps/stepN_*.py.

In a step, a key call stands between two comments::

    # workshop TODO: name the new UTS namespace `hostname`: sethostname(2)
    namespaces.set_hostname(hostname)
    # workshop end

(the TODO may go on over lines that start with ``#   ``). In the skeleton the lines between
them become ``raise NotImplementedError("TODO step 1: name the new UTS ...")``; at the top
level, where the module must still import, an assignment ``NAME = ...`` becomes
``NAME = workshop.Todo("TODO step 1: ...")``, which raises only when used. A step's import
of an earlier step becomes :func:`workshop.previous`, the learner's own or the solution.

A skeleton records the hash of what was generated: a skeleton that a learner has edited is
left alone (``--force`` overwrites it). ``--check`` writes nothing and fails if a skeleton
is not what today's steps make (the test suite runs it).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WIDTH = 100  # ruff's line length: a skeleton passes `invoke lint` as it is

TODO = re.compile(r"^(?P<indent> *)# workshop TODO: (?P<text>.*)$")
MORE = re.compile(r"^ *#   (?P<text>.*)$")
END = re.compile(r"^ *# workshop end$")
STEP_IMPORT = re.compile(r"^from steps import (?P<names>.*)$")
HASH = re.compile(r"^# \(skeleton (?P<hash>[0-9a-f]{12}),")


class MarkerError(Exception):
    """A step's workshop comments are malformed; the message says where."""


def solutions() -> dict[int, str]:
    """steps/stepN_*.py by N."""
    paths = glob.glob(os.path.join(REPO, "steps", "step[0-9]*_*.py"))
    names = (os.path.basename(path).removesuffix(".py") for path in paths)
    return {int(name.removeprefix("step").split("_")[0]): name for name in names}


def skeleton(number: int, name: str, source: str) -> str:
    """The skeleton of step ``number``, module ``name``, from its solution's ``source``."""
    lines = source.splitlines()
    body: list[str] = []
    previous: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        todo = TODO.match(line)
        if todo:
            index, replacement = _todo(number, name, lines, index, todo)
            body.extend(replacement)
            continue
        if END.match(line):
            raise MarkerError(f"steps/{name}.py, line {index + 1}: an end without a TODO")
        imported = STEP_IMPORT.match(line)
        if imported:
            names = [part.strip() for part in imported["names"].split(",")]
            previous = [part for part in names if part != "common"]
            line = "from steps import common" if "common" in names else ""
            if not line:
                index += 1
                continue
        body.append(line.replace("python -m steps.", "python -m workshop."))
        index += 1
    _import_workshop(body, previous)
    text = "\n".join(body) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    header = (
        f"# Step {number}, for you to write: the TODOs say what to do and which man page to read.\n"
        f"# (skeleton {digest}, made from steps/{name}.py by python -m workshop.make)\n"
        "# ruff: noqa: F401, F841 (what the TODOs need is imported; some of it is yet unused)\n"
    )
    return header + text


def _todo(number: int, name: str, lines: list[str], index: int, todo) -> tuple[int, list[str]]:
    """(the index after the block, its replacement) for the TODO at ``lines[index]``."""
    indent, words, line = todo["indent"], [todo["text"]], index + 1
    index += 1
    while index < len(lines) and (more := MORE.match(lines[index])):
        words.append(more["text"])
        index += 1
    start = index
    while index < len(lines) and not END.match(lines[index]):
        if TODO.match(lines[index]):
            break
        index += 1
    if index == len(lines) or not END.match(lines[index]):
        raise MarkerError(f"steps/{name}.py, line {line}: a TODO without its '# workshop end'")
    block = lines[start:index]
    message = f"TODO step {number}: {' '.join(words)}"
    if indent:
        return index + 1, _call(indent, "raise NotImplementedError", message)
    assigned = re.match(r"^(\w+) = ", block[0]) if len(block) == 1 else None
    if not assigned:
        raise MarkerError(
            f"steps/{name}.py, line {start + 1}: a top-level TODO must mark one assignment"
        )
    return index + 1, _call("", f"{assigned[1]} = workshop.Todo", message)


def _call(indent: str, callee: str, message: str) -> list[str]:
    """``callee("message")``, on one line if it fits, else over several, as ruff formats it."""
    one = f"{indent}{callee}({_quoted(message)})"
    if len(one) <= WIDTH:
        return [one]
    parts = textwrap.wrap(message, WIDTH - len(indent) - 6, drop_whitespace=False)
    return [
        f"{indent}{callee}(",
        *(f"{indent}    {_quoted(part)}" for part in parts),
        f"{indent})",
    ]


def _quoted(text: str) -> str:
    """``text`` as a string literal, in the quotes ruff prefers: double, unless single ones
    need fewer escapes."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _import_workshop(body: list[str], previous: list[str]) -> None:
    """``import workshop`` first among the first-party imports (isort's order), and the
    earlier steps that this one builds on, after the imports."""
    first = next(
        i for i, line in enumerate(body) if line.startswith(("from runtime", "from steps"))
    )
    body.insert(first, "import workshop")
    if not previous:
        return
    last = max(i for i, line in enumerate(body) if line.startswith(("from ", "import ")))
    body[last + 1 : last + 1] = [
        "",
        *(
            f'{step} = workshop.previous("{step}")  # yours, or the solution\'s'
            for step in previous
        ),
    ]


def recorded_hash(text: str) -> str | None:
    """The hash a skeleton recorded when it was made, if its header is intact."""
    lines = text.splitlines()
    found = HASH.match(lines[1]) if len(lines) > 1 else None
    return found["hash"] if found else None


def edited(text: str) -> bool:
    """Has a learner changed this skeleton since it was made?"""
    body = "".join(text.splitlines(keepends=True)[3:])
    return recorded_hash(text) != hashlib.sha256(body.encode()).hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workshop.make", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="write nothing; fail if stale")
    parser.add_argument("--force", action="store_true", help="overwrite edited skeletons too")
    options = parser.parse_args(argv)
    failed = False
    for number, name in sorted(solutions().items()):
        with open(os.path.join(REPO, "steps", f"{name}.py")) as file:
            try:
                wanted = skeleton(number, name, file.read())
            except MarkerError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
        path = os.path.join(HERE, f"{name}.py")
        try:
            with open(path) as file:
                current = file.read()
        except FileNotFoundError:
            current = None
        if current == wanted:
            continue
        shown = os.path.relpath(path, REPO)
        if options.check:
            print(f"{shown} is not what steps/{name}.py makes: run python -m workshop.make")
            failed = True
        elif current is not None and edited(current) and not options.force:
            print(f"{shown} has your edits: left as it is (--force overwrites it)")
            failed = True
        else:
            with open(path, "w") as file:
                file.write(wanted)
            print(f"wrote {shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
