"""``python -m workshop.checks N``: run step N's checks on the learner's program, print each
one's verdict and, for a failure, a hint that grows more specific with each failed try.
``--exercise K`` runs the checks of the chapter's exercise K instead (stepN_exercises);
step 9, which has no program of its own (the learner drives mycontainer-oci by hand), has
those only.

Exit status: 0 if every check passes, 1 if one fails, 2 if the checks cannot run (no such
step, no such program, not root, the busybox image not built), 130 on Ctrl-C. Nothing of
the checker's own reaches the learner as a traceback: what cannot run says so in one line.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import os
import sys
import textwrap

from workshop.checks import sandbox, tries
from workshop.checks.check import Check, Exercise, Unprepared

STEPS = range(1, 10)
EXERCISES_ONLY = (9,)  # steps without a program of their own: their exercises are their checks
LEVELS = ("the concept", "the call", "the line")
WIDTH = 100


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="invoke check",
        description="Check your step N: run it as a user would, and say what works.",
    )
    parser.add_argument(
        "number", type=int, choices=STEPS, metavar="N", help="the step, 1 to 9 (9: --exercise)"
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--solution", action="store_true", help="check the solution (steps/) instead of yours"
    )
    which.add_argument("--module", help="check this module instead (run as python -m MODULE)")
    parser.add_argument(
        "--exercise", type=int, metavar="K", help="check exercise K of the chapter instead"
    )
    options = parser.parse_args(argv)
    if options.number in EXERCISES_ONLY and options.exercise is None:
        parser.exit(2, f"invoke check: {exercises_only(options.number)}\n")
    if options.exercise is not None and options.solution:
        parser.error(
            "the exercises' solutions are in the chapter, folded under each exercise: "
            "--solution checks the steps only"
        )
    return options


def exercises_only(number: int) -> str:
    """Why step ``number`` has no checks but its exercises', with the options to use."""
    checked = sorted(importlib.import_module(f"workshop.checks.step{number}_exercises").EXERCISES)
    options = " or ".join(f"--exercise {which}" for which in checked)
    return f"step {number} has no program of its own: its checks are its exercises' ({options})"


def exercise(number: int, which: int) -> Exercise | str:
    """Exercise ``which`` of step ``number``'s chapter, or why it has no checker (one line)."""
    try:
        exercises = importlib.import_module(f"workshop.checks.step{number}_exercises").EXERCISES
    except ModuleNotFoundError:
        exercises = {}
    if which in exercises:
        return exercises[which]
    checked = ", ".join(map(str, sorted(exercises))) or "none"
    return (
        f"exercise {which} of step {number} has no checker (those with one: {checked}); "
        "the table of docs/workshop.md, Check an exercise, says why"
    )


def find_module(number: int, solution: bool) -> tuple[str, str] | None:
    """(module, file) of the learner's step N (workshop/stepN_*.py) or of its solution."""
    folder = "steps" if solution else "workshop"
    paths = sorted(glob.glob(os.path.join(sandbox.REPO, folder, f"step{number}_*.py")))
    if not paths:
        return None
    return f"{folder}.{os.path.basename(paths[0]).removesuffix('.py')}", paths[0]


def syntax_error(path: str) -> str:
    """The first syntax error of the file at ``path``, in one line; empty if it has none."""
    try:
        with open(path, "rb") as file:
            compile(file.read(), path, "exec")
    except SyntaxError as error:
        return f"{shown(path)}, line {error.lineno}: {error.msg}"
    except OSError as error:
        return f"cannot read {path}: {error.strerror}"
    return ""


def shown(path: str) -> str:
    """``path`` relative to the repository if it is inside it."""
    inside = path.startswith(sandbox.REPO + os.sep)
    return os.path.relpath(path, sandbox.REPO) if inside else path


def wrapped(label: str, text: str) -> str:
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent=f"      {label}",
        subsequent_indent=" " * 8,
        break_long_words=False,  # a path or a call stays whole, to copy
        break_on_hyphens=False,
    )


def run_checks(title: str, scene, checks: list[Check], module: str, path: str) -> int:
    """Run ``checks`` on ``module`` in ``scene()``, print their verdicts under ``title``."""
    program = sandbox.Program(module)
    counts = tries.load()
    before = dict(counts)
    failed = 0
    print(f"{title}: checking {module} ({shown(path)})")
    with scene() as prepared:
        for check in checks:
            try:
                seen = check.observe(program, prepared)
            except Exception as error:  # the checker's own fault: no try counted
                failed += 1
                print(f"ERROR {check.says}")
                print(wrapped("", f"the checker could not run this check ({error}); tell "
                                  "your instructor, the fault is not yours"))  # fmt: skip
                continue
            key = f"{module} {check.key}"
            if seen is None:
                counts.pop(key, None)
                print(f"PASS  {check.says}")
                continue
            failed += 1
            counts[key] = counts.get(key, 0) + 1
            level = min(counts[key], len(check.hints))
            print(f"FAIL  {check.says}")
            print(wrapped("seen: ", seen))
            print(wrapped(f"hint {level} of 3, {LEVELS[level - 1]}: ", check.hints[level - 1]))
    try:
        if counts != before:  # a first pass writes nothing
            tries.save(counts)
    except OSError as error:
        print(f"(cannot remember the tries in {tries.path()}: {error.strerror})")
    total = len(checks)
    if failed:
        print(
            f"{title}: {failed} of {total} checks failed; fix, then check again: "
            "each failed try gives a more specific hint"
        )
        return 1
    print(f"{title}: all {total} checks pass")
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # each verdict as soon as it is known
    options = parse(argv)
    number = options.number
    title, chosen_module = f"step {number}", ""
    if options.exercise is not None:
        chosen = exercise(number, options.exercise)
        if isinstance(chosen, str):
            print(f"invoke check: {chosen}", file=sys.stderr)
            return 2
        title, chosen_module = f"step {number}, exercise {options.exercise}", chosen.module
        scene, checks = chosen.scene, chosen.checks
    else:
        steps = importlib.import_module(f"workshop.checks.step{number}")
        scene, checks = steps.scene, steps.CHECKS
    if options.module:
        try:
            spec = importlib.util.find_spec(options.module)
        except (ImportError, ValueError):
            spec = None
        if not spec or not spec.origin or not os.path.isfile(spec.origin):
            print(f"invoke check: no module {options.module}", file=sys.stderr)
            return 2
        module, path = options.module, spec.origin
    elif chosen_module:  # a script missing is not written yet: the checks say so, with hint 1
        module, path = chosen_module, os.path.join(sandbox.REPO, chosen_module)
        if not chosen_module.endswith(".sh"):  # a module: its file
            path = os.path.join(sandbox.REPO, *chosen_module.split("."))
            path = os.path.join(path, "__main__.py") if os.path.isdir(path) else f"{path}.py"
    else:
        found = find_module(number, options.solution)
        if not found:
            print(
                f"invoke check: there is no workshop/step{number}_*.py, your step {number}, "
                "yet: --solution checks the solution in steps/ instead",
                file=sys.stderr,
            )
            return 2
        module, path = found
    if os.geteuid() != 0:
        print("invoke check: the steps need root: run it with sudo", file=sys.stderr)
        return 2
    problem = syntax_error(path) if path.endswith(".py") and os.path.exists(path) else ""
    if problem:
        print(f"{title}: {problem}: fix it, then check again")
        return 1
    try:
        return run_checks(title, scene, checks, module, path)
    except Unprepared as error:
        print(f"invoke check: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("invoke check: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a fault of the checker's: one line, not its traceback
        print(
            f"invoke check: the checker failed ({error!r}): tell your instructor", file=sys.stderr
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
