"""How many times each check has failed in a row: the hint grows more specific with each.

A small JSON file, ``workshop/checks/.tries.json`` (git ignores it), or the file that
``MYCONTAINER_WORKSHOP_TRIES`` names: ``{"MODULE CHECK": failures}``. A pass forgets the
count, so a check that breaks again later starts over at the first hint.
"""

from __future__ import annotations

import json
import os

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".tries.json")


def path() -> str:
    return os.environ.get("MYCONTAINER_WORKSHOP_TRIES") or DEFAULT


def load() -> dict[str, int]:
    """The counts; none if the file is missing or unreadable (a hint too vague, no harm)."""
    try:
        with open(path()) as file:
            counts = json.load(file)
    except (OSError, ValueError):
        return {}
    if not isinstance(counts, dict):
        return {}
    return {key: value for key, value in counts.items() if isinstance(value, int)}


def save(counts: dict[str, int]) -> None:
    """Write the counts whole, through a new file renamed over the old one."""
    target = path()
    temporary = f"{target}.{os.getpid()}"
    with open(temporary, "w") as file:
        json.dump(counts, file, indent=1, sort_keys=True)
    os.replace(temporary, target)
