"""The progress bar of an image import, drawn on stderr when it is a terminal."""

from __future__ import annotations

import sys

PROGRESS_WIDTH = 30  # characters of the import progress bar


def progress_on_terminal():
    """A progress bar for imports when stderr is a terminal (else None): how much of the
    layers' compressed bytes the unpacking has read. It is erased when the import is done."""
    if not sys.stderr.isatty():
        return None
    on_screen = ""

    def show(done: int, total: int) -> None:
        nonlocal on_screen
        line = ""
        if done < total:
            filled = PROGRESS_WIDTH * done // total
            bar = "#" * filled + "." * (PROGRESS_WIDTH - filled)
            line = f"unpacking [{bar}] {100 * done // total:3d}%  {done >> 20}/{total >> 20} MiB"
        if line != on_screen:
            sys.stderr.write(f"\r\x1b[K{line}")  # \x1b[K: erase the rest of the line
            sys.stderr.flush()
            on_screen = line

    return show
