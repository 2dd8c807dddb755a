"""Prove lab/provision.sh works on a plain Debian 12: run it in a fresh chroot.

    sudo python3 -m lab.provision_check [--keep]

The Vagrant box is Ubuntu 24.04, but users also provision Debian 12 machines
and CI cannot run Vagrant. A ``debootstrap --variant=minbase`` bookworm is as
bare as Debian gets, so provisioning it from nothing (apt, PyPI, the project's
setup.sh, invoke rootfs) is a fair test. The repository is copied, not bind
mounted, so nothing the script writes (.venv, the rootfs) lands in the clone.

Needs root and network to the Debian mirror and PyPI (the chroot shares the
host's network). Everything it mounts is its own fresh proc/sysfs/tmpfs/devpts
under a temporary directory, unmounted before that directory is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import exit_on_sigterm, image

PROJECT = "/vagrant"  # where the Vagrantfile puts it, so the script's default holds
# What a learner runs on a provisioned machine, on root's PATH (sudo's): the project's
# commands, and strace for step 1's exercise 3 and its checker.
COMMANDS = ("invoke", "mycontainer", "strace")
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9)}


def mount_pseudo_filesystems(root: Path) -> None:
    """proc, sysfs, the cgroup trees, a tmpfs /dev with the usual nodes, devpts: never the
    host's /dev.

    The root itself is bind-mounted onto itself first: in a plain directory
    chroot "/" is no mount point, and the runtime's mount(/, MS_PRIVATE) in
    setup.sh's first container would fail with EINVAL, as it never does on a VM.
    """
    subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    subprocess.run(["mount", "-t", "sysfs", "-o", "ro", "sysfs", str(root / "sys")], check=True)
    # The host's cgroup hierarchies, as a real machine has them: setup.sh's first container
    # makes its groups there (on v1, under this process's own). A slave copy, so that
    # unmounting it afterwards can never propagate back to the host's.
    cgroup = root / "sys/fs/cgroup"
    subprocess.run(["mount", "--rbind", "/sys/fs/cgroup", str(cgroup)], check=True)
    subprocess.run(["mount", "--make-rslave", str(cgroup)], check=True)
    dev = root / "dev"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "lab-dev", str(dev)], check=True)
    for name, (major, minor) in DEVICES.items():
        os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)
    (dev / "pts").mkdir()
    (dev / "shm").mkdir(mode=0o1777)
    subprocess.run(
        ["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts", str(dev / "pts")],
        check=True,
    )
    os.symlink("pts/ptmx", dev / "ptmx")
    os.symlink("/proc/self/fd", dev / "fd")


def trust_local_cas(root: Path) -> None:
    """Carry the host's locally added CAs (a TLS-inspecting proxy's) into the chroot.

    apt's ca-certificates picks up /usr/local/share/ca-certificates when
    provision.sh installs it, as it would on a company laptop's VM.
    """
    local = Path("/usr/local/share/ca-certificates")
    if not local.is_dir():
        return
    shutil.copytree(local, root / local.relative_to("/"), dirs_exist_ok=True)
    if (root / "usr/sbin/update-ca-certificates").exists():
        subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True)


def copy_project(root: Path) -> None:
    target = root / PROJECT.lstrip("/")
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "site")
    shutil.copytree(image.REPO, target, ignore=ignore, symlinks=True)


def missing_commands(root: Path, env: dict[str, str]) -> list[str]:
    """Those of :data:`COMMANDS` that a root shell in the chroot does not find."""
    return [
        command
        for command in COMMANDS
        if subprocess.run(
            ["chroot", str(root), "sh", "-c", f"command -v {command}"],
            env=env,
            stdout=subprocess.DEVNULL,
        ).returncode
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m lab.provision_check", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the chroot for inspection")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if os.geteuid() != 0:
        print("provision_check: needs root (debootstrap, chroot)", file=sys.stderr)
        return 2
    if shutil.which("debootstrap") is None:
        image.apt_install(["debootstrap"])
    work = Path(tempfile.mkdtemp(prefix="mycontainer-provision-", dir="/var/tmp"))
    root = work / "rootfs"
    started = time.monotonic()
    try:
        image.say("debootstrap a bare bookworm")
        (image.CACHE / "debs").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--cache-dir={image.CACHE / 'debs'}",
             image.SUITE, str(root), image.mirror()],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
        trust_local_cas(root)
        copy_project(root)
        mount_pseudo_filesystems(root)
        image.say(f"chroot: bash {PROJECT}/lab/provision.sh {PROJECT} (twice: idempotent)")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}  # fmt: skip
        cmd = ["chroot", str(root), "bash", f"{PROJECT}/lab/provision.sh", PROJECT]
        for _ in range(2):
            code = subprocess.run(cmd, env=env).returncode
            if code != 0:
                image.say(f"provision.sh failed with exit code {code}")
                return code
        missing = missing_commands(root, env)
        if missing:
            image.say(f"provision.sh finished, but root's PATH has no {' '.join(missing)}")
            return 1
        image.say(f"provision.sh passed on Debian 12 in {time.monotonic() - started:.0f} s")
        return 0
    finally:
        if args.keep:
            image.say(f"kept {work} (its mounts too: umount -R {root} before deleting it)")
        else:
            image._remove(work)


if __name__ == "__main__":
    sys.exit(main())
