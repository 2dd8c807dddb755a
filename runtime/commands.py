"""What ``mycontainer run`` and ``mycontainer load`` do, once their command lines are parsed:
by the fast path (runtime.launcher) or by click (runtime.cli).
"""

from __future__ import annotations

import os
import sys

from runtime.cgroups import format_size
from runtime.exits import interruptible
from runtime.progress import progress_on_terminal


def run(image: str, command: list[str], **options) -> int:
    """``mycontainer run``: create, start and wait for one container; then remove it
    (``--rm``) or keep it, stopped, until ``mycontainer rm``. With ``--detach``, return once
    it runs, leaving a monitor behind (runtime.detached).

    ``options`` are RUN_OPTIONS' values by name (``hostname``, ``memory``, ``cpu_weight``...).

    The store stays locked (shared) from finding the image until the container's state
    names its layers: ``rmi`` and ``prune`` wait, and never remove them in between.
    Container.run lets go of it once the container is created.
    """
    from runtime import container, state
    from runtime import image as images

    container.check_host()
    name, remove = options.pop("name", None), options.pop("rm", False)
    detach, interactive = options.pop("detach", False), options.pop("interactive", False)
    if name:
        state.check_name_free(container.state_root(), name)  # before anything is made
    if not (interactive or options.get("tty") or detach):
        _no_stdin()
    with images.StoreLock() as store:
        with interruptible():  # an image file may be imported: undone if interrupted
            found = images.resolve(
                image,
                progress=progress_on_terminal(),
                pull=options.pop("pull", None) or "missing",
                pulling=_puller(options.pop("platform", None)),
            )
        entrypoint = options.pop("entrypoint", None)
        env = found.environment()
        for variables in options.pop("env_file", []):  # then --env, which wins, as docker's
            env.update(variables)
        env.update((key, value) for key, value in options.pop("env", []) if value is not None)
        read_only = options.pop("read_only", False)
        mounts = _mounts(options.pop("volume", []), options.pop("tmpfs", []), read_only)
        config = container.Config(
            found.lower_directories(),
            found.command_line(command, entrypoint),
            image=found.name,
            env=env,
            cwd=options.pop("workdir", None) or found.config.get("WorkingDir") or "/",
            user=options.pop("user", None) or found.config.get("User") or None,
            mounts=mounts,
            readonly=read_only,
            **options,
        )
        if detach:
            from runtime import detached

            print(detached.run(config, name, remove, interactive, store.release))
            return 0
        box = container.Container(config, name=name, remove=remove, autoremove=remove)
        try:  # once the container stacks its layers, rmi and prune may go on
            code = box.run(created=store.release)
        finally:
            if box.leftovers:  # the command's exit code stands; this is one more line
                sys.stderr.write(f"mycontainer: warning: {box.leftovers}\n")
    if box.oom_killed:
        limit = f" (limit {format_size(config.memory)})" if config.memory else ""
        sys.stderr.write(f"mycontainer: container killed: out of memory{limit}\n")
    return code


def _puller(platform: str | None):
    """How ``run`` pulls IMAGE (runtime.image.resolve): imported only then."""

    def pulling(reference: str):
        from runtime import pull

        return pull.for_run(reference, platform)

    return pulling


def _no_stdin() -> None:
    """Without -i, the container's stdin is /dev/null, as docker's: what is typed or piped
    here is not the container's (its init inherits our descriptor 0)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _mounts(volume_mounts: list, tmpfs_mounts: list, read_only: bool) -> list[dict]:
    """docker's default mounts and those of -v, --tmpfs and --read-only (runtime.runmounts),
    named volumes made: under the store's lock, which the caller holds."""
    from runtime import filesystem, runmounts
    from runtime.container import ContainerError

    try:
        return runmounts.for_run(filesystem.DEFAULT_MOUNTS, volume_mounts, tmpfs_mounts, read_only)
    except ValueError as error:  # a volumes.VolumeError too
        raise ContainerError(str(error)) from None


def load(file: str) -> int:
    """``mycontainer load``: import an image file into the store and print its name."""
    from runtime import container, image

    container.check_host()
    with interruptible():
        loaded = image.load(file, progress=progress_on_terminal())
    print(loaded.name)
    return 0
