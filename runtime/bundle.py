"""An OCI bundle: a directory with a root filesystem and a ``config.json`` that says how to
run it (runtime-spec bundle.md). This module turns a bundle's configuration into the
runtime's :class:`runtime.container.Config`, the one the lifecycle takes whatever the
container came from (an image and docker's flags, or an engine's bundle).

Spec: https://github.com/opencontainers/runtime-spec/blob/main/bundle.md,
https://github.com/opencontainers/runtime-spec/blob/main/config.md
"""

from __future__ import annotations

import json
import os

from runtime import namespaces
from runtime.container import Config, ContainerError

# linux.namespaces types, and the flag of each (config-linux.md, "Namespaces").
NAMESPACE_FLAGS = {
    "pid": namespaces.PID,
    "network": namespaces.NET,
    "mount": namespaces.MOUNT,
    "ipc": namespaces.IPC,
    "uts": namespaces.UTS,
    "cgroup": namespaces.CGROUP,
}
MAX_CONFIG_SIZE = 4 << 20


class BundleError(ContainerError):
    """A bundle cannot be run as it is; the message names the field."""


def read_config(bundle: str) -> dict:
    """The JSON object in ``<bundle>/config.json``."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_CONFIG_SIZE + 1)
    except OSError as error:
        raise BundleError(f"cannot read {path}: {error.strerror}") from None
    if len(text) > MAX_CONFIG_SIZE:
        raise BundleError(f"{path} is larger than {MAX_CONFIG_SIZE >> 20} MiB")
    try:
        config = json.loads(text)
    except ValueError as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path} must hold a JSON object")
    return config


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
    user = process.get("user", {})
    capabilities = process.get("capabilities", {}).get("bounding", [])
    resources = linux.get("resources", {})
    return Config(
        [],
        list(process["args"]),
        hostname=spec.get("hostname") or None,
        env=dict(item.partition("=")[::2] for item in process.get("env", [])),
        cwd=process.get("cwd", "/"),
        user=f"{user.get('uid', 0)}:{user.get('gid', 0)}",
        memory=resources.get("memory", {}).get("limit"),
        pids_limit=resources.get("pids", {}).get("limit"),
        net="none",  # an engine plugs its network in itself (CNI, netavark)
        cap_add=[name.removeprefix("CAP_") for name in capabilities],
        cap_drop=["ALL"],
        security_opt=[
            f"no-new-privileges={str(bool(process.get('noNewPrivileges'))).lower()}",
            "seccomp=unconfined",
        ],
        rootfs=spec["root"]["path"],
        namespaces=flags,
        join=join,
        annotations=spec.get("annotations", {}),
        resources=resources,
        cgroups_path=linux.get("cgroupsPath") or None,
    )


def load(bundle: str) -> dict:
    """The bundle's config.json, with ``root.path`` made absolute (relative to the bundle)."""
    bundle = os.path.abspath(bundle)
    spec = read_config(bundle)
    process = spec.get("process")
    if not isinstance(process, dict) or not process.get("args"):
        raise BundleError("config.json: process.args: a program to run is required")
    root = spec.get("root", {}).get("path")
    if not root:
        raise BundleError("config.json: root.path is required")
    spec["root"]["path"] = os.path.realpath(os.path.join(bundle, root))
    if not os.path.isdir(spec["root"]["path"]):
        raise BundleError(f"config.json: root.path: {spec['root']['path']} is not a directory")
    return spec
