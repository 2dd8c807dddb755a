"""Step 2: process ids of its own, with the PID namespace.

Adds CLONE_NEWPID to step 1. The first process born in a new PID namespace is its PID 1,
its init (pid_namespaces(7)): ``sh -c 'echo $$'`` prints 1. But ``ps`` still lists the
host's processes: it reads /proc, and this /proc is still the host's. Step 3 mounts a new one.
Try: ``sudo .venv/bin/python -m steps.step2_pid -- sh -c 'echo $$'``.
"""

from __future__ import annotations

import sys

from runtime import namespaces
from steps import common, step1_uts

# workshop TODO: step 1's namespaces and a new PID one, CLONE_NEWPID (pid_namespaces(7))
NAMESPACES = step1_uts.NAMESPACES | namespaces.PID
# workshop end

# Nothing new to set up inside: being born in the new namespace is the whole change.
setup = step1_uts.setup


def main(argv: list[str] | None = None) -> int:
    options = common.parse_args(__doc__, argv)
    return common.run(NAMESPACES, lambda: setup(options.hostname), options.command)


if __name__ == "__main__":
    sys.exit(main())
