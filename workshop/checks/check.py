"""A check: one thing a user observes of a working step, and three hints for when it fails."""

from __future__ import annotations

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
