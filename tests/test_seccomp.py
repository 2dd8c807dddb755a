"""seccomp.compile: OCI seccomp profiles made into classic-BPF filters, checked two ways.

The kernel's answer is the truth: filters are installed in a forked child (no_new_privs,
then the filter; no root needed) and the child's system calls report what happened: an
errno, success, or death by SIGSYS. That covers this machine's ABIs. The other machine's
filter (aarch64 on x86_64, or the reverse) and exhaustive edge cases run through
:func:`run_filter`, a classic-BPF interpreter of the few instructions the compiler emits,
checked itself against the kernel on this machine's filters.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import signal
import struct
import subprocess

import pytest

from runtime import seccomp, syscall_table
from runtime.syscalls import CLONE_NEWUSER, PR_SET_NO_NEW_PRIVS, prctl

MACHINE = {"arm64": "aarch64", "amd64": "x86_64"}.get(os.uname().machine, os.uname().machine)
NUMBERS = {
    "x86_64": syscall_table.numbers(syscall_table.X86_64),
    "aarch64": syscall_table.numbers(syscall_table.AARCH64),
    "x86": syscall_table.numbers(syscall_table.X86),
    "x32": syscall_table.numbers(syscall_table.X32),
}
AUDIT_ARCH_I386 = 0x40000003
EPERM_RET = seccomp.RET_ERRNO | errno.EPERM
needs_this_machine = pytest.mark.skipif(
    MACHINE not in seccomp.ABIS, reason=f"no seccomp filter for {MACHINE}: run on x86_64 or aarch64"
)

# The profile of the runtime-tools group linux_seccomp (validation/linux_seccomp.go): its
# generator writes getcwd's rule without args, and no architectures.
RUNTIME_TOOLS_PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}],
}


def profile(*rules: dict, default: str = "SCMP_ACT_ALLOW", **fields) -> dict:
    return {"defaultAction": default, "syscalls": list(rules), **fields}


def rule(names: str, action: str = "SCMP_ACT_ERRNO", *args: tuple, **fields) -> dict:
    """A rule for the space-separated ``names``; each arg is (index, op, value[, valueTwo])."""
    conditions = [
        {"index": arg[0], "op": f"SCMP_CMP_{arg[1]}", "value": arg[2], "valueTwo": (*arg, 0)[3]}
        for arg in args
    ]
    return {"names": names.split(), "action": action, "args": conditions, **fields}


# --- a classic-BPF interpreter, for what this machine cannot run ---------------------------------


def run_filter(program: bytes, nr: int, args=(), arch: int | None = None) -> int:
    """The filter's return value for a call ``nr`` with ``args`` (64-bit each, missing ones
    0) from ABI ``arch`` (AUDIT_ARCH_*; default: the one the program runs natively, tested
    right before its first KILL_PROCESS)."""
    code = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    if arch is None:
        kill = code.index((seccomp.RET_K, 0, 0, seccomp.RET_KILL_PROCESS))
        arch = code[kill - 1][3]
    args = [*args, 0, 0, 0, 0, 0, 0][:6]
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(arg & (1 << 64) - 1 for arg in args))
    a, pc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        pc += 1
        if op == seccomp.RET_K:
            return k
        if op == seccomp.LD_W_ABS:
            a = struct.unpack_from("=I", data, k)[0]
        elif op == seccomp.AND_K:
            a &= k
        elif op == seccomp.JA:
            pc += k
        else:
            holds = {
                seccomp.JEQ_K: a == k,
                seccomp.JGT_K: a > k,
                seccomp.JGE_K: a >= k,
                seccomp.JSET_K: bool(a & k),
            }[op]
            pc += jt if holds else jf


# --- the kernel's answer -------------------------------------------------------------------------


def in_filtered_child(program: bytes, calls: dict, flags: int = 0) -> dict:
    """Run ``calls`` (name -> (number, *args)) in a forked child under ``program``: name ->
    errno (0: success), or "SIGSYS" for the call that killed the child (calls after it do
    not run)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            libc = ctypes.CDLL(None, use_errno=True)
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            seccomp.install(program, flags)
            for name, (number, *args) in calls.items():
                os.write(write_end, json.dumps(name).encode() + b"\n")
                ctypes.set_errno(0)
                result = libc.syscall(ctypes.c_long(number), *(ctypes.c_ulong(a) for a in args))
                if result == 0 and name.startswith("clone"):
                    os._exit(0)  # the new child of a clone that got through
                os.write(write_end, json.dumps(ctypes.get_errno() if result == -1 else 0).encode())
                os.write(write_end, b"\n")
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        lines = [json.loads(line) for line in reader]
    _, status = os.waitpid(pid, 0)
    results = dict(zip(lines[::2], lines[1::2], strict=False))  # the last: the killer
    if len(lines) % 2:
        assert os.WIFSIGNALED(status), lines
        results[lines[-1]] = signal.Signals(os.WTERMSIG(status)).name
    return results


def call(name: str, *args: int) -> tuple[int, ...]:
    return (NUMBERS[MACHINE][name], *args)


@needs_this_machine
def test_actions_as_the_kernel_applies_them():
    program = seccomp.compile(
        profile(
            rule("getppid", "SCMP_ACT_ERRNO", errnoRet=errno.EXDEV),
            rule("getpgid"),  # errnoRet missing: EPERM
            rule("getsid", "SCMP_ACT_TRACE"),  # no tracer: the kernel says ENOSYS
            rule("getpriority", "SCMP_ACT_LOG"),
            rule("getuid", "SCMP_ACT_ALLOW"),
            rule("getgid", "SCMP_ACT_KILL_PROCESS"),
        )
    )
    results = in_filtered_child(
        program,
        {
            "getppid": call("getppid"),
            "getpgid": call("getpgid", 0),
            "getsid": call("getsid", 0),
            "getpriority": call("getpriority", 0, 0),
            "getuid": call("getuid"),
            "getgid": call("getgid"),
            "geteuid": call("geteuid"),  # after the kill: never runs
        },
    )
    assert results == {
        "getppid": errno.EXDEV,
        "getpgid": errno.EPERM,
        "getsid": errno.ENOSYS,
        "getpriority": 0,
        "getuid": 0,
        "getgid": "SIGSYS",
    }


@needs_this_machine
@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP"])
def test_kill_and_trap_end_the_process_with_sigsys(action):
    program = seccomp.compile(profile(rule("getppid", action)))
    assert in_filtered_child(program, {"getppid": call("getppid")}) == {"getppid": "SIGSYS"}


@needs_this_machine
def test_default_errno_and_the_enosys_stub():
    """An allow-list, as docker's: defaultErrnoRet for calls it does not name, ENOSYS for
    calls numbered above every one it names (so that the C library falls back)."""
    allowed = "write exit_group exit getppid rt_sigreturn rt_sigprocmask futex brk mmap munmap"
    newest = max(NUMBERS[MACHINE][name] for name in allowed.split())
    program = seccomp.compile(
        profile(rule(allowed, "SCMP_ACT_ALLOW"), default="SCMP_ACT_ERRNO", defaultErrnoRet=99)
    )
    results = in_filtered_child(
        program,
        {
            "getppid": call("getppid"),
            "getuid": call("getuid"),
            "newer": (newest + 1,),
            "far future": (1000,),
        },
    )
    assert results == {"getppid": 0, "getuid": 99, "newer": 38, "far future": 38}


@needs_this_machine
def test_argument_conditions_and_64_bit_values():
    null = os.open("/dev/null", os.O_RDONLY)
    program = seccomp.compile(
        profile(
            # personality but for two values: rules are tried in order, the first that
            # holds decides; several for one call are alternatives (OR)
            rule("personality", "SCMP_ACT_ALLOW", (0, "EQ", 0)),
            rule("personality", "SCMP_ACT_ALLOW", (0, "EQ", 0xFFFFFFFF)),
            rule("personality", "SCMP_ACT_ERRNO"),
            # docker's user namespace rule: mask the flags, then compare
            rule("clone unshare", "SCMP_ACT_ERRNO", (0, "MASKED_EQ", CLONE_NEWUSER, CLONE_NEWUSER)),
            # the offset of lseek is 64-bit: both halves count
            rule("lseek", "SCMP_ACT_ERRNO", (1, "GT", 0x100_0000_0000), errnoRet=10),
            rule("lseek", "SCMP_ACT_ERRNO", (1, "EQ", 0x5), (2, "EQ", 1), errnoRet=11),  # AND
            rule("lseek", "SCMP_ACT_ERRNO", (1, "LE", 0x7), errnoRet=12),
            rule(
                "lseek",
                "SCMP_ACT_ERRNO",
                (1, "MASKED_EQ", 0xFF_0000_00FF, 0x42_0000_0010),
                errnoRet=13,
            ),
            rule(
                "lseek",
                "SCMP_ACT_ERRNO",
                (1, "NE", 0x27),
                (1, "GE", 0x20),
                (1, "LT", 0x30),
                errnoRet=14,
            ),
        )  # fmt: skip
    )
    calls = {
        "personality(0xffffffff)": call("personality", 0xFFFFFFFF),
        "personality(0)": call("personality", 0),
        "personality(0x1_00000000)": call("personality", 0x1_0000_0000),
        "personality(ADDR_NO_RANDOMIZE)": call("personality", 0x0040000),
        "unshare(CLONE_NEWUSER)": call("unshare", CLONE_NEWUSER),
        "unshare(CLONE_NEWUSER), high bits": call("unshare", 0xF_0000_0000 | CLONE_NEWUSER),
        "unshare(CLONE_FILES)": call("unshare", 0x400),
        "clone(CLONE_NEWUSER)": call("clone", CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0),
    }
    offsets = {
        0x100_0000_0001: 10, 0x200_0000_0000: 10, 0xFFFF_FFFF_FFFF_FFFF: 10,
        0x100_0000_0000: 0, 0xFF_FFFF_FFFF: 0, 0xFFFF_FFFF: 0,  # not greater: no rule holds
        0x5: 12,  # with SEEK_SET: the AND fails on whence, LE 7 holds
        0x42_1234_5610: 13, 0x43_1234_5610: 0, 0x42_1234_5611: 0,
        0x25: 14, 0x2F: 14, 0x27: 0, 0x1_0000_0025: 0, 0x30: 0, 0x1F: 0,
    }  # fmt: skip
    for offset in offsets:
        calls[f"lseek {offset:#x}"] = call("lseek", null, offset, os.SEEK_SET)
    calls["lseek 5 SEEK_CUR"] = call("lseek", null, 5, os.SEEK_CUR)
    calls["lseek 0x1_0000_0005 SEEK_CUR"] = call("lseek", null, 0x1_0000_0005, os.SEEK_CUR)
    results = in_filtered_child(program, calls)
    os.close(null)
    assert results == {
        "personality(0xffffffff)": 0,
        "personality(0)": 0,
        "personality(0x1_00000000)": errno.EPERM,  # 64-bit: not 0
        "personality(ADDR_NO_RANDOMIZE)": errno.EPERM,
        "unshare(CLONE_NEWUSER)": errno.EPERM,
        "unshare(CLONE_NEWUSER), high bits": errno.EPERM,
        "unshare(CLONE_FILES)": 0,
        "clone(CLONE_NEWUSER)": errno.EPERM,
        **{f"lseek {offset:#x}": result for offset, result in offsets.items()},
        "lseek 5 SEEK_CUR": 11,
        "lseek 0x1_0000_0005 SEEK_CUR": 0,  # the high half differs: not 5, nor <= 7
    }
    # the interpreter agrees, call by call
    for name, (number, *args) in calls.items():
        ret = run_filter(program, number, args)
        assert (ret & 0xFFFF if ret != seccomp.RET_ALLOW else 0) == results[name], name


def test_the_runtime_tools_profile_compiles():
    """linux_seccomp's profile: getcwd fails with EPERM (the spec's default errno), on both
    machines; the rest is allowed."""
    for machine in seccomp.ABIS:
        program = seccomp.compile(RUNTIME_TOOLS_PROFILE, machine)
        assert run_filter(program, NUMBERS[machine]["getcwd"]) == EPERM_RET
        assert run_filter(program, NUMBERS[machine]["getpid"]) == seccomp.RET_ALLOW
    if MACHINE in seccomp.ABIS:
        program = seccomp.compile(RUNTIME_TOOLS_PROFILE)
        results = in_filtered_child(program, {"getcwd": call("getcwd", 0, 0)})
        assert results == {"getcwd": errno.EPERM}


VALUES = [
    0, 1, 5, 0x7F, 0x80, 0xFFFF_FFFF, 0x1_0000_0000, 0x1_0000_0001, 0x1_FFFF_FFFF,
    0x8000_0000_0000_0000, 0xFFFF_FFFF_0000_0000, 0xFFFF_FFFF_FFFF_FFFE, 0xFFFF_FFFF_FFFF_FFFF,
]  # fmt: skip
HOLDS = {
    "EQ": lambda arg, value, _: arg == value,
    "NE": lambda arg, value, _: arg != value,
    "LT": lambda arg, value, _: arg < value,
    "LE": lambda arg, value, _: arg <= value,
    "GT": lambda arg, value, _: arg > value,
    "GE": lambda arg, value, _: arg >= value,
    "MASKED_EQ": lambda arg, mask, datum: arg & mask == datum,
}


@pytest.mark.parametrize("op", HOLDS)
@pytest.mark.parametrize("machine, wide", [("x86_64", True), ("aarch64", True), ("x86", False)])
def test_every_operator_compares_as_libseccomp_does(op, machine, wide):
    """64-bit ABIs compare all 64 bits; 32-bit ones (x86) the low 32, as libseccomp. Every
    pair of edge values, through the interpreter (checked against the kernel above)."""
    arch = f"SCMP_ARCH_{machine.upper()}"
    host = "aarch64" if machine == "aarch64" else "x86_64"
    numbers = NUMBERS[machine]
    audit = seccomp.ABIS[host][arch][0]
    width = (1 << 64) - 1 if wide else 0xFFFF_FFFF
    for value in VALUES:
        datum = value & 0xFF_0000_00F0  # for MASKED_EQ: some bits of the mask, in both halves
        program = seccomp.compile(
            profile(rule("getpid", "SCMP_ACT_ERRNO", (3, op, value, datum)), architectures=[arch]),
            host,
        )
        for arg in [*VALUES, datum, datum | 0x0F00_0000_0F0F]:
            ret = run_filter(program, numbers["getpid"], [0, 0, 0, arg], audit)
            expected = HOLDS[op](arg & width, value & width, datum & width)
            assert (ret == EPERM_RET) == expected, (hex(arg), hex(value))


def x86_program(nr: int, *args: int) -> bytes:
    """A static x86_64 executable that makes 32-bit system call ``nr`` through ``int 0x80``
    (the x86 ABI, from a 64-bit process) and exits with the errno it got (0: success)."""
    code = b"".join(
        opcode + struct.pack("<I", arg & 0xFFFF_FFFF)
        for opcode, arg in zip([b"\xbb", b"\xb9", b"\xba"], (*args, 0, 0, 0)[:3], strict=True)
    )  # mov ebx, ecx, edx
    code += b"\xb8" + struct.pack("<I", nr) + b"\xcd\x80"  # mov eax, nr; int 0x80
    code += b"\x89\xc7\xf7\xdf\x85\xc0\x79\x02\xeb\x02\x31\xff"  # edi = -eax if < 0, else 0
    code += b"\xb8\xe7\x00\x00\x00\x0f\x05"  # exit_group(edi), the 64-bit way
    base, header_size = 0x400000, 64 + 56
    size = header_size + len(code)
    elf = b"\x7fELF\x02\x01\x01" + bytes(9)
    elf += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, base + header_size, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    elf += struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return elf + code


def run_under(program: bytes, executable: str) -> int:
    """The exit status of ``executable``, run under the filter ``program`` (-N: signal N)."""

    def filtered() -> None:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        seccomp.install(program)

    return subprocess.run([executable], preexec_fn=filtered).returncode


@pytest.mark.skipif(MACHINE != "x86_64", reason="the int 0x80 gate is x86_64's")
def test_x86_calls_are_filtered_with_their_own_numbers_or_killed(tmp_path):
    executable = tmp_path / "getppid32"
    executable.write_bytes(x86_program(NUMBERS["x86"]["getppid"]))  # 64, not 110
    executable.chmod(0o755)
    if subprocess.run([executable]).returncode != 0:
        pytest.skip("int 0x80 does not work on this kernel (booted with ia32_emulation=0?)")
    unlisted = seccomp.compile(profile(rule("getppid", errnoRet=21)))
    assert run_under(unlisted, str(executable)) == -signal.SIGSYS
    listed = seccomp.compile(
        profile(rule("getppid", errnoRet=21), architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])
    )
    assert run_under(listed, str(executable)) == 21
    others = seccomp.compile(profile(rule("getpid", errnoRet=21), architectures=["SCMP_ARCH_X86"]))
    assert run_under(others, str(executable)) == 0  # runs: 64 is getppid, not x86_64's getpid


def test_x32_and_arm_sections():
    x32 = seccomp.X32_SYSCALL_BIT
    both = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]
    program = seccomp.compile(profile(rule("ioctl", errnoRet=25), architectures=both), "x86_64")
    assert run_filter(program, x32 | NUMBERS["x32"]["ioctl"]) == seccomp.RET_ERRNO | 25  # 514
    assert run_filter(program, x32 | NUMBERS["x86_64"]["ioctl"]) == seccomp.RET_ALLOW  # 16
    assert run_filter(program, NUMBERS["x86_64"]["ioctl"]) == seccomp.RET_ERRNO | 25
    every = seccomp.compile(
        profile(rule("ioctl getppid", errnoRet=25), architectures=[*both, "SCMP_ARCH_X86"]),
        "x86_64",
    )
    i386 = seccomp.ABIS["x86_64"]["SCMP_ARCH_X86"][0]
    assert run_filter(every, NUMBERS["x86"]["getppid"], arch=i386) == seccomp.RET_ERRNO | 25
    assert run_filter(every, NUMBERS["x86"]["getpid"], arch=i386) == seccomp.RET_ALLOW
    assert run_filter(every, x32 | NUMBERS["x32"]["getppid"]) == seccomp.RET_ERRNO | 25
    assert run_filter(every, NUMBERS["x86_64"]["getppid"]) == seccomp.RET_ERRNO | 25
    assert run_filter(every, 0, arch=seccomp.AUDIT_ARCH["aarch64"]) == seccomp.RET_KILL_PROCESS
    unlisted = seccomp.compile(profile(rule("ioctl")), "x86_64")
    assert run_filter(unlisted, x32 | 39) == EPERM_RET  # not listed: EPERM
    arm = seccomp.compile(profile(architectures=["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]), "aarch64")
    assert run_filter(arm, 20, arch=0x40000028) == seccomp.RET_KILL_PROCESS  # no arm table
    assert run_filter(arm, 172) == seccomp.RET_ALLOW
    foreign = seccomp.compile(
        profile(architectures=["SCMP_ARCH_PPC64LE", "SCMP_ARCH_X86"]), "aarch64"
    )
    assert foreign == seccomp.compile(profile(), "aarch64")  # other machines' ABIs: ignored


def test_names_unknown_to_an_abi_are_skipped():
    program = seccomp.compile(profile(rule("arch_prctl iopl no_such_call getppid")), "aarch64")
    assert program == seccomp.compile(profile(rule("getppid")), "aarch64")


def test_a_block_longer_than_a_jump_and_a_program_longer_than_the_kernel_takes():
    many = [rule("getppid", "SCMP_ACT_ERRNO", (0, "EQ", n), errnoRet=n) for n in range(1, 200)]
    program = seccomp.compile(profile(*many, rule("getpid")), "x86_64")
    for n in (1, 150, 199):
        assert run_filter(program, NUMBERS["x86_64"]["getppid"], [n]) == seccomp.RET_ERRNO | n
    assert run_filter(program, NUMBERS["x86_64"]["getppid"], [200]) == seccomp.RET_ALLOW
    assert run_filter(program, NUMBERS["x86_64"]["getpid"]) == EPERM_RET
    too_many = [rule("getppid", "SCMP_ACT_ERRNO", (0, "EQ", n)) for n in range(1000)]
    with pytest.raises(seccomp.SeccompError, match="more than the kernel's 4096"):
        seccomp.compile(profile(*too_many), "x86_64")


@needs_this_machine
def test_flags_are_installed_with_seccomp_2():
    names = [
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    ]
    flagged = profile(rule("getppid", errnoRet=7), flags=names)
    flags = seccomp.filter_flags(flagged)
    assert flags == 7
    results = in_filtered_child(seccomp.compile(flagged), {"getppid": call("getppid")}, flags)
    assert results == {"getppid": 7}


def test_the_default_filter_is_the_default_profile_compiled():
    for machine in seccomp.ABIS:
        caps = 0xA80425FB
        compiled = seccomp.compile(
            seccomp.default_profile(caps), machine, enosys_from=seccomp.FIRST_UNREVIEWED
        )
        assert seccomp.build(caps, machine) == compiled
    json.dumps(seccomp.default_profile(caps))  # a plain OCI profile


ERRNO = "SCMP_ACT_ERRNO"
BAD_PROFILES = [
    ({"defaultAction": "SCMP_ACT_FOO"}, "defaultAction: unknown action 'SCMP_ACT_FOO' (one of "),
    ({}, "linux.seccomp.defaultAction: unknown action None"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "answers the calls) is not supported"),
    (profile(listenerPath="/x"), "linux.seccomp.listenerPath: SCMP_ACT_NOTIFY is not supported"),
    (profile(defaultErrnoRet=1), "defaultErrnoRet: only for SCMP_ACT_ERRNO and SCMP_ACT_TRACE, "),
    (profile(rule("getpid", "SCMP_ACT_NOTIFY")), "seccomp.syscalls[0].action: SCMP_ACT_NOTIFY"),
    (profile(rule("getpid", errnoRet=4096)), "[0].errnoRet: an errno from 0 to 4095, got 4096"),
    (profile(rule("getpid", errnoRet=True)), "[0].errnoRet: an errno from 0 to 4095, got True"),
    (profile(rule("getpid", "SCMP_ACT_ALLOW", errnoRet=1)), "syscalls[0].errnoRet: only fo"),
    (profile(rule("getpid", ERRNO, (0, "FOO", 1))), "].op: unknown operator 'SCMP_CMP_FOO'"),
    (profile(rule("getpid", ERRNO, (6, "EQ", 1))), "].index: an argument from 0 to 5, got 6"),
    (profile(rule("getpid", ERRNO, (0, "EQ", -1))), "].value: a 64-bit unsigned number, got -1"),
    (profile(rule("getpid", ERRNO, (0, "EQ", 1 << 64))), "args[0].value: a 64-bit unsigned"),
    (profile(rule("getpid", ERRNO, (0, "EQ", 1, "1"))), "args[0].valueTwo: a 64-bit unsigned"),
    (profile({"names": [], "action": ERRNO}), "[0].names: a list of system call names, got"),
    (profile({"names": "getpid", "action": ERRNO}), "syscalls[0].names: a list"),
    (profile({"names": ["getpid"]}), "syscalls[0].action: unknown action None"),
    (profile(architectures=["SCMP_ARCH_FOO"]), "architectures: unknown architecture in"),
    (profile(flags=["SECCOMP_FILTER_FLAG_NEW_LISTENER"]), "'SECCOMP_FILTER_FLAG_NEW_LISTENER' is"),
    (profile(flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]), "is not supported"),
    ({**profile(), "syscalls": {"names": ["getpid"]}}, "linux.seccomp.syscalls: a list"),
    ([], "linux.seccomp: an object"),
]


@pytest.mark.parametrize("bad, message", BAD_PROFILES)
def test_a_bad_profile_is_one_line_naming_the_field(bad, message):
    with pytest.raises(seccomp.SeccompError, match=re.escape(message)) as error:
        seccomp.compile(bad, "x86_64")
    assert "\n" not in str(error.value)


def test_an_unsupported_machine_is_one_line():
    with pytest.raises(
        seccomp.SeccompError, match="no seccomp filter for riscv64: only for x86_64 and aarch64"
    ):
        seccomp.compile(profile(), "riscv64")


PODMAN_PROFILE = "/usr/share/containers/seccomp.json"  # Debian's containers-common
DOCKER_CAPABILITIES = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}  # fmt: skip


def as_engines_hand_it(source: dict, capabilities: set[str], machine: str) -> dict:
    """docker's and podman's profile format (rules with includes and excludes by capability
    and architecture, an archMap) made into the OCI profile they write in config.json."""
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}[machine]
    native = f"SCMP_ARCH_{machine.upper()}"
    sub = next(a["subArchitectures"] for a in source["archMap"] if a["architecture"] == native)
    syscalls = []
    for rule in source["syscalls"]:
        includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
        if includes.get("arches") and goarch not in includes["arches"]:
            continue
        if goarch in excludes.get("arches", ()) or capabilities & set(excludes.get("caps", ())):
            continue
        if not set(includes.get("caps", ())) <= capabilities:
            continue
        keys = ("names", "action", "args", "errnoRet")
        syscalls.append({key: rule[key] for key in keys if rule.get(key) is not None})
    return {
        "defaultAction": source["defaultAction"],
        "defaultErrnoRet": source["defaultErrnoRet"],
        "architectures": [native, *sub],
        "syscalls": syscalls,
    }


@needs_this_machine
@pytest.mark.skipif(not os.path.exists(PODMAN_PROFILE), reason=f"no {PODMAN_PROFILE} (podman)")
def test_podmans_default_profile_compiles_and_holds():
    """An allow-list of ~400 names, for three ABIs, as podman would hand it to runc."""
    with open(PODMAN_PROFILE) as file:
        source = json.load(file)
    for machine in seccomp.ABIS:
        program = seccomp.compile(as_engines_hand_it(source, DOCKER_CAPABILITIES, machine), machine)
        assert len(program) // 8 < seccomp.BPF_MAXINSNS
    program = seccomp.compile(as_engines_hand_it(source, DOCKER_CAPABILITIES, MACHINE))
    results = in_filtered_child(
        program,
        {
            "getppid": call("getppid"),
            "kexec_load": call("kexec_load", 0, 0, 0, 0xFFFFFFFF),  # refused with EPERM
            "io_uring_setup": call("io_uring_setup", 0, 0),  # not named: defaultErrnoRet
            "personality(PER_LINUX32)": call("personality", 8),
            "personality(ADDR_NO_RANDOMIZE)": call("personality", 0x0040000),
            "a call from the future": (1000,),
        },
    )
    assert results == {
        "getppid": 0,
        "kexec_load": errno.EPERM,
        "io_uring_setup": errno.ENOSYS,
        "personality(PER_LINUX32)": 0,
        "personality(ADDR_NO_RANDOMIZE)": errno.ENOSYS,
        "a call from the future": errno.ENOSYS,
    }


@pytest.mark.parametrize("abi", ["X86_64", "X86", "X32", "AARCH64"])
def test_the_tables_are_the_kernel_headers(abi):
    """runtime/syscall_table.py is what 'invoke syscall-table' makes of this machine's
    headers (or of Debian 12's, which made it: then a newer one may only add calls)."""
    tasks = pytest.importorskip("tasks", reason="tasks.py needs invoke (the dev extra)")
    header = tasks.SYSCALL_HEADERS[abi]
    if not os.path.exists(header):
        pytest.skip(f"{header} is missing (apt-get install linux-libc-dev)")
    wants = tasks.AARCH64_WANTS if abi == "AARCH64" else []
    table = syscall_table.numbers(getattr(syscall_table, abi))
    assert table.items() <= tasks.syscall_numbers(header, wants).items()
    assert {"x86_64": 165, "x86": 21, "x32": 165, "aarch64": 40}[abi.lower()] == table["mount"]
