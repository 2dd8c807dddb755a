"""A check: one thing a user observes of a working step, and three hints for when it fails;
an exercise: the checks of one exercise of a chapter."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """``observe(program, scene)`` runs the learner's program (a sandbox.Program) and returns
    None if the user would see what ``says``, else one line of what they see instead.
    ``scene`` is what the step's module prepared for all its checks (a rootfs, an image, a
    running container).

    ``hints`` get more specific with each failed try: the concept (and its man page), the
    call that does it, the line to write. The line hint quotes the solution (steps/) word
    for word between backquotes; tests/test_checks.py holds it to that.
    """

    key: str  # names the check in the tries file: never reword it
    says: str
    observe: Callable
    hints: tuple[str, str, str]


class Unprepared(Exception):
    """What a step's checks need could not be made (the busybox image is not built, say):
    one line saying what to do."""


@contextlib.contextmanager
def nothing():
    """The scene of checks that need none prepared."""
    yield None


@dataclass(frozen=True)
class Exercise:
    """The checks of one exercise of a chapter, ``invoke check N --exercise K``.

    ``module`` names the program the checks run: one the exercise asks the learner to
    write, in the repository's top directory (``uts_enter`` for uts_enter.py; a name with
    ``.sh`` is a shell script, byhand.sh), or ``runtime`` (``mycontainer``) for an exercise
    that changes the runtime; without it, the learner's step N, changed as the exercise
    asks. ``scene`` prepares what the checks share, as a step's does."""

    checks: list[Check]
    module: str = ""
    scene: Callable = nothing
