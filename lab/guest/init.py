"""Stage 2 of the lab VM: PID 1 on the root filesystem image.

Runs with the guest's Debian python3. It sets up what a systemd host would,
so that the runtime meets the machines its users have: a pure cgroup v2 tree
laid out as systemd lays it out (itself in init.scope, the command in
user.slice/user-1000.slice/session-1.scope, like a ``sudo`` shell on Ubuntu)
and ``/`` mounted shared. It runs one command with its output on the virtio
console, reaps every orphan while it waits (a shell as PID 1 would leave
zombies behind the container tests), then prints the exit marker the host is
waiting for and powers the VM off.

Reads /run/lab/run.json, written by lab/vm.py: argv, cwd, env, shares, marker.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import termios
import time
import traceback

import tomllib

RUN = "/run/lab"
CONSOLE = "/dev/hvc0"
CGROUP = "/sys/fs/cgroup"
SESSION = "user.slice/user-1000.slice/session-1.scope"  # where a sudo shell runs

# Loaded after switch_root with the rootfs's modprobe. 9p carries the shares,
# virtio_console the output; the rest is what container tests ask of a host
# (overlayfs, veth and bridges, netfilter for NAT), loaded now so the tests
# see a host like any other. Missing ones are skipped quietly.
MODULES = (
    "virtio_console",
    "9p",
    "9pnet_virtio",
    "overlay",
    "veth",
    "bridge",
    "br_netfilter",
    "nf_tables",
    "nft_chain_nat",
    "nft_masq",
    "nft_ct",
    "nft_compat",
    "iptable_nat",
    "iptable_filter",
    "xt_MASQUERADE",
    "xt_conntrack",
    "nf_nat",
    "tun",
    "loop",
)


def log(message: str) -> None:
    """Write to the serial console, which the host keeps as the kernel log."""
    print(f"lab stage 2: {message}", file=sys.stderr, flush=True)


def mount(fstype: str, source: str, target: str, options: str = "") -> None:
    os.makedirs(target, exist_ok=True)
    if os.path.ismount(target):
        return
    cmd = ["mount", "-t", fstype, *(["-o", options] if options else []), source, target]
    subprocess.run(cmd, check=True)


def setup_filesystems() -> None:
    mount("proc", "proc", "/proc", "nosuid,nodev,noexec")
    mount("sysfs", "sysfs", "/sys", "nosuid,nodev,noexec")
    # Pure cgroup v2: the unified hierarchy only, with systemd's options.
    mount("cgroup2", "cgroup2", CGROUP, "nosuid,nodev,noexec,nsdelegate,memory_recursiveprot")
    mount("devpts", "devpts", "/dev/pts", "newinstance,ptmxmode=0666,mode=0620,gid=5")
    mount("tmpfs", "shm", "/dev/shm", "nosuid,nodev,mode=1777")
    mount("mqueue", "mqueue", "/dev/mqueue", "nosuid,nodev,noexec")
    mount("tmpfs", "tmpfs", "/tmp", "nosuid,nodev,mode=1777")
    mount("tmpfs", "tmpfs", "/run", "nosuid,nodev,mode=0755")
    # devtmpfs lacks the links udev would add; bash and friends expect them.
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ):
        path = f"/dev/{name}"
        if os.path.islink(path) or name == "ptmx":
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if not os.path.exists(path):
            os.symlink(target, path)


def enable_controllers(group: str, names) -> None:
    """List ``names`` in ``group``'s cgroup.subtree_control, as far as its parent offers them."""
    with open(f"{CGROUP}/{group}/cgroup.controllers") as f:
        offered = f.read().split()
    for name in (n for n in names if n in offered):
        try:
            with open(f"{CGROUP}/{group}/cgroup.subtree_control", "w") as f:
                f.write(f"+{name}")
        except OSError as err:
            log(f"cannot enable the {name} controller in /{group}: {err}")


def systemd_cgroups() -> None:
    """Lay out the cgroup tree as systemd does on a booted Debian or Ubuntu host.

    The root delegates every controller; PID 1 sits in init.scope; services
    would go to system.slice; a login session, and so a ``sudo`` shell and all
    it runs, to user.slice/user-1000.slice/session-1.scope. Slices enable what
    systemd's default accounting needs (memory and pids), so a runtime must
    enable the rest itself; the session scope holds processes, so by the
    no-internal-process rule it can hand no controller to a child group.
    (https://systemd.io/CGROUP_DELEGATION/, systemd.special(7))
    """
    with open(f"{CGROUP}/cgroup.controllers") as f:
        enable_controllers("", f.read().split())
    for group in ("init.scope", "system.slice", SESSION):
        os.makedirs(f"{CGROUP}/{group}", exist_ok=True)
    for slice_ in ("system.slice", "user.slice", "user.slice/user-1000.slice"):
        enable_controllers(slice_, ("memory", "pids"))
    with open(f"{CGROUP}/init.scope/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))


def wait_for(path: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.05)


def open_console() -> int:
    """The virtio console carries the command's output to the host, byte for byte."""
    wait_for(CONSOLE)
    fd = os.open(CONSOLE, os.O_RDWR | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    attrs[1] &= ~termios.ONLCR  # no "\n" -> "\r\n": the host wants the bytes as written
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def mount_shares(shares: list[dict]) -> None:
    for share in shares:
        options = "trans=virtio,version=9p2000.L,msize=512000,cache=loose"
        if share["readonly"]:
            options += ",ro"
        mount("9p", share["tag"], share["guest"], options)


def write_script_wrappers(cwd: str, bindir: str) -> None:
    """Console scripts from [project.scripts], since the repo is not installed.

    The repository sits on PYTHONPATH instead; a wrapper per script makes
    e.g. ``mycontainer`` work as it would after ``pip install -e .``.
    """
    os.makedirs(bindir, exist_ok=True)
    try:
        with open(os.path.join(cwd, "pyproject.toml"), "rb") as f:
            scripts = tomllib.load(f).get("project", {}).get("scripts", {})
    except (OSError, tomllib.TOMLDecodeError):
        return
    for name, target in scripts.items():
        module, _, func = target.partition(":")
        path = os.path.join(bindir, name)
        with open(path, "w") as f:
            f.write(
                "#!/usr/bin/env python3\n"
                "import sys\n"
                f"from {module} import {func.split('.')[0]}\n"
                f"sys.exit({func}())\n"
            )
        os.chmod(path, 0o755)


def run(argv: list[str], cwd: str, env: dict, out: int) -> int:
    """Fork and exec the command, reaping every child until it exits."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            with open(f"{CGROUP}/{SESSION}/cgroup.procs", "w") as f:
                f.write("0")  # "0": the writing process itself
            os.chdir(cwd)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            # Python ignores SIGPIPE; exec would pass that on to the command.
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execvpe(argv[0], argv, env)
        except BaseException as err:  # noqa: BLE001 - the child must never return
            os.write(2, f"lab: cannot run {argv!r}: {err}\n".encode())
        os._exit(127)
    while True:
        reaped, status = os.wait()
        if reaped == pid:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def power_off() -> None:
    os.sync()
    subprocess.run(["mount", "-o", "remount,ro", "/"], check=False, stderr=subprocess.DEVNULL)
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF
    # If that failed, PID 1 exiting panics the kernel; panic=-1 and QEMU's
    # -no-reboot turn that into QEMU exiting too.


def main() -> None:
    with open(f"{RUN}/run.json") as f:
        job = json.load(f)
    out = None
    code = 125
    try:
        setup_filesystems()
        subprocess.run(["modprobe", "-q", "-a", *MODULES], check=False)
        out = open_console()
        systemd_cgroups()
        # systemd makes every mount shared at boot (mount_namespaces(7)):
        # a runtime must make its own mounts private, or they leak out.
        subprocess.run(["mount", "--make-rshared", "/"], check=True)
        socket.sethostname("mycontainer-lab")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
        mount_shares(job["shares"])
        bindir = f"{RUN}/bin"
        write_script_wrappers(job["cwd"], bindir)
        env = dict(job["env"])
        env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        code = run(job["argv"], job["cwd"], env, out)
    except Exception:  # noqa: BLE001 - report anything, then still power off
        message = traceback.format_exc()
        log(message)
        if out is not None:
            os.write(out, f"lab: the VM init failed:\n{message}".encode())
    finally:
        if out is not None:
            os.write(out, f"\n@@mycontainer-lab:{job['marker']}:exit={code}@@\n".encode())
        power_off()


if __name__ == "__main__":
    main()
