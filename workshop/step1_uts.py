# Step 1, for you to write: the TODOs say what to do and which man page to read.
# (skeleton a896f8286c54, made from steps/step1_uts.py by python -m workshop.make)
# ruff: noqa: F401, F841 (what the TODOs need is imported; some of it is yet unused)
"""Step 1: a hostname of its own, with the UTS namespace.

The UTS namespace holds two strings, the hostname and the NIS domain name
(uts_namespaces(7)). A process that unshares it may rename "its" machine without renaming
the host. Try: ``sudo .venv/bin/python -m workshop.step1_uts --hostname box -- hostname``.
"""

from __future__ import annotations

import sys

import workshop
from runtime import namespaces
from steps import common

NAMESPACES = workshop.Todo(
    "TODO step 1: the namespaces to unshare: a new UTS one, CLONE_NEWUTS (uts_namespaces(7))"
)


def setup(hostname: str) -> None:
    """Runs inside the new namespaces, before the command: name the new UTS namespace."""
    raise NotImplementedError("TODO step 1: name the new UTS namespace `hostname`: sethostname(2)")


def main(argv: list[str] | None = None) -> int:
    options = common.parse_args(__doc__, argv)
    return common.run(NAMESPACES, lambda: setup(options.hostname), options.command)


if __name__ == "__main__":
    sys.exit(main())
