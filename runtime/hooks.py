"""Hooks: programs an engine asks the runtime to run at points of a container's lifecycle.

config.json's ``hooks`` (config.md, "POSIX-platform Hooks") names six kinds. Each hook is a
program (``path``, absolute, with ``args`` starting at argv[0], ``env`` and a ``timeout`` in
seconds) that gets the container's State on its stdin, as ``state ID`` prints it. When each
kind runs, where, and what a failure does:

==================  ==============================  ========================  ==================
kind                when                            where                     if it fails
==================  ==============================  ========================  ==================
prestart            create, the container set up    the runtime's namespaces  create fails
createRuntime       create, right after prestart    the runtime's namespaces  create fails
createContainer     create, after createRuntime     the container's           create fails
startContainer      start, before the program runs  the container's           start fails
poststart           start, once the program runs    the runtime's namespaces  a warning
poststop            delete, once all is removed     the runtime's namespaces  a warning
==================  ==============================  ========================  ==================

(The spec places the first three before pivot_root; mycontainer's init pivots as part of its
setup, so they run right after it, with the container otherwise ready: the engines' hooks,
such as a network plugin's, need its namespaces, which exist by then.) podman and CRI-O use
them for OCI hooks (e.g. the NVIDIA container toolkit); runc and crun run them the same way.

"In the container's namespaces" means the hook process joins the init's namespaces with
setns(2) before it executes, so its ``path`` resolves inside the container.

Spec: https://github.com/opencontainers/runtime-spec/blob/main/config.md#posix-platform-hooks
"""

from __future__ import annotations

import os
import subprocess
import sys

from runtime.syscalls import setns

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
IN_CONTAINER = ("createContainer", "startContainer")
WARN_ONLY = ("poststart", "poststop")
NAMESPACES = ("ipc", "uts", "net", "pid", "cgroup", "mnt")  # mnt last: it changes the root


class HookError(Exception):
    """A hook of a kind that must succeed failed; the message names it and why."""


def run(hooks: dict, kind: str, state_json: str, pid: int = 0) -> None:
    """Run the ``kind`` hooks of config.json's ``hooks`` object, in order, each given
    ``state_json`` on stdin. ``pid``: the init whose namespaces IN_CONTAINER kinds join.

    A failure of a WARN_ONLY kind is written to stderr and the next hook runs; of any other
    kind it raises HookError, and the remaining hooks do not run.
    """
    for index, hook in enumerate(hooks.get(kind) or []):
        try:
            _run_one(hook, state_json, pid if kind in IN_CONTAINER else 0)
        except HookError as error:
            message = f"{kind} hook {index} ({hook.get('path')}): {error}"
            if kind not in WARN_ONLY:
                raise HookError(message) from None
            sys.stderr.write(f"mycontainer-oci: warning: {message}\n")


def _run_one(hook: dict, state_json: str, pid: int) -> None:
    """Execute one hook and wait for it; raise HookError unless it exits 0 in time."""
    args = hook.get("args") or [hook["path"]]
    try:
        child = subprocess.Popen(
            args,
            executable=hook["path"],
            env=dict(entry.partition("=")[::2] for entry in hook.get("env", [])),
            stdin=subprocess.PIPE,
            preexec_fn=(lambda: _join_namespaces(pid)) if pid else None,
            close_fds=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise HookError(f"cannot run it: {error}") from None
    try:
        child.communicate(state_json.encode(), timeout=hook.get("timeout"))
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        raise HookError(f"timed out after {hook['timeout']} s") from None
    except BrokenPipeError:
        child.wait()  # it did not read its stdin: that is its business
    if child.returncode != 0:
        raise HookError(f"exited with {child.returncode}")


def _join_namespaces(pid: int) -> None:
    """In the hook's child, before execve: enter the namespaces of process ``pid``."""
    descriptors = []
    for name in NAMESPACES:
        try:
            descriptors.append(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            continue  # a kernel without that kind
    for fd in descriptors:
        setns(fd)
        os.close(fd)
