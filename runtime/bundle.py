"""An OCI bundle: a directory with a root filesystem and a ``config.json`` that says how to
run it (runtime-spec bundle.md). This module turns a bundle's configuration into the
runtime's :class:`runtime.container.Config`, the one the lifecycle takes whatever the
container came from (an image and docker's flags, or an engine's bundle).

Spec: https://github.com/opencontainers/runtime-spec/blob/main/bundle.md,
https://github.com/opencontainers/runtime-spec/blob/main/config.md
"""

from __future__ import annotations

import os

from runtime import namespaces
from runtime.container import Config, ContainerError
from runtime.process import Program

# linux.namespaces types, and the flag of each (config-linux.md, "Namespaces").
NAMESPACE_FLAGS = {
    "pid": namespaces.PID,
    "network": namespaces.NET,
    "mount": namespaces.MOUNT,
    "ipc": namespaces.IPC,
    "uts": namespaces.UTS,
    "cgroup": namespaces.CGROUP,
    "user": namespaces.USER,
}


class BundleError(ContainerError):
    """A bundle cannot be run as it is; the message names the field."""


def to_config(spec: dict, bundle: str) -> Config:
    """The runtime's Config for the bundle's checked ``spec`` (runtime.spec.load's output)."""
    process = spec["process"]
    linux = spec.get("linux", {})
    flags, join = 0, []
    for entry in linux.get("namespaces", []):
        if entry.get("path"):
            join.append((NAMESPACE_FLAGS[entry["type"]], entry["path"]))
        else:
            flags |= NAMESPACE_FLAGS[entry["type"]]
    if not (flags & namespaces.MOUNT or any(flag == namespaces.MOUNT for flag, _ in join)):
        # The runtime's own mount namespace: pivot_root(2) there would move the root of
        # every process that shares it, the host's included.
        raise BundleError(
            "config.json: linux.namespaces: a mount namespace is required (add "
            '{"type": "mount"}): mycontainer never sets up a root in its own'
        )
    id_mappings = None
    if flags & namespaces.USER:
        from runtime import userns

        id_mappings = (linux["uidMappings"], linux["gidMappings"])
        try:
            userns.check_reachable(spec["root"]["path"], *id_mappings)
        except userns.UserNamespaceError as error:
            raise BundleError(str(error)) from None
    resources = linux.get("resources", {})
    return Config(
        [],
        list(process["args"]),
        hostname=spec.get("hostname") or None,
        env=dict(item.partition("=")[::2] for item in process.get("env", [])),
        cwd=process.get("cwd", "/"),
        memory=resources.get("memory", {}).get("limit"),
        pids_limit=resources.get("pids", {}).get("limit"),
        net="none",  # an engine plugs its network in itself (CNI, netavark)
        rootfs=spec["root"]["path"],
        namespaces=flags,
        join=join,
        id_mappings=id_mappings,
        annotations=spec.get("annotations", {}),
        hooks=spec.get("hooks", {}),
        mounts=spec.get("mounts", []),
        devices=linux.get("devices", []),
        readonly=bool(spec["root"].get("readonly")),
        propagation=linux.get("rootfsPropagation"),
        sysctl=linux.get("sysctl", {}),
        spec=spec,
        resources=resources,
        cgroups_path=linux.get("cgroupsPath") or None,
        tty=bool(process.get("terminal")),
        console_size=process.get("consoleSize"),
    )


def load(bundle: str) -> dict:
    """The bundle's config.json, checked (runtime.spec.load), as the runtime uses it."""
    from runtime import spec

    try:
        return spec.load(os.path.abspath(bundle))
    except spec.SpecError as error:
        raise BundleError(str(error)) from None


def program(process_config: dict, config: dict) -> Program:
    """The process.Program of a config.json ``process`` object, which ``exec --process``
    runs in the container of Config ``config`` (as a dict: its state's), confined as
    runtime.container.boundaries says."""
    from runtime.container import boundaries

    confinement, settings = boundaries(config, process_config)
    return Program(
        list(process_config["args"]),
        dict(item.partition("=")[::2] for item in process_config.get("env", [])),
        process_config.get("cwd", "/"),
        security=confinement,
        settings=settings,
    )
