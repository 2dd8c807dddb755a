"""The workshop: the lab's steps for learners to write themselves.

``workshop/stepN_*.py`` is step N's program with its key calls replaced by TODOs, each
saying what to do and which man page to read; ``python -m workshop.make`` generates them
from the solutions, ``steps/stepN_*.py``, where ``# workshop TODO: ...`` and
``# workshop end`` comments mark those calls. A skeleton imports and runs with the step's
command line (``sudo .venv/bin/python -m workshop.step1_uts --hostname box -- hostname``) until it
reaches a TODO, which raises NotImplementedError("TODO step 1: ...").

A learner's step N builds on their own step N-1 (:func:`previous`), or, with
``WORKSHOP_SOLUTION=N-1`` in the environment, on the solutions of steps 1 to N-1: so that
nobody stuck at step 3 is left behind at step 4.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import NoReturn

SWITCH = "WORKSHOP_SOLUTION"


def solved() -> int:
    """The last step whose solution stands in for the learner's: $WORKSHOP_SOLUTION, or 0."""
    value = os.environ.get(SWITCH, "0")
    try:
        return int(value)
    except ValueError:
        raise SystemExit(
            f"error: {SWITCH} is a step number, 1 to 8 (got {value!r}): steps up to it are "
            "the solutions'"
        ) from None


def previous(name: str) -> ModuleType:
    """Step ``name`` (``step3_mount``, say) as a learner's later step builds on it: the
    learner's own ``workshop/step3_mount.py``, or the solution ``steps/step3_mount.py`` when
    $WORKSHOP_SOLUTION is 3 or more."""
    number = int(name.removeprefix("step").split("_")[0])
    package = "steps" if number <= solved() else "workshop"
    return importlib.import_module(f"{package}.{name}")


class Todo:
    """A value the learner has yet to write: a skeleton's NAMESPACES, say. Combined with a
    flag (the next step's ``|``) it stays itself, so that later steps still import; used as
    a number (common.run's unshare flags) it raises NotImplementedError with what to do.

    It raises from the TODO's own line, not from where the value is used (``main()``'s
    ``common.run(NAMESPACES, ...)``): the traceback ends there, and the checker, which names
    the last line of the learner's file in it, names the TODO's.
    """

    def __init__(self, message: str):
        self.message = message
        made_by = sys._getframe(1)  # the skeleton's top level, at the TODO's line
        self.file, self.line = made_by.f_code.co_filename, made_by.f_lineno

    def __or__(self, _other) -> Todo:
        return self

    __ror__ = __or__

    def __index__(self) -> NoReturn:
        # A raise compiled as if it stood on the TODO's line of the skeleton: the traceback's
        # last frame, which Python prints with that line's text (as jinja2 points a
        # traceback at a template's line).
        raise_there = compile("\n" * (self.line - 1) + "raise error", self.file, "exec")
        exec(raise_there, {"error": NotImplementedError(self.message)})

    def __repr__(self) -> str:
        return f"Todo({self.message!r})"
