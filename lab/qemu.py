"""Run a command -- by default the privileged pytest suite -- in a throw-away VM.

    python3 -m lab.qemu [--arch x86_64|arm64] [--rebuild] [--timeout S] -- CMD...

The VM boots a pure cgroup v2 Debian kernel, shares this repository
read-write at the same path over virtio-9p, runs CMD there as root with
``MYCONTAINER_IN_VM=1``, streams its output to ours and exits with its exit
code (124: timed out, 125: the VM failed before reporting one). The first run
builds the image (about a minute for x86_64, as root; see lab/image.py) and
caches it in /var/cache/mycontainer-lab for every later run.

Why: this repository's CI host is a cgroup v1 hybrid; the cgroup v2 code can
only be tested in a VM, and it must work headless, offline and from a fresh
clone. tasks.py (and so .ci/run, through ``invoke test --qemu``) calls
:func:`run_in_vm`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from lab import exit_on_sigterm, image, vm

DEFAULT_COMMAND = ["python3", "-m", "pytest", "-p", "no:cacheprovider", "tests"]

# Host variables worth passing on: CI changes some tests' behaviour, the rest
# steer pytest's output. Anything else can be passed with --env.
PASS_THROUGH = ("CI", "PYTEST_ADDOPTS", "PY_COLORS", "NO_COLOR", "FORCE_COLOR", "TERM")


def guest_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The command's environment inside the VM."""
    env = {
        "PATH": f"{image.VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONPATH": str(image.REPO),
        # The repo is the host's working tree: leave no root-owned __pycache__ in it.
        "PYTHONDONTWRITEBYTECODE": "1",
        "MYCONTAINER_IN_VM": "1",
    }
    env.update({k: os.environ[k] for k in PASS_THROUGH if k in os.environ})
    if not sys.stdout.isatty():
        env.setdefault("NO_COLOR", "1")  # the console is a tty inside; CI logs are not
    env.update(extra or {})
    return env


def run_in_vm(
    cmd: list[str],
    arch: str = "x86_64",
    *,
    rebuild: bool = False,
    timeout: float = 20 * 60,
    env: dict[str, str] | None = None,
    cpus: int = 2,
    memory_mb: int = 2048,
) -> int:
    """Run ``cmd`` in the lab VM from the repository root; return its exit code.

    Builds the image first if the cache has none for the current recipe.
    """
    exit_on_sigterm()
    target = vm.ARCHES[arch]
    built = image.ensure_image(target, rebuild=rebuild)
    if shutil.which(target.qemu) is None and os.geteuid() == 0:
        image.apt_install([target.qemu_package])  # a cached image on a machine without QEMU
    config = vm.VMConfig(
        argv=list(cmd) or DEFAULT_COMMAND,
        cwd=str(image.REPO),
        env=guest_env(env),
        shares=[vm.Share("repo", image.REPO, str(image.REPO))],
        cpus=cpus,
        memory_mb=memory_mb,
        timeout=timeout,
    )
    return vm.boot(target, built, config)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m lab.qemu",
        description="Run CMD (default: the pytest suite) in a throw-away cgroup v2 QEMU VM.",
    )
    parser.add_argument("--arch", choices=sorted(vm.ARCHES), default="x86_64")
    parser.add_argument("--rebuild", action="store_true", help="build the image even if cached")
    parser.add_argument(
        "--build-only", action="store_true", help="build (or find) the image, run nothing"
    )
    parser.add_argument(
        "--timeout", type=float, default=20 * 60, help="seconds before QEMU is killed (1200)"
    )
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--memory", type=int, default=2048, metavar="MB")
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra guest variable"
    )
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD... (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.cmd[:1] == ["--"]:
        args.cmd = args.cmd[1:]
    bad = [e for e in args.env if "=" not in e]
    if bad:
        parser.error(f"--env wants KEY=VALUE, got {bad[0]!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.build_only:
            exit_on_sigterm()  # run_in_vm makes the same for the other path
            built = image.ensure_image(vm.ARCHES[args.arch], rebuild=args.rebuild)
            print(built.directory)
            return 0
        return run_in_vm(
            args.cmd or DEFAULT_COMMAND,
            args.arch,
            rebuild=args.rebuild,
            timeout=args.timeout,
            env=dict(e.split("=", 1) for e in args.env),
            cpus=args.cpus,
            memory_mb=args.memory,
        )
    except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
        print(f"lab: {err}", file=sys.stderr)
        return vm.EXIT_RUNNER_FAILED


if __name__ == "__main__":
    sys.exit(main())
