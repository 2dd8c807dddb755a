"""Step 1: a hostname of its own, with the UTS namespace.

The UTS namespace holds two strings, the hostname and the NIS domain name
(uts_namespaces(7)). A process that unshares it may rename "its" machine without renaming
the host. Try: ``sudo .venv/bin/python -m steps.step1_uts --hostname box -- hostname``.
"""

from __future__ import annotations

import sys

from runtime import namespaces
from steps import common

# workshop TODO: the namespaces to unshare: a new UTS one, CLONE_NEWUTS (uts_namespaces(7))
NAMESPACES = namespaces.UTS
# workshop end


def setup(hostname: str) -> None:
    """Runs inside the new namespaces, before the command: name the new UTS namespace."""
    # workshop TODO: name the new UTS namespace `hostname`: sethostname(2)
    namespaces.set_hostname(hostname)
    # workshop end


def main(argv: list[str] | None = None) -> int:
    options = common.parse_args(__doc__, argv)
    return common.run(NAMESPACES, lambda: setup(options.hostname), options.command)


if __name__ == "__main__":
    sys.exit(main())
