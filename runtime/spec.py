"""The OCI runtime configuration (config.json) of a bundle, read and checked.

An engine (podman, containerd, a user with ``mycontainer-oci``) hands a runtime a *bundle*: a
directory holding ``config.json`` and, usually, the root filesystem. config.json says
everything about the container: the process (argv, environment, user, capabilities,
rlimits), the root, the mounts in order, the namespaces, the devices, the cgroup limits,
sysctls, masked paths, seccomp, hooks. This module is the one place that reads it: it checks
every field the runtime acts on and returns the same dict, in the spec's own field names,
with defaults filled in, so that each mechanism (namespaces, mounts, cgroups, security)
reads one validated configuration. The docker-style ``mycontainer run`` builds that same
dict from an image and its flags.

The rules follow the runtime spec (https://github.com/opencontainers/runtime-spec, config.md
and config-linux.md, versions 1.0 to 1.3) and, where it leaves a choice, runc:

- **Errors.** "Runtimes MUST generate an error when invalid or unsupported values are
  encountered" (config.md, *Valid values*): a :class:`SpecError` naming the field, one line.
  A field the spec defines but mycontainer does not implement is an error too, never
  silently dropped: :data:`UNSUPPORTED` lists each one with the reason, as data the docs
  can list. An unknown capability is an error (1.0's MUST; CAP_TEST in runtime-tools).
- **Choices left to the runtime**, made as runc makes them: ``process`` is required
  (``create`` needs it); a relative ``root.path`` must stay inside the bundle, while an
  absolute one is the engine's choice (podman's is its storage's merged directory), but
  never the host's ``/``; a sysctl must belong to a namespace the container has its own of.
- **Unknown properties** are ignored: "Runtimes ... MUST otherwise ignore them"
  (config.md, *Extensibility*).
- **Warnings** go to ``warn`` (one line each): a relative mount destination (deprecated
  since 1.1), a capability this kernel does not have (dropped; the spec asks for a warning,
  not an error).

Man pages: https://man7.org/linux/man-pages/man7/capabilities.7.html,
https://man7.org/linux/man-pages/man2/getrlimit.2.html,
https://man7.org/linux/man-pages/man7/namespaces.7.html,
https://man7.org/linux/man-pages/man2/mount.2.html
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import sys

from runtime import userns
from runtime.capabilities import CAPABILITIES

MAX_SIZE = 4 << 20  # bytes; runc's own configs are ~3 KiB, podman's ~10 KiB
OCI_VERSION_MIN = "1.0.0"
OCI_VERSION_MAX = "1.3.0"  # any 1.x is read: the spec keeps compatibility within a major

# What the runtime implements: the mechanisms read these fields.
NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "cgroup", "user")
HOOKS = (
    "prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop",
)  # fmt: skip
CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
RLIMITS = (
    "RLIMIT_AS", "RLIMIT_CORE", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_FSIZE", "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
    "RLIMIT_RSS", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_STACK",
)  # fmt: skip
# config.md's Linux mount options, less idmap, ridmap and tmpcopyup (see UNSUPPORTED).
# Any other option is filesystem-specific data for mount(2) (mode=755, size=64k...).
MOUNT_OPTIONS = (
    "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "iversion",
    "lazytime", "loud", "mand", "noatime", "nodev", "nodiratime", "noexec", "noiversion",
    "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid", "nosymfollow", "private",
    "ratime", "rbind", "rdev", "rdiratime", "relatime", "remount", "rexec", "rnoatime",
    "rnodev", "rnodiratime", "rnoexec", "rnorelatime", "rnostrictatime", "rnosuid",
    "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw", "rshared", "rslave",
    "rstrictatime", "rsuid", "rsymfollow", "runbindable", "rw", "shared", "silent", "slave",
    "strictatime", "suid", "symfollow", "sync", "unbindable",
)  # fmt: skip
PROPAGATIONS = (
    "shared", "slave", "private", "unbindable", "rshared", "rslave", "rprivate", "runbindable",
)  # fmt: skip
DEVICE_TYPES = ("c", "b", "u", "p")
# The names a seccomp profile may use (libseccomp's, as runc recognizes them); the
# profile itself is compiled and checked by runtime.seccomp.
SECCOMP_ACTIONS = (
    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP",
)  # fmt: skip
SECCOMP_OPERATORS = (
    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE",
)  # fmt: skip
SECCOMP_ARCHS = (
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
)

# Fields of the spec that mycontainer does not implement: setting one is an error (an
# empty value, false or null is accepted: it asks for nothing). Paths use the spec's
# names; "[]" stands for every entry of an array.
UNSUPPORTED = {
    "process.selinuxLabel": "SELinux labels are not applied by mycontainer",
    "process.scheduler": "scheduling policies are not set by mycontainer",
    "process.ioPriority": "I/O priorities are not set by mycontainer",
    "process.execCPUAffinity": "CPU affinity is not set by mycontainer",
    "mounts[].uidMappings": "ID-mapped mounts are not supported",
    "mounts[].gidMappings": "ID-mapped mounts are not supported",
    "linux.timeOffsets": "time namespaces are not supported",
    "linux.mountLabel": "SELinux labels are not applied by mycontainer",
    "linux.intelRdt": "Intel RDT (resctrl) is not supported",
    "linux.personality": "execution domains (personality(2)) are not set by mycontainer",
    "linux.memoryPolicy": "NUMA memory policies are not set by mycontainer",
    "linux.netDevices": "moving host network devices into a container is not supported",
    "linux.resources.memory.kernel": "kernel memory limits are gone from Linux (5.16+)",
    "linux.resources.memory.kernelTCP": "kernel TCP memory limits are not supported",
    "linux.resources.memory.useHierarchy": "hierarchical accounting is not set",
    "linux.resources.memory.checkBeforeUpdate": "usage checks before update are not done",
    "linux.resources.cpu.burst": "CPU burst is not supported",
    "linux.resources.cpu.idle": "SCHED_IDLE cgroups are not supported",
    "linux.resources.blockIO": "block I/O limits (blkio, io controller) are not supported",
    "linux.resources.hugepageLimits": "huge page limits (hugetlb controller) are not supported",
    "linux.resources.network": "net_cls and net_prio are not supported",
    "linux.resources.rdma": "the rdma controller is not supported",
    "linux.seccomp.listenerPath": "seccomp notification (SCMP_ACT_NOTIFY) is not supported",
    "solaris": "this is a Solaris configuration",
    "windows": "this is a Windows configuration",
    "vm": "virtual-machine containers are not supported",
    "zos": "this is a z/OS configuration",
    "freebsd": "this is a FreeBSD configuration",
}
UNSUPPORTED_NAMESPACES = {"time": "time namespaces are not supported"}
UNSUPPORTED_MOUNT_OPTIONS = {
    "idmap": "ID-mapped mounts are not supported",
    "ridmap": "ID-mapped mounts are not supported",
    "tmpcopyup": "tmpcopyup is not supported",
}

# Sysctls the kernel namespaces (runc's list, libcontainer/configs/validate): each needs
# the container's own namespace of that type, or it would retune the host.
IPC_SYSCTLS = (
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
)  # fmt: skip
UINT32 = (1 << 32) - 1
UINT64 = (1 << 64) - 1
ID_MAX = UINT32 - 1  # (uid_t) -1 means "no change" to the kernel
ID_MAP_LINES = 340  # the most lines a uid_map or gid_map takes (user_namespaces(7), 4.15+)


class SpecError(ValueError):
    """config.json is invalid or asks for what mycontainer does not do; one line, naming
    the field."""


def _stderr(message: str) -> None:
    print(f"mycontainer: warning: {message}", file=sys.stderr)


def load(bundle: str, warn=_stderr) -> dict:
    """Read and check ``<bundle>/config.json``; return the configuration, normalized.

    1. The bundle is a directory; config.json a regular file (not a FIFO that would block,
       nor /dev/zero) of at most :data:`MAX_SIZE` bytes, UTF-8, one JSON object.
    2. :func:`check` validates it and fills in the defaults; relative paths (root, bind
       sources) become absolute, against the bundle.
    """
    if not os.path.isdir(bundle):
        raise SpecError(f"bundle {bundle!r}: not a directory (give the bundle's directory)")
    bundle = os.path.realpath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise SpecError(f"{path}: {e.strerror} (a bundle needs a config.json)") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError(f"{path}: not a regular file")
        data = file.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise SpecError(f"config.json: larger than {MAX_SIZE >> 20} MiB")
    return check(parse(data), bundle, warn)


def parse(data: bytes, name: str = "config.json") -> dict:
    """``data`` as a JSON object (strict JSON: no NaN or Infinity)."""
    try:
        config = json.loads(data.decode(), parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise SpecError(f"{name}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SpecError(
            f"{name}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise SpecError(f"{name}: nested too deeply") from None
    except SpecError as e:
        raise SpecError(f"{name}: {e}") from None
    if not isinstance(config, dict):
        raise SpecError(f"{name}: not a JSON object")
    return config


def _no_constant(name: str):
    raise SpecError(f"{name} is not a JSON number")


def check(config: dict, bundle: str, warn=_stderr) -> dict:
    """Validate ``config`` (parsed config.json of the absolute, real path ``bundle``) and
    return a normalized copy: the spec's field names, defaults filled in, the root an
    absolute real path, bind sources absolute. Raises :class:`SpecError`.

    ``process`` is required: runc's ``create`` refuses a config without one, and so do we.
    """
    try:
        return _check(config, bundle, lambda message: warn(f"config.json: {message}"))
    except SpecError as e:
        raise SpecError(f"config.json: {e}") from None


def _check(config: dict, bundle: str, warn) -> dict:
    _unsupported(config, "", UNSUPPORTED)
    _version(config.get("ociVersion"))
    out = {"ociVersion": config["ociVersion"]}
    out["root"] = _root(_get(config, "root", dict, required=True), bundle)
    out["process"] = _process(_get(config, "process", dict, required=True), "process", warn)
    for field in ("hostname", "domainname"):
        value = _get(config, field, str)
        if value is not None:
            out[field] = _uts_name(value, field)
    mounts = _get(config, "mounts", list, default=[])
    out["mounts"] = [_mount(m, f"mounts[{i}]", bundle, warn) for i, m in enumerate(mounts)]
    out["linux"] = _linux(_get(config, "linux", dict, default={}), "linux")
    if ("hostname" in out or "domainname" in out) and not _has_own(out, "uts"):
        field = "hostname" if "hostname" in out else "domainname"
        raise SpecError(f"{field}: needs a new uts namespace in linux.namespaces")
    _sysctl_namespaces(out)
    _user_namespace(out)
    out["hooks"] = _hooks(_get(config, "hooks", dict, default={}), "hooks")
    annotations = _get(config, "annotations", dict, default={})
    for key, value in annotations.items():
        if not key or not isinstance(value, str):
            raise SpecError(f"annotations: {key!r}: keys are non-empty strings, values strings")
    out["annotations"] = annotations
    return out


def process(obj: dict, name: str = "process.json", warn=_stderr) -> dict:
    """Check a process object (the file of ``exec --process``, or one built from ``exec``'s
    arguments) as config.json's ``process``; errors begin with ``name``."""
    try:
        return _process(obj, "", lambda message: warn(f"{name}: {message}"))
    except SpecError as e:
        raise SpecError(f"{name}: {e}") from None


def _process(obj: dict, where: str, warn) -> dict:
    """The process, normalized: terminal false, env [], user uid/gid 0 and additionalGids
    [], the five capability sets (each [] when absent; no capabilities at all when the
    object is absent), rlimits [], noNewPrivileges false. oomScoreAdj and umask stay absent
    when absent: then the runtime must not change them."""
    _unsupported(obj, where, UNSUPPORTED, "process")
    out = {"terminal": _get(obj, "terminal", bool, where, default=False)}
    size = _get(obj, "consoleSize", dict, where)
    if size is not None and out["terminal"]:  # "MUST ignore consoleSize if terminal is false"
        size_at = _at(where, "consoleSize")
        out["consoleSize"] = {
            key: _int(_get(size, key, int, size_at, required=True), f"{size_at}.{key}", 0, 0xFFFF)
            for key in ("height", "width")
        }
    args = _strings(_get(obj, "args", list, where, default=[]), _at(where, "args"))
    if not args:
        raise SpecError(f"{_at(where, 'args')}: empty (the command to run, argv[0] first)")
    out["args"] = args
    out["env"] = _env(_get(obj, "env", list, where, default=[]), _at(where, "env"))
    cwd = _get(obj, "cwd", str, where, required=True)
    out["cwd"] = _absolute(cwd, _at(where, "cwd"))
    out["user"] = _user(_get(obj, "user", dict, where, default={}), _at(where, "user"))
    caps_at = _at(where, "capabilities")
    caps = _get(obj, "capabilities", dict, where, default={})
    out["capabilities"] = {
        kind: _capabilities(_get(caps, kind, list, caps_at, default=[]), f"{caps_at}.{kind}", warn)
        for kind in CAPABILITY_SETS
    }
    rlimits = _get(obj, "rlimits", list, where, default=[])
    out["rlimits"] = _rlimits(rlimits, _at(where, "rlimits"))
    out["noNewPrivileges"] = _get(obj, "noNewPrivileges", bool, where, default=False)
    score = _get(obj, "oomScoreAdj", int, where)
    if score is not None:
        out["oomScoreAdj"] = _int(score, _at(where, "oomScoreAdj"), -1000, 1000)
    profile = _get(obj, "apparmorProfile", str, where)
    if profile:  # applied, or refused where AppArmor is off (runtime.security)
        out["apparmorProfile"] = profile
    return out


def load_process(path: str, warn=_stderr) -> dict:
    """Read and check the process JSON of ``exec --process FILE``."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SIZE + 1)
    except OSError as e:
        raise SpecError(f"{path}: {e.strerror}") from None
    name = os.path.basename(path)
    if len(data) > MAX_SIZE:
        raise SpecError(f"{name}: larger than {MAX_SIZE >> 20} MiB")
    return process(parse(data, name), name, warn)


# --- the parts ----------------------------------------------------------------------------


def _version(version) -> None:
    if not isinstance(version, str):
        raise SpecError(
            "ociVersion: missing or not a string (the runtime-spec version, "
            f"such as {OCI_VERSION_MAX!r})"
        )
    core = version.split("+")[0].split("-")[0].split(".")
    if len(core) != 3 or not all(part.isdigit() and part.isascii() for part in core):
        raise SpecError(f"ociVersion: {version!r} is not a version like '1.2.0'")
    if int(core[0]) != 1:
        raise SpecError(
            f"ociVersion: {version!r} is not supported (mycontainer reads runtime-spec 1.x)"
        )


def _root(root: dict, bundle: str) -> dict:
    """root.path: relative to the bundle, it must stay inside it (no ``..``, no symlink
    out); absolute, as podman writes it (its storage's merged directory), it is taken as
    given. Never the host's own ``/``."""
    path = _get(root, "path", str, "root", required=True)
    if not path:
        raise SpecError("root.path: empty (the root filesystem, such as 'rootfs')")
    real = os.path.realpath(os.path.join(bundle, path))
    inside = real == bundle or real.startswith(bundle.rstrip("/") + "/")
    if not os.path.isabs(path) and not inside or real == "/":
        raise SpecError(
            f"root.path: {path!r} resolves to {real}, outside the bundle "
            f"{bundle} (give a directory of the bundle, such as 'rootfs')"
        )
    if not os.path.isdir(real):
        raise SpecError(f"root.path: {path!r} is not a directory")
    return {"path": real, "readonly": _get(root, "readonly", bool, "root", default=False)}


def _uts_name(name: str, field: str) -> str:
    if len(name.encode()) > 64 or "\0" in name:
        raise SpecError(f"{field}: at most 64 bytes, no NUL (got {name!r})")
    return name


def _user(user: dict, where: str) -> dict:
    out = {
        key: _int(_get(user, key, int, where, default=0), f"{where}.{key}", 0, ID_MAX)
        for key in ("uid", "gid")
    }
    gids = _get(user, "additionalGids", list, where, default=[])
    out["additionalGids"] = [
        _int(gid, f"{where}.additionalGids[{i}]", 0, ID_MAX) for i, gid in enumerate(gids)
    ]
    umask = _get(user, "umask", int, where)
    if umask is not None:
        out["umask"] = _int(umask, f"{where}.umask", 0, 0o777)
    if user.get("username"):
        raise SpecError(f"{where}.username: a Windows field (give uid and gid)")
    return out


def _capabilities(names: list, where: str, warn) -> list[str]:
    last = _last_capability()
    kept = []
    for name in names:
        bare = name[4:] if isinstance(name, str) and name.startswith("CAP_") else None
        if bare not in CAPABILITIES:
            raise SpecError(
                f"{where}: unknown capability {name!r} (names from "
                "capabilities(7), such as CAP_CHOWN)"
            )
        if CAPABILITIES.index(bare) > last:
            warn(f"{where}: {name} is not known to this kernel; left out")
        elif name not in kept:
            kept.append(name)
    return kept


def _last_capability() -> int:
    """The highest capability number this kernel knows (capabilities(7), cap_last_cap)."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as file:
            return int(file.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def _rlimits(rlimits: list, where: str) -> list[dict]:
    out, seen = [], set()
    for i, rlimit in enumerate(rlimits):
        at = f"{where}[{i}]"
        kind = _get(_object(rlimit, at), "type", str, at, required=True)
        if kind not in RLIMITS:
            raise SpecError(
                f"{at}.type: unknown limit {kind!r} (names from getrlimit(2), "
                "such as RLIMIT_NOFILE)"
            )
        if kind in seen:
            raise SpecError(f"{at}.type: {kind} is set twice")
        seen.add(kind)
        soft, hard = (
            _int(_get(rlimit, key, int, at, required=True), f"{at}.{key}", 0, UINT64)
            for key in ("soft", "hard")
        )
        if soft > hard:
            raise SpecError(f"{at}: soft limit {soft} is above the hard {hard}")
        out.append({"type": kind, "soft": soft, "hard": hard})
    return out


def _mount(mount, where: str, bundle: str, warn) -> dict:
    """A mount: destination absolute (a relative one, deprecated since 1.1, is taken
    against /), type and source strings, options strings. A bind source relative to the
    bundle becomes absolute."""
    _unsupported(_object(mount, where), where, UNSUPPORTED, "mounts[]")
    destination = _get(mount, "destination", str, where, required=True)
    if not destination or "\0" in destination:
        raise SpecError(f"{where}.destination: empty or with a NUL byte")
    if not destination.startswith("/"):
        warn(f"{where}.destination: {destination!r} is relative; taken from /")
        destination = "/" + destination
    out = {"destination": posixpath.normpath(destination).replace("//", "/")}
    options = _strings(_get(mount, "options", list, where, default=[]), f"{where}.options")
    for option in options:
        if option in UNSUPPORTED_MOUNT_OPTIONS:
            raise SpecError(f"{where}.options: {option!r}: {UNSUPPORTED_MOUNT_OPTIONS[option]}")
    kind = _get(mount, "type", str, where)
    source = _get(mount, "source", str, where)
    is_bind = "bind" in options or "rbind" in options or kind == "bind"
    if is_bind:
        if not source:
            raise SpecError(f"{where}.source: a bind mount needs a source path")
        source = os.path.join(bundle, source)
    for key, value in (("type", kind), ("source", source)):
        if value is not None:
            out[key] = _no_nul(value, f"{where}.{key}")
    out["options"] = options
    return out


def _linux(linux: dict, where: str) -> dict:
    _unsupported(linux, where, UNSUPPORTED)
    out = {"namespaces": _namespaces(_get(linux, "namespaces", list, where, default=[]))}
    for field in ("uidMappings", "gidMappings"):
        mappings = _get(linux, field, list, where, default=[])
        if mappings:
            out[field] = _id_mappings(mappings, f"{where}.{field}")
    devices = _get(linux, "devices", list, where, default=[])
    out["devices"] = [_device(d, f"{where}.devices[{i}]") for i, d in enumerate(devices)]
    out["resources"] = _resources(_get(linux, "resources", dict, where, default={}))
    cgroups_path = _get(linux, "cgroupsPath", str, where)
    if cgroups_path:
        out["cgroupsPath"] = _cgroups_path(cgroups_path)
    sysctl = _get(linux, "sysctl", dict, where, default={})
    for key, value in sysctl.items():
        parts = key.replace("/", ".").split(".")
        if not isinstance(value, str) or "" in parts or ".." in parts or "\0" in key:
            raise SpecError(
                f"linux.sysctl: {key!r}: names like 'net.ipv4.ip_forward', values strings"
            )
    out["sysctl"] = sysctl
    for field in ("maskedPaths", "readonlyPaths"):
        paths = _strings(_get(linux, field, list, where, default=[]), f"{where}.{field}")
        out[field] = [_absolute(p, f"{where}.{field}") for p in paths]
    propagation = _get(linux, "rootfsPropagation", str, where)
    if propagation:
        if propagation not in PROPAGATIONS:
            raise SpecError(
                f"linux.rootfsPropagation: {propagation!r} is not one of {', '.join(PROPAGATIONS)}"
            )
        out["rootfsPropagation"] = propagation
    seccomp = _get(linux, "seccomp", dict, where)
    if seccomp is not None:
        _unsupported(seccomp, "linux.seccomp", UNSUPPORTED)
        out["seccomp"] = seccomp  # its contents: runtime.seccomp.compile
    return out


def _namespaces(namespaces: list) -> list[dict]:
    out, seen = [], set()
    for i, namespace in enumerate(namespaces):
        at = f"linux.namespaces[{i}]"
        kind = _get(_object(namespace, at), "type", str, at, required=True)
        if kind in UNSUPPORTED_NAMESPACES:
            raise SpecError(f"{at}.type: {kind}: {UNSUPPORTED_NAMESPACES[kind]}")
        if kind not in NAMESPACES:
            raise SpecError(
                f"{at}.type: unknown namespace {kind!r} (one of {', '.join(NAMESPACES)})"
            )
        if kind in seen:
            raise SpecError(f"{at}.type: a second {kind} namespace")
        seen.add(kind)
        entry = {"type": kind}
        path = _get(namespace, "path", str, at)
        if path:
            entry["path"] = _absolute(path, f"{at}.path")
        out.append(entry)
    return out


def _id_mappings(mappings: list, where: str) -> list[dict]:
    """uidMappings or gidMappings: ranges of IDs inside (containerID) mapped onto the host's
    (hostID), as the kernel takes them in /proc/PID/uid_map (user_namespaces(7)): at most
    ID_MAP_LINES ranges, none empty, none reaching ID (uid_t) -1, none overlapping another
    inside or on the host. The kernel refuses a whole map that breaks one of these rules,
    with a bare EINVAL; here the error names the entry."""
    if len(mappings) > ID_MAP_LINES:
        raise SpecError(f"{where}: {len(mappings)} ranges (the kernel takes {ID_MAP_LINES})")
    out = []
    for i, mapping in enumerate(mappings):
        at = f"{where}[{i}]"
        entry = {
            key: _int(
                _get(_object(mapping, at), key, int, at, required=True), _at(at, key), 0, UINT32
            )
            for key in ("containerID", "hostID", "size")
        }
        _int(entry["size"], f"{at}.size", 1, UINT32)
        for key in ("containerID", "hostID"):
            _int(entry[key] + entry["size"], f"{at}.{key} + size", 1, UINT32)
        out.append(entry)
    for key in ("containerID", "hostID"):
        ranges = sorted((m[key], m[key] + m["size"], i) for i, m in enumerate(out))
        for (_, end, first), (start, _, second) in zip(ranges, ranges[1:], strict=False):
            if start < end:
                later, earlier = max(first, second), min(first, second)
                raise SpecError(f"{where}[{later}].{key}: overlaps {where}[{earlier}]")
    if len(userns.id_map(out)) >= os.sysconf("SC_PAGE_SIZE"):
        raise SpecError(f"{where}: longer than a page once written (the kernel's limit)")
    return out


def _user_namespace(config: dict) -> None:
    """The mappings go with a new user namespace, and a new one needs both (runc's rules):
    in a user namespace without a uid_map no ID is mapped, so nothing could run as root in
    it; a joined one has its maps already (the kernel writes each map once). The process's
    user must be mapped too, or setresuid(2) fails with EINVAL at start."""
    linux = config["linux"]
    entry = next((ns for ns in linux["namespaces"] if ns["type"] == "user"), None)
    asked = [field for field in ("uidMappings", "gidMappings") if field in linux]
    if entry is None or "path" in entry:
        if asked:
            why = "the user namespace joined by path has its own" if entry else "no user namespace"
            raise SpecError(f"linux.{asked[0]}: {why} in linux.namespaces (remove the mappings)")
        return
    for field in ("uidMappings", "gidMappings"):
        if field not in asked:
            raise SpecError(f"linux.{field}: a new user namespace needs uid and gid mappings")
        if userns.host_id(0, linux[field]) is None:
            raise SpecError(f"linux.{field}: maps no containerID 0 (the root that sets it up)")
    user = config["process"]["user"]
    wanted = [("uid", user["uid"], "uidMappings"), ("gid", user["gid"], "gidMappings")]
    wanted += [("additionalGids", gid, "gidMappings") for gid in user.get("additionalGids", [])]
    for key, value, field in wanted:
        if not any(0 <= value - m["containerID"] < m["size"] for m in linux[field]):
            raise SpecError(f"process.user.{key}: {value} is not mapped by linux.{field}")


def _device(device, where: str) -> dict:
    """A device node to create: type c, b, u (unbuffered c) or p (FIFO); an absolute path
    (the spec allows any, not only /dev); major and minor unless a FIFO."""
    kind = _get(_object(device, where), "type", str, where, required=True)
    if kind not in DEVICE_TYPES:
        raise SpecError(f"{where}.type: {kind!r} is not one of c, b, u, p")
    path = _absolute(_get(device, "path", str, where, required=True), f"{where}.path")
    if path == "/" or ".." in path.split("/"):
        raise SpecError(f"{where}.path: {path!r} is not a file path")
    out = {"type": kind, "path": path}
    for key in ("major", "minor"):
        value = _get(device, key, int, where, required=kind != "p")
        if value is not None and kind != "p":
            out[key] = _int(value, f"{where}.{key}", 0, UINT32)
    for key, top in (("fileMode", 0o7777), ("uid", ID_MAX), ("gid", ID_MAX)):
        value = _get(device, key, int, where)
        if value is not None:
            out[key] = _int(value, f"{where}.{key}", 0, top)
    return out


def _resources(resources: dict) -> dict:
    where = "linux.resources"
    _unsupported(resources, where, UNSUPPORTED)
    out = {}
    memory = _get(resources, "memory", dict, where)
    if memory is not None:
        _unsupported(memory, f"{where}.memory", UNSUPPORTED)
        out["memory"] = _numbers(memory, f"{where}.memory", ("limit", "reservation", "swap"))
        swappiness = _get(memory, "swappiness", int, f"{where}.memory")
        if swappiness is not None:
            out["memory"]["swappiness"] = _int(swappiness, f"{where}.memory.swappiness", 0, 100)
        if _get(memory, "disableOOMKiller", bool, f"{where}.memory"):
            out["memory"]["disableOOMKiller"] = True
        limit, swap = out["memory"].get("limit", -1), out["memory"].get("swap", -1)
        if limit > 0 and swap > 0 and swap < limit:
            raise SpecError(
                f"{where}.memory.swap: {swap} is below the limit {limit} (swap is memory plus swap)"
            )
    cpu = _get(resources, "cpu", dict, where)
    if cpu is not None:
        _unsupported(cpu, f"{where}.cpu", UNSUPPORTED)
        out["cpu"] = _cpu(cpu, f"{where}.cpu")
    pids = _get(resources, "pids", dict, where)
    if pids is not None:
        limit = _get(pids, "limit", int, f"{where}.pids")
        out["pids"] = (
            {}
            if limit is None
            else {"limit": _int(limit, f"{where}.pids.limit", -1, (1 << 63) - 1)}
        )
    unified = _get(resources, "unified", dict, where)
    if unified:  # cgroup v2 file name -> value, written as they are (cgroups.py checks them)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in unified.items()):
            raise SpecError(f"{where}.unified: file names and values must be strings")
        out["unified"] = dict(unified)
    rules = _get(resources, "devices", list, where, default=[])
    out["devices"] = [_device_rule(r, f"{where}.devices[{i}]") for i, r in enumerate(rules)]
    return out


def _numbers(obj: dict, where: str, keys) -> dict:
    """Byte counts: -1 (no limit) or positive."""
    out = {}
    for key in keys:
        value = _get(obj, key, int, where)
        if value is not None:
            out[key] = _int(value, f"{where}.{key}", -1, (1 << 63) - 1)
    return out


def _cpu(cpu: dict, where: str) -> dict:
    out = {}
    for key, low, top in (
        ("shares", 0, UINT64),
        ("quota", -1, (1 << 63) - 1),
        ("period", 0, UINT64),
        ("realtimeRuntime", -1, (1 << 63) - 1),
        ("realtimePeriod", 0, UINT64),
    ):
        value = _get(cpu, key, int, where)
        if value is not None:
            out[key] = _int(value, f"{where}.{key}", low, top)
    for key in ("cpus", "mems"):
        value = _get(cpu, key, str, where)
        if value:
            out[key] = _cpu_list(value, f"{where}.{key}")
    return out


def _cpu_list(text: str, where: str) -> str:
    """A list like ``0-3,7`` (cpuset(7), "List format")."""
    for part in text.split(","):
        bounds = part.split("-")
        valid = len(bounds) <= 2 and all(b.isdigit() and b.isascii() for b in bounds)
        if not valid or len(bounds) == 2 and int(bounds[0]) > int(bounds[1]):
            raise SpecError(f"{where}: {text!r} is not a list like '0-3,7'")
    return text


def _device_rule(rule, where: str) -> dict:
    """A device cgroup rule: allow, type a/c/b (absent: a), major/minor (absent: any),
    access a subset of rwm (absent: rwm)."""
    allow = _get(_object(rule, where), "allow", bool, where, required=True)
    kind = _get(rule, "type", str, where) or "a"
    if kind not in ("a", "c", "b"):
        raise SpecError(f"{where}.type: {kind!r} is not one of a, c, b")
    out = {"allow": allow, "type": kind}
    for key in ("major", "minor"):
        value = _get(rule, key, int, where)
        if value is not None and value != -1:  # -1: any, as runc's Wildcard
            out[key] = _int(value, f"{where}.{key}", 0, UINT32)
    access = _get(rule, "access", str, where) or "rwm"
    if not set(access) <= set("rwm"):
        raise SpecError(f"{where}.access: {access!r} is not made of r, w and m")
    out["access"] = access
    return out


def _cgroups_path(path: str) -> str:
    """runc's rules (cgroupfs driver): absolute (from the cgroup root) or relative (under
    the runtime's own place); no ``..`` component, so it cannot climb out of the tree."""
    if "\0" in path or ".." in path.split("/"):
        raise SpecError(
            f"linux.cgroupsPath: {path!r} has a '..' component or a NUL byte "
            "(give a path such as '/mygroup/ctr' or 'mygroup/ctr')"
        )
    if ":" in path:
        raise SpecError(
            f"linux.cgroupsPath: {path!r} is in systemd's slice:prefix:name "
            "form; the systemd cgroup driver is not supported (give a path)"
        )
    return path


def _sysctl_namespaces(config: dict) -> None:
    """Each sysctl must belong to a namespace the container has its own of (runc's
    check): writing kernel.* or vm.* would retune the host's kernel."""
    for key in config["linux"]["sysctl"]:
        name = key.replace("/", ".")
        if name in IPC_SYSCTLS or name.startswith("fs.mqueue."):
            kind = "ipc"
        elif name.startswith("net."):
            kind = "network"
        elif name in ("kernel.hostname", "kernel.domainname"):
            kind = "uts"
        else:
            raise SpecError(
                f"linux.sysctl: {key!r} is not namespaced: it would change the "
                "host's kernel (only net.*, fs.mqueue.*, IPC and UTS sysctls)"
            )
        if not _has_own(config, kind):
            raise SpecError(f"linux.sysctl: {key!r} needs a {kind} namespace in linux.namespaces")


def _has_own(config: dict, kind: str) -> bool:
    """Whether the container has a namespace of ``kind`` other than the runtime's: a new
    one, or one joined by path."""
    return any(ns["type"] == kind for ns in config["linux"]["namespaces"])


def _hooks(hooks: dict, where: str) -> dict:
    out = {}
    for kind in HOOKS:
        entries = _get(hooks, kind, list, where, default=[])
        out[kind] = [_hook(h, f"{where}.{kind}[{i}]") for i, h in enumerate(entries)]
    return out


def _hook(hook, where: str) -> dict:
    path = _get(_object(hook, where), "path", str, where, required=True)
    out = {"path": _absolute(path, f"{where}.path")}
    args = _get(hook, "args", list, where)
    if args is not None:
        out["args"] = _strings(args, f"{where}.args")
    env = _get(hook, "env", list, where)
    if env is not None:
        out["env"] = _env(env, f"{where}.env")
    timeout = _get(hook, "timeout", int, where)
    if timeout is not None:
        out["timeout"] = _int(timeout, f"{where}.timeout", 1, 1 << 31)
    return out


# --- generic checks -----------------------------------------------------------------------

_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "true or false",
    int: "an integer",
}


def _at(where: str, key: str) -> str:
    """The dotted name of field ``key`` of the object at ``where`` ("" for the top)."""
    return f"{where}.{key}" if where else key


def _get(obj: dict, key: str, kind, where: str = "", *, required=False, default=None):
    """``obj[key]`` if it is of ``kind`` (JSON null counts as absent)."""
    value = obj.get(key)
    at = _at(where, key)
    if value is None:
        if required:
            raise SpecError(f"{at}: missing")
        return default
    if not isinstance(value, kind) or kind is int and isinstance(value, bool):
        raise SpecError(f"{at}: must be {_TYPE_NAMES[kind]}, not {value!r:.40}")
    return value


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise SpecError(f"{where}: must be an object, not {value!r:.40}")
    return value


def _int(value: int, where: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise SpecError(f"{where}: {value} is out of range ({low} to {high})")
    return value


def _no_nul(text: str, where: str) -> str:
    if "\0" in text:
        raise SpecError(f"{where}: contains a NUL byte")
    return text


def _strings(values: list, where: str) -> list[str]:
    for value in values:
        if not isinstance(value, str):
            raise SpecError(f"{where}: {value!r:.40} is not a string")
        _no_nul(value, where)
    return values


def _env(values: list, where: str) -> list[str]:
    for value in _strings(values, where):
        if "=" not in value[1:]:
            raise SpecError(f"{where}: {value!r:.40} is not KEY=VALUE")
    return values


def _absolute(path: str, where: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise SpecError(f"{where}: {path!r} is not an absolute path")
    return path


def _unsupported(obj: dict, where: str, table: dict, prefix: str | None = None) -> None:
    """Refuse the fields of ``obj`` listed in ``table`` that ask for something."""
    prefix = where if prefix is None else prefix
    for key, value in obj.items():
        reason = table.get(f"{prefix}.{key}" if prefix else key)
        if reason and _asks(value):
            raise SpecError(f"{_at(where, key)}: {reason} (remove it)")


def _asks(value) -> bool:
    """Whether a field's value asks for something: null, false and empty ones do not; a
    number always does (swappiness 0 means no swapping)."""
    if value is None or value is False:
        return False
    return bool(value) if isinstance(value, (str, list, dict)) else True


# --- what mycontainer writes and offers ---------------------------------------------------


def default_config() -> dict:
    """The config.json ``mycontainer-oci spec`` writes: runc's (``runc spec``), with
    mycontainer's defaults where they differ: a cgroup namespace too (every mycontainer
    container has one), no ambient capabilities (docker's rule since CVE-2022-24769), the
    masked and read-only paths of runtime.security."""
    from runtime.policy import MASKED_PATHS, READONLY_PATHS  # docker's: not every load's

    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"]
    return {
        "ociVersion": OCI_VERSION_MAX,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ],
            "cwd": "/",
            "capabilities": {kind: list(caps) for kind in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "mycontainer",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": [*nosuid_noexec_nodev, "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": list(nosuid_noexec_nodev),
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": [*nosuid_noexec_nodev, "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": [*nosuid_noexec_nodev, "relatime", "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [
                {"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup")
            ],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def features() -> dict:
    """The runtime-spec features document (features.md) of ``mycontainer-oci features``,
    derived from the tables this module validates against."""
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": list(HOOKS),
        "mountOptions": list(MOUNT_OPTIONS),
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": [f"CAP_{name}" for name in CAPABILITIES],
            "cgroup": {
                "v1": True,
                "v2": True,
                "systemd": False,
                "systemdUser": False,
                "rdma": False,
            },
            "seccomp": {
                "enabled": True,
                "actions": list(SECCOMP_ACTIONS),
                "operators": list(SECCOMP_OPERATORS),
                "archs": list(SECCOMP_ARCHS),
                "knownFlags": [],
                "supportedFlags": [],
            },
            "apparmor": {"enabled": True},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
            "netDevices": {"enabled": False},
        },
        "potentiallyUnsafeConfigAnnotations": [],
    }
