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

import gc
import json
import os
import signal
import sys
import time

from runtime import __version__, process, state
from runtime.process import EXIT_SIGNAL_BASE


class OciError(Exception):
    """What went wrong, in one line; the command exits 1, as runc does."""


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` -> 9 (process.parse_signal), or OciError."""
    try:
        return process.parse_signal(text)
    except ValueError as error:
        raise OciError(str(error)) from None


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


def exec_command(args) -> int:
    """Run a process in a running container: ``--process FILE``, or the container's own
    process with the arguments and options given here (for a container of ``mycontainer
    run``, as docker's exec makes it: runtime.execution.program)."""
    from runtime import bundle, execution, spec

    if args.tty and not args.console_socket:
        raise OciError("exec --tty needs --console-socket, to hand the terminal to its engine")
    if not args.process and not args.command:
        raise OciError("exec needs a command, or --process FILE")
    found = state.load(args.root, args.id)
    if found.status() != state.RUNNING:
        raise OciError(f"cannot exec in container {args.id!r}: it is {found.status()}")
    process_config = {"terminal": bool(args.tty)}
    if args.process:
        process_config = spec.load_process(args.process)
    elif found.config.get("spec") is not None:
        process_config = dict(found.config["spec"].get("process", {}))
        process_config["args"] = list(args.command)
        process_config["env"] = process_config.get("env", []) + list(args.env)
        process_config["cwd"] = args.cwd or process_config.get("cwd", "/")
        process_config["terminal"] = bool(args.tty)
        process_config["noNewPrivileges"] = args.no_new_privs or process_config.get(
            "noNewPrivileges", False
        )
        if args.user:
            uid, _, gid = args.user.partition(":")
            process_config["user"] = {"uid": int(uid), "gid": int(gid or 0)}
        process_config = spec.process(process_config, "exec")
    if "args" in process_config:
        program = bundle.program(process_config, found.config)
    else:
        program = execution.program(
            found,
            args.command,
            user=args.user,
            cwd=args.cwd,
            env=[tuple(item.partition("=")[::2]) for item in args.env],
            tty=bool(args.tty),
        )
        program.security.no_new_privileges |= bool(args.no_new_privs)
    pid, code = execution.run(
        found,
        program,
        detach=args.detach,
        tty=bool(process_config.get("terminal")),
        console_socket=args.console_socket,
        console_size=process_config.get("consoleSize"),
    )
    _write_pid_file(args.pid_file, pid)
    return code


def ps_command(args) -> int:
    """The container's processes (host pids): as a JSON list, or as ps(1) prints them."""
    found = state.load(args.root, args.id)
    pids = set()
    for group in found.record.get("cgroups", []):
        try:
            with open(os.path.join(group, "cgroup.procs")) as file:
                pids.update(int(pid) for pid in file.read().split())
        except FileNotFoundError:
            continue  # stopped and removed meanwhile
    if args.format == "json":
        print(json.dumps(sorted(pids)))
        return 0
    import subprocess

    lines = subprocess.run(
        ["ps", *(args.ps_options or ["-ef"])], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    column = lines[0].split().index("PID")
    print(lines[0])
    for line in lines[1:]:
        if int(line.split()[column]) in pids:
            print(line)
    return 0


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

    if args.no_pivot:  # runc's MS_MOVE + chroot, for a root on the initramfs
        raise OciError("--no-pivot is not supported: mycontainer always uses pivot_root(2)")
    directory = os.path.abspath(args.bundle or ".")
    config = bundle.to_config(bundle.load(directory), directory)
    if config.tty and not args.console_socket and args.command == "create":
        raise OciError(
            "process.terminal needs --console-socket: a created container's terminal goes "
            "to the engine that will use it"
        )
    if args.console_socket and not config.tty:
        raise OciError("--console-socket needs process.terminal set to true in config.json")
    return container.Container(
        config,
        state.check_id(args.id),
        root=args.root,
        bundle=directory,
        autoremove=False,
        inherit=tuple(range(3, 3 + args.preserve_fds)),
        console_socket=args.console_socket,
    )


def _write_pid_file(path: str | None, pid: int) -> None:
    """Write the init's pid to ``path`` atomically, as runc's ``--pid-file``."""
    if path:
        temporary = f"{path}.tmp"
        with open(temporary, "w") as file:
            file.write(str(pid))
        os.replace(temporary, path)


# --- the command line ---------------------------------------------------------------------
# runc's grammar (urfave/cli): global options, a command, its options, then its arguments;
# options end at the first argument or at "--". Parsed by hand from these tables: argparse
# would cost ~10 ms per call, and an engine calls this command several times per container.

# option -> (attribute, kind): "value" takes the next word, "list" too and may repeat,
# "switch" takes none.
GLOBAL_OPTIONS = {
    "--root": ("root", "value"),
    "--log": ("log", "value"),
    "--log-format": ("log_format", "value"),
    "--debug": ("debug", "switch"),
    "--systemd-cgroup": ("systemd_cgroup", "switch"),
    "--rootless": ("rootless", "value"),  # engines pass "false" or "auto"
}
BUNDLE_OPTIONS = {
    "--bundle": ("bundle", "value"),
    "-b": ("bundle", "value"),
    "--pid-file": ("pid_file", "value"),
    "--console-socket": ("console_socket", "value"),
    "--no-pivot": ("no_pivot", "switch"),
    "--no-new-keyring": ("no_new_keyring", "switch"),
    "--preserve-fds": ("preserve_fds", "value"),
}
EXEC_OPTIONS = {
    "--process": ("process", "value"),
    "-p": ("process", "value"),
    "--detach": ("detach", "switch"),
    "-d": ("detach", "switch"),
    "--pid-file": ("pid_file", "value"),
    "--tty": ("tty", "switch"),
    "-t": ("tty", "switch"),
    "--console-socket": ("console_socket", "value"),
    "--cwd": ("cwd", "value"),
    "--env": ("env", "list"),
    "-e": ("env", "list"),
    "--user": ("user", "value"),
    "-u": ("user", "value"),
    "--no-new-privs": ("no_new_privs", "switch"),
    "--preserve-fds": ("preserve_fds", "value"),
    "--cap": ("cap", "list"),
    "-c": ("cap", "list"),
}
FORMAT_OPTIONS = {"--format": ("format", "value"), "-f": ("format", "value")}

# command -> (function, what it does, its options, its arguments: "name", "name?" optional,
# "name..." all the rest)
COMMANDS = {
    "create": (create, "create a container from a bundle", BUNDLE_OPTIONS, ("id",)),
    "run": (
        run,
        "create and start a container, and wait for it",
        {**BUNDLE_OPTIONS, "--detach": ("detach", "switch"), "-d": ("detach", "switch")},
        ("id",),
    ),
    "start": (start, "start a created container", {}, ("id",)),
    "state": (state_command, "print a container's state (JSON)", {}, ("id",)),
    "kill": (
        kill,
        "send a signal (default TERM) to a container's init, or --all its processes",
        {"--all": ("all", "switch"), "-a": ("all", "switch")},
        ("id", "signal?"),
    ),
    "delete": (
        delete,
        "delete a stopped container (--force: any)",
        {"--force": ("force", "switch"), "-f": ("force", "switch")},
        ("id",),
    ),
    "exec": (
        exec_command,
        "run a process in a running container",
        EXEC_OPTIONS,
        ("id", "command..."),
    ),  # fmt: skip
    "ps": (
        ps_command,
        "list the processes of a container",
        FORMAT_OPTIONS,
        ("id", "ps_options..."),
    ),  # fmt: skip
    "list": (
        list_command,
        "list the containers of the state root",
        {**FORMAT_OPTIONS, "--quiet": ("quiet", "switch"), "-q": ("quiet", "switch")},
        (),
    ),
    "spec": (
        spec_command,
        "write a default config.json",
        {
            "--bundle": ("bundle", "value"),
            "-b": ("bundle", "value"),
            "--rootless": ("rootless", "switch"),
        },  # fmt: skip
        (),
    ),
    "features": (features, "print what this runtime supports (JSON)", {}, ()),
    "pause": (pause, "freeze a container's processes", {}, ("id",)),
    "resume": (resume, "let a paused container's processes go on", {}, ("id",)),
    "update": (
        update,
        "change a container's resources (--resources FILE|-, or runc's flags)",
        {
            "--resources": ("resources", "value"),
            "-r": ("resources", "value"),
            **{"--" + flag.replace("_", "-"): (flag, "value") for flag, *_ in UPDATE_FLAGS},
        },
        ("id",),
    ),
}
USAGE = "usage: mycontainer-oci [--root DIR] [--log FILE] [--log-format text|json] COMMAND ..."


class Arguments:
    """The parsed command line: one attribute per option and argument (None when absent)."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __getattr__(self, name: str):
        return None  # an option not given


def parse(argv: list[str]) -> Arguments:
    """runc's command line -> Arguments, or OciError naming what is wrong."""
    args = Arguments(log_format="text", env=[], cap=[], preserve_fds="0", signal="TERM")
    words = iter(argv)
    command = _options(words, GLOBAL_OPTIONS, args)
    if command is None or command not in COMMANDS:
        known = ", ".join(COMMANDS)
        raise OciError(f"unknown command {command!r}: use one of {known}" if command else USAGE)
    function, _, options, names = COMMANDS[command]
    args.command, args.function = command, function
    first = _options(words, options, args)
    rest = [] if first is None else [first, *words]
    for name in names:
        if name.endswith("..."):
            setattr(args, name[:-3], rest)
            rest = []
        elif rest:
            setattr(args, name.rstrip("?"), rest.pop(0))
        elif not name.endswith("?"):
            raise OciError(f"{command} needs the container {name.upper()}: {command} ID")
    if rest:
        raise OciError(f"{command}: unexpected argument {rest[0]!r}")
    if args.log_format not in ("text", "json"):
        raise OciError(f"--log-format takes text or json (got {args.log_format!r})")
    if not args.preserve_fds.isdigit():
        raise OciError(f"--preserve-fds takes a number (got {args.preserve_fds!r})")
    args.preserve_fds = int(args.preserve_fds)
    return args


def _options(words, options: dict, args: Arguments) -> str | None:
    """Read ``options`` from ``words`` into ``args``; return the first word that is not one
    (None at the end). ``--name=value`` and ``--name value`` are the same."""
    for word in words:
        if word == "--":
            return next(words, None)
        name, equals, value = word.partition("=")
        if name in ("-h", "--help"):
            raise Help()
        if name == "--version" or name == "-v" and options is GLOBAL_OPTIONS:
            print(f"mycontainer-oci version {__version__}")
            raise Help(printed=True)
        if not name.startswith("-") or name == "-":
            return word
        if name not in options:
            raise OciError(f"unknown option {name}")
        attribute, kind = options[name]
        if kind == "switch":
            setattr(args, attribute, True)
            continue
        if not equals:
            value = next(words, None)
            if value is None:
                raise OciError(f"option {name} needs a value")
        if kind == "list":
            getattr(args, attribute).append(value)
        else:
            setattr(args, attribute, value)
    return None


class Help(Exception):
    """-h/--help (or --version): print what is asked, exit 0."""

    def __init__(self, printed: bool = False):
        super().__init__()
        self.printed = printed


def usage() -> str:
    lines = [USAGE, "", "commands:"]
    lines += [f"  {name:<10}{text}" for name, (_, text, _, _) in COMMANDS.items()]
    return "\n".join(lines)


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
    # One command, over in milliseconds (or idle in wait): the cyclic garbage collector
    # would only cost time, in the imports below and, after fork(2), in the container's
    # processes, whose first collection would copy every page it touches (gc(3)). What
    # the command leaves is freed when it exits.
    gc.disable()
    from runtime.container import ContainerError

    args = Arguments(log_format="text")
    code = 1
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        if args.systemd_cgroup:
            raise OciError("--systemd-cgroup is not supported: use cgroupfs (leave it out)")
        args.root = state.root_directory(args.root)
        code = args.function(args)
    except Help as help_asked:
        if not help_asked.printed:
            print(usage())
        code = 0
    except BrokenPipeError:  # our reader went away (``| grep -q``): nobody to tell, as runc
        code = EXIT_SIGNAL_BASE + signal.SIGPIPE
    except (OciError, ContainerError, state.StateError, ValueError, OSError) as error:
        log_error(args, str(error))
        code = getattr(error, "exit_code", 1) if args.command == "run" else 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = EXIT_SIGNAL_BASE + signal.SIGPIPE
    os._exit(code or 0)


if __name__ == "__main__":
    main()
