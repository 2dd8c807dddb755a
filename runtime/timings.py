"""``MYCONTAINER_TIMINGS=1``: where the milliseconds of a ``mycontainer run`` go, on stderr.

With the variable set (to anything but ``0``), the launcher calls :func:`instrument` before
it parses the command line: the functions that PHASES names are wrapped, each in a timer
that writes one line to stderr when its phase ends::

    mycontainer: timing: cgroups                0.9 ms  step 4: the container's cgroup, its limits

A phase nested in another is indented under it and comes before it, as it ends first
(``python -X importtime`` prints its tree the same way). The phases of the container's
init run in that process, after fork(2): their lines come from there, in their place, at
the moment they end. The clock is CLOCK_MONOTONIC (``time.perf_counter_ns``), the same in
every process. The first line is the interpreter's own start, measured as the CPU time the
process had used until then (its wall time is not known from inside); the last is the
total, and the one before it what no phase of the top level covered.

Unset, none of this runs: the launcher looks the variable up, and imports nothing more.
Wrapping from here, rather than timing calls written into the code of each phase, keeps
those functions as the lessons show them.
"""

from __future__ import annotations

import importlib
import os
import time

# The timed functions, in the order a run calls them: (phase, what it is, module, function;
# Class.method for a method). Each is wrapped where its callers look it up: a function
# imported by name into another module (``from runtime.namespaces import enter_new``) is
# wrapped in that module.
PHASES = (
    ("image", "step 5: the image found in the store", "runtime.image", "resolve"),
    ("cgroup layout", "the host's cgroup hierarchies read", "runtime.cgroups", "detect"),
    ("create", "the container made, its program waiting", "runtime.container", "Container.create"),
    ("prune", "what dead runs left behind, removed", "runtime.container", "prune"),
    ("state", "the state directory, locked", "runtime.state", "make"),
    ("cgroups", "step 4: the container's cgroup, its limits", "runtime.cgroups", "Cgroup.create"),
    ("devices", "step 4: the device filter", "runtime.devices", "restrict"),
    ("storage", "the writable layer's directory", "runtime.container", "make_storage_directory"),
    ("network", "step 6: an address, /etc files", "runtime.network", "Network.prepare"),
    ("spawn", "step 2: fork(2), the init set up", "runtime.process", "spawn"),
    ("join cgroup", "step 4: the intermediate's", "runtime.cgroups", "Cgroup.join"),
    ("namespaces", "steps 1-3: unshare(2)", "runtime.process", "enter_new"),
    ("hostname", "step 1", "runtime.namespaces", "set_hostname"),
    ("loopback", "step 6: lo up", "runtime.network", "bring_up"),
    ("overlay", "step 5: the layers mounted", "runtime.filesystem", "mount_layers"),
    ("rootfs", "step 3: mounts, devices, pivot_root(2)", "runtime.filesystem", "enter_rootfs"),
    ("masked paths", "step 7: /proc and /sys", "runtime.security", "Boundaries.protect_paths"),
    ("veth", "step 6: the init's namespace plugged in", "runtime.network", "Network.connect"),
    ("start", "the gate opened, until execve(2)", "runtime.container", "Container.start"),
    ("program", "the program ran, until it exited", "runtime.container", "Container.wait"),
    ("network release", "step 6: veth, ports, address", "runtime.network", "Network.release"),
    ("cgroup removal", "step 4: the container's groups", "runtime.cgroups", "Cgroup.remove"),
    ("storage removal", "the writable layer", "runtime.removal", "remove_tree"),
    ("state removal", "the state directory", "runtime.state", "remove"),
    ("delete", "--rm: all of it removed", "runtime.container", "Container.delete"),
    ("stop", "kept: network and cgroups released", "runtime.container", "Container.stop"),
)

_depth = 0  # of the phase running now: 0 at the top level
_covered = 0  # ns spent in phases of the top level
_began = 0  # perf_counter_ns() when instrument() was called
_startup = 0  # ns of CPU time the process had used by then


def instrument() -> None:
    """Wrap every function of PHASES, and ``commands.run`` for the totals; report the
    interpreter's start, and the import of the modules wrapped (a run would import some of
    them later, during its phases; here they are imported at once, to be wrapped)."""
    global _began, _startup
    _began, _startup = time.perf_counter_ns(), time.process_time_ns()
    _line(0, "startup", _startup, "the interpreter, until main() (CPU time)")
    for phase, what, module_name, attribute in PHASES:
        owner = importlib.import_module(module_name)
        *classes, name = attribute.split(".")
        for class_name in classes:
            owner = getattr(owner, class_name)
        setattr(owner, name, _timed(getattr(owner, name), phase, what))
    commands = importlib.import_module("runtime.commands")
    commands.run = _totalled(commands.run)
    _end_top("imports", _began, "the runtime's modules")


def _timed(function, phase: str, what: str):
    def timed(*args, **kwargs):
        global _depth
        began = time.perf_counter_ns()
        _depth += 1
        try:
            return function(*args, **kwargs)
        finally:
            _depth -= 1
            if _depth:
                _line(_depth, phase, time.perf_counter_ns() - began, what)
            else:
                _end_top(phase, began, what)

    return timed


def _totalled(run):
    """``commands.run`` wrapped: the options phase ends where it begins; the total and what
    no phase covered are written when it returns (or raises)."""

    def totalled(*args, **kwargs):
        _end_top("options", _began + _covered, "the command line parsed")
        try:
            return run(*args, **kwargs)
        finally:
            total = _startup + time.perf_counter_ns() - _began
            _line(0, "other", total - _startup - _covered, "in no phase above")
            _line(0, "total", total, "startup + the wall time since")

    return totalled


def _end_top(phase: str, began: int, what: str) -> None:
    """A phase of the top level, begun at ``began``, ends now."""
    global _covered
    took = time.perf_counter_ns() - began
    _covered += took
    _line(0, phase, took, what)


def _line(depth: int, phase: str, nanoseconds: int, what: str) -> None:
    # os.write: unbuffered, as the init exits by os._exit(2) or execve(2)
    name = "  " * depth + phase
    os.write(2, f"mycontainer: timing: {name:<18} {nanoseconds / 1e6:7.1f} ms  {what}\n".encode())
