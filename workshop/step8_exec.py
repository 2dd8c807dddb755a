# Step 8, for you to write: the TODOs say what to do and which man page to read.
# (skeleton f7b27c3b5033, made from steps/step8_exec.py by python -m workshop.make)
# ruff: noqa: F401, F841 (what the TODOs need is imported; some of it is yet unused)
"""Step 8: entering a running container, as ``docker exec`` and nsenter(1) do.

A container is what its first process was given: namespaces, a cgroup, boundaries. To run
one more command in it, a process takes each of them from outside. Given the PID of a
container's init as the host sees it (step 7's, say), the step opens the init's
/proc/PID/ns/* files, joins its cgroup, setns(2)s into each namespace (user first, mnt
last), forks (a PID namespace takes in children only), enters the init's root, applies the
init's capabilities, no_new_privs and seccomp filter, and executes the command.
``--skip NAMESPACE``, ``--no-cgroup`` and ``--no-boundaries`` leave a part out, to see what
it was for. Try, with
``sudo .venv/bin/python -m workshop.step7_security busybox -- sleep 1008`` running in another
terminal: ``sudo .venv/bin/python -m workshop.step8_exec $(pgrep -xf 'sleep 1008') -- ps``.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

import workshop
from runtime import cgroups, process, seccomp, security
from runtime.capabilities import names_of, spec_names
from runtime.container import EXEC_NAMESPACES, ContainerError, check_host
from runtime.syscalls import (
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    machine_name,
    prctl,
    setns,
)
from steps import common

# The five capability sets, as config.json and as /proc/PID/status name them.
STATUS_FIELDS = {
    "bounding": "CapBnd",
    "effective": "CapEff",
    "inheritable": "CapInh",
    "permitted": "CapPrm",
    "ambient": "CapAmb",
}


class Target:
    """What the step takes from a running container's init, read and opened from the host.

    Everything comes through one descriptor of the init's /proc/PID directory: if the init
    exits and its number goes to another process meanwhile, every later open fails (ESRCH)
    instead of reading the newcomer's (proc(5)). All is opened before any setns(2): once in
    the container's mount namespace, the host's /proc is out of sight.
    """

    def __init__(self, pid: int, skip=(), cgroup: bool = True, boundaries: bool = True):
        try:
            self.proc = os.open(f"/proc/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerError(
                f"no process {pid}: give the PID of a running container's init, as the host "
                "sees it (pgrep -xf 'sleep 1008', say)"
            ) from None
        self.pid = pid
        self.fds: list[int] = []
        try:
            fields = (line.partition(":") for line in self._read("status").splitlines())
            status = {key: value.strip() for key, _, value in fields}
            self.namespaces = self._open_namespaces(skip)
            # The root as the init sees it, for a container that chroot(2)ed rather than
            # pivot_root(2)ed (runc's --no-pivot): setns(CLONE_NEWNS) alone gives the
            # namespace's "/" (nsenter's --root does the same).
            self.root = -1 if "mnt" in skip else self._open("root", os.O_PATH | os.O_DIRECTORY)
            self.cgroups = cgroup_directories(self._read("cgroup")) if cgroup else []
            self.boundaries = boundaries_of(status) if boundaries else None
            self.user = self._user(status)
            environ = self._read("environ").split("\0")
            self.env = dict(entry.split("=", 1) for entry in environ if "=" in entry)
        except OSError as error:  # a zombie has no namespaces left, and no environment
            self.close()
            raise ContainerError(
                f"cannot read /proc/{pid}/{error.filename}: {error.strerror} (has it exited?)"
            ) from None
        except BaseException:
            self.close()
            raise

    def _read(self, name: str) -> str:
        with open(name, opener=lambda path, flags: os.open(path, flags, dir_fd=self.proc)) as f:
            return f.read()

    def _open(self, name: str, flags: int = os.O_RDONLY) -> int:
        self.fds.append(os.open(name, flags | os.O_CLOEXEC, dir_fd=self.proc))
        return self.fds[-1]

    def _open_namespaces(self, skip) -> list[tuple[str, int, int]]:
        """(name, CLONE_NEW* flag, open /proc/PID/ns file) of the init's namespaces that are
        not ours, in EXEC_NAMESPACES's order. One it shares with us needs no joining (and
        setns(2) into one's own user namespace fails, EINVAL)."""
        return [
            (name, flag, self._open(f"ns/{name}"))
            for name, flag in EXEC_NAMESPACES
            if name not in skip
            and os.readlink(f"ns/{name}", dir_fd=self.proc) != os.readlink(f"/proc/self/ns/{name}")
        ]

    def _user(self, status: dict) -> tuple[int, int, list[int]]:
        """The init's user, group and supplementary groups, as its user namespace numbers
        them: /proc/PID/status shows them as ours does (user_namespaces(7))."""
        uid, gid = int(status["Uid"].split()[0]), int(status["Gid"].split()[0])
        groups = [int(group) for group in status["Groups"].split()]
        if not any(name == "user" for name, _, _ in self.namespaces):
            return uid, gid, groups
        uids, gids = self._read("uid_map"), self._read("gid_map")
        return inside(uid, uids), inside(gid, gids), [inside(g, gids) for g in groups]

    def close(self) -> None:
        for fd in (*self.fds, self.proc):
            os.close(fd)
        self.fds = []


def inside(host_id: int, id_map: str) -> int:
    """The number that ``host_id`` has in a user namespace with this uid_map or gid_map."""
    for line in id_map.splitlines():
        first_inside, first_outside, count = map(int, line.split())
        if first_outside <= host_id < first_outside + count:
            return host_id - first_outside + first_inside
    raise ContainerError(f"the init's id {host_id} is not mapped in its user namespace")


def cgroup_directories(init_cgroups: str) -> list[str]:
    """The init's group in each hierarchy where it is not in ours: the directories whose
    ``cgroup.procs`` the entering process writes itself into (cgroups(7)).

    ``init_cgroups`` is the init's /proc/PID/cgroup, ``ID:CONTROLLERS:PATH`` a hierarchy
    (``0::PATH`` for v2), paths as our own cgroup namespace shows them.
    """
    layout = cgroups.detect()
    with open("/proc/self/cgroup") as file:
        ours = set(file.read().splitlines())
    directories = []
    for line in init_cgroups.splitlines():
        if line in ours:
            continue  # the same group as ours: we are in it already
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0":
            mount = layout.v2_mount
        else:
            mounts = {**layout.v1_mounts, "cpuset": layout.v1_cpuset}
            mount = next(filter(None, map(mounts.get, controllers.split(","))), None)
        if not mount:
            raise ContainerError(
                f"cannot join the init's cgroup {path} ({controllers or 'v2'}): that hierarchy "
                "is not mounted here (use --no-cgroup to stay out of it)"
            )
        directories.append(os.path.join(mount, path.lstrip("/")))
    return directories


def boundaries_of(status: dict) -> security.Boundaries:
    """The init's capability sets, no_new_privs and seccomp filter, as runtime.security
    applies them.

    The sets and no_new_privs are read as they are now: the bounding set and no_new_privs
    can only have tightened since the init started, and the other sets can grow only through
    execve(2), within the bounding set (capabilities(7)). A seccomp filter cannot be read
    back without ptrace(2), so a filter on the init (``Seccomp: 2``) means docker's, built
    again for its bounding set: the one step 7 and ``mycontainer run`` install
    (runtime.policy).
    """
    masks = {name: int(status[field], 16) for name, field in STATUS_FIELDS.items()}
    mode = status["Seccomp"]
    if mode not in ("0", "2"):
        raise ContainerError(f"the init is in seccomp mode {mode}: only 0 and 2 can be copied")
    return security.Boundaries(
        {name: spec_names(mask) for name, mask in masks.items()},
        no_new_privileges=status["NoNewPrivs"] == "1",
        seccomp=seccomp.build(masks["bounding"], machine_name()) if mode == "2" else None,
    )


def enter(target: Target, command: list[str], report: int, interpreter) -> None:
    """Runs in a child of the step: join the cgroup and the namespaces, fork the process
    that executes ``command``, report its pid on ``report``, exit. Never returns."""
    try:
        # Nothing of the host may follow us in (CVE-2024-21626): only 0, 1, 2, the report
        # pipe and what Target opened; the latter are closed once used.
        process.close_descriptors(keep=(report, target.proc, *target.fds))
        # Non-dumpable until execve(2): the container's processes, already in the PID
        # namespace we join, cannot ptrace(2) us or open our /proc/PID/fd/* and
        # /proc/PID/exe (CVE-2016-9962, CVE-2019-5736).
        prctl(PR_SET_DUMPABLE, 0)
        raise NotImplementedError(
            "TODO step 8: join the init's cgroups: write \"0\" in each of target.cgroups' "
            "cgroup.procs (cgroups(7))"
        )
        raise NotImplementedError(
            "TODO step 8: join each of target.namespaces, (name, flag, fd): setns(2), then close"
        )
        os.close(target.proc)
        # setns(CLONE_NEWPID) put only our children into the container's PID namespace.
        pid = os.fork()
        if pid == 0:
            os.close(report)
            code = execute(target, command, interpreter)
        else:
            # Its own process group, before the step hands it the terminal. The child sets
            # it too, and may run first: once it has exec'd, ours fails, EACCES (setpgid(2)).
            try:
                os.setpgid(pid, pid)
            except PermissionError as error:
                if error.errno != errno.EACCES:
                    raise
            os.write(report, f"{pid}\n".encode())
            code = 0
    except BaseException as error:
        print(f"error: {error}", file=sys.stderr)
        code = getattr(error, "exit_code", process.EXIT_RUNTIME_ERROR)
    os._exit(code)


def execute(target: Target, command: list[str], interpreter) -> int:
    """Runs in the container's PID namespace: enter the init's root, take its user and
    boundaries, execute ``command``. Returns only the exit code of a failure."""
    os.setpgid(0, 0)
    raise NotImplementedError(
        "TODO step 8: unless target.root is -1, enter the init's root, an open directory: "
        'fchdir(2), chroot(2) to ".", close it'
    )
    if "mnt" in (name for name, _, _ in target.namespaces):
        os.chdir("/")  # else we stay where the step was started: on the host
    try:
        found = process.find_program(command[0], target.env)
        process.refuse_the_interpreter(found, interpreter)  # CVE-2019-5736
    except process.ProcessError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    uid, gid, groups = target.user
    if target.boundaries:
        target.boundaries.before_user_switch()  # the bounding set, while we may
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if target.boundaries:
        target.boundaries.after_user_switch()  # the other sets, no_new_privs, seccomp
    process.default_signals()
    try:
        process.execvpe(command, target.env)
    except OSError as error:
        print(f"error: cannot run {command[0]!r}: {error.strerror}", file=sys.stderr)
        not_found = error.errno in (errno.ENOENT, errno.ENOTDIR)
        return process.EXIT_NOT_FOUND if not_found else process.EXIT_CANNOT_EXECUTE


def run(target: Target, command: list[str]) -> int:
    """Enter the container through a child, wait for the command; return its exit code."""
    interpreter = os.stat("/proc/self/exe")
    interpreter = (interpreter.st_dev, interpreter.st_ino)
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # the command, orphaned by its parent, becomes ours
    report_read, report_write = os.pipe()
    with process.blocking_forwarded_signals():  # Ctrl-C waits until it can be passed on
        child = os.fork()
        if child == 0:
            os.close(report_read)
            enter(target, command, report_write, interpreter)
        os.close(report_write)
        target.close()
        report = os.read(report_read, 32)
        os.close(report_read)
        _, status = os.waitpid(child, 0)
        if not report:  # it said why, on stderr
            return process.exit_code_from_wait_status(status)
        pid = int(report)
        with process.forwarding_signals(pid), process.terminal_foreground(pid):
            _, status = os.waitpid(pid, 0)
    return process.exit_code_from_wait_status(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="sudo .venv/bin/python -m workshop.step8_exec [options] PID -- CMD [ARGS...]",
    )
    parser.add_argument("pid", type=int, help="the container's init, as the host numbers it")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=[name for name, _ in EXEC_NAMESPACES],
        help="a namespace not to join (repeatable)",
    )
    parser.add_argument("--no-cgroup", action="store_true", help="stay in our own cgroup")
    parser.add_argument(
        "--no-boundaries", action="store_true", help="keep all of root's privileges"
    )
    options = common.parse(parser, argv)
    try:
        check_host()
        target = Target(options.pid, options.skip, not options.no_cgroup, not options.no_boundaries)
    except (ContainerError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", process.EXIT_RUNTIME_ERROR)
    joined = " ".join(name for name, _, _ in target.namespaces) or "none"
    print(f"step 8: entering PID {target.pid}: namespaces {joined}", file=sys.stderr)
    print(f"step 8: cgroup {', '.join(target.cgroups) or 'ours'}", file=sys.stderr)
    boundaries = target.boundaries
    if boundaries:
        print(
            f"step 8: capabilities {' '.join(names_of(boundaries.sets['bounding']))}; "
            f"no_new_privs {'on' if boundaries.no_new_privileges else 'off'}; "
            f"seccomp {'on' if boundaries.seccomp else 'off'}",
            file=sys.stderr,
        )
    else:
        print("step 8: no boundaries: all of root's privileges", file=sys.stderr)
    return run(target, options.command)


if __name__ == "__main__":
    sys.exit(main())
