"""A guard, not a stopwatch: what ``mycontainer run`` must not import.

``mycontainer run`` is measured against runc, and a Python start is mostly imports: a
module that a run does not need costs every run its import, however fast the code that
would use it. Timing a run in a test would measure how busy the machine is; which modules
it imports is exact. So each test here runs a real container, with ``-X importtime``
(which every process of the run inherits, the container's init included), and fails on a
module of FORBIDDEN, naming it and the chain of imports that brought it in.

The command is the console script's own code (``from runtime.launcher import main``)
under ``python -c``: the script itself imports ``re`` first, which would hide an import of
``re`` by the runtime, and ``python -m runtime`` imports runpy's modules (contextlib,
importlib.util...) before ours.
"""

from __future__ import annotations

import subprocess
import sys
from shlex import join

import pytest

from conftest import environment

pytestmark = pytest.mark.privileged

LAUNCH = "from runtime.launcher import main; main()"  # what the console script runs

# What no run imports: module -> why a run can do without it.
EVERY_RUN = {
    "click": "the CLI library: runtime.launcher parses a plain run itself",
    "runtime.cli": "click's command line (runtime.launcher)",
    "runtime.timings": "MYCONTAINER_TIMINGS is unset",
    "runtime.terminal": "a terminal: run -t only",
    "runtime.reaper": "run --init only",
    "runtime.userns": "user namespaces: bundles only",
    "runtime.hooks": "OCI hooks: bundles only",
    "runtime.spec": "config.json: mycontainer-oci only",
    "runtime.bundle": "OCI bundles: mycontainer-oci only",
    "runtime.layer": "unpacking layers: image files only",
    "runtime.imagesource": "image files only, not a stored image",
    "runtime.pull": "pulling: an image that is not stored, or run --pull always",
    "runtime.registry": "pulling: an image that is not stored, or run --pull always",
    "runtime.reference": "pulling: a stored image is found by its normalised name",
    "urllib3": "the registry client's HTTP: pulling only",
    "runtime.detached": "run -d only",
    "runtime.monitor": "run -d only",
    "runtime.volumes": "named volumes: run -v NAME:PATH only",
    "runtime.process_settings": "a bundle's rlimits, umask and user: mycontainer-oci only",
    "resource": "rlimits: a bundle's only (runtime.process_settings)",
    "math": "cgroup values are integers (runtime.cgroups)",
    "subprocess": "a run executes nothing but the container's program",
    "threading": "a run has one thread",
    "asyncio": "a run waits on one process",
    "selectors": "a run waits on one process",
    "socket": "sockets, where they are needed, come from runtime.syscalls",
    "socketserver": "a run serves nothing",
    "http": "a run serves nothing",
    "logging": "mycontainer's messages are one line on stderr (runtime.exits)",
    "argparse": "the command line is runtime.launcher's",
    "typing": "annotations are strings (from __future__ import annotations)",
    "contextlib": "try/finally does its work on the hot path",
    "dataclasses": "plain classes",
    "inspect": "nothing is introspected",
    "tempfile": "the state and storage directories are named by the container's id",
    "shutil": "runtime.removal removes trees",
    "tarfile": "layers are unpacked by runtime.layer, for image files only",
    "gzip": "layers are unpacked by runtime.layer, for image files only",
    "zstandard": "layers are unpacked by runtime.layer, for image files only",
    "isal": "layers are unpacked by runtime.layer, for image files only",
    "hashlib": "digests are checked when an image is loaded, not when it runs",
    "datetime": "times are written with the time module (runtime.container._now)",
    "ipaddress": "addresses are the bridge network's",
}
# What a run in each network mode must not import. A mode's list is EVERY_RUN's and its
# own; one that needs a module of EVERY_RUN leaves it out, as the bridge does ipaddress.
FORBIDDEN = {
    "bridge": {
        **{module: why for module, why in EVERY_RUN.items() if module != "ipaddress"},
        "pyroute2": "netlink: ip(8) makes the veth, ioctls configure eth0 (runtime.netbridge)",
        "subprocess": "ip(8) is started with os.posix_spawn; nft only by the first run",
        "shutil": "which firewall: only the first run, which makes the NAT, asks",
    },
    "none": {
        **EVERY_RUN,
        "pyroute2": "netlink: --net none only brings lo up, with an ioctl",
        "runtime.netbridge": "the bridge and veth pairs: --net bridge only",
        "runtime.netfilter": "NAT and published ports: --net bridge only",
    },
    "host": {
        **EVERY_RUN,
        "pyroute2": "netlink: --net host changes no network",
        "runtime.netbridge": "the bridge and veth pairs: --net bridge only",
        "runtime.netfilter": "NAT and published ports: --net bridge only",
    },
}


def imports(stderr: str) -> dict[str, list[str]]:
    """module -> the chain of modules that imported it (its importer first), from the
    lines of ``-X importtime``, which come in post-order: a module's importer is the first
    line after it that is indented less."""
    entries = []  # (depth, name)
    for line in stderr.splitlines():
        if line.startswith("import time:") and not line.endswith("imported package"):
            name = line.rsplit("|", 1)[1][1:]
            entries.append(((len(name) - len(name.lstrip())) // 2, name.strip()))
    chains = {}
    for index, (depth, name) in enumerate(entries):
        chain = []
        for later_depth, later in entries[index + 1 :]:
            if later_depth < depth:
                chain.append(later)
                depth = later_depth
        chains.setdefault(name, chain)
    return chains


@pytest.mark.parametrize("mode", sorted(FORBIDDEN))
def test_a_run_imports_only_what_it_needs(mycontainer, home, state_root, mode):
    """For the bridge, the run after the first, which made the bridge and its NAT, in a
    network namespace of the test's own (they go with it)."""
    run = [sys.executable, "-c", LAUNCH, "run", "--rm", "--net", mode, "busybox", "true"]
    guarded = [sys.executable, "-X", "importtime", *run[1:]]
    command = guarded
    if mode == "bridge":
        command = ["unshare", "--net", "sh", "-c", f"{join(run)} && exec {join(guarded)}"]
    result = subprocess.run(
        command,
        env=environment(home, state_root),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = imports(result.stderr)
    assert "runtime.container" in found, "no -X importtime output: the guard saw nothing"
    unneeded = [
        f"{module} ({why}), imported by {' <- '.join(found[module]) or 'the command'}"
        for module, why in FORBIDDEN[mode].items()
        if module in found
    ]
    assert not unneeded, f"run --net {mode} imported " + "; ".join(unneeded)


def test_imports_names_who_imported_what():
    lines = [
        "import time: self [us] | cumulative | imported package",
        "import time:        10 |         10 |       re._parser",
        "import time:        10 |         20 |     re",
        "import time:        10 |         10 |     fcntl",
        "import time:        10 |         40 |   runtime.state",
        "import time:        10 |         50 | runtime.container",
        "import time:        10 |         10 | gc",
    ]
    assert imports("\n".join(lines)) == {
        "re._parser": ["re", "runtime.state", "runtime.container"],
        "re": ["runtime.state", "runtime.container"],
        "fcntl": ["runtime.state", "runtime.container"],
        "runtime.state": ["runtime.container"],
        "runtime.container": [],
        "gc": [],
    }


def test_the_default_state_root_needs_no_zlib():
    """zlib names the cgroup parent of a state root of its own (a test's, as above, where
    it is imported): a run in the default state root, the users', does without it."""
    code = (
        "import sys; from runtime import container, state; "
        "container.cgroup_parent(state.DEFAULT_ROOT); print('zlib' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "False\n", result.stderr
