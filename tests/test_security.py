"""Security boundaries: capabilities, no_new_privs, seccomp, masked paths, devices, fds.

The heart of it is the *escape suite*: one attempt per way out of a container, each run
with the default protections (where it must fail) and again with protections lifted, which
shows, attempt by attempt, which protection is the one that stops it (ESCAPES below).

Attempts that need a system call busybox has no applet for run a tiny static program made
here (:func:`syscall_program`): it makes one system call with fixed arguments and exits
with its errno (0 on success). Every argument is chosen so that even a call that gets
through changes nothing (reboot with wrong magic numbers, init_module of nothing...).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time

import pytest
from test_seccomp import run_filter

from runtime import (
    capabilities,
    cgroups,
    devices,
    launcher,
    policy,
    process_settings,
    seccomp,
    security,
    syscalls,
)
from runtime.syscalls import CLONE_NEWUSER, PR_SET_NO_NEW_PRIVS, prctl

from conftest import (
    cgroup_parent,
    container_states,
    environment,
    leftover_state,
    mycontainer_command,
    privileged_skip_reason,
    running_containers,
)

MACHINE = {"arm64": "aarch64", "amd64": "x86_64"}.get(os.uname().machine, os.uname().machine)
DEFAULT_MASK = 0x00000000A80425FB  # docker's 14, as /proc/PID/status shows them
DOCKER_PATHS = security.Boundaries(
    masked_paths=policy.MASKED_PATHS, readonly_paths=policy.READONLY_PATHS
)

# --- options and settings (no root needed) ---------------------------------------------------


def test_capability_names_are_checked_and_normalised():
    assert policy.parse_cap_add("net_admin") == "NET_ADMIN"
    assert policy.parse_cap_add("CAP_SYS_ADMIN") == "SYS_ADMIN"
    assert policy.parse_cap_drop("all") == "ALL"
    with pytest.raises(ValueError, match="--cap-drop: unknown capability 'CAP_FOO'"):
        policy.parse_cap_drop("CAP_FOO")


@pytest.mark.parametrize("text", ["\u017fys_admin", "net_adm\u0131n"])
def test_capability_names_are_ascii(text):
    """Unicode case rules turn ſ into S and ı into I: such a name is no capability's."""
    with pytest.raises(ValueError, match="--cap-add: unknown capability"):
        policy.parse_cap_add(text)


@pytest.mark.parametrize(
    "text, normalised",
    [
        ("no-new-privileges", "no-new-privileges=true"),
        ("no-new-privileges:false", "no-new-privileges=false"),
        ("seccomp=unconfined", "seccomp=unconfined"),
        ("systempaths=unconfined", "systempaths=unconfined"),
    ],
)
def test_security_opts(text, normalised):
    assert policy.parse_security_opt(text) == normalised


@pytest.mark.parametrize("text", ["seccomp=profile.json", "apparmor=x", "no-new-privileges=1"])
def test_bad_security_opts(text):
    with pytest.raises(ValueError, match="--security-opt"):
        policy.parse_security_opt(text)


def test_default_capabilities_are_dockers():
    assert policy.capability_set() == DEFAULT_MASK
    assert len(policy.DEFAULT_CAPABILITIES) == 14


@pytest.mark.parametrize(
    "add, drop, expected",
    [
        (["NET_ADMIN"], [], DEFAULT_MASK | 1 << 12),
        ([], ["CHOWN"], DEFAULT_MASK & ~1),
        (["CHOWN"], ["CHOWN"], DEFAULT_MASK),  # adding wins, as in docker
        (["ALL"], ["MKNOD"], (1 << 41) - 1 & ~(1 << 27)),
        (["NET_RAW"], ["ALL"], 1 << 13),
    ],
)
def test_cap_add_and_drop_follow_docker(add, drop, expected):
    assert policy.capability_set(add, drop) == expected


def switches(security_opt=()) -> tuple[bool, bool, bool]:
    """(no_new_privs, seccomp, masked and read-only paths) of docker's flags."""
    config, program = policy.security_settings(security_opt=security_opt)
    linux = config["linux"]
    assert bool(linux["maskedPaths"]) == bool(linux["readonlyPaths"])
    return config["process"]["noNewPrivileges"], program is not None, bool(linux["maskedPaths"])


def test_security_opts_set_the_switches():
    lifted = ["no-new-privileges=false", "seccomp=unconfined", "systempaths=unconfined"]
    assert switches(lifted) == (False,) * 3
    assert switches() == (True,) * 3


def test_the_fast_path_parses_the_new_options():
    argv = [
        "run",
        "--cap-add",
        "net_admin",
        "--cap-add=ALL",
        "--security-opt",
        "seccomp=unconfined",
    ]
    image, command, options = launcher.parse_plain_run([*argv, "busybox", "true"])
    assert options == {"cap_add": ["NET_ADMIN", "ALL"], "security_opt": ["seccomp=unconfined"]}
    assert launcher.parse_plain_run(["run", "--cap-drop", "NOPE", "busybox"]) is None  # to click


@pytest.mark.parametrize(
    "header, machine",
    [
        ("/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "x86_64"),
        ("/usr/include/asm-generic/unistd.h", "aarch64"),
    ],
)
def test_seccomp_numbers_match_the_kernel_headers(header, machine):
    if not os.path.exists(header):
        pytest.skip(f"{header} is missing (apt-get install linux-libc-dev)")
    defined = {}
    with open(header) as file:
        for line in file:
            words = line.split()
            if len(words) == 3 and words[0] == "#define" and words[2].isdigit():
                name = words[1].removeprefix("__NR3264_").removeprefix("__NR_")
                defined[name] = int(words[2])
    for name, number in syscalls.SYSCALL_NUMBERS[machine].items():
        assert defined.get(name) == number, name


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filter_checks_the_architecture_first(machine):
    program = seccomp.build(DEFAULT_MASK, machine)
    code, _, _, k = struct.unpack("=HBBI", program[8:16])
    assert (code, k) == (seccomp.JEQ_K, seccomp.AUDIT_ARCH[machine])
    assert struct.unpack("=HBBI", program[16:24])[3] == seccomp.RET_KILL_PROCESS
    assert struct.unpack("=HBBI", program[-8:])[3] == seccomp.RET_ALLOW
    # capabilities lift their rules: CAP_SYS_ADMIN lets mount through, not keyctl
    assert len(seccomp.build((1 << 41) - 1, machine)) < len(program)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
@pytest.mark.parametrize(
    "capability, calls",
    [
        (23, ["mbind", "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node"]),  # NICE
        (26, ["vhangup"]),  # SYS_TTY_CONFIG
        (19, ["process_madvise", "process_vm_readv"]),  # SYS_PTRACE
        (34, ["syslog"]),  # SYSLOG
    ],
)
def test_capabilities_lift_their_rules_as_in_dockers_profile(machine, capability, calls):
    numbers = syscalls.SYSCALL_NUMBERS[machine]
    default = seccomp.build(DEFAULT_MASK, machine)
    lifted = seccomp.build(DEFAULT_MASK | 1 << capability, machine)
    for name in calls:
        assert _denied(default, numbers[name]) and not _denied(lifted, numbers[name]), name
    everything = seccomp.build((1 << 41) - 1, machine)
    assert _denied(everything, numbers["move_pages"])  # no capability lifts it, as in docker


def test_device_rules_as_cgroup_v1_lines():
    assert devices.v1_rules()[:3] == ["c *:* m", "b *:* m", "c 1:3 rwm"]
    assert len(devices.device_filter()) % 8 == 0


# --- config.json's values, applied as given ----------------------------------------------------

ALL_CAPS = [f"CAP_{name}" for name in security.CAPABILITIES]


def caps(*names: str) -> dict:
    """A process.capabilities with docker's set as bounding and ``names`` in the other four."""
    return {
        "bounding": [f"CAP_{name}" for name in policy.DEFAULT_CAPABILITIES],
        **dict.fromkeys(["effective", "permitted", "inheritable", "ambient"], list(names)),
    }


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"process": {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_TEST"]}}},
            "process.capabilities.bounding: unknown capability 'CAP_TEST'",
        ),
        (
            {"process": {"capabilities": {"effective": ["NET_ADMIN"]}}},
            "process.capabilities.effective: unknown capability 'NET_ADMIN'",
        ),
        (
            {"process": {"capabilities": {"effective": ["CAP_KILL"]}}},
            "process.capabilities.effective: KILL must also be in permitted",
        ),
        (
            {"process": {"capabilities": {**caps("CAP_SYS_ADMIN")}}},
            "process.capabilities.inheritable: SYS_ADMIN must also be in bounding",
        ),
        ({"process": {"capabilities": {"bounded": []}}}, "process.capabilities takes the sets"),
        ({"process": {"noNewPrivileges": "yes"}}, "process.noNewPrivileges must be true or false"),
        ({"linux": {"maskedPaths": ["proc/kcore"]}}, "linux.maskedPaths: 'proc/kcore' is not an"),
        ({"linux": {"readonlyPaths": "/proc/sys"}}, "linux.readonlyPaths must be a list"),
        ({"linux": {"maskedPaths": ["/proc/.."]}}, "linux.maskedPaths: '/proc/..' is the"),
    ],
)
def test_bad_boundaries_are_one_line_naming_the_field(config, message):
    """The spec: a capability that maps to nothing the kernel knows MUST be an error
    (runtime-tools' process_capabilities_fail), and so must a relative path."""
    with pytest.raises(security.SecurityError) as raised:
        security.Boundaries.from_config(config)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_an_ambient_capability_that_cannot_be_raised_is_left_out_with_a_warning(capsys):
    """As runc: ``runc spec`` itself lists ambient capabilities that are not inheritable."""
    config = {"process": {"capabilities": {**caps("CAP_KILL"), "inheritable": []}}}
    boundaries = security.Boundaries.from_config(config)
    assert boundaries.sets["ambient"] == 0
    assert "ambient: KILL left out" in capsys.readouterr().err


def test_dockers_flags_stand_for_config_values():
    config, program = policy.security_settings(["NET_ADMIN"], ["CHOWN"], uid=1000)
    capabilities = config["process"]["capabilities"]
    assert capabilities["bounding"] == [
        f"CAP_{name}" for name in security.names_of(DEFAULT_MASK & ~1 | 1 << 12)
    ]
    assert capabilities["effective"] == capabilities["permitted"] == []  # not root
    assert capabilities["inheritable"] == capabilities["ambient"] == []
    assert config["linux"]["maskedPaths"] == list(policy.MASKED_PATHS)
    assert program == seccomp.build(DEFAULT_MASK & ~1 | 1 << 12, MACHINE)
    root, _ = policy.security_settings()
    assert root["process"]["capabilities"]["effective"] == [
        f"CAP_{name}" for name in security.names_of(DEFAULT_MASK)
    ]


def held_mask() -> int:
    return syscalls.capget()[1]


@pytest.mark.privileged
def test_every_capability_we_hold_in_all_five_sets():
    """runtime-tools' process_capabilities: all of them in every set, ambient included."""
    from test_process_settings import in_child, status

    held = security.names_of(held_mask())
    sets = dict.fromkeys(["bounding", "effective", "permitted", "inheritable", "ambient"])
    capabilities = {name: [f"CAP_{cap}" for cap in held] for name in sets}
    seen = status(in_child(security.Boundaries(capabilities)))
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert seen[field] == f"{held_mask():016x}", field


@pytest.mark.privileged
def test_ambient_capabilities_pass_to_a_non_root_user():
    """Kept across setuid(2) (PR_SET_KEEPCAPS), then raised: the one way a non-root
    program without file capabilities holds one, as a user would bind port 80."""
    from test_process_settings import in_child, status

    user = process_settings.ProcessSettings({"uid": 1000, "gid": 1000})
    seen = status(in_child(security.Boundaries(caps("CAP_NET_BIND_SERVICE")), user))
    assert seen["Uid"].split()[0] == "1000"
    bit = f"{1 << 10:016x}"
    assert (seen["CapInh"], seen["CapPrm"], seen["CapEff"], seen["CapAmb"]) == (bit,) * 4
    assert seen["CapBnd"] == f"{DEFAULT_MASK:016x}"
    # Without ambient, execve(2) empties a non-root program's permitted set, whatever it was.
    without = {**caps("CAP_NET_BIND_SERVICE"), "ambient": []}
    seen = status(in_child(security.Boundaries(without), user))
    assert (seen["CapInh"], seen["CapPrm"], seen["CapEff"]) == (bit, "0" * 16, "0" * 16)


@pytest.mark.privileged
def test_root_gets_exactly_the_sets_given():
    from test_process_settings import in_child, status

    given = {"bounding": ["CAP_KILL", "CAP_CHOWN"], "permitted": ["CAP_KILL"]}
    given["effective"] = ["CAP_KILL"]
    seen = status(in_child(security.Boundaries(given)))
    assert seen["CapBnd"] == f"{1 << 5 | 1:016x}"
    # root's execve(2) grants it its bounding set (capabilities(7)): runc's and crun's too
    assert seen["CapPrm"] == seen["CapEff"] == f"{1 << 5 | 1:016x}"
    assert seen["CapInh"] == seen["CapAmb"] == "0" * 16


@pytest.mark.privileged
@pytest.mark.parametrize("no_new_privileges", [True, False])
def test_no_new_privileges_and_the_filter_as_given(no_new_privileges):
    from test_process_settings import in_child, status

    if MACHINE not in seccomp.AUDIT_ARCH:
        pytest.skip(no_machine_code("seccomp filter"))
    program = seccomp.build(DEFAULT_MASK, MACHINE)
    boundaries = security.Boundaries(caps(), no_new_privileges, seccomp=program)
    seen = status(in_child(boundaries, process_settings.ProcessSettings({"uid": 1, "gid": 1})))
    assert seen["NoNewPrivs"] == ("1" if no_new_privileges else "0")
    assert seen["Seccomp"] == "2"
    unconfined = status(in_child(security.Boundaries(caps(), no_new_privileges)))
    assert unconfined["Seccomp"] == "0"


@pytest.mark.privileged
def test_capabilities_we_lack_are_refused():
    """We cannot give what we do not hold: the container would silently lack it."""
    missing = (1 << len(security.CAPABILITIES)) - 1 & ~held_mask()
    missing &= (1 << capabilities.last_capability() + 1) - 1
    if not missing:
        pytest.skip("this process holds every capability the kernel knows: none to lack")
    name = security.names_of(missing)[0]
    with pytest.raises(security.SecurityError, match=f"does not have {name}"):
        security.Boundaries({"bounding": [f"CAP_{name}"]})


@pytest.mark.privileged
def test_masked_and_read_only_paths_as_given(tmp_path):
    """runtime-tools' linux_masked_paths and linux_readonly_paths: a file and a directory
    each; a path that does not exist is nothing to hide."""
    for directory in ("dev", "secret-dir", "ro-dir", "proc"):
        (tmp_path / directory).mkdir()
    (tmp_path / "secret-dir" / "file").write_text("secret")
    (tmp_path / "secret-file").write_text("secret")
    (tmp_path / "ro-file").write_text("kept")
    boundaries = security.Boundaries(
        masked_paths=["/secret-dir", "//secret-file/.", "/missing"],
        readonly_paths=["/ro-dir", "/ro-file"],
    )

    def protect_and_look():
        syscalls.mount("proc", "/proc", "proc")  # for /proc/self/fd/N
        syscalls.mount("tmpfs", "/dev", "tmpfs")  # devices work there, whatever /tmp's flags
        os.mknod("/dev/null", 0o666 | 0o020000, os.makedev(1, 3))
        boundaries.protect_paths()
        seen = [os.listdir("/secret-dir")]
        for path in ("/secret-file", "/ro-file"):
            with open(path) as file:
                seen.append(file.read())
        for path in ("/ro-dir/new", "/ro-file"):
            try:
                open(path, "a").close()
                seen.append("written")
            except OSError as error:
                seen.append(error.strerror)
        raise RuntimeError(json.dumps(seen))

    seen = json.loads(in_private_root(tmp_path, protect_and_look))
    assert seen == [[], "", "kept", "Read-only file system", "Read-only file system"]
    assert (tmp_path / "secret-file").read_text() == "secret"  # hidden, not changed


# --- a tiny static program that makes one system call ----------------------------------------


def syscall_program(nr: int, *args: int, machine: str = MACHINE) -> bytes:
    """A static ELF executable that calls system call ``nr`` with ``args`` and exits with the
    errno it got (0 on success): ``exit 1`` is EPERM. x86_64 or aarch64 machine code."""
    args = [arg & 0xFFFFFFFFFFFFFFFF for arg in (*args, 0, 0, 0, 0, 0, 0)[:6]]
    if machine == "x86_64":
        code = b"".join(  # movabs rdi, rsi, rdx, r10, r8, r9 <- args
            prefix + struct.pack("<Q", arg)
            for prefix, arg in zip(
                [b"\x48\xbf", b"\x48\xbe", b"\x48\xba", b"\x49\xba", b"\x49\xb8", b"\x49\xb9"],
                args,
                strict=True,
            )
        )
        code += b"\xb8" + struct.pack("<I", nr) + b"\x0f\x05"  # mov eax, nr; syscall
        code += b"\x48\x89\xc7\x48\xf7\xdf"  # mov rdi, rax; neg rdi (the errno, if failed)
        code += b"\x48\x85\xc0\x79\x02\xeb\x02\x31\xff"  # test rax; jns ok; jmp; ok: xor edi
        code += b"\xb8\xe7\x00\x00\x00\x0f\x05"  # mov eax, 231 (exit_group); syscall
        elf_machine = 62
    else:
        words = [0x58000000 | ((64 + 8 * i - 4 * i) // 4) << 5 | i for i in range(6)]  # ldr
        words += [
            0xD2800008 | nr << 5,  # movz x8, #nr
            0xD4000001,  # svc #0
            0xF100001F,  # cmp x0, #0
            0x5400006A,  # b.ge ok (+12)
            0xCB0003E0,  # neg x0, x0
            0x14000002,  # b exit (+8)
            0xD2800000,  # ok: mov x0, #0
            0xD2800BC8,  # exit: movz x8, #94 (exit_group)
            0xD4000001,  # svc #0
            0xD503201F,  # nop: pads the code to 64 bytes, where the literals start
        ]
        code = struct.pack("<16I", *words) + struct.pack("<6Q", *args)
        elf_machine = 183
    base, header_size = 0x400000, 64 + 56
    size = header_size + len(code)
    elf = b"\x7fELF\x02\x01\x01" + bytes(9)  # 64-bit, little-endian, version 1
    elf += struct.pack(  # an executable, entry right after the headers, one program header
        "<HHIQQQIHHHHHH", 2, elf_machine, 1, base + header_size, 64, 0, 0, 64, 56, 1, 0, 0, 0
    )
    elf += struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)  # PT_LOAD, R+X
    return elf + code


def no_machine_code(what: str = "machine code") -> str:
    """Why there is no ``what`` for this machine, and where to run the tests that need it."""
    return (
        f"no {what} for {MACHINE} (only for {' and '.join(syscalls.SYSCALL_NUMBERS)}):"
        " run them on such a machine, or in a VM: 'invoke test --qemu --arch arm64' (or x86_64)"
    )


def test_syscall_program_reports_the_errno(tmp_path):
    if MACHINE not in syscalls.SYSCALL_NUMBERS:
        pytest.skip(no_machine_code())
    program = tmp_path / "probe"
    program.write_bytes(syscall_program(syscalls.SYSCALL_NUMBERS[MACHINE]["ioctl"], -1, 0x5401, 0))
    program.chmod(0o755)
    assert subprocess.run([program]).returncode == 9  # EBADF
    program.write_bytes(syscall_program(39 if MACHINE == "x86_64" else 172))  # getpid
    assert subprocess.run([program]).returncode == 0


# --- the seccomp filter, on its own -------------------------------------------------------------

KEYCTL_DESCRIBE, NO_SUCH_KEY = 6, 0x7FFFFFFF

# For every call the default filter denies: arguments that change nothing even if the call
# got through (as root, on the host!), should the filter be broken.
HARMLESS_ARGUMENTS = {
    "acct": (1,),  # a bad address, not NULL (which would switch accounting off)
    "add_key": (0, 0, 0, 0, 0),
    "bpf": (0xFFFF, 0, 0),
    "clock_adjtime": (0xFFFF, 0),
    "clock_settime": (0xFFFF, 0),
    "create_module": (0, 0),
    "delete_module": (0, 0),
    "fanotify_init": (0xFFFFFFFF, 0),
    "finit_module": (-1, 0, 0),
    "fsconfig": (-1, 0, 0, 0, 0),
    "fsmount": (-1, 0, 0),
    "fsopen": (0, 0),
    "fspick": (-1, 0, 0),
    "get_kernel_syms": (0,),
    "get_mempolicy": (0, 0, 0, 0, 0xFFFF),  # unknown flags: EINVAL
    "init_module": (0, 0, 0),
    "io_uring_enter": (-1, 0, 0, 0, 0, 0),
    "io_uring_register": (-1, 0, 0, 0),
    "io_uring_setup": (0, 0),
    "ioperm": (0, 0, 0),
    "iopl": (4,),
    "kcmp": (0, 0, 0xFF, 0, 0),
    "kexec_file_load": (-1, -1, 0, 0, 0xFFFFFFFF),
    "kexec_load": (0, 0, 0, 0xFFFFFFFF),
    "keyctl": (KEYCTL_DESCRIBE, NO_SUCH_KEY, 0, 0),
    "lookup_dcookie": (0, 0, 0),
    "mbind": (0, 0, 0xFFFF, 0, 0, 0),  # unknown mode: EINVAL
    "migrate_pages": (0x7FFFFFFF, 0, 0, 0),  # no such process: ESRCH
    "modify_ldt": (0xFF, 0, 0),
    "mount": (0, 0, 0, 0, 0),
    "mount_setattr": (-1, 0, 0, 0, 0),
    "move_mount": (-1, 0, -1, 0, 0),
    "move_pages": (0x7FFFFFFF, 0, 0, 0, 0, 0),
    "nfsservctl": (0, 0, 0),
    "open_by_handle_at": (-1, 0, 0),
    "open_tree": (-1, 0, 0),
    "perf_event_open": (0, 0, -1, -1, 0),
    "pidfd_getfd": (-1, 0, 0),
    "pivot_root": (0, 0),
    "process_madvise": (-1, 0, 0, 0, 0),
    "process_vm_readv": (0, 0, 0, 0, 0, 0),
    "process_vm_writev": (0, 0, 0, 0, 0, 0),
    "query_module": (0, 0, 0, 0, 0),
    "quotactl": (0, 0, 0, 0),
    "quotactl_fd": (-1, 0, 0, 0),
    "reboot": (0, 0, 0, 0),  # wrong magic numbers: EINVAL
    "request_key": (0, 0, 0, 0),
    "set_mempolicy": (0xFFFF, 0, 0),
    "set_mempolicy_home_node": (0, 0, 0, 0xFFFF),
    "setdomainname": (0, 100000),  # too long: EINVAL
    "sethostname": (0, 100000),
    "setns": (-1, 0),
    "settimeofday": (1, 1),
    "swapoff": (0,),
    "swapon": (0, 0),
    "_sysctl": (0,),
    "sysfs": (0xFF, 0, 0),
    "syslog": (0xFF, 0, 0),
    "umount2": (0, 0),
    "uselib": (0,),
    "userfaultfd": (0xFFFFFFFF,),
    "ustat": (0, 0),
    "vhangup": (),  # run without a controlling terminal (setsid): nothing to hang up
}


@pytest.mark.privileged
def test_the_filter_alone_makes_denied_calls_fail_with_eperm():
    """In a child of the test that keeps every capability of root: only the filter says no."""
    if MACHINE not in syscalls.SYSCALL_NUMBERS:
        pytest.skip(no_machine_code("seccomp filter"))
    numbers = syscalls.SYSCALL_NUMBERS[MACHINE]
    program = seccomp.build(DEFAULT_MASK, MACHINE)
    denied = {name for name in numbers if _denied(program, numbers[name])}
    assert denied == {name for name in HARMLESS_ARGUMENTS if name in numbers}
    calls = {name: (numbers[name], *HARMLESS_ARGUMENTS[name]) for name in denied}
    null = os.open("/dev/null", os.O_RDONLY)
    calls["unshare(CLONE_NEWUSER)"] = (numbers["unshare"], CLONE_NEWUSER)
    calls["clone(CLONE_NEWUSER)"] = (numbers["clone"], CLONE_NEWUSER | 17, 0, 0, 0, 0)
    calls["ptrace(PTRACE_ATTACH)"] = (numbers["ptrace"], 16, 0)
    calls["ptrace(PTRACE_SEIZE)"] = (numbers["ptrace"], 0x4206, 0)
    calls["ioctl(TIOCSTI)"] = (numbers["ioctl"], null, 0x5412, 0)
    calls["ioctl(TIOCSTI), high bits set"] = (numbers["ioctl"], null, 0x1_0000_5412, 0)
    calls["socket(AF_VSOCK)"] = (numbers["socket"], 40, 1, 0)
    calls["socket(AF_ALG)"] = (numbers["socket"], 38, 5, 0)
    calls["personality(ADDR_NO_RANDOMIZE)"] = (numbers["personality"], 0x0040000)
    calls["personality(READ_IMPLIES_EXEC)"] = (numbers["personality"], 0x0400000)
    if MACHINE == "x86_64":
        calls["x32 getpid"] = (39 | seccomp.X32_SYSCALL_BIT,)
    results = _in_filtered_child(program, calls)
    os.close(null)
    assert results == {name: 1 for name in calls}  # EPERM, every one
    # ...while other calls and arguments still work
    allowed = {
        "ioctl(TCGETS)": (numbers["ioctl"], -1, 0x5401, 0),  # EBADF: it ran
        "ptrace(PTRACE_PEEKDATA)": (numbers["ptrace"], 2, 0, 0, 0),  # ESRCH: it ran
        "clone3": (numbers["clone3"], 0, 0),  # ENOSYS, so that libc falls back to clone
        "statmount": (457, 0, 0, 0, 0),  # newer than the filter's review: ENOSYS
        "a call from the future": (1000,),
        "socket(AF_UNIX)": (numbers["socket"], 1, 1, 0),
        "socket(AF_INET6)": (numbers["socket"], 10, 2, 0),
    }
    for persona in seccomp.PERSONALITIES:  # docker's list: 0xffffffff asks, the rest set
        allowed[f"personality({persona:#x})"] = (numbers["personality"], persona)
    results = _in_filtered_child(program, allowed)
    assert results == {
        "ioctl(TCGETS)": 9,
        "ptrace(PTRACE_PEEKDATA)": 3,
        "clone3": 38,
        "statmount": 38,
        "a call from the future": 38,
        **{name: 0 for name in allowed if name.startswith(("socket", "personality"))},
    }


def _denied(program: bytes, number: int) -> bool:
    """Whether the filter fails ``number`` with EPERM, its arguments all 0."""
    return run_filter(program, number) == seccomp.RET_ERRNO | errno.EPERM


def _in_filtered_child(program: bytes, calls: dict) -> dict[str, int]:
    """Run ``calls`` (name -> number and arguments) under the filter in a forked child;
    return name -> errno (0: success)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setsid()  # no controlling terminal, for vhangup to hang up
            libc = ctypes.CDLL(None, use_errno=True)
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            seccomp.install(program)
            results = {}
            for name, (number, *args) in calls.items():
                ctypes.set_errno(0)
                result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
                if result == 0 and name.startswith("clone"):
                    os._exit(0)  # we are the child of a clone that got through
                results[name] = ctypes.get_errno() if result == -1 else 0
            os.write(write_end, json.dumps(results).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        output = reader.read()
    os.waitpid(pid, 0)
    return json.loads(output)


# --- containers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probes_rootfs(tmp_path_factory, home):
    """The busybox rootfs with /probe/NAME programs: one system call each (see ESCAPES)."""
    if privileged_skip_reason() or MACHINE not in syscalls.SYSCALL_NUMBERS:
        pytest.skip(privileged_skip_reason() or no_machine_code())
    root = tmp_path_factory.mktemp("probes") / "rootfs"
    shutil.copytree(home / "rootfs" / "busybox", root, symlinks=True)
    (root / "probe").mkdir()
    numbers = syscalls.SYSCALL_NUMBERS[MACHINE]
    probes = {
        name: (numbers[name], *args)
        for name, args in HARMLESS_ARGUMENTS.items()
        if name in numbers  # aarch64 has no iopl, create_module...
    }
    probes["unshare_user"] = (numbers["unshare"], CLONE_NEWUSER)
    probes["ptrace_attach_host"] = (numbers["ptrace"], 16, os.getpid())
    probes["ioctl_tiocsti"] = (numbers["ioctl"], 0, 0x5412, 0)
    probes["socket_vsock"] = (numbers["socket"], 40, 1, 0)  # AF_VSOCK, SOCK_STREAM
    probes["socket_alg"] = (numbers["socket"], 38, 5, 0)  # AF_ALG, SOCK_SEQPACKET
    probes["socket_unix"] = (numbers["socket"], 1, 1, 0)
    probes["personality_no_aslr"] = (numbers["personality"], 0x0040000)  # ADDR_NO_RANDOMIZE
    probes["personality_query"] = (numbers["personality"], 0xFFFFFFFF)
    probes["personality_linux32"] = (numbers["personality"], 0x8)
    for name, (number, *args) in probes.items():
        path = root / "probe" / name
        path.write_bytes(syscall_program(number, *args))
        path.chmod(0o755)
    return str(root)


@pytest.mark.privileged
def test_capabilities_are_exactly_dockers_default(mycontainer):
    result = mycontainer(
        "run", "--net", "none", "busybox", "grep", "-E", "^(Cap|NoNew|Secc)", "/proc/self/status"
    )
    assert result.stdout.split("\n")[:-1] == [
        "CapInh:\t0000000000000000",
        "CapPrm:\t00000000a80425fb",
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "Seccomp_filters:\t1",
    ]
    assert security.names_of(DEFAULT_MASK) == sorted(
        policy.DEFAULT_CAPABILITIES, key=security.CAPABILITIES.index
    )


def status_of(result) -> dict[str, str]:
    return dict(line.split(":\t") for line in result.stdout.splitlines())


@pytest.mark.privileged
def test_cap_add_cap_drop_and_security_opts(mycontainer):
    def status(*options):
        result = mycontainer(
            "run", "--net", "none", *options, "busybox", "cat", "/proc/self/status"
        )
        assert result.returncode == 0, result.stderr
        return status_of(result)

    with open("/proc/self/status") as file:
        ours = dict(line.rstrip("\n").split(":\t") for line in file if ":\t" in line)
    assert status("--cap-add", "ALL")["CapEff"] == ours["CapBnd"]  # all that we have
    assert status("--cap-drop", "ALL", "--cap-add", "CAP_NET_ADMIN")["CapBnd"] == f"{1 << 12:016x}"
    chown = mycontainer("run", "--net", "none", "--cap-drop", "chown", "busybox", "chown", "1", "/")
    assert "Operation not permitted" in chown.stderr
    lifted = status(
        "--security-opt", "no-new-privileges=false", "--security-opt", "seccomp=unconfined"
    )
    assert (lifted["NoNewPrivs"], lifted["Seccomp"]) == ("0", "0")
    # no_new_privs off: the filter goes in before the capabilities are dropped (it needs
    # CAP_SYS_ADMIN then)
    assert status("--security-opt", "no-new-privileges=false")["Seccomp"] == "2"


@pytest.mark.privileged
@pytest.mark.parametrize(
    "args, message",
    [
        (["--cap-add", "FLY"], "--cap-add: unknown capability 'FLY'"),
        (["--security-opt", "label=disable"], "--security-opt takes"),
        (["--security-opt", "seccomp=my.json"], "seccomp profiles from a file are not supported"),
    ],
)
def test_bad_security_values_are_one_line_and_125(mycontainer, state_root, args, message):
    result = mycontainer("run", *args, "busybox", "true")
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert os.listdir(state_root) == []


def oci_image(directory, rootfs: str, user: str | None = None, **config) -> str:
    """An OCI image layout at ``directory``: ``rootfs`` as one layer, running as ``user``
    with the rest of ``config`` (``WorkingDir="/x"``...). File capabilities (the
    security.capability extended attribute) go into the layer, as docker writes them."""

    def with_file_capabilities(entry: tarfile.TarInfo) -> tarfile.TarInfo:
        path = os.path.join(rootfs, entry.name)
        if entry.isfile() and "security.capability" in os.listxattr(path):
            value = os.getxattr(path, "security.capability")
            entry.pax_headers["SCHILY.xattr.security.capability"] = value.decode(
                "utf-8", "surrogateescape"
            )
        return entry

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(rootfs, arcname=".", filter=with_file_capabilities)
    layer = buffer.getvalue()
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def add(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    architecture = {"x86_64": "amd64", "aarch64": "arm64"}.get(MACHINE, MACHINE)
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {**({"User": user} if user else {}), **config},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    manifest = {
        "schemaVersion": 2,
        "config": add(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [add(gzip.compress(layer), "application/vnd.oci.image.layer.v1.tar+gzip")],
    }
    entry = add(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return str(directory)


@pytest.mark.privileged
def test_a_non_root_user_keeps_the_bounding_set_and_nothing_more(mycontainer, tmp_path, home):
    image = oci_image(tmp_path / "nobody", str(home / "rootfs" / "busybox"), "nobody")
    result = mycontainer("run", "--net", "none", image, "cat", "/proc/self/status")
    assert result.returncode == 0, result.stderr
    status = status_of(result)
    assert status["Uid"].split()[0] == "65534"
    assert status["CapBnd"] == f"{DEFAULT_MASK:016x}"
    for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert status[name] == "0" * 16, name
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")


@pytest.fixture
def secret_rootfs(tmp_path, busybox_rootfs):
    """A copy of the busybox rootfs with /secret, readable by root only, and /fcap/cat, a
    copy of busybox (the applet is its name) to which tests give file capabilities."""
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    (root / "secret").write_text("root only\n")
    (root / "secret").chmod(0o600)
    (root / "fcap").mkdir()
    shutil.copy2(root / "bin" / "busybox", root / "fcap" / "cat")
    return root


@pytest.mark.privileged
@pytest.mark.parametrize("file_caps", ["cap_dac_override=ep", "cap_dac_override=ei"])
def test_file_capabilities_give_a_non_root_user_nothing(
    mycontainer, tmp_path, secret_rootfs, file_caps
):
    """CVE-2022-24769: a program with file capabilities, run by a non-root USER, must not
    get them from capability sets the runtime left filled (permitted, or inheritable)."""
    if not shutil.which("setcap"):
        pytest.skip("setcap is missing (apt-get install libcap2-bin)")
    subprocess.run(["setcap", file_caps, secret_rootfs / "fcap" / "cat"], check=True)
    image = oci_image(tmp_path / "image", str(secret_rootfs), "nobody")
    result = mycontainer("run", "--net", "none", image, "/fcap/cat", "/secret")
    assert "Permission denied" in result.stderr and result.returncode == 1
    assert result.stdout == ""
    # The program has them indeed: as root, with the default set, it reads the file.
    as_root = oci_image(tmp_path / "as-root", str(secret_rootfs), "root")
    assert mycontainer("run", "--net", "none", as_root, "/fcap/cat", "/secret").stdout == (
        "root only\n"
    )


@pytest.mark.privileged
def test_denied_system_calls_fail_with_eperm_inside(mycontainer, probes_rootfs):
    names = ["keyctl", "unshare_user", "mount", "bpf", "perf_event_open", "userfaultfd"]
    names += ["open_by_handle_at", "kexec_load", "init_module", "reboot", "swapon"]
    names += ["ptrace_attach_host", "ioctl_tiocsti", "socket_vsock", "socket_alg"]
    names += ["personality_no_aslr", "vhangup", "get_mempolicy", "move_pages"]
    allowed = ["socket_unix", "personality_query", "personality_linux32"]
    script = "; ".join(f'/probe/{name}; echo "{name} $?"' for name in names + allowed)
    result = mycontainer(
        "run", "--net", "none", probes_rootfs, "sh", "-c", script, stdin=subprocess.DEVNULL
    )
    expected = [f"{name} 1" for name in names] + [f"{name} 0" for name in allowed]  # 1: EPERM
    assert result.stdout.splitlines() == expected


@pytest.mark.privileged
def test_masked_and_read_only_paths(mycontainer):
    script = (
        "cat /proc/keys /proc/timer_list | wc -c; ls /sys/firmware | wc -l; "
        "touch /sys/firmware/x /proc/acpi/x 2>&1 | grep -c 'Read-only'; "
        "(exec 3>>/proc/sys/kernel/core_pattern) 2>&1 | grep -c 'Read-only'"
    )
    result = mycontainer("run", "--net", "none", "busybox", "sh", "-c", script)
    assert result.stdout.split() == ["0", "0", "2" if os.path.isdir("/proc/acpi") else "1", "1"]
    unconfined = mycontainer(
        "run", "--net", "none", "--security-opt", "systempaths=unconfined", "busybox",
        "sh", "-c", "ls /sys/firmware | wc -l; cut -d' ' -f2 /proc/mounts",
    )  # fmt: skip
    count, *mounts = unconfined.stdout.split()
    assert int(count) == len(os.listdir("/sys/firmware"))
    assert not set(mounts) & set(policy.MASKED_PATHS + policy.READONLY_PATHS)


def in_private_root(tmp_path, action) -> str:
    """Run ``action()`` in a child chrooted into ``tmp_path``, in a mount namespace of its own
    (so nothing it might mount reaches the host); return its error message, or ''."""
    from runtime.syscalls import CLONE_NEWNS, MS_PRIVATE, MS_REC, mount, unshare

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = ""
        try:
            os.close(read_end)
            unshare(CLONE_NEWNS)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            os.chroot(tmp_path)
            os.chdir("/")
            action()
        except BaseException as error:
            message = str(error) or type(error).__name__
        finally:
            os.write(write_end, message.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        message = reader.read()
    os.waitpid(pid, 0)
    return message


@pytest.mark.privileged
@pytest.mark.parametrize("planted", ["dev", "dev/null", "proc", "proc/keys", "proc/sys", "sys"])
def test_a_planted_symbolic_link_is_never_followed(tmp_path, planted):
    """CVE-2025-31133 and kin: a link where /dev/null, a masked or a read-only path is."""
    for directory in ("dev", "proc", "sys", "target"):
        (tmp_path / directory).mkdir()
    os.mknod(tmp_path / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    planted_path = tmp_path / planted
    if planted_path.is_dir():
        shutil.rmtree(planted_path)
    elif planted_path.exists():
        planted_path.unlink()
    planted_path.symlink_to("/target")  # were it followed, /target would be mounted on
    message = in_private_root(tmp_path, DOCKER_PATHS.protect_paths)
    assert message.startswith(f"refusing /{planted}"), message


@pytest.mark.privileged
def test_a_fake_dev_null_is_refused(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "null").write_text("not the null device")
    message = in_private_root(tmp_path, DOCKER_PATHS.protect_paths)
    assert message == "refusing to mask with /dev/null: it is not the null device"


@pytest.mark.privileged
def test_a_working_directory_outside_the_root_is_refused(tmp_path):
    """The cwd half of CVE-2024-21626: a directory reached through a leaked descriptor."""
    from runtime import process

    (tmp_path / "root").mkdir()

    def enter_root_keeping_cwd_outside():
        os.chroot("root")  # the cwd stays one level up: outside, as /proc/self/fd/N leaves it
        process.check_cwd_inside_root("/proc/self/fd/7")

    message = in_private_root(tmp_path, enter_root_keeping_cwd_outside)
    assert message == "working directory '/proc/self/fd/7' is outside the container's root"
    assert in_private_root(tmp_path, lambda: process.check_cwd_inside_root("/")) == ""


@pytest.mark.privileged
@pytest.mark.parametrize("openat2", [True, False], ids=["openat2", "walk-without-openat2"])
def test_image_paths_resolve_inside_the_root(tmp_path, openat2):
    """runtime.rootpath on its own, chrooted into tmp_path (the root), with openat2 and with
    the component walk of kernels before 5.6: links are followed inside the root by the
    first, refused by the second; neither ever leaves the root or blocks."""
    from runtime import rootpath

    (tmp_path / "root" / "etc").mkdir(parents=True)
    (tmp_path / "root" / "etc" / "group").write_text("root:x:0:\n")
    (tmp_path / "root" / "etc" / "passwd").symlink_to("../../../../etc/group")  # inside: /etc/group
    os.mkfifo(tmp_path / "root" / "fifo")
    (tmp_path / "root" / "up").symlink_to("../../../..")

    def resolve(action, *args):
        def attempt():
            rootpath._openat2_missing = not openat2
            result = getattr(rootpath, action)(*args)
            if action == "open_directory":
                os.close(result)
                result = sorted(os.listdir("/"))
            raise SystemExit(repr(result))  # in_private_root reports the message

        return in_private_root(tmp_path / "root", attempt)

    made = resolve("open_directory", "/up/x/y", True)
    read = resolve("read_file", "/etc/passwd")
    if openat2:
        assert made == "['etc', 'fifo', 'up', 'x']"  # /up is /, inside
        assert read == repr(b"root:x:0:\n")
    else:
        assert made == (
            "refusing /up/x/y: a component of it is not a directory (or a symbolic link, "
            "refused without openat2(2))"
        )
        assert read == "refusing /etc/passwd: it is not a regular file"
    assert os.listdir(tmp_path) == ["root"]  # nothing outside the root
    fifo = resolve("read_file", "/fifo")
    assert fifo == "refusing /fifo: it is not a regular file"
    assert resolve("read_file", "/nothing/here") == "None"
    dotdot = resolve("open_directory", "/etc/../..")
    assert dotdot == (
        "['etc', 'fifo', 'up', 'x']"
        if openat2
        else 'refusing /etc/../..: ".." needs openat2(2), which this kernel lacks'
    )


def leak_at_100_or_above(fd: int) -> int:
    """``fd`` moved to a free number of 100 or more (a number the runtime never opens)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 100)
    os.close(fd)
    return moved


# WorkingDir of the image, symbolic link planted in it (or None), whether it leads out.
# The host directory leaked as a descriptor is host/outer/inner: its ../../x is host/x.
# (A relative WorkingDir is refused with the image's metadata: tests/test_image.py.)
LEAKED_WORKDIRS = {
    "flock-fd-3": ("/proc/self/fd/3/../../x/a/b", None, True),  # flock DIR mycontainer ...
    "fd-N": ("/proc/self/fd/{fd}/../../x/a/b", None, True),  # N: at least 100
    "fd-N-directly": ("/proc/self/fd/{fd}", None, True),
    "link-to-fd-N": ("/w/x/a/b", ("w", "/proc/self/fd/{fd}/../.."), True),
    "link-to-proc-self-cwd": ("/w/x/a/b", ("w", "/proc/self/cwd/../../.."), True),
    "dotdot": ("/../../../../x/a/b", None, False),  # stays inside: ".." of / is /
    "link-climbing-out": ("/up/x/a/b", ("up", "../../../../../../.."), False),
}


@pytest.mark.privileged
@pytest.mark.parametrize("case", list(LEAKED_WORKDIRS))
def test_a_working_directory_never_reaches_the_host(
    mycontainer, home, state_root, tmp_path, busybox_rootfs, case
):
    """CVE-2024-21626: the WorkingDir is made and entered inside the root only, after every
    inherited descriptor is gone; nothing is created on the host, whatever the path."""
    workdir, link, leads_out = LEAKED_WORKDIRS[case]
    inner = tmp_path / "host" / "outer" / "inner"
    inner.mkdir(parents=True)
    leaked = leak_at_100_or_above(os.open(inner, os.O_RDONLY | os.O_DIRECTORY))
    workdir = workdir.format(fd=leaked)
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    if link:
        (root / link[0]).symlink_to(link[1].format(fd=leaked))
    image = oci_image(tmp_path / "image", str(root), WorkingDir=workdir)
    command = mycontainer_command("run", "--net", "none", image, "pwd")
    try:
        result = subprocess.run(
            ["flock", str(inner), *command] if case.startswith("flock") else command,
            env=environment(home, state_root),
            pass_fds=() if case.startswith("flock") else (leaked,),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(leaked)
    assert sorted(os.listdir(tmp_path / "host")) == ["outer"], "created on the host"
    assert sorted(os.listdir(tmp_path / "host" / "outer")) == ["inner"], "created on the host"
    if leads_out:
        assert result.returncode == 125, result
        assert result.stderr.startswith(f"mycontainer: error: refusing {workdir}: ")
        assert result.stderr.count("\n") == 1 and result.stdout == ""
    else:
        assert (result.returncode, result.stdout) == (0, "/x/a/b\n"), result.stderr


@pytest.mark.privileged
def test_the_users_files_are_never_read_through_a_descriptor(
    mycontainer, home, state_root, tmp_path, busybox_rootfs
):
    """/etc/passwd may not be a link to a leaked descriptor of a host file."""
    host_passwd = tmp_path / "host-passwd"
    host_passwd.write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    leaked = leak_at_100_or_above(os.open(host_passwd, os.O_RDONLY))
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to(f"/proc/self/fd/{leaked}")
    image = oci_image(tmp_path / "image", str(root), "hostonly")
    try:
        result = subprocess.run(
            mycontainer_command("run", "--net", "none", image, "id", "-u"),
            env=environment(home, state_root),
            pass_fds=(leaked,),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.close(leaked)
    assert (result.returncode, result.stdout) == (125, "")
    assert result.stderr.count("\n") == 1 and "4242" not in result.stderr


@pytest.mark.privileged
def test_the_program_starts_with_default_signal_dispositions(mycontainer):
    """Python ignores SIGPIPE and SIGXFSZ; the program must not inherit that, nor what the
    caller of mycontainer ignored or blocked (as docker and runc: all zero)."""

    def ignore_and_block():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGALRM, signal.SIGUSR2))

    result = mycontainer(
        "run", "--net", "none", "busybox", "grep", "^Sig[BIC]", "/proc/self/status",
        preexec_fn=ignore_and_block,
    )  # fmt: skip
    assert result.stdout.splitlines() == [
        f"{name}:\t0000000000000000" for name in ("SigBlk", "SigIgn", "SigCgt")
    ]
    # With SIGPIPE ignored, the writer never dies: busybox timeout ends it after 10 s (143).
    pipeline = mycontainer(
        "run", "--net", "none", "busybox",
        "timeout", "10", "sh", "-c", "(while true; do echo x; done) | head -1",
    )  # fmt: skip
    assert (pipeline.returncode, pipeline.stdout) == (0, "x\n"), pipeline.stderr


def image_with_users_file(tmp_path, rootfs: str, name: str, kind: str, user="nobody") -> str:
    """An image running as ``user`` whose /etc/``name`` is a ``kind`` ("fifo", "zero": a link
    to /dev/zero, "kmsg": to /proc/kmsg, "large": 5 MiB, else the text ``kind``)."""
    root = tmp_path / "rootfs"
    shutil.copytree(rootfs, root, symlinks=True)
    path = root / "etc" / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "kmsg":  # a "regular" file whose reading takes the host's kernel log
        path.symlink_to("/proc/kmsg")
    elif kind == "large":
        path.write_bytes(b"#" * (5 << 20) + b"\nnobody:x:65534:65534::/:/bin/sh\n")
    else:
        path.write_text(kind)
    return oci_image(tmp_path / "image", str(root), user)


@pytest.mark.privileged
@pytest.mark.parametrize(
    "name, kind, message",
    [
        ("passwd", "fifo", "refusing /etc/passwd: it is not a regular file"),
        ("group", "fifo", "refusing /etc/group: it is not a regular file"),
        ("passwd", "zero", "refusing /etc/passwd: it is not a regular file"),
        ("passwd", "kmsg", "refusing /etc/passwd: it is not a file of the image"),
        ("passwd", "large", "refusing /etc/passwd: it is larger than 4 MiB"),
    ],
)
def test_an_image_users_file_cannot_hang_the_runtime(
    mycontainer, tmp_path, busybox_rootfs, name, kind, message
):
    """An image's FIFO or endless file where /etc/passwd is: refused at once, one line."""
    image = image_with_users_file(tmp_path, busybox_rootfs, name, kind)
    result = mycontainer("run", "--net", "none", image, "true", timeout=30)
    assert (result.returncode, result.stderr) == (125, f"mycontainer: error: {message}\n")


@pytest.mark.privileged
@pytest.mark.parametrize(
    "name, text, message",
    [
        ("passwd", "root:x:0:0::/:/bin/sh\nnobody:x:65534\n", "/etc/passwd line 2: 3 fields"),
        ("passwd", "nobody:x:1e3:0::/:/bin/sh\n", "/etc/passwd line 1: UID '1e3' is not a"),
        ("group", "root:x:0:\n\nnogroup:x\n", "/etc/group line 3: 2 fields where 4 belong"),
        ("group", "root:x:0:\nstaff:x:x:nobody\n", "/etc/group line 2: GID 'x' is not a"),
    ],
)
def test_a_malformed_users_file_is_one_line_naming_it(
    mycontainer, tmp_path, busybox_rootfs, name, text, message
):
    image = image_with_users_file(tmp_path, busybox_rootfs, name, text)
    result = mycontainer("run", "--net", "none", image, "true")
    assert result.returncode == 125
    assert result.stderr.startswith(f"mycontainer: error: {message}")
    assert result.stderr.count("\n") == 1


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``, children first."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            children = [int(child) for child in file.read().split()]
    except FileNotFoundError:
        return []
    return children + [grandchild for child in children for grandchild in descendants(child)]


@pytest.mark.privileged
@pytest.mark.parametrize("stalled", ["runtime", "container"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_before_the_program_runs_ends_the_run(background, state_root, signum, stalled):
    """Caught while it creates the container, mycontainer ends at once with 128+N: the
    program never runs, nothing is left. (Forwarded instead, the signal would reach a PID 1
    that ignores it, or none at all.) The runtime is stopped there, so that the signal surely
    comes first; or the container's processes are, and the runtime waits for them forever."""
    for _attempt in range(20):
        runtime = background("run", "--net", "none", "busybox", "sh", "-c", "echo ran")
        while runtime.poll() is None:  # until it creates (and, to stall them, has children)
            status = next((s["status"] for s in container_states(state_root)), None)
            if status == "creating" and (stalled == "runtime" or descendants(runtime.pid)):
                break
        if runtime.poll() is not None:  # too late: it ran already
            runtime.communicate()
            continue
        os.kill(runtime.pid, signal.SIGSTOP)
        status = next((s["status"] for s in container_states(state_root)), None)
        caught = status == "creating"  # else it was too late: try again
        if stalled == "container":
            stopped = descendants(runtime.pid)
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            os.kill(runtime.pid, signal.SIGCONT)
            time.sleep(0.3)  # until it waits for them
            caught = caught and stopped  # else too early: nothing to wait for
        os.kill(runtime.pid, signum)
        os.kill(runtime.pid, signal.SIGCONT)
        stdout, stderr = runtime.communicate(timeout=20)
        if caught:
            assert runtime.returncode == 128 + signum, (stdout, stderr)
            assert stdout == "" and stderr.count("\n") == 1, (stdout, stderr)
            assert os.listdir(state_root) == []
            return
    pytest.fail("never caught mycontainer while it created the container")


@pytest.mark.privileged
def test_a_signal_while_the_container_is_deleted_waits_for_the_deletion(background, state_root):
    """A SIGTERM that comes after the program ended, while mycontainer deletes the container
    (caught there by stopping mycontainer), ends it only once nothing is left."""

    def deleting() -> bool:
        """The runtime is deleting the container: its cgroups, removed first, are gone
        while its state stays. (Not "the status reads stopped": derived from the init, it
        does as soon as the init has exited, while the runtime still waits for it and
        would forward the signal to it.)"""
        state = next(iter(container_states(state_root)), None)
        if not state or not state.get("pid"):  # being created: its cgroups are not made yet
            return False
        return not any(os.path.isdir(group) for group in state["cgroups"])

    for _attempt in range(30):
        runtime = background("run", "--rm", "--net", "none", "busybox", "true")
        while not deleting() and runtime.poll() is None:
            pass
        if runtime.poll() is not None:  # too late: it has deleted it already
            runtime.communicate()
            continue
        os.kill(runtime.pid, signal.SIGSTOP)
        status = "stopped" if deleting() else "deleted"
        os.kill(runtime.pid, signal.SIGTERM)
        os.kill(runtime.pid, signal.SIGCONT)
        runtime.communicate(timeout=20)
        assert leftover_state(state_root) == []  # (and the mycontainer fixture checks the rest)
        if status == "stopped":
            assert runtime.returncode == -signal.SIGTERM  # after the deletion, not during it
            return
    pytest.fail("never caught mycontainer while it deleted the container")


@pytest.mark.privileged
def test_the_runtime_interpreter_is_not_reachable_from_inside(mycontainer, state_root):
    """CVE-2019-5736: the container must never get the runtime's binary open for writing.

    Inside, every /proc/PID/exe is a program of the container: the init was the runtime's
    Python only until its execve, before any process of the container existed. (See the
    chapter for the one remaining path, the init exec'ing /proc/self/exe, and why the kernel
    refuses to open a running program for writing, ETXTBSY.)
    """
    interpreter = os.stat(os.path.realpath(sys.executable))
    script = (
        "sleep 1002 & for exe in /proc/[0-9]*/exe; do stat -L -c '%d %i' $exe; "
        "(exec 3>>$exe); done; kill %1"
    )
    result = mycontainer("run", "--net", "none", "busybox", "sh", "-c", script)
    identities = result.stdout.splitlines()
    assert len(identities) >= 2
    assert f"{interpreter.st_dev} {interpreter.st_ino}" not in identities
    # Each is a running program, which even the container's root cannot open for writing.
    refusals = [line for line in result.stderr.splitlines() if line.endswith(": Text file busy")]
    assert len(refusals) == len(identities), result.stderr
    # The direct attempt: execute the runtime's own binary as the container's program.
    hijack = mycontainer("run", "--net", "none", "busybox", "/proc/self/exe", "-c", "print(1)")
    assert hijack.returncode != 0 and hijack.stdout == ""


@pytest.mark.privileged
def test_a_running_program_cannot_be_opened_for_writing(tmp_path):
    """The kernel's ETXTBSY, on which the CVE-2019-5736 reasoning rests (on a copy)."""
    copy = tmp_path / "sleep"
    shutil.copy2(shutil.which("sleep"), copy)
    running = subprocess.Popen([copy, "30"])
    try:
        with pytest.raises(OSError, match="Text file busy"):
            os.close(os.open(copy, os.O_WRONLY))
    finally:
        running.kill()
        running.wait()


# --- the escape suite ----------------------------------------------------------------------------

SETTINGS = {
    "default": [],
    "cap-add-all": ["--cap-add", "ALL"],
    "seccomp-unconfined": ["--security-opt", "seccomp=unconfined"],
    "all-lifted": [
        "--cap-add", "ALL", "--security-opt", "seccomp=unconfined",
        "--security-opt", "no-new-privileges=false", "--security-opt", "systempaths=unconfined",
    ],
}  # fmt: skip

B, E = "blocked", "escapes"
# attempt: (what stops it, outcome under each of SETTINGS, in order). "escapes" under lifted
# settings means the attempt got through to the kernel; each is harmless by construction.
ESCAPES = {
    "see_host_pids": ("PID namespace", (B, B, B, B)),
    "write_host_file": ("mount namespace and pivot_root", (B, B, B, B)),
    "mount": ("capabilities (SYS_ADMIN) and seccomp", (B, E, B, E)),
    "write_proc_sys": ("read-only paths", (B, B, B, E)),
    "reboot": ("capabilities (SYS_BOOT) and seccomp", (B, E, B, E)),
    "load_module": ("capabilities (SYS_MODULE) and seccomp", (B, E, B, E)),
    "read_host_disk": ("devices cgroup", (B, B, B, B)),
    "ptrace_host_process": ("PID namespace and seccomp", (B, B, B, B)),
    "use_leaked_fd": ("closing every descriptor but 0-2", (B, B, B, B)),
    "set_host_hostname": ("UTS namespace", (B, B, B, B)),
    "raise_rlimit": ("capabilities (SYS_RESOURCE)", (B, E, B, E)),
    "keyctl": ("seccomp", (B, B, E, E)),
    "user_namespace": ("seccomp", (B, E, E, E)),
}


def host_allows(attempt: str) -> bool:
    """False where this host itself forbids what an attempt does, whatever we lift."""

    def read(path: str, default: str = "") -> str:
        try:
            with open(path) as file:
                return file.read().strip()
        except OSError:
            return default

    with open("/proc/self/status") as file:
        bounding = int(next(line for line in file if line.startswith("CapBnd")).split()[1], 16)
    if attempt == "raise_rlimit":
        return bool(bounding >> 24 & 1)  # CAP_SYS_RESOURCE, which the container cannot get
    if attempt == "load_module":  # a kernel without modules, or with loading switched off
        return os.path.exists("/proc/modules") and read("/proc/sys/kernel/modules_disabled") == "0"
    if attempt == "user_namespace":
        return read("/proc/sys/user/max_user_namespaces", "1") != "0"
    return True


def host_disk() -> tuple[int, int]:
    """The major and minor of a disk of the host: the one holding /, else the first listed."""
    device = os.stat("/").st_dev
    if os.major(device) != 0:
        return os.major(device), os.minor(device)
    with open("/proc/partitions") as file:
        for line in file.readlines()[2:]:
            major, minor, *_ = line.split()
            return int(major), int(minor)
    pytest.skip("this host has no block device")


def escape_attempt(name: str, tmp_path) -> tuple[str, dict]:
    """The script that attempts escape ``name`` (it prints ESCAPED when it gets through),
    and extra arguments for subprocess.run."""
    if name == "see_host_pids":
        return f"grep -qa pytest /proc/{os.getpid()}/cmdline && echo ESCAPED", {}
    if name == "write_host_file":
        target = tmp_path / "written-from-the-container"
        attempts = [f"echo x > {target}", f"echo x > /proc/1/root{target}"]
        attempts += [f"echo x > /proc/self/cwd/../../..{target}"]
        return "; ".join(f"({a}) 2>/dev/null" for a in attempts), {"target": target}
    if name == "mount":
        return "mkdir /tmp/m && mount -t tmpfs none /tmp/m && echo ESCAPED", {}
    if name == "write_proc_sys":
        files = ["/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger"]
        # Opened for writing, never written: harmless even when it gets through.
        return " ".join(f"[ -e {f} ] && (exec 3>>{f}) && echo ESCAPED;" for f in files), {}
    if name in ("reboot", "load_module", "keyctl"):
        probe = {"reboot": "reboot", "load_module": "init_module", "keyctl": "keyctl"}[name]
        nosys = 38 if name == "load_module" and not os.path.exists("/proc/modules") else 1
        # Anything but EPERM got through; ENOSYS too, unless the kernel has no modules at all.
        return f"/probe/{probe}; e=$?; [ $e != 1 ] && [ $e != {nosys} ] && echo ESCAPED", {}
    if name == "read_host_disk":
        major, minor = host_disk()
        return (
            f"mknod /tmp/disk b {major} {minor} && echo made; "
            "[ $(head -c 512 /tmp/disk | wc -c) = 512 ] && echo ESCAPED"
        ), {"made": True}
    if name == "ptrace_host_process":
        return "/probe/ptrace_attach_host && echo ESCAPED", {}
    if name == "use_leaked_fd":
        return "[ -e /proc/self/fd/1000 ] && echo ESCAPED; ls /proc/self/fd/1000/", {"leak": 1000}
    if name == "set_host_hostname":
        ours = os.readlink("/proc/self/ns/uts")
        return (
            f'[ "$(readlink /proc/1/ns/uts)" = "{ours}" ] && echo SAME-UTS-NAMESPACE && exit; '
            "hostname escaped-from-a-container 2>/dev/null; true"
        ), {"hostname": socket.gethostname()}
    if name == "raise_rlimit":
        return "ulimit -H -c 1 2>/dev/null && echo ESCAPED", {"core_limit": True}
    if name == "user_namespace":
        return "unshare -U -r true 2>/dev/null && echo ESCAPED", {}
    raise AssertionError(name)


@pytest.mark.privileged
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("attempt", list(ESCAPES))
def test_escape(mycontainer, probes_rootfs, tmp_path, attempt, setting):
    protection, outcomes = ESCAPES[attempt]
    expected = outcomes[list(SETTINGS).index(setting)]
    if expected == E and not host_allows(attempt):
        expected = B  # this host forbids it anyway
    script, extra = escape_attempt(attempt, tmp_path)
    kwargs = {"stdin": subprocess.DEVNULL}
    if "leak" in extra:  # a host directory, open at descriptor 1000, inheritable
        directory = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
        os.dup2(directory, extra["leak"])
        os.close(directory)
        kwargs["pass_fds"] = (extra["leak"],)
        # ...and RLIMIT_NOFILE below it, as a parent could leave it (closerange would miss it)
        kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
    if "core_limit" in extra:  # a hard limit to try to raise
        kwargs["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        result = mycontainer(
            "run", "--net", "none", *SETTINGS[setting], probes_rootfs, "sh", "-c", script,
            **kwargs,
        )  # fmt: skip
    finally:
        if "leak" in extra:
            os.close(extra["leak"])
    assert "SAME-UTS-NAMESPACE" not in result.stdout
    escaped = "ESCAPED" in result.stdout
    if "target" in extra:
        escaped = extra["target"].exists()
    if "hostname" in extra:
        escaped = socket.gethostname() != extra["hostname"]
    if "made" in extra and setting == "default":
        assert "made" in result.stdout  # CAP_MKNOD is granted: only the cgroup stops the read
    assert (E if escaped else B) == expected, (
        f"{attempt} under {setting}: expected {expected} (stopped by: {protection}); "
        f"stdout {result.stdout!r}, stderr {result.stderr!r}"
    )


@pytest.mark.privileged
def test_the_devices_cgroup_is_in_place_while_it_runs(background, state_root):
    """Also check the rules themselves, where the cgroup v1 devices controller lists them."""
    layout = cgroups.detect()
    if layout.uses_v2:
        pytest.skip(
            "cgroup v2: the device filter is an eBPF program, with no rules to list"
            " (test_escape's read_host_disk checks what it does)"
        )
    if "devices" not in layout.v1_mounts:
        pytest.skip(
            "this cgroup v1 host mounts no devices controller, without which mycontainer run"
            " refuses to run: mount one ('mount -t cgroup -o devices none /sys/fs/cgroup/devices')"
        )
    process = background("run", "--net", "none", "busybox", "sleep", "1003")
    [state] = running_containers(state_root, runtimes=[process])
    group = cgroups.Cgroup(layout, state["id"], cgroup_parent(state_root)).paths["devices"]
    with open(os.path.join(group, "devices.list")) as file:
        assert file.read().split("\n")[:-1] == devices.v1_rules()
    os.kill(state["pid"], 9)  # its PID 1 ignores SIGTERM, as every PID 1 does
    assert process.wait(timeout=20) == 137


@pytest.mark.privileged
def test_step7_applies_the_same_boundaries(home):
    from conftest import REPO

    def step7(*args):
        return subprocess.run(
            [sys.executable, "-m", "steps.step7_security", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
            env=dict(os.environ, MYCONTAINER_HOME=str(home)),
        )

    script = "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; unshare -U true"
    result = step7("busybox", "--", "sh", "-c", script)
    assert result.stdout.split("\n")[:3] == [
        f"CapEff:\t{DEFAULT_MASK:016x}",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ]
    assert "unshare(0x10000000): Operation not permitted" in result.stderr
    lifted = step7("--security-opt", "seccomp=unconfined", "busybox", "--", "sh", "-c", script)
    assert "Seccomp:\t0" in lifted.stdout and lifted.returncode == 0
    assert step7("--cap-add", "FLY", "busybox", "--", "true").returncode == 2
    assert not [name for name in os.listdir(home) if name.startswith(".step7-")]


@pytest.mark.privileged
def test_a_user_in_unicode_digits_is_no_number(mycontainer, tmp_path, busybox_rootfs):
    """str.isdigit() takes "²", which int() then refuses: a USER so written is a name."""
    image = oci_image(tmp_path / "image", busybox_rootfs, "\u00b2")
    result = mycontainer("run", "--net", "none", image, "true")
    assert result.returncode == 125
    assert (
        result.stderr == "mycontainer: error: user '\u00b2' is not in the container's /etc/passwd\n"
    )


@pytest.mark.privileged
@pytest.mark.parametrize("user", ["4294967295", "4294967296", "1:4294967296"])
def test_a_numeric_user_beyond_uid_t_is_one_line(mycontainer, tmp_path, busybox_rootfs, user):
    """2**32 - 1 is setuid(2)'s "no change", and beyond it is no uid: each is a name then,
    not in the image's users files, rather than an errno or an overflow message."""
    image = oci_image(tmp_path / "image", busybox_rootfs, user)
    result = mycontainer("run", "--net", "none", image, "true")
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: ") and result.stderr.count("\n") == 1
    assert "is not in the container's /etc/" in result.stderr


@pytest.mark.privileged
@pytest.mark.parametrize("name", ["proc", "sys", "dev"])
def test_an_image_whose_mount_point_is_a_file_is_one_line(
    mycontainer, tmp_path, busybox_rootfs, name
):
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    if (root / name).is_dir():
        os.rmdir(root / name)
    (root / name).write_text("a file")
    result = mycontainer("run", "--net", "none", str(root), "true")
    assert (result.returncode, result.stderr) == (
        125,
        f"mycontainer: error: the image's /{name} is not a directory: it cannot be mounted on\n",
    )


def test_an_apparmor_profile_needs_apparmor(monkeypatch):
    """podman asks for one wherever AppArmor is on (Debian, Ubuntu): applied then, as runc
    does; where it is off, one line instead of a silent ignore."""
    config = {"process": {"apparmorProfile": "docker-default"}}
    if security.apparmor_enabled():
        assert security.Boundaries.from_config(config).apparmor_profile == "docker-default"
    else:
        with pytest.raises(security.SecurityError, match="AppArmor is not enabled on this host"):
            security.Boundaries.from_config(config)
