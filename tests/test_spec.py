"""config.json read and checked (runtime.spec): what loads, what is refused and how it is said.

Bad input is a corpus: one config per mistake, each refused with one line that names the
field. Good input is what engines and tools really write: ``runc spec``'s output, the
configs the OCI runtime-tools suite generates for each of its groups, and our own
``mycontainer-oci spec``. No root needed, except to drive the runtime-tools suite.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from lab import conformance
from runtime import spec
from runtime.capabilities import CAPABILITIES


def make_bundle(path, config) -> str:
    """A bundle at ``path``: config.json and an empty rootfs directory."""
    os.makedirs(os.path.join(path, "rootfs"), exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as file:
        json.dump(config, file)
    return str(path)


def load(path, config, warnings=None) -> dict:
    collect = (warnings if warnings is not None else []).append
    return spec.load(make_bundle(path, config), warn=collect)


MINIMAL = {
    "ociVersion": "1.0.0",
    "root": {"path": "rootfs"},
    "process": {"args": ["sh"], "cwd": "/"},
}


def changed(**paths):
    """A function that sets each dotted path (``process__user__uid``) in a default
    config; the value ``DELETE`` removes the key."""

    def change(config):
        for dotted, value in paths.items():
            *parents, key = dotted.split("__")
            obj = config
            for parent in parents:
                obj = obj.setdefault(parent, {})
            if value is DELETE:
                obj.pop(key, None)
            else:
                obj[key] = value
        return config

    return change


DELETE = object()
USERNS = [{"containerID": 0, "hostID": 1000, "size": 1000}]


def with_userns(uid_mappings):
    """A new user namespace with these uidMappings (and USERNS as gidMappings)."""
    return changed(
        linux__namespaces=[{"type": "uts"}, {"type": "user"}],
        linux__uidMappings=uid_mappings,
        linux__gidMappings=USERNS,
    )


# (change to the default config, the error: it must start with "config.json: " + this)
BAD = {
    "no ociVersion": (changed(ociVersion=DELETE), "ociVersion: missing or not a string"),
    "ociVersion 2": (changed(ociVersion="2.0.0"), "ociVersion: '2.0.0' is not supported"),
    "ociVersion 0.x": (changed(ociVersion="0.5.0"), "ociVersion: '0.5.0' is not supported"),
    "ociVersion word": (changed(ociVersion="invalid"), "ociVersion: 'invalid' is not a version"),
    "ociVersion short": (changed(ociVersion="1.0"), "ociVersion: '1.0' is not a version"),
    "no process": (changed(process=DELETE), "process: missing"),
    "process a list": (changed(process=[]), "process: must be an object"),
    "args empty": (changed(process__args=[]), "process.args: empty"),
    "args missing": (changed(process__args=DELETE), "process.args: empty"),
    "args a string": (changed(process__args="sh"), "process.args: must be an array"),
    "args a number": (changed(process__args=["sh", 1]), "process.args: 1 is not a string"),
    "args NUL": (changed(process__args=["s\0h"]), "process.args: contains a NUL byte"),
    "env no =": (changed(process__env=["FOO"]), "process.env: 'FOO' is not KEY=VALUE"),
    "env no key": (changed(process__env=["=x"]), "process.env: '=x' is not KEY=VALUE"),
    "cwd relative": (changed(process__cwd="tmp"), "process.cwd: 'tmp' is not an absolute path"),
    "cwd missing": (changed(process__cwd=DELETE), "process.cwd: missing"),
    "terminal string": (
        changed(process__terminal="yes"),
        "process.terminal: must be true or false",
    ),
    "consoleSize negative": (
        changed(process__consoleSize={"height": -1, "width": 80}),
        "process.consoleSize.height: -1 is out of range",
    ),
    "uid negative": (changed(process__user__uid=-1), "process.user.uid: -1 is out of range"),
    "uid -1 as u32": (
        changed(process__user__uid=2**32 - 1),
        "process.user.uid: 4294967295 is out of range",
    ),
    "uid string": (changed(process__user__uid="0"), "process.user.uid: must be an integer"),
    "uid bool": (changed(process__user__uid=True), "process.user.uid: must be an integer"),
    "uid float": (changed(process__user__uid=1.5), "process.user.uid: must be an integer"),
    "gid big": (changed(process__user__gid=2**40), "process.user.gid: 1099511627776 is out"),
    "umask big": (changed(process__user__umask=0o1000), "process.user.umask: 512 is out"),
    "additionalGids": (
        changed(process__user__additionalGids=[5, -5]),
        "process.user.additionalGids[1]: -5 is out of range",
    ),
    "username": (
        changed(process__user__username="root"),
        "process.user.username: a Windows field",
    ),
    "CAP_TEST": (
        changed(process__capabilities__bounding=["CAP_TEST"]),
        "process.capabilities.bounding: unknown capability 'CAP_TEST' (names from "
        "capabilities(7), such as CAP_CHOWN)",
    ),
    "cap without CAP_": (
        changed(process__capabilities__ambient=["CHOWN"]),
        "process.capabilities.ambient: unknown capability 'CHOWN'",
    ),
    "cap lower case": (
        changed(process__capabilities__effective=["cap_chown"]),
        "process.capabilities.effective: unknown capability 'cap_chown'",
    ),
    "cap set a string": (
        changed(process__capabilities__permitted="CAP_KILL"),
        "process.capabilities.permitted: must be an array",
    ),
    "rlimit unknown": (
        changed(process__rlimits=[{"type": "RLIMIT_TEST", "soft": 1, "hard": 1}]),
        "process.rlimits[0].type: unknown limit 'RLIMIT_TEST'",
    ),
    "rlimit twice": (
        changed(
            process__rlimits=[
                {"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1},
                {"type": "RLIMIT_NOFILE", "soft": 2, "hard": 2},
            ]
        ),
        "process.rlimits[1].type: RLIMIT_NOFILE is set twice",
    ),
    "rlimit soft above hard": (
        changed(process__rlimits=[{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}]),
        "process.rlimits[0]: soft limit 2 is above the hard 1",
    ),
    "rlimit no hard": (
        changed(process__rlimits=[{"type": "RLIMIT_CORE", "soft": 2}]),
        "process.rlimits[0].hard: missing",
    ),
    "rlimit above u64": (
        changed(process__rlimits=[{"type": "RLIMIT_CORE", "soft": 1, "hard": 2**64}]),
        "process.rlimits[0].hard: 18446744073709551616 is out of range",
    ),
    "noNewPrivileges string": (
        changed(process__noNewPrivileges="true"),
        "process.noNewPrivileges: must be true or false",
    ),
    "oomScoreAdj": (changed(process__oomScoreAdj=1001), "process.oomScoreAdj: 1001 is out"),
    "selinux": (changed(process__selinuxLabel="system_u"), "process.selinuxLabel: SELinux"),
    "scheduler": (
        changed(process__scheduler={"policy": "SCHED_FIFO"}),
        "process.scheduler: scheduling policies are not set",
    ),
    "no root": (changed(root=DELETE), "root: missing"),
    "root outside": (changed(root__path="../.."), "root.path: '../..' resolves to /"),
    "root empty": (changed(root__path=""), "root.path: empty"),
    "root a file": (changed(root__path="config.json"), "root.path: 'config.json' is not a dir"),
    "root missing dir": (changed(root__path="nothing"), "root.path: 'nothing' is not a dir"),
    "root host": (changed(root__path="/"), "root.path: '/' resolves to /, outside the bundle"),
    "readonly string": (changed(root__readonly="no"), "root.readonly: must be true or false"),
    "hostname long": (changed(hostname="h" * 65), "hostname: at most 64 bytes"),
    "hostname number": (changed(hostname=1), "hostname: must be a string"),
    "hostname without uts": (
        changed(linux__namespaces=[{"type": "mount"}]),
        "hostname: needs a new uts namespace",
    ),
    "mounts an object": (changed(mounts={}), "mounts: must be an array"),
    "mount no destination": (
        changed(mounts=[{"type": "tmpfs", "source": "tmpfs"}]),
        "mounts[0].destination: missing",
    ),
    "mount option number": (
        changed(mounts=[{"destination": "/tmp", "type": "tmpfs", "options": [1]}]),
        "mounts[0].options: 1 is not a string",
    ),
    "mount idmap": (
        changed(mounts=[{"destination": "/d", "source": "/d", "options": ["rbind", "idmap"]}]),
        "mounts[0].options: 'idmap': ID-mapped mounts are not supported",
    ),
    "mount uidMappings": (
        changed(mounts=[{"destination": "/d", "source": "/d", "uidMappings": USERNS}]),
        "mounts[0].uidMappings: ID-mapped mounts are not supported",
    ),
    "bind no source": (
        changed(mounts=[{"destination": "/d", "options": ["bind"]}]),
        "mounts[0].source: a bind mount needs a source",
    ),
    "namespace unknown": (
        changed(linux__namespaces=[{"type": "foo"}]),
        "linux.namespaces[0].type: unknown namespace 'foo'",
    ),
    "namespace twice": (
        changed(linux__namespaces=[{"type": "pid"}, {"type": "uts"}, {"type": "pid"}]),
        "linux.namespaces[2].type: a second pid namespace",
    ),
    "namespace net, short": (
        changed(linux__namespaces=[{"type": "uts"}, {"type": "net", "path": "x"}]),
        "linux.namespaces[1].type: unknown namespace 'net'",
    ),
    "namespace relative path": (
        changed(linux__namespaces=[{"type": "uts"}, {"type": "network", "path": "run/ns"}]),
        "linux.namespaces[1].path: 'run/ns' is not an absolute path",
    ),
    "user namespace without mappings": (
        changed(linux__namespaces=[{"type": "uts"}, {"type": "user"}]),
        "linux.uidMappings: a new user namespace needs uid and gid mappings",
    ),
    "user namespace without gidMappings": (
        changed(linux__namespaces=[{"type": "uts"}, {"type": "user"}], linux__uidMappings=USERNS),
        "linux.gidMappings: a new user namespace needs uid and gid mappings",
    ),
    "mappings of a joined user namespace": (
        changed(
            linux__namespaces=[{"type": "uts"}, {"type": "user", "path": "/proc/1/ns/user"}],
            linux__uidMappings=USERNS,
            linux__gidMappings=USERNS,
        ),
        "linux.uidMappings: the user namespace joined by path has its own",
    ),
    "mapping size 0": (
        with_userns([{"containerID": 0, "hostID": 1000, "size": 0}]),
        "linux.uidMappings[0].size: 0 is out of range (1 to 4294967295)",
    ),
    "mapping negative": (
        with_userns([{"containerID": 0, "hostID": -1, "size": 1}]),
        "linux.uidMappings[0].hostID: -1 is out of range",
    ),
    "mapping past uid_t -1": (
        with_userns([{"containerID": 0, "hostID": 4294967290, "size": 10}]),
        "linux.uidMappings[0].hostID + size: 4294967300 is out of range",
    ),
    "mapping no size": (
        with_userns([{"containerID": 0, "hostID": 1000}]),
        "linux.uidMappings[0].size: missing",
    ),
    "mapping not an object": (with_userns([7]), "linux.uidMappings[0]: must be an object"),
    "mappings overlapping inside": (
        with_userns([*USERNS, {"containerID": 999, "hostID": 5000, "size": 2}]),
        "linux.uidMappings[1].containerID: overlaps linux.uidMappings[0]",
    ),
    "mappings overlapping on the host": (
        with_userns([{"containerID": 5000, "hostID": 1999, "size": 1}, *USERNS]),
        "linux.uidMappings[1].hostID: overlaps linux.uidMappings[0]",
    ),
    "mappings too many": (
        with_userns([{"containerID": i, "hostID": 1000 + i, "size": 1} for i in range(341)]),
        "linux.uidMappings: 341 ranges (the kernel takes 340)",
    ),
    "mappings longer than a page": (
        with_userns([{"containerID": i, "hostID": 4000000000 + i, "size": 1} for i in range(340)]),
        "linux.uidMappings: longer than a page once written",
    ),
    "mappings without root": (
        with_userns([{"containerID": 1, "hostID": 1000, "size": 10}]),
        "linux.uidMappings: maps no containerID 0",
    ),
    "user not mapped": (
        changed(
            linux__namespaces=[{"type": "uts"}, {"type": "user"}],
            linux__uidMappings=USERNS,
            linux__gidMappings=USERNS,
            process__user={"uid": 0, "gid": 0, "additionalGids": [1000]},
        ),
        "process.user.additionalGids: 1000 is not mapped by linux.gidMappings",
    ),
    "time namespace": (
        changed(linux__namespaces=[{"type": "uts"}, {"type": "time"}]),
        "linux.namespaces[1].type: time: time namespaces are not supported",
    ),
    "uidMappings": (changed(linux__uidMappings=USERNS), "linux.uidMappings: no user namespace"),
    "gidMappings": (changed(linux__gidMappings=USERNS), "linux.gidMappings: no user namespace"),
    "device type": (
        changed(linux__devices=[{"type": "x", "path": "/dev/x", "major": 1, "minor": 3}]),
        "linux.devices[0].type: 'x' is not one of c, b, u, p",
    ),
    "device relative": (
        changed(linux__devices=[{"type": "c", "path": "dev/x", "major": 1, "minor": 3}]),
        "linux.devices[0].path: 'dev/x' is not an absolute path",
    ),
    "device dotdot": (
        changed(linux__devices=[{"type": "c", "path": "/dev/../x", "major": 1, "minor": 3}]),
        "linux.devices[0].path: '/dev/../x' is not a file path",
    ),
    "device no major": (
        changed(linux__devices=[{"type": "c", "path": "/dev/x", "minor": 3}]),
        "linux.devices[0].major: missing",
    ),
    "device mode": (
        changed(
            linux__devices=[
                {"type": "c", "path": "/dev/x", "major": 1, "minor": 3, "fileMode": 0o10000}
            ]
        ),
        "linux.devices[0].fileMode: 4096 is out of range",
    ),
    "memory a string": (
        changed(linux__resources__memory={"limit": "1g"}),
        "linux.resources.memory.limit: must be an integer",
    ),
    "memory below -1": (
        changed(linux__resources__memory={"limit": -2}),
        "linux.resources.memory.limit: -2 is out of range",
    ),
    "swap below limit": (
        changed(linux__resources__memory={"limit": 2 << 20, "swap": 1 << 20}),
        "linux.resources.memory.swap: 1048576 is below the limit",
    ),
    "kernel memory": (
        changed(linux__resources__memory={"kernel": 1 << 20}),
        "linux.resources.memory.kernel: kernel memory limits are gone",
    ),
    "cpus open range": (
        changed(linux__resources__cpu={"cpus": "0-"}),
        "linux.resources.cpu.cpus: '0-' is not a list like '0-3,7'",
    ),
    "cpus backwards": (
        changed(linux__resources__cpu={"cpus": "3-1"}),
        "linux.resources.cpu.cpus: '3-1' is not a list",
    ),
    "mems word": (
        changed(linux__resources__cpu={"mems": "all"}),
        "linux.resources.cpu.mems: 'all' is not a list",
    ),
    "quota below -1": (
        changed(linux__resources__cpu={"quota": -5}),
        "linux.resources.cpu.quota: -5 is out of range",
    ),
    "pids below -1": (
        changed(linux__resources__pids={"limit": -2}),
        "linux.resources.pids.limit: -2 is out of range",
    ),
    "device rule access": (
        changed(linux__resources__devices=[{"allow": True, "access": "rwx"}]),
        "linux.resources.devices[0].access: 'rwx' is not made of r, w and m",
    ),
    "device rule type": (
        changed(linux__resources__devices=[{"allow": True, "type": "p"}]),
        "linux.resources.devices[0].type: 'p' is not one of a, c, b",
    ),
    "device rule no allow": (
        changed(linux__resources__devices=[{"access": "rwm"}]),
        "linux.resources.devices[0].allow: missing",
    ),
    "blkio": (
        changed(linux__resources__blockIO={"weight": 500}),
        "linux.resources.blockIO: block I/O limits",
    ),
    "hugetlb": (
        changed(linux__resources__hugepageLimits=[{"pageSize": "2MB", "limit": 1 << 21}]),
        "linux.resources.hugepageLimits: huge page limits",
    ),
    "net_cls": (
        changed(linux__resources__network={"classID": 1048577}),
        "linux.resources.network: net_cls and net_prio",
    ),
    "cgroupsPath dotdot": (
        changed(linux__cgroupsPath="/a/../../b"),
        "linux.cgroupsPath: '/a/../../b' has a '..' component",
    ),
    "cgroupsPath relative dotdot": (
        changed(linux__cgroupsPath="../escape"),
        "linux.cgroupsPath: '../escape' has a '..' component",
    ),
    "cgroupsPath systemd": (
        changed(linux__cgroupsPath="system.slice:docker:abc"),
        "linux.cgroupsPath: 'system.slice:docker:abc' is in systemd's slice:prefix:name form",
    ),
    "sysctl host": (
        changed(linux__sysctl={"kernel.panic": "1"}),
        "linux.sysctl: 'kernel.panic' is not namespaced",
    ),
    "sysctl vm": (
        changed(linux__sysctl={"vm/overcommit_memory": "1"}),
        "linux.sysctl: 'vm/overcommit_memory' is not namespaced",
    ),
    "sysctl without netns": (
        changed(linux__namespaces=[{"type": "uts"}], linux__sysctl={"net.ipv4.ip_forward": "1"}),
        "linux.sysctl: 'net.ipv4.ip_forward' needs a network namespace",
    ),
    "sysctl without ipcns": (
        changed(linux__namespaces=[{"type": "uts"}], linux__sysctl={"kernel.shmmax": "1"}),
        "linux.sysctl: 'kernel.shmmax' needs a ipc namespace",
    ),
    "sysctl climbing": (
        changed(linux__sysctl={"net/../../kernel/panic": "1"}),
        "linux.sysctl: 'net/../../kernel/panic': names like",
    ),
    "sysctl number": (
        changed(linux__sysctl={"net.ipv4.ip_forward": 1}),
        "linux.sysctl: 'net.ipv4.ip_forward': names like 'net.ipv4.ip_forward', values strings",
    ),
    "maskedPaths relative": (
        changed(linux__maskedPaths=["proc/kcore"]),
        "linux.maskedPaths: 'proc/kcore' is not an absolute path",
    ),
    "readonlyPaths number": (
        changed(linux__readonlyPaths=[1]),
        "linux.readonlyPaths: 1 is not a string",
    ),
    "propagation": (
        changed(linux__rootfsPropagation="bogus"),
        "linux.rootfsPropagation: 'bogus' is not one of shared, slave, private",
    ),
    "seccomp a list": (changed(linux__seccomp=[]), "linux.seccomp: must be an object"),
    "seccomp notify": (
        changed(linux__seccomp={"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/s"}),
        "linux.seccomp.listenerPath: seccomp notification",
    ),
    "intelRdt": (changed(linux__intelRdt={"closID": "x"}), "linux.intelRdt: Intel RDT"),
    "personality": (
        changed(linux__personality={"domain": "LINUX32"}),
        "linux.personality: execution domains",
    ),
    "mountLabel": (changed(linux__mountLabel="system_u"), "linux.mountLabel: SELinux"),
    "timeOffsets": (
        changed(linux__timeOffsets={"monotonic": {"secs": 1}}),
        "linux.timeOffsets: time namespaces",
    ),
    "windows": (changed(windows={"layerFolders": ["C:\\x"]}), "windows: this is a Windows"),
    "vm": (changed(vm={"kernel": {"path": "/k"}}), "vm: virtual-machine containers"),
    "hook relative": (
        changed(hooks={"prestart": [{"path": "bin/hook"}]}),
        "hooks.prestart[0].path: 'bin/hook' is not an absolute path",
    ),
    "hook no path": (
        changed(hooks={"poststop": [{"args": ["x"]}]}),
        "hooks.poststop[0].path: missing",
    ),
    "hook timeout zero": (
        changed(hooks={"poststart": [{"path": "/bin/true", "timeout": 0}]}),
        "hooks.poststart[0].timeout: 0 is out of range",
    ),
    "hook args": (
        changed(hooks={"createRuntime": [{"path": "/bin/true", "args": [1]}]}),
        "hooks.createRuntime[0].args: 1 is not a string",
    ),
    "hook env": (
        changed(hooks={"startContainer": [{"path": "/bin/true", "env": ["x"]}]}),
        "hooks.startContainer[0].env: 'x' is not KEY=VALUE",
    ),
    "hooks a list": (
        changed(hooks={"createContainer": {"path": "/bin/true"}}),
        "hooks.createContainer: must be an array",
    ),
    "annotation empty key": (changed(annotations={"": "x"}), "annotations: '': keys are"),
    "annotation number": (changed(annotations={"a": 1}), "annotations: 'a': keys are"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_config_is_one_line_naming_the_field(tmp_path, case):
    change, message = BAD[case]
    config = change(spec.default_config())
    with pytest.raises(spec.SpecError) as error:
        load(tmp_path, config)
    text = str(error.value)
    assert text.startswith("config.json: " + message), text
    assert "\n" not in text


@pytest.mark.parametrize("path", spec.UNSUPPORTED)
def test_every_unsupported_field_is_refused_by_name(tmp_path, path):
    """The table is what is enforced: each field in it, set, is refused, named."""
    config = spec.default_config()
    obj = config
    *parents, key = path.split(".")
    for parent in parents:
        if parent.endswith("[]"):
            obj.setdefault(parent[:-2], []).insert(0, {"destination": "/x"})
            obj = obj[parent[:-2]][0]
        else:
            obj = obj.setdefault(parent, {})
    obj[key] = 1
    with pytest.raises(spec.SpecError) as error:
        load(tmp_path, config)
    name = path.replace("[]", "[0]")
    assert str(error.value) == f"config.json: {name}: {spec.UNSUPPORTED[path]} (remove it)"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"[]", "config.json: not a JSON object"),
        (b'{"ociVersion": "1.0.0",', "config.json: invalid JSON at line 1 column 24"),
        (b'{"ociVersion": NaN}', "config.json: NaN is not a JSON number"),
        (b'{"hostname": "\xff"}', "config.json: not UTF-8 text (byte 14)"),
        (b"[" * 100000 + b"]" * 100000, "config.json: nested too deeply"),
        (b" " * (4 << 20) + b"{}", "config.json: larger than 4 MiB"),
    ],
    ids=["array", "truncated", "NaN", "latin-1", "deep", "huge"],
)
def test_unreadable_config_json(tmp_path, data, message):
    (tmp_path / "config.json").write_bytes(data)
    with pytest.raises(spec.SpecError) as error:
        spec.load(str(tmp_path))
    assert str(error.value).startswith(message), str(error.value)


def test_a_missing_or_odd_config_json_is_refused_without_blocking(tmp_path):
    with pytest.raises(spec.SpecError, match=r"config.json: No such file or directory \(a bundle"):
        spec.load(str(tmp_path))
    os.mkfifo(tmp_path / "config.json")  # no writer: a blocking open would hang forever
    with pytest.raises(spec.SpecError, match=r"config.json: not a regular file"):
        spec.load(str(tmp_path))
    with pytest.raises(spec.SpecError, match=r"bundle '.*/nothing': not a directory"):
        spec.load(str(tmp_path / "nothing"))


def test_root_may_not_leave_the_bundle_through_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    bundle = tmp_path / "bundle"
    make_bundle(bundle, spec.default_config())
    shutil.rmtree(bundle / "rootfs")
    os.symlink(outside, bundle / "rootfs")
    with pytest.raises(
        spec.SpecError, match=r"root.path: 'rootfs' resolves to .*/outside, outside"
    ):
        spec.load(str(bundle))


def test_an_absolute_root_is_taken_as_given_as_podman_writes_it(tmp_path):
    """podman's bundle is in its userdata directory, its root in its storage's overlay."""
    merged = tmp_path / "storage" / "merged"
    merged.mkdir(parents=True)
    config = changed(root__path=str(merged))(spec.default_config())
    assert load(tmp_path / "userdata", config)["root"]["path"] == str(merged)


def test_the_bundle_itself_may_be_the_root_as_runtime_tools_writes_it(tmp_path):
    config = changed(root__path=".")(spec.default_config())
    assert load(tmp_path, config)["root"]["path"] == str(tmp_path)


def test_defaults_are_filled_in(tmp_path):
    config = load(tmp_path, MINIMAL)
    assert config == {
        "ociVersion": "1.0.0",
        "root": {"path": str(tmp_path / "rootfs"), "readonly": False},
        "process": {
            "terminal": False,
            "args": ["sh"],
            "env": [],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0, "additionalGids": []},
            "capabilities": {kind: [] for kind in spec.CAPABILITY_SETS},
            "rlimits": [],
            "noNewPrivileges": False,
        },
        "mounts": [],
        "linux": {
            "namespaces": [],
            "devices": [],
            "resources": {"devices": []},
            "sysctl": {},
            "maskedPaths": [],
            "readonlyPaths": [],
        },
        "hooks": {kind: [] for kind in spec.HOOKS},
        "annotations": {},
    }


def test_everything_the_runtime_acts_on_is_kept(tmp_path):
    """A config that sets every supported field loads with each value where it was."""
    full = spec.default_config()
    full["process"].update(
        terminal=True,
        consoleSize={"height": 25, "width": 80},
        user={"uid": 1, "gid": 2, "umask": 0o22, "additionalGids": [5, 6]},
        oomScoreAdj=-1000,
        rlimits=[{"type": "RLIMIT_NOFILE", "soft": 2**64 - 1, "hard": 2**64 - 1}],
    )
    full["domainname"] = "example.org"
    full["mounts"].append(
        {"destination": "/data", "type": "none", "source": "data", "options": ["rbind", "ro"]}
    )
    full["linux"].update(
        devices=[
            {"type": "c", "path": "/dev/fuse", "major": 10, "minor": 229, "fileMode": 438},
            {"type": "p", "path": "/fifo"},
        ],
        resources={
            "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": -1},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
            "pids": {"limit": 100},
            "devices": [{"allow": False}, {"allow": True, "type": "c", "major": 1, "minor": 3}],
        },
        cgroupsPath="/mycontainer/test",
        sysctl={"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "fs.mqueue.msg_max": "9"},
        rootfsPropagation="rslave",
        seccomp={"defaultAction": "SCMP_ACT_ALLOW"},
    )
    full["hooks"] = {"poststop": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    full["annotations"] = {"com.example.key": ""}
    config = load(tmp_path, full)
    assert config["process"]["consoleSize"] == {"height": 25, "width": 80}
    assert config["process"]["user"] == full["process"]["user"]
    assert config["process"]["oomScoreAdj"] == -1000
    assert config["process"]["rlimits"] == full["process"]["rlimits"]
    assert config["domainname"] == "example.org"
    assert config["mounts"][-1]["source"] == str(tmp_path / "data")  # against the bundle
    assert config["mounts"][0] == {"destination": "/proc", "type": "proc", "source": "proc",
                                   "options": []}  # fmt: skip
    assert config["linux"]["devices"][1] == {"type": "p", "path": "/fifo"}
    resources = config["linux"]["resources"]
    assert resources["memory"] == full["linux"]["resources"]["memory"]
    assert resources["cpu"] == full["linux"]["resources"]["cpu"]
    assert resources["pids"] == {"limit": 100}
    assert resources["devices"] == [
        {"allow": False, "type": "a", "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    ]
    for key in ("cgroupsPath", "sysctl", "rootfsPropagation", "seccomp"):
        assert config["linux"][key] == full["linux"][key]
    assert config["hooks"]["poststop"] == full["hooks"]["poststop"]
    assert config["annotations"] == full["annotations"]


def test_console_size_is_ignored_without_a_terminal(tmp_path):
    config = changed(process__consoleSize={"height": 25, "width": 80})(copy.deepcopy(MINIMAL))
    assert "consoleSize" not in load(tmp_path, config)["process"]


def test_unknown_properties_are_ignored_and_empty_unsupported_ones_accepted(tmp_path):
    """config.md, Extensibility: "MUST otherwise ignore them"; an unsupported field that asks
    for nothing (null, false, empty) is no request."""
    config = copy.deepcopy(MINIMAL)
    config["unknown"] = {"anything": 1}
    config["process"]["futureField"] = True
    config["process"]["apparmorProfile"] = ""
    config["linux"] = {"resources": {"memory": {"disableOOMKiller": False}}, "uidMappings": []}
    loaded = load(tmp_path, config)
    assert "unknown" not in loaded and "futureField" not in loaded["process"]


def test_a_relative_mount_destination_is_taken_from_root_with_a_warning(tmp_path):
    """1.0 said MUST be absolute; 1.1+ allows relative ones, deprecated, against /."""
    config = changed(mounts=[{"destination": "tmp//x/", "type": "tmpfs"}])(copy.deepcopy(MINIMAL))
    warnings = []
    assert load(tmp_path, config, warnings)["mounts"][0]["destination"] == "/tmp/x"
    assert warnings == ["config.json: mounts[0].destination: 'tmp//x/' is relative; taken from /"]


def test_any_1x_version_loads(tmp_path):
    for version in ("1.0.0", "1.0.2-dev", "1.0.0-rc5", "1.2.1", "1.3.0", "1.9.0+build.7"):
        assert load(tmp_path, changed(ociVersion=version)(copy.deepcopy(MINIMAL)))


def test_capabilities_are_deduplicated_in_order(tmp_path):
    caps = ["CAP_KILL", "CAP_CHOWN", "CAP_KILL"]
    config = changed(process__capabilities={"bounding": caps})(copy.deepcopy(MINIMAL))
    capabilities = load(tmp_path, config)["process"]["capabilities"]
    assert capabilities["bounding"] == ["CAP_KILL", "CAP_CHOWN"]
    assert capabilities["ambient"] == []


def test_default_config_round_trips(tmp_path):
    """What ``mycontainer-oci spec`` writes, written and read back: it loads, with the
    namespaces, masks and limits it says; and a loaded config loads again unchanged."""
    default = spec.default_config()
    assert json.loads(json.dumps(default)) == default
    warnings = []
    config = load(tmp_path / "a", default, warnings)
    assert warnings == []
    assert config["process"]["terminal"] is True
    assert config["root"] == {"path": str(tmp_path / "a" / "rootfs"), "readonly": True}
    assert [ns["type"] for ns in config["linux"]["namespaces"]] == [
        "pid", "network", "ipc", "uts", "mount", "cgroup",
    ]  # fmt: skip
    assert config["mounts"][1]["options"] == default["mounts"][1]["options"]
    assert load(tmp_path / "a", config) == config
    assert spec.default_config() == default  # a fresh copy each time


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed (apt install runc)")
def test_runc_spec_output_loads(tmp_path):
    subprocess.run(["runc", "spec"], cwd=tmp_path, check=True)
    (tmp_path / "rootfs").mkdir()
    config = spec.load(str(tmp_path), warn=pytest.fail)
    assert config["process"]["args"] == ["sh"]
    assert "CAP_KILL" in config["process"]["capabilities"]["ambient"]


@pytest.mark.skipif(
    shutil.which("ctr") is None, reason="ctr is not installed (apt install containerd)"
)
def test_containerds_default_spec_loads_once_ctr_gives_it_a_command(tmp_path):
    """``ctr oci spec``: containerd's default, to which ``ctr run`` adds the image's
    command. Without one, it is refused as runc refuses it."""
    output = subprocess.run(["ctr", "oci", "spec"], capture_output=True, check=True).stdout
    config = json.loads(output)
    with pytest.raises(spec.SpecError, match=r"^config.json: process.args: empty"):
        load(tmp_path, config)
    config["process"]["args"] = ["sh"]
    loaded = load(tmp_path, config)
    assert loaded["linux"]["cgroupsPath"] == config["linux"]["cgroupsPath"]
    assert (
        loaded["process"]["capabilities"]["bounding"]
        == config["process"]["capabilities"]["bounding"]
    )


PODMAN_CAPTURE = """#!/bin/sh
# A runtime that records the config.json podman asks it to create, then fails.
prev=
for a in "$@"; do
    case "$prev" in --bundle|-b) cp "$a/config.json" "{configs}/$$.json";; esac
    prev=$a
done
exit 1
"""


@pytest.mark.privileged
@pytest.mark.skipif(
    shutil.which("podman") is None, reason="podman is not installed (apt install podman)"
)
def test_podmans_config_loads(tmp_path):
    """What Debian's podman writes: its root (the --rootfs, or its storage's merged
    directory) is outside its bundle, with a sysctl, a pids limit, seccomp and annotations.
    podman runs with storage of its own, no network, in a mount namespace and a PID
    namespace of its own: when it exits, the cleanup process it leaves behind dies too."""
    rootfs, configs = tmp_path / "rootfs", tmp_path / "configs"
    rootfs.mkdir()
    configs.mkdir()
    runtime = tmp_path / "capture"
    runtime.write_text(PODMAN_CAPTURE.format(configs=configs))
    runtime.chmod(0o755)
    (tmp_path / "run").mkdir()
    short = tempfile.mkdtemp(prefix="pm")  # podman wants a runroot of at most 50 characters
    run = os.path.join(short, "run")
    os.symlink(tmp_path / "run", run)
    podman = (
        f"podman --root {tmp_path}/root --runroot {run} --runtime {runtime} "
        f"--storage-driver vfs run --rm --network none --ulimit nofile=1024:1024 "
        f"--ulimit nproc=1024:1024 --memory 64m --rootfs {rootfs} /bin/sh -c true"
    )
    try:
        result = subprocess.run(
            ["unshare", "-mpf", "sh", "-c", f"mount --make-rprivate / && {podman}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.unlink(run)
        os.rmdir(short)
    captured = list(configs.iterdir())
    assert len(captured) == 1, result.stderr
    config = load(tmp_path / "bundle", json.loads(captured[0].read_text()))
    assert config["root"]["path"] == str(rootfs)
    assert config["process"]["args"] == ["/bin/sh", "-c", "true"]
    assert config["linux"]["resources"]["memory"]["limit"] == 64 << 20
    assert config["linux"]["sysctl"]
    assert config["linux"]["seccomp"]["defaultAction"]


def test_features_agree_with_what_loads(tmp_path):
    """Every name ``features`` offers loads in a config; it offers what runc's does in
    the spec's vocabulary, less what mycontainer does not do."""
    features = spec.features()
    assert features["ociVersionMax"] == spec.default_config()["ociVersion"]
    linux = features["linux"]
    config = copy.deepcopy(MINIMAL)
    config["ociVersion"] = features["ociVersionMax"]
    config["process"]["capabilities"] = {"bounding": linux["capabilities"]}
    config["linux"] = {"namespaces": [{"type": kind} for kind in linux["namespaces"]]}
    config["linux"].update(uidMappings=USERNS, gidMappings=USERNS)  # for the user namespace
    config["mounts"] = [{"destination": "/m", "source": "/s", "options": features["mountOptions"]}]
    config["hooks"] = {kind: [{"path": "/bin/true"}] for kind in features["hooks"]}
    loaded = load(tmp_path, config)
    with open("/proc/sys/kernel/cap_last_cap") as file:
        known = min(len(CAPABILITIES), int(file.read()) + 1)
    assert len(loaded["process"]["capabilities"]["bounding"]) == known
    if shutil.which("runc"):  # Debian's runc 1.1
        runc = json.loads(subprocess.run(["runc", "features"], capture_output=True).stdout)
        assert set(linux["capabilities"]) == set(runc["linux"]["capabilities"])
        assert set(features["mountOptions"]) <= set(runc["mountOptions"])
        assert set(features["hooks"]) == set(runc["hooks"])
        assert set(linux["namespaces"]) == set(runc["linux"]["namespaces"])


def test_load_process_of_exec(tmp_path):
    path = tmp_path / "process.json"
    path.write_text(json.dumps({"args": ["ps"], "cwd": "/", "env": ["A=1"]}))
    assert spec.load_process(str(path))["args"] == ["ps"]
    path.write_text(json.dumps({"args": ["ps"], "cwd": "relative"}))
    with pytest.raises(spec.SpecError, match=r"^process.json: cwd: 'relative' is not an absolute"):
        spec.load_process(str(path))
    with pytest.raises(spec.SpecError, match=r"^process.json: selinuxLabel: SELinux"):
        spec.process({"args": ["ps"], "cwd": "/", "selinuxLabel": "x"})


# --- the configs of the OCI runtime-tools suite -------------------------------------------

RUNTIME_TOOLS = str(conformance.BUILD)  # where 'python3 -m lab.conformance' builds the suite

# The groups whose configs mycontainer refuses, and the error each gets; every other
# group's configs load. A group that expects the runtime to fail (…_fail, misc_props'
# bad version) is here because refusing is the right answer.
REFUSED = {
    "linux_cgroups_blkio": "linux.resources.blockIO: block I/O limits",
    "linux_cgroups_relative_blkio": "linux.resources.blockIO: block I/O limits",
    "linux_cgroups_hugetlb": "linux.resources.hugepageLimits: huge page limits",
    "linux_cgroups_relative_hugetlb": "linux.resources.hugepageLimits: huge page limits",
    "linux_cgroups_memory": "linux.resources.memory.kernel: kernel memory limits",
    "linux_cgroups_relative_memory": "linux.resources.memory.kernel: kernel memory limits",
    "linux_cgroups_network": "linux.resources.network: net_cls and net_prio",
    "linux_cgroups_relative_network": "linux.resources.network: net_cls and net_prio",
    "linux_mount_label": "linux.mountLabel: SELinux labels",
    "misc_props": "ociVersion: 'invalid' is not a version",
    "process_capabilities_fail": "process.capabilities.bounding: unknown capability 'CAP_TEST'",
    "process_rlimits_fail": "process.rlimits[1].type: unknown limit 'RLIMIT_TEST'",
}

# Groups that may ask for nothing here: the suite's own bug, not the config's.
ASK_NOTHING = {
    # net.Interfaces()[1]: an index out of range where lo is the only interface, as in the
    # network namespace the test session runs in as root (conftest.py)
    "linux_cgroups_network": "panics with only lo",
    "linux_cgroups_relative_network": "panics with only lo",
}

CAPTURE = """#!/bin/sh
# A runtime that records each config.json it is asked to create, then fails.
prev=
for a in "$@"; do
    case "$prev" in
        --bundle|-b) n=$(ls "$CAPTURE" | wc -l); cp "$a/config.json" "$CAPTURE/$n.json";;
    esac
    prev=$a
done
exit 1
"""


@pytest.fixture(scope="module")
def runtime_tools_configs(tmp_path_factory):
    """{group: [config, ...]}: each group of the suite run against a runtime that only
    records the configs. The built suite is only read; all it writes goes to tmp."""
    groups = sorted(
        os.path.join(directory, name)
        for directory, _, names in os.walk(os.path.join(RUNTIME_TOOLS, "src", "validation"))
        for name in names
        if name.endswith(".t")
    )
    if not groups:
        pytest.skip(
            f"the runtime-tools suite is not built in {RUNTIME_TOOLS}: "
            "'sudo .venv/bin/python -m lab.conformance' builds it (and runs it)"
        )
    top = tmp_path_factory.mktemp("runtime-tools")
    runtime = top / "capture"
    runtime.write_text(CAPTURE)
    runtime.chmod(0o755)
    configs = {}
    for binary in groups:
        group = os.path.basename(binary)[:-2]
        captured, scratch = top / group, top / f"{group}.tmp"
        captured.mkdir()
        scratch.mkdir()
        env = dict(os.environ, RUNTIME=str(runtime), CAPTURE=str(captured), TMPDIR=str(scratch))
        subprocess.run([binary], cwd=os.path.join(RUNTIME_TOOLS, "src"), env=env, timeout=60,
                       stdin=subprocess.DEVNULL, capture_output=True)  # fmt: skip
        names = sorted(os.listdir(captured), key=lambda name: int(name.split(".")[0]))
        configs[group] = [json.loads((captured / name).read_text()) for name in names]
    return configs


@pytest.mark.privileged  # the suite's groups check for root before they make a config
def test_runtime_tools_configs_load_or_fail_clearly(tmp_path, runtime_tools_configs):
    assert len(runtime_tools_configs) == 58
    outcomes = {}
    for group, configs in runtime_tools_configs.items():
        assert configs or group in ASK_NOTHING, f"{group} asked the runtime for nothing"
        for i, config in enumerate(configs):
            bundle = make_bundle(tmp_path / group / str(i), config)
            try:
                spec.load(bundle, warn=lambda message: None)
                outcomes.setdefault(group, set()).add(None)
            except spec.SpecError as error:
                assert group in REFUSED, f"{group}: {error}"
                assert REFUSED[group] in str(error), f"{group}: {error}"
                outcomes.setdefault(group, set()).add(REFUSED[group])
    for group, message in REFUSED.items():
        if runtime_tools_configs[group]:
            assert message in outcomes[group], f"{group} loaded: {message!r} expected"


def test_resources_that_cgroups_may_refuse_by_version_load(tmp_path):
    """swappiness, disableOOMKiller and the real-time CPU limits are cgroup v1's, unified is
    v2's: the spec lets them through, and runtime.cgroups refuses them, in one line, on the
    other version (tests/test_oci_cgroups.py)."""
    config = copy.deepcopy(MINIMAL)
    config["linux"] = {
        "resources": {
            "memory": {"swappiness": 0, "disableOOMKiller": True},
            "cpu": {"realtimeRuntime": 950000, "realtimePeriod": 1000000},
            "unified": {"memory.high": "1G"},
        }
    }
    resources = load(tmp_path, config)["linux"]["resources"]
    assert resources["memory"] == {"swappiness": 0, "disableOOMKiller": True}
    assert resources["cpu"]["realtimeRuntime"] == 950000
    assert resources["unified"] == {"memory.high": "1G"}
