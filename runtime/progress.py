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


class LayerProgress:
    """docker pull's display: a line per layer (waiting, downloading with bytes and rate,
    verifying, done), redrawn in place on a terminal; elsewhere (a log, a pipe), one line
    per layer as it is done. ``stream`` None shows nothing.

    ``report(index, event)`` takes runtime.image.import_streams's events; ``receiver(index)``
    is told the bytes received so far, from the thread fetching the layer.
    """

    def __init__(self, digests: list[str], sizes: list[int], stream):
        import threading
        import time

        self.clock = time.monotonic
        self.stream = stream
        self.terminal = bool(stream) and stream.isatty()
        self.names = [digest.partition(":")[2][:12] for digest in digests]
        self.sizes = sizes
        self.states = ["waiting"] * len(digests)
        self.received = [0] * len(digests)
        self.started = [0.0] * len(digests)
        self.lock = threading.Lock()
        self.drawn = 0  # lines on the screen
        self.last_draw = 0.0

    def receiver(self, index: int):
        def received(count: int) -> None:
            self.received[index] = count
            if self.terminal and self.clock() - self.last_draw >= 0.1:
                self._draw()

        return received

    def report(self, index: int, event: str) -> None:
        self.states[index] = event
        if event == "unpacking":
            self.started[index] = self.clock()
        if self.terminal:
            self._draw()
        elif self.stream and event in ("exists", "done"):
            self.stream.write(self._line(index) + "\n")
            self.stream.flush()

    def close(self) -> None:
        """The last picture (the lines stay, as docker's)."""
        if self.terminal:
            self._draw()

    def _line(self, index: int) -> str:
        state, size = self.states[index], self.sizes[index]
        if state == "unpacking":
            seconds = max(self.clock() - self.started[index], 1e-3)
            done = self.received[index]
            text = f"downloading {_megabytes(done)}/{_megabytes(size)} MB"
            text += f"  {_megabytes(done / seconds)} MB/s, unpacking"
        else:
            text = {
                "waiting": "waiting",
                "verifying": "verifying",
                "done": f"pull complete ({_megabytes(size)} MB)",
                "exists": "already exists",
            }[state]
        return f"{self.names[index]}: {text}"

    def _draw(self) -> None:
        with self.lock:
            self.last_draw = self.clock()
            up = f"\x1b[{self.drawn}A" if self.drawn else ""
            lines = "".join(f"\r\x1b[K{self._line(i)}\n" for i in range(len(self.names)))
            self.stream.write(up + lines)
            self.stream.flush()
            self.drawn = len(self.names)


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.1f}"
