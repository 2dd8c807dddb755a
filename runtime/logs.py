"""``mycontainer logs``: what a detached container wrote, from the log its monitor keeps.

The log is docker's json-file format, one record a line (runtime.monitor writes it)::

    {"log":"hello\\n","stream":"stdout","time":"2026-12-05T10:00:00.123456789Z"}

so each piece of output keeps which stream it went to and when. Past its size cap the log
was renamed ``<log>.1``: the older records are there, read first.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _records(path: str) -> list[dict]:
    """The records of one log file; a line cut short (being written) is left out."""
    try:
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def _show(record: dict, timestamps: bool) -> None:
    stream = sys.stderr if record.get("stream") == "stderr" else sys.stdout
    text = record.get("log", "")
    stream.write(f"{record.get('time', '')} {text}" if timestamps else text)
    stream.flush()


def show(path: str, tail: int | None, timestamps: bool, follow, running) -> None:
    """Print the log at ``path``: its last ``tail`` records (None: all), each on the
    stream it was written to, with its time if ``timestamps``. With ``follow``, go on
    printing what comes until ``running()`` says the container has ended."""
    records = _records(path + ".1") + _records(path)
    for record in records[-tail:] if tail is not None else records:
        if tail != 0:
            _show(record, timestamps)
    if not follow:
        return
    position, inode = _size_and_inode(path)
    pending = b""
    while True:
        ended = not running()  # asked before reading: what came before the end is shown
        size, now_inode = _size_and_inode(path)
        if now_inode != inode or size < position:  # rotated: the new file from its start
            position, inode = 0, now_inode
        if size > position:
            with open(path, "rb") as file:
                file.seek(position)
                data = file.read()
            position += len(data)
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                try:
                    _show(json.loads(line), timestamps)
                except ValueError:
                    continue
        elif ended:
            return
        else:
            time.sleep(0.1)


def _size_and_inode(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return 0, 0
    return info.st_size, info.st_ino
