"""`vagrant up` of the project's own Vagrantfile on this machine, end to end, leaving no trace.

    sudo python3 -m lab.vagrant_check [-- PYTEST ARGS FOR THE GUEST]

What a learner with vagrant-libvirt does, on the lab's own box (lab/box.py): add the box,
``vagrant up --provider libvirt`` with MYCONTAINER_BOX naming it, run the suite inside with
``sudo invoke test`` and from the host with ``invoke test --vm``, destroy. All of it is
tests/test_lab.py::test_vagrant_lab_provisions_and_passes, driven through pytest-vagrant;
this module gives that test a libvirt to talk to, on a host that runs no systemd and whose
own network must not change:

- Everything runs in new network, mount and PID namespaces (unshare(1)). libvirt's
  management network (a bridge, dnsmasq, NAT rules, ip_forward) is made in that network
  namespace; /etc/libvirt, /var/lib/libvirt (the storage pool), /var/cache/libvirt,
  /var/log/libvirt and /run are this run's own directories, bind-mounted there. When the
  run ends, the PID namespace's end kills virtlogd, libvirtd, dnsmasq and QEMU, and the
  namespaces and mounts vanish with them (pid_namespaces(7), network_namespaces(7)).
- virtlogd and libvirtd are started by hand (no systemd here), libvirtd with a config that
  lets any local user in: its socket exists only in this mount namespace.
- Vagrant, and the test, run as the unprivileged user ``nobody`` with a home of their own,
  as a learner runs them: that is also what ``invoke test --vm`` needs (as root, the
  suite's conftest moves itself into an empty network namespace).
- The host's network (links, addresses, routes, nft and iptables rules, ip_forward) and
  its libvirt configuration are compared before and after: any difference fails the run.

The guest runs the PYTEST ARGS given (default: the lab's smoke set, SMOKE) through
``sudo invoke test``; ``-- tests`` runs the whole suite. Exit code: the test's, or 1 when
the host changed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import box, exit_on_sigterm, image

# The tests that exercise what differs on a systemd machine (a shared /, cgroup v2 delegated
# by systemd), `mycontainer run`, and the course itself; the whole suite, emulated, would not
# fit CI's time next to its other stages.
SMOKE = (
    "tests/test_lab.py",
    "tests/test_cleanup.py",
    "tests/test_run.py",
    "tests/test_cgroups.py",
    "tests/test_steps.py",
)

HOST_PACKAGES = {
    "vagrant": "vagrant",
    "libvirtd": "libvirt-daemon",
    "virsh": "libvirt-clients",
    "qemu-img": "qemu-utils",
    "dnsmasq": "dnsmasq-base",
    "qemu-system-x86_64": "qemu-system-x86",
}
LIBVIRT_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
USER = "nobody"
# The unprivileged user's own host tools, in a venv of its own: the project's .venv may
# belong to an interpreter it cannot run (on CI machines, one under root's home).
USER_REQUIREMENTS = ("invoke>=2.2", "pytest>=7.4", "pytest-vagrant>=2.1")

LIBVIRTD_CONF = """\
# lab.vagrant_check: this libvirtd's socket exists only in the run's own mount namespace.
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0777"
auth_unix_ro = "none"
auth_unix_rw = "none"
"""
# Debian's libvirtd looks up the users libvirt-daemon-system would create (and refuses to start
# without them) before it reads qemu.conf: they are added to this mount namespace's copies of
# /etc/passwd and /etc/group only. QEMU itself runs as root, inside the run's namespaces.
SYSTEM_USERS = {"libvirt-qemu": 64055, "libvirt-dnsmasq": 64056}
QEMU_CONF = 'user = "root"\ngroup = "root"\n'


def say(message: str) -> None:
    print(f"vagrant_check: {message}", file=sys.stderr, flush=True)


def host_state() -> dict[str, str]:
    """What must be the same after the run: the host's network and libvirt configuration."""
    commands = {
        "links": ["ip", "-br", "link"],
        "addresses": ["ip", "-br", "addr"],
        "routes": ["ip", "route", "show", "table", "all"],
        "nft": ["nft", "list", "ruleset"],
        "iptables": ["iptables-save"],
        "ip6tables": ["ip6tables-save"],
        "ip_forward": ["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"],
    }
    state = {}
    for name, cmd in commands.items():
        if shutil.which(cmd[0]) is None:
            continue
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        # iptables-save stamps its output with the time: not state.
        state[name] = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    listing = []
    for top in LIBVIRT_DIRS:
        for path in sorted(Path(top).rglob("*")) if Path(top).exists() else []:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""
            listing.append(f"{path} {digest}")
        listing.append(f"{top} exists={Path(top).exists()}")
    state["libvirt"] = "\n".join(listing)
    return state


def ensure_host_packages() -> None:
    missing = sorted({pkg for cmd, pkg in HOST_PACKAGES.items() if shutil.which(cmd) is None})
    if subprocess.run(["dpkg-query", "-W", "vagrant-libvirt"], capture_output=True).returncode:
        missing.append("vagrant-libvirt")
    if missing:
        image.apt_install(missing)


def as_user() -> list[str]:
    """The prefix that runs a command as USER, with no supplementary groups."""
    user = pwd.getpwnam(USER)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]


def project_for_user(work: Path) -> Path:
    """The clone, or a copy of it where USER cannot read it (a clone in root's home).

    The copy leaves out what the Vagrantfile's rsync leaves out, and .git.
    """
    check = [*as_user(), "test", "-r", str(image.REPO / "Vagrantfile")]
    if subprocess.run(check).returncode == 0:
        return image.REPO
    copy = work / "project"
    say(f"{USER} cannot read {image.REPO}: using a copy, {copy}")
    ignore = shutil.ignore_patterns(".git", ".venv", ".vagrant", "__pycache__", "build", "site")
    shutil.copytree(image.REPO, copy, ignore=ignore, symlinks=True)
    return copy


def outside(guest_args: list[str]) -> int:
    """As root in the host's namespaces: prepare, run ``inside`` in new ones, compare."""
    ensure_host_packages()
    t0 = time.monotonic()
    path = box.ensure_box()
    say(f"box {path} ready in {time.monotonic() - t0:.0f} s")
    before = host_state()
    made = [d for d in LIBVIRT_DIRS if not os.path.exists(d)]
    work = Path(tempfile.mkdtemp(prefix="mycontainer-vagrant-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    try:
        say(f"a venv for {USER}: {' '.join(USER_REQUIREMENTS)}")
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(work / "venv")], check=True)
        pip = [str(work / "venv/bin/python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--disable-pip-version-check", *USER_REQUIREMENTS], check=True)
        for d in made:
            os.makedirs(d)  # mount points for this run's own directories; removed below
        cmd = ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc",
               sys.executable, "-m", "lab.vagrant_check", "--inside", str(work), str(path),
               str(project_for_user(work)),
               "--", *guest_args]  # fmt: skip
        code = subprocess.run(cmd, cwd=image.REPO).returncode
    finally:
        for d in reversed(made):
            os.rmdir(d)
        image._remove(work)
    after = host_state()
    changed = [name for name in before if before[name] != after.get(name)]
    if changed:
        for name in changed:
            say(f"the host's {name} changed:\n--- before\n{before[name]}\n--- after\n{after[name]}")
        return code or 1
    say("the host's network and libvirt configuration are as before")
    return code


def init(work: Path, box_file: Path, project: Path, guest_args: list[str]) -> int:
    """PID 1 of the new PID namespace: reap every orphan, as an init must.

    libvirtd's daemonized children (the QEMU it probes, dnsmasq) become PID 1's children
    when their parents exit; unreaped, they stay zombies, and libvirtd waits for them to die.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    main_pid = os.fork()
    if main_pid == 0:
        os._exit(inside(work, box_file, project, guest_args))
    while True:
        pid, status = os.wait()
        if pid == main_pid:
            return os.waitstatus_to_exitcode(status)


def inside(work: Path, box_file: Path, project: Path, guest_args: list[str]) -> int:
    """In new PID, network and mount namespaces: libvirt, then the test as nobody."""
    run = lambda *cmd: subprocess.run(cmd, check=True)  # noqa: E731
    run("mount", "--make-rprivate", "/")
    run("ip", "link", "set", "lo", "up")
    run("mount", "-t", "tmpfs", "-o", "mode=0755", "lab-run", "/run")
    for name, lines in (
        (
            "passwd",
            [f"{u}:x:{i}:{i}::/nonexistent:/usr/sbin/nologin" for u, i in SYSTEM_USERS.items()],
        ),
        ("group", [f"{u}:x:{i}:" for u, i in SYSTEM_USERS.items()]),
    ):
        own = work / name
        text = Path("/etc", name).read_text()
        missing = [line for line in lines if f"\n{line.split(':')[0]}:" not in f"\n{text}"]
        own.write_text(text + "".join(f"{line}\n" for line in missing))
        os.chmod(own, 0o644)
        run("mount", "--bind", str(own), f"/etc/{name}")
    for d in LIBVIRT_DIRS:
        own = work / d.strip("/").replace("/", "-")
        if d == "/etc/libvirt":
            shutil.copytree(d, own, symlinks=True)
            (own / "libvirtd.conf").write_text(LIBVIRTD_CONF)
            (own / "qemu.conf").write_text(QEMU_CONF)
        else:
            own.mkdir()
        run("mount", "--bind", str(own), d)
    Path("/run/libvirt").mkdir()
    run("virtlogd", "--daemon")
    run("libvirtd", "--daemon")
    deadline = time.monotonic() + 60
    while subprocess.run(["virsh", "version"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            log = Path("/var/log/libvirt/libvirtd.log")
            tail = log.read_text()[-3000:] if log.exists() else ""
            say(f"libvirtd did not answer within 60 s; its log ends:\n{tail}")
            return 1
        time.sleep(0.5)

    user = pwd.getpwnam(USER)
    home = work / "home"
    home.mkdir()
    os.chown(home, user.pw_uid, user.pw_gid)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(home),
        "USER": USER,
        "LANG": "C.UTF-8",
        # .vagrant/ outside the clone, which nobody cannot write to
        "VAGRANT_DOTFILE_PATH": str(home / "dot-vagrant"),
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        "VAGRANT_NO_COLOR": "1",
        "MYCONTAINER_BOX": box.NAME,
        "MYCONTAINER_TEST_VAGRANT": "1",
        "MYCONTAINER_VAGRANT_OFFLINE": "1",  # this network namespace has no way out
        "MYCONTAINER_VAGRANT_TESTS": " ".join(guest_args),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": str(project),  # the test imports lab
    }
    timings: dict[str, float] = {}

    def timed(name: str, cmd: list[str]) -> int:
        t0 = time.monotonic()
        say(f"{name}: {' '.join(cmd)}")
        code = subprocess.run([*as_user(), *cmd], env=env, cwd=project).returncode
        timings[name] = round(time.monotonic() - t0, 1)
        say(f"{name}: exit code {code} after {timings[name]:.0f} s")
        return code

    code = timed("box add", ["vagrant", "box", "add", "--name", box.NAME, str(box_file)])
    try:
        if code == 0:
            test = "tests/test_lab.py::test_vagrant_lab_provisions_and_passes"
            python = str(work / "venv/bin/python")
            code = timed("test", [python, "-m", "pytest", "-p", "no:cacheprovider",
                                  "-s", "-rA", test])  # fmt: skip
    finally:
        timed("destroy", ["vagrant", "destroy", "-f"])
        left = leftovers()
        if left:
            say(f"left behind in libvirt after vagrant destroy: {left}")
            code = code or 1
        say(f"timings (s): {timings}")
    return code


def leftovers() -> list[str]:
    """Domains after ``vagrant destroy`` are a failure; the box's base volume, the
    storage pool and the management network are vagrant-libvirt's to keep, and die here."""
    out = subprocess.run(["virsh", "list", "--all", "--name"], capture_output=True, text=True)
    return [f"domain {name}" for name in out.stdout.split()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m lab.vagrant_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--inside", nargs=3, metavar=("WORK", "BOX", "PROJECT"), help=argparse.SUPPRESS
    )
    parser.add_argument("guest_args", nargs="*", help="pytest arguments for the guest")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if os.geteuid() != 0:
        say("needs root (libvirtd, namespaces): sudo python3 -m lab.vagrant_check")
        return 2
    guest_args = args.guest_args or list(SMOKE)
    if args.inside:
        work, box_file, project = map(Path, args.inside)
        return init(work, box_file, project, guest_args)
    return outside(guest_args)


if __name__ == "__main__":
    sys.exit(main())
