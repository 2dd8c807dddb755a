"""``mycontainer-oci``: the OCI runtime command line, as runc spells it, so that engines
(podman with conmon, containerd's shim, CRI-O) can drive mycontainer wherever they name runc.

Each command is one operation of runtime.container over the state on disk (runtime.state):
``create`` builds the container and returns, leaving no process of ours behind; ``start``,
``state``, ``kill`` and ``delete`` load it by its id, from any process. Errors go to stderr
and, as engines read them from there, to ``--log`` in ``--log-format`` (runc's text or JSON
lines). The parser is argparse, from the standard library: engines run this command several
times per container, and click's import alone would cost more than runc's whole ``state``.

Spec: https://github.com/opencontainers/runtime-spec/blob/main/runtime.md ("Operations");
runc's man pages (runc-create(8), runc-state(8)...) for the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

from runtime import __version__, state


class OciError(Exception):
    """What went wrong, in one line; the command exits 1, as runc does."""


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` -> 9."""
    if text.isdigit():
        number = int(text)
        if number in {int(s) for s in signal.valid_signals()}:
            return number
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    raise OciError(f"unknown signal {text!r}: use a name such as TERM or KILL, or a number")


# --- the commands ---------------------------------------------------------------------------


def create(args) -> int:
    """Create the container of bundle ``--bundle``; its program waits for ``start``."""
    box = _new_container(args)
    box.create()
    _write_pid_file(args.pid_file, box.pid)
    box.detach()
    return 0


def start(args) -> int:
    from runtime import container

    container.start(args.root, args.id)
    return 0


def state_command(args) -> int:
    found = state.load(args.root, args.id)
    print(json.dumps(found.oci_state(), indent=2))
    return 0


def kill(args) -> int:
    from runtime import container

    container.kill(args.root, args.id, parse_signal(args.signal), every=args.all)
    return 0


def delete(args) -> int:
    from runtime import container

    try:
        container.delete(args.root, args.id, force=args.force)
    except state.StateError:
        if not args.force:
            raise
    return 0


def run(args) -> int:
    """create + start + wait + delete, in the foreground; exits with the program's code."""
    from runtime import process

    box = _new_container(args)
    with process.blocking_forwarded_signals():
        box.create()
        _write_pid_file(args.pid_file, box.pid)
        if args.detach:
            box.start()
            box.detach()
            return 0
        try:
            box.start()
            return box.wait()
        finally:
            box.delete()


def list_command(args) -> int:
    rows = []
    for container_id in state.ids(args.root):
        try:
            found = state.load(args.root, container_id)
        except state.StateError:
            continue
        rows.append(found.oci_state())
    if args.format == "json":
        print(json.dumps(rows))
        return 0
    print(f"{'ID':<24}{'PID':<10}{'STATUS':<10}{'BUNDLE':<40}CREATED")
    for row in rows:
        print(
            f"{row['id']:<24}{row.get('pid', 0):<10}{row['status']:<10}"
            f"{row['bundle']:<40}{row['created']}"
        )
    return 0


def spec_command(args) -> int:
    """Write a default config.json into ``--bundle`` (or here), as ``runc spec`` does."""
    from runtime import spec

    path = os.path.join(args.bundle or ".", "config.json")
    if os.path.exists(path):
        raise OciError(f"{path} exists already: remove it first")
    with open(path, "w") as file:
        json.dump(spec.default_config(), file, indent="\t")
        file.write("\n")
    return 0


def features(args) -> int:
    from runtime import spec

    print(json.dumps(spec.features(), indent=2))
    return 0


def pause(args) -> int:
    """Freeze every process of a created or running container (its cgroup's freezer)."""
    _freeze(args.root, args.id, True)
    return 0


def resume(args) -> int:
    """Let a paused container's processes go on."""
    _freeze(args.root, args.id, False)
    return 0


def _freeze(root: str, container_id: str, frozen: bool):
    from runtime import cgroups

    found = state.load(root, container_id)
    lock = state.lock(found)
    try:
        status = found.status()
        allowed = (state.CREATED, state.RUNNING) if frozen else (state.PAUSED,)
        if status not in allowed:
            verb = "pause" if frozen else "resume"
            raise OciError(f"cannot {verb} container {container_id!r}: it is {status}")
        group = cgroups.Cgroup.at(cgroups.detect(), container_id, found.record.get("cgroups", []))
        group.freeze(frozen)
    except cgroups.CgroupError as error:
        raise OciError(str(error)) from None
    finally:
        os.close(lock)


# runc update's flags: (flag, object, field, parse)
UPDATE_FLAGS = (
    ("memory", "memory", "limit", "size"),
    ("memory_reservation", "memory", "reservation", "size"),
    ("memory_swap", "memory", "swap", "size"),
    ("cpu_shares", "cpu", "shares", int),
    ("cpu_quota", "cpu", "quota", int),
    ("cpu_period", "cpu", "period", int),
    ("cpuset_cpus", "cpu", "cpus", str),
    ("cpuset_mems", "cpu", "mems", str),
    ("pids_limit", "pids", "limit", int),
)


def update(args) -> int:
    """Change the resources of a created, running or paused container: ``--resources``
    (a linux.resources object, in a file or on stdin for ``-``) then runc's flags."""
    from runtime import cgroups

    resources = _read_resources(args.resources) if args.resources else {}
    for flag, name, field, parse in UPDATE_FLAGS:
        text = getattr(args, flag)
        if text is not None:
            resources.setdefault(name, {})[field] = _parse_update(flag, text, parse)
    if resources.get("devices"):
        raise OciError("update: linux.resources.devices cannot be changed once created")
    found = state.load(args.root, args.id)
    lock = state.lock(found)
    try:
        status = found.status()
        if status not in (state.CREATED, state.RUNNING, state.PAUSED):
            raise OciError(f"cannot update container {args.id!r}: it is {status}")
        layout = cgroups.detect()
        group = cgroups.Cgroup.at(layout, args.id, found.record.get("cgroups", []))
        cgroups.check_resources(resources, layout)
        group.set(resources)
        recorded = found.record.setdefault("config", {}).setdefault("resources", {})
        for name, value in resources.items():
            recorded[name] = {**(recorded.get(name) or {}), **value}
        found.save()
    except cgroups.CgroupError as error:
        raise OciError(str(error).replace("config.json: ", "update: ")) from None
    finally:
        os.close(lock)
    return 0


def _read_resources(path: str) -> dict:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path) as file:
                text = file.read()
        resources = json.loads(text)
    except (OSError, ValueError) as error:
        raise OciError(f"update: cannot read --resources {path}: {error}") from None
    if not isinstance(resources, dict):
        raise OciError(f"update: --resources {path} must hold a JSON object")
    return resources


def _parse_update(flag: str, text: str, parse):
    """A flag's value: sizes as ``64m`` or bytes, -1 for no limit; numbers; CPU lists."""
    option = "--" + flag.replace("_", "-")
    try:
        if parse == "size":
            from runtime import cgroups

            return -1 if text.strip() == "-1" else cgroups.parse_memory(text)
        return parse(text)
    except ValueError as error:
        if parse == "size":
            raise OciError(str(error).replace("--memory", option)) from None
        raise OciError(f"{option} must be a number (got {text!r})") from None


def _new_container(args):
    """A Container (not yet created) for the bundle of ``args``."""
    from runtime import bundle, container

    if args.console_socket:
        raise OciError("--console-socket is not supported yet")
    directory = os.path.abspath(args.bundle or ".")
    config = bundle.to_config(bundle.load(directory), directory)
    return container.Container(
        config, state.check_id(args.id), root=args.root, bundle=directory, autoremove=False
    )


def _write_pid_file(path: str | None, pid: int) -> None:
    """Write the init's pid to ``path`` atomically, as runc's ``--pid-file``."""
    if path:
        temporary = f"{path}.tmp"
        with open(temporary, "w") as file:
            file.write(str(pid))
        os.replace(temporary, path)


# --- the command line ---------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="mycontainer-oci", description="mycontainer's OCI runtime command line (runc's)."
    )
    top.add_argument("--version", "-v", action="version", version=f"mycontainer-oci {__version__}")
    top.add_argument("--root", default=None, help="state root (default /run/mycontainer)")
    top.add_argument("--log", default=None, help="also write errors to this file")
    top.add_argument("--log-format", choices=("text", "json"), default="text")
    top.add_argument("--debug", action="store_true")
    top.add_argument("--systemd-cgroup", action="store_true")
    top.add_argument("--rootless", default=None)  # engines pass it; "false" or "auto" only
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, function, text):
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(function=function)
        return sub

    def bundle_options(sub):
        sub.add_argument("--bundle", "-b", default=None)
        sub.add_argument("--pid-file", default=None)
        sub.add_argument("--console-socket", default=None)
        sub.add_argument("--no-pivot", action="store_true")
        sub.add_argument("--no-new-keyring", action="store_true")
        sub.add_argument("--preserve-fds", type=int, default=0)
        sub.add_argument("id")

    bundle_options(command("create", create, "create a container from a bundle"))
    sub = command("run", run, "create and start a container, and wait for it")
    sub.add_argument("--detach", "-d", action="store_true")
    bundle_options(sub)
    command("start", start, "start a created container").add_argument("id")
    command("state", state_command, "print a container's state (JSON)").add_argument("id")
    sub = command("kill", kill, "send a signal to a container's init")
    sub.add_argument("--all", "-a", action="store_true")
    sub.add_argument("id")
    sub.add_argument("signal", nargs="?", default="TERM")
    sub = command("delete", delete, "delete a stopped container")
    sub.add_argument("--force", "-f", action="store_true")
    sub.add_argument("id")
    sub = command("list", list_command, "list the containers of the state root")
    sub.add_argument("--format", "-f", choices=("table", "json"), default="table")
    sub.add_argument("--quiet", "-q", action="store_true")
    sub = command("spec", spec_command, "write a default config.json")
    sub.add_argument("--bundle", "-b", default=None)
    sub.add_argument("--rootless", action="store_true")
    command("features", features, "print what this runtime supports (JSON)")
    command("pause", pause, "freeze a container's processes").add_argument("id")
    command("resume", resume, "let a paused container's processes go on").add_argument("id")
    sub = command("update", update, "change a container's resources")
    sub.add_argument("--resources", "-r", default=None, help="a linux.resources JSON file, or -")
    for flag, *_ in UPDATE_FLAGS:
        sub.add_argument("--" + flag.replace("_", "-"), default=None)
    sub.add_argument("id")
    return top


def log_error(args, message: str) -> None:
    """Write ``message`` to stderr and, if asked, to ``--log`` in ``--log-format``."""
    sys.stderr.write(f"mycontainer-oci: error: {message}\n")
    if not getattr(args, "log", None):
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.log_format == "json":
        line = json.dumps({"level": "error", "msg": message, "time": now})
    else:
        line = f'time="{now}" level=error msg={json.dumps(message)}'
    try:
        with open(args.log, "a") as file:
            file.write(line + "\n")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    from runtime.container import ContainerError

    args = parser().parse_args(argv)
    code = 1
    try:
        if args.systemd_cgroup:
            raise OciError("--systemd-cgroup is not supported: use cgroupfs (leave it out)")
        args.root = state.root_directory(args.root)
        code = args.function(args)
    except (OciError, ContainerError, state.StateError, OSError) as error:
        log_error(args, str(error))
        code = getattr(error, "exit_code", 1) if args.command == "run" else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
