"""Seccomp filters: an OCI seccomp profile compiled to classic BPF, built with ``struct.pack``.

What seccomp is
---------------
seccomp(2) in *filter* mode attaches a program to a process: before every system call, the
kernel runs it on a ``struct seccomp_data`` (the call's number, the architecture, six
arguments) and the program's return value decides: run the call (``SECCOMP_RET_ALLOW``),
fail it with an errno without running it (``SECCOMP_RET_ERRNO | errno``), or kill the
process (``SECCOMP_RET_KILL_PROCESS``). Filters are inherited over fork and execve and can
never be removed, only stacked. The program is *classic* BPF (the packet filter of
tcpdump): a few instructions, no loops, checked by the kernel before it is accepted.

The profile
-----------
What a filter does is written as the OCI runtime spec's ``linux.seccomp`` object
(config-linux.md, "Seccomp"), the JSON that docker, podman and runc use::

    {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
     "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
     "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}

:func:`compile` turns one into a program; the container's default filter is such a profile
too (:func:`default_profile`), so there is one compiler for both. runc and crun hand
profiles to libseccomp; we build the program ourselves: it needs no C library or binding
(libseccomp's Python binding is not on PyPI, only in Debian's python3-seccomp), compiling
the default profile costs a fraction of a millisecond, and learners see what a filter
really is: load, compare, jump, return.

The program's shape
-------------------
::

    ld  arch                           which ABI is calling?
    jeq AUDIT_ARCH_I386 → x86 section    one test per listed compat ABI with a table
    jeq AUDIT_ARCH_X86_64 (native), else
    ret KILL_PROCESS                   an ABI the profile does not list
    native section:
      ld  nr
      jge X32_SYSCALL_BIT → x32 section, or ret ERRNO(EPERM) if x32 is not listed
      jge first unknown → ret ERRNO(ENOSYS)          (see "Calls the profile does not know")
      jeq nr_1, else skip the block:   one block per call the profile names
        the rules for nr_1, in the profile's order: each tests its arguments, every
        test jumping past the rule when it fails, then returns the rule's action
        ret defaultAction              (if no rule held)
      jeq nr_2 ...
      ret defaultAction                any other call
    x32 section, x86 section: the same, with their own numbers

The first rule that holds decides; a rule without arguments always holds, so rules after
it for the same call are never reached. Several arguments in one rule must all hold (AND,
as seccomp_rule_add(3) reads them); several rules for one call are alternatives (OR).

Architectures
-------------
A system call number means nothing without its ABI: on x86_64 a process can also enter the
kernel through the 32-bit ``int 0x80`` gate (x86), where 165 is not ``mount``, and through
x32, whose calls arrive with x86_64's architecture but bit 30 set in the number. The native
ABI is always filtered. A compat ABI the profile lists gets a section with its own numbers
(runtime.syscall_table, from the kernel's headers): x86 and x32 on x86_64. An ABI not
listed kills the process, as libseccomp does; an x32 call fails with EPERM instead (it
arrives with the native architecture: the filter can refuse it as it refuses any call).
32-bit arm on aarch64 is killed even when listed: no arm table is generated (Debian's
x86_64 linux-libc-dev has no arm headers), and killing is the safe answer to calls the
filter cannot read. Architectures of other machines in the list are ignored, as runc does.

Arguments
---------
``seccomp_data.args`` are 64-bit; classic BPF loads 32 bits at a time. So a comparison
checks both halves (the high one first, at offset +4 on these little-endian machines), as
libseccomp does on 64-bit ABIs; on 32-bit ABIs (x86, x32) only the low half. Where the
kernel reads only 32 bits of an argument (an ioctl command, an int), a rule with the
``SCMP_CMP_MASKED_EQ`` mask ``0xffffffff`` cannot be slipped past with high bits set.

Calls the profile does not know
-------------------------------
Names unknown for an ABI are skipped, as runc and crun do, also names no table knows: a
profile written for a newer kernel (docker's names calls after Linux 6.1, the headers'
version) must still load. When the default action refuses (errno, kill, trap), a call
numbered above every call the profile names fails with ENOSYS instead, as runc does: the C
library then falls back to an older call it knows (clone3 to clone). x32 sections have no
such stub: their numbers have a hole below the x32-only calls 512-547.

Man pages: https://man7.org/linux/man-pages/man2/seccomp.2.html,
https://man7.org/linux/man-pages/man2/prctl.2.html,
https://docs.kernel.org/userspace-api/seccomp_filter.html
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from runtime import syscall_table
from runtime.syscalls import (
    CLONE_NEWUSER,
    LIBC,
    PR_SET_SECCOMP,
    SECCOMP_MODE_FILTER,
    SyscallError,
    machine_name,
    prctl,
)

# seccomp_data offsets (<linux/seccomp.h>): int nr; u32 arch; u64 ip; u64 args[6].
NR_OFFSET = 0
ARCH_OFFSET = 4
ARGS_OFFSET = 16  # args[i] at 16 + 8 * i: its low 32 bits, then its high ones at + 4

# Return values (<linux/seccomp.h>); the low 16 bits of ERRNO and TRACE carry a number.
RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
ACTIONS = {
    "SCMP_ACT_KILL": RET_KILL_THREAD,  # libseccomp's name for it
    "SCMP_ACT_KILL_THREAD": RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": RET_TRAP,
    "SCMP_ACT_ERRNO": RET_ERRNO,
    "SCMP_ACT_TRACE": RET_TRACE,
    "SCMP_ACT_LOG": RET_LOG,
    "SCMP_ACT_ALLOW": RET_ALLOW,
}
REFUSING = (RET_KILL_THREAD, RET_KILL_PROCESS, RET_TRAP, RET_ERRNO)
MAX_ERRNO = 4095  # the kernel returns at most -4095 as an errno

# seccomp(2) flags the spec names. SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is not here: it
# only concerns SCMP_ACT_NOTIFY's listener, which is not supported.
FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 1,
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}
SECCOMP_SET_MODE_FILTER = 1

# Classic BPF opcodes (<linux/filter.h>).
LD_W_ABS = 0x20  # A = *(u32 *)(seccomp_data + k)
AND_K = 0x54  # A &= k
JA = 0x05  # skip k instructions
JEQ_K = 0x15  # if A == k: skip jt instructions, else skip jf
JGT_K = 0x25  # if A > k (unsigned)
JGE_K = 0x35  # if A >= k (unsigned)
JSET_K = 0x45  # if A & k
RET_K = 0x06  # return k
BPF_MAXINSNS = 4096  # the kernel refuses longer programs

# Each operator's test of an argument's low half: the jump, and whether the comparison
# holds when the jump's test does (LT: not A >= k).
LOW_TESTS = {
    "SCMP_CMP_NE": (JEQ_K, False),
    "SCMP_CMP_LT": (JGE_K, False),
    "SCMP_CMP_LE": (JGT_K, False),
    "SCMP_CMP_EQ": (JEQ_K, True),
    "SCMP_CMP_GE": (JGE_K, True),
    "SCMP_CMP_GT": (JGT_K, True),
    "SCMP_CMP_MASKED_EQ": (JEQ_K, True),  # after A &= mask
}
OPERATORS = tuple(LOW_TESTS)

# AUDIT_ARCH_* (<linux/audit.h>): the ELF machine, with the 64-bit and little-endian flags.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000
# The ABIs each machine runs, its own first: AUDIT_ARCH, table in runtime.syscall_table
# (None: no table), what the kernel adds to the table's numbers, whether args are 64-bit.
ABIS = {
    "x86_64": {
        "SCMP_ARCH_X86_64": (AUDIT_ARCH["x86_64"], "X86_64", 0, True),
        "SCMP_ARCH_X32": (AUDIT_ARCH["x86_64"], "X32", X32_SYSCALL_BIT, False),
        "SCMP_ARCH_X86": (0x40000003, "X86", 0, False),
    },
    "aarch64": {
        "SCMP_ARCH_AARCH64": (AUDIT_ARCH["aarch64"], "AARCH64", 0, True),
        "SCMP_ARCH_ARM": (0x40000028, None, 0, False),
    },
}
# Other machines' ABIs, which a profile may list too (docker's lists every ABI it knows).
OTHER_ARCHITECTURES = {
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
}  # fmt: skip

# --- the default profile: docker's closures, as a deny-list --------------------------------------

# Capability numbers (capabilities(7)) that lift rules, as docker's profile has them.
CAP_DAC_READ_SEARCH, CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_PTRACE = 2, 16, 17, 19
CAP_SYS_PACCT, CAP_SYS_ADMIN, CAP_SYS_BOOT, CAP_SYS_NICE, CAP_SYS_TIME = 20, 21, 22, 23, 25
CAP_SYS_TTY_CONFIG, CAP_SYSLOG, CAP_PERFMON, CAP_BPF = 26, 34, 38, 39

# Denied whatever the capabilities: loading another kernel, the kernel keyrings (not
# namespaced: a container would see and change the host's keys), userfaultfd and io_uring
# (favourite tools of kernel exploits), swap, and obsolete calls nothing needs.
ALWAYS_DENIED = (
    "kexec_load", "kexec_file_load", "add_key", "request_key", "keyctl", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "swapon", "swapoff",
    "create_module", "get_kernel_syms", "query_module", "nfsservctl", "uselib", "ustat",
    "sysfs", "_sysctl", "modify_ldt", "migrate_pages", "move_pages",
)  # fmt: skip

# Denied unless the container holds one of the capabilities (the kernel checks it again).
DENIED_UNLESS = (
    (
        (CAP_SYS_ADMIN,),
        # mounts, old and new API; joining namespaces; names; quotas; the kernel log
        "mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
        "open_tree", "move_mount", "mount_setattr", "setns", "sethostname",
        "setdomainname", "quotactl", "quotactl_fd", "lookup_dcookie", "fanotify_init",
    ),
    ((CAP_SYS_ADMIN, CAP_SYSLOG), "syslog"),
    ((CAP_SYS_MODULE,), "init_module", "finit_module", "delete_module"),
    ((CAP_SYS_BOOT,), "reboot"),
    (
        (CAP_SYS_PTRACE,),
        "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
    ),
    ((CAP_SYS_TIME,), "settimeofday", "clock_settime", "clock_adjtime"),
    ((CAP_SYS_PACCT,), "acct"),
    ((CAP_SYS_RAWIO,), "iopl", "ioperm"),
    ((CAP_SYS_TTY_CONFIG,), "vhangup"),
    # NUMA memory placement: a container could pin its memory where the host's is
    ((CAP_SYS_NICE,), "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind"),
    ((CAP_SYS_ADMIN, CAP_BPF), "bpf"),
    ((CAP_SYS_ADMIN, CAP_PERFMON), "perf_event_open"),
    ((CAP_DAC_READ_SEARCH,), "open_by_handle_at"),  # "shocker", the first docker escape
)  # fmt: skip

PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
TIOCSTI, TIOCLINUX = 0x5412, 0x541C
# Socket families (<sys/socket.h>) docker's profile refuses: the kernel's crypto API, a
# favourite of kernel exploits, and vsock, which no network namespace confines (on a VM, it
# reaches the hypervisor, even from a container with --net none).
AF_ALG, AF_VSOCK = 38, 40
# The personality(2) values docker's profile allows: PER_LINUX, PER_LINUX_32BIT,
# UNAME26 (alone and with PER_LINUX_32BIT), and 0xffffffff, which only asks. Refused:
# ADDR_NO_RANDOMIZE (no ASLR, which exploits like), READ_IMPLIES_EXEC, and the rest.
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
# A deny-list passes whatever is newer than its review. So every call numbered from here on
# (statmount and listmount, Linux 6.8, and later; the same numbers on x86_64 and aarch64)
# fails with ENOSYS, as runc makes the calls its profile does not know fail: the C library
# then falls back to an older call, and nothing new reaches the kernel unreviewed. Below it,
# cachestat, fchmodat2, map_shadow_stack and the futex2 calls are ones docker's allows.
FIRST_UNREVIEWED = 457


class SeccompError(ValueError):
    """A profile that cannot be compiled; the text names the field and what is wrong."""


def default_profile(capabilities: int) -> dict:
    """The profile for a container holding ``capabilities`` (bit N = capability N): docker's
    closures as a deny-list (docs/step7-security.md compares the two, call by call). As in
    docker's profile, a capability lifts its rules: ``--cap-add SYS_ADMIN`` means wanting
    to mount; no capability lifts :data:`ALWAYS_DENIED`."""

    def held(*caps: int) -> bool:
        return any(capabilities >> cap & 1 for cap in caps)

    def deny(names: list[str], *args: dict, errno_ret: int = errno.EPERM) -> dict:
        rule = {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno_ret}
        return {**rule, "args": list(args)} if args else rule

    def arg(index: int, op: str, value: int, value_two: int = 0) -> dict:
        return {"index": index, "value": value, "valueTwo": value_two, "op": f"SCMP_CMP_{op}"}

    def int_is(index: int, value: int) -> dict:  # an int argument: the kernel reads 32 bits
        return arg(index, "MASKED_EQ", 0xFFFFFFFF, value)

    denied = list(ALWAYS_DENIED)
    for caps, *names in DENIED_UNLESS:
        if not held(*caps):
            denied += names
    rules = [deny(denied)]
    if not held(CAP_SYS_ADMIN):
        # A new user namespace gives back every capability, inside it: it is the first step
        # of most kernel exploits from a container. (Its other namespaces need SYS_ADMIN.)
        # clone3 passes its flags in a structure that a filter cannot read. ENOSYS, not
        # EPERM: then the C library falls back to clone, which we can check (docker's trick).
        rules += [
            deny(["clone", "unshare"], arg(0, "MASKED_EQ", CLONE_NEWUSER, CLONE_NEWUSER)),
            deny(["clone3"], errno_ret=errno.ENOSYS),
        ]
    if not held(CAP_SYS_PTRACE):
        # Attaching to another process; PTRACE_TRACEME (a child asking its parent to trace
        # it, as debuggers start programs) and requests on a tracee stay allowed.
        rules += [
            deny(["ptrace"], arg(0, "EQ", request)) for request in (PTRACE_ATTACH, PTRACE_SEIZE)
        ]
    # TIOCSTI pushes characters into a terminal's input, TIOCLINUX can paste the console's
    # selection: typed into the shell that started the container, once it exits.
    rules += [deny(["ioctl"], int_is(1, command)) for command in (TIOCSTI, TIOCLINUX)]
    rules += [deny(["socket"], int_is(0, family)) for family in (AF_ALG, AF_VSOCK)]
    # personality: refused unless its argument is one of docker's values (AND of NEs)
    rules.append(deny(["personality"], *(arg(0, "NE", value) for value in PERSONALITIES)))
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}


def build(capabilities: int, machine: str) -> bytes:
    """The default filter (:func:`default_profile`) for ``machine``, compiled: calls newer
    than its review (:data:`FIRST_UNREVIEWED`) fail with ENOSYS."""
    return compile(default_profile(capabilities), machine, enosys_from=FIRST_UNREVIEWED)


# --- the compiler ------------------------------------------------------------------------------


def compile(profile: dict, machine: str | None = None, *, enosys_from: int | None = None) -> bytes:
    """The classic-BPF program (``struct sock_filter[]``) for the OCI seccomp ``profile`` on
    ``machine`` (default: this one). Calls numbered ``enosys_from`` or more fail with ENOSYS
    (a deny-list's guard, see :func:`build`); without it, as runc, those above every call
    the profile names, if its default action refuses. Raises SeccompError, saying why."""
    machine = machine_name(machine)
    if machine not in ABIS:
        raise SeccompError(f"no seccomp filter for {machine}: only for {' and '.join(ABIS)}")
    if not isinstance(profile, dict):
        raise SeccompError(f"linux.seccomp: an object, got {profile!r}")
    if "listenerPath" in profile:
        raise SeccompError("linux.seccomp.listenerPath: SCMP_ACT_NOTIFY is not supported")
    filter_flags(profile)  # checked here, installed by install()
    default = _action(profile, "defaultAction", "defaultErrnoRet", "linux.seccomp")
    abis = ABIS[machine]
    listed = _architectures(profile.get("architectures"), abis)
    rules = _rules(profile.get("syscalls"))
    above_named = enosys_from is None and (default & 0xFFFF0000) in REFUSING

    def section(abi: str, enosys_stub: bool, prologue: list[bytes]) -> list[bytes]:
        _, table, offset, wide = abis[abi]
        first_unknown = enosys_from if enosys_stub else None
        stub_above_named = enosys_stub and above_named
        calls = _calls(rules, table, offset, wide, default, first_unknown, stub_above_named)
        return [_load(NR_OFFSET), *prologue, *calls]

    native, *compat = abis
    x32 = section("SCMP_ARCH_X32", False, []) if "SCMP_ARCH_X32" in listed else []
    compat = [abi for abi in compat if abi in listed and abis[abi][1] and abi != "SCMP_ARCH_X32"]
    compat_sections = [section(abi, True, []) for abi in compat]
    prologue = []
    if machine == "x86_64":  # x32 calls arrive with this architecture, bit 30 set in the number
        prologue = [_jump(JGE_K, X32_SYSCALL_BIT, 0, 1), _ret(RET_ERRNO | errno.EPERM)]
    native_section = section(native, True, prologue)
    if x32:  # placed right after the native section: jump over the rest of it
        native_section[2] = _jump(JA, len(native_section) - 3)

    # The dispatch on the architecture: each listed compat ABI jumps to its section, past
    # the rest of the dispatch and the sections before its own; the native one falls through.
    program = [_load(ARCH_OFFSET)]
    distance = len(native_section) + len(x32)
    for index, (abi, code) in enumerate(zip(compat, compat_sections, strict=True)):
        rest_of_dispatch = 2 * (len(compat) - index - 1) + 2
        program += [_jump(JEQ_K, abis[abi][0], 0, 1), _jump(JA, rest_of_dispatch + distance)]
        distance += len(code)
    program += [_jump(JEQ_K, abis[native][0], 1, 0), _ret(RET_KILL_PROCESS)]
    for code in (native_section, x32, *compat_sections):
        program += code
    if len(program) > BPF_MAXINSNS:
        raise SeccompError(
            f"linux.seccomp: the filter has {len(program)} instructions, more than the "
            f"kernel's {BPF_MAXINSNS}: name fewer calls or arguments"
        )
    return b"".join(program)


def filter_flags(profile: dict) -> int:
    """The seccomp(2) flags the profile's ``flags`` name, for :func:`install`."""
    names = profile.get("flags") or []
    if not isinstance(names, list):
        raise SeccompError(f"linux.seccomp.flags: a list, got {names!r}")
    flags = 0
    for name in names:
        if name not in FLAGS:
            raise SeccompError(
                f"linux.seccomp.flags: {name!r} is not supported (only {', '.join(FLAGS)})"
            )
        flags |= FLAGS[name]
    return flags


def install(program: bytes, flags: int = 0) -> None:
    """Attach the filter ``program`` to this process, for good: prctl(2) PR_SET_SECCOMP, or
    seccomp(2) when there are ``flags`` (:func:`filter_flags`), which only it takes.

    Needs no_new_privs set first, or CAP_SYS_ADMIN: otherwise a filter could trick a
    set-user-ID program into failing halfway, with the privileges it had gained.
    """
    instructions = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("=H6xQ", len(program) // 8, ctypes.addressof(instructions))
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    if not flags:
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog_buffer))
        return
    native = next(iter(ABIS[machine_name()].values()))[1]
    number = _numbers(native)["seccomp"]
    result = LIBC.syscall(
        ctypes.c_long(number),
        ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
        ctypes.c_ulong(flags),
        ctypes.c_void_p(ctypes.addressof(fprog_buffer)),
    )
    if result == -1:
        err = ctypes.get_errno()
        raise SyscallError(err, f"seccomp(SECCOMP_SET_MODE_FILTER, {flags:#x}): {os.strerror(err)}")
    if result > 0:  # TSYNC: the thread that could not take the filter
        raise OSError(
            f"seccomp: thread {result} could not take the filter (SECCOMP_FILTER_FLAG_TSYNC)"
        )


# --- the profile, checked ----------------------------------------------------------------------


def _action(where: dict, key: str, errno_key: str, path: str) -> int:
    """The return value for the action ``where[key]``, with ``where[errno_key]`` if any."""
    name = where.get(key)
    if name == "SCMP_ACT_NOTIFY":
        raise SeccompError(
            f"{path}.{key}: SCMP_ACT_NOTIFY (a supervisor answers the calls) is not supported"
        )
    if name not in ACTIONS:
        raise SeccompError(f"{path}.{key}: unknown action {name!r} (one of {', '.join(ACTIONS)})")
    ret = ACTIONS[name]
    number = where.get(errno_key)
    if ret not in (RET_ERRNO, RET_TRACE):
        if number is not None:
            raise SeccompError(
                f"{path}.{errno_key}: only for SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {name}"
            )
        return ret
    if number is None:
        return ret | errno.EPERM  # the spec's default
    if not _is_int(number) or not 0 <= number <= MAX_ERRNO:
        raise SeccompError(f"{path}.{errno_key}: an errno from 0 to {MAX_ERRNO}, got {number!r}")
    return ret | number


def _architectures(names: object, abis: dict) -> set[str]:
    """The ABIs of this machine that ``names`` lists; other machines' are ignored."""
    if names is None:
        return set()
    known = OTHER_ARCHITECTURES.union(*ABIS.values())
    if not isinstance(names, list) or not all(name in known for name in names):
        raise SeccompError(
            f"linux.seccomp.architectures: unknown architecture in {names!r} "
            f"(names such as SCMP_ARCH_X86_64, SCMP_ARCH_AARCH64)"
        )
    return set(names) & set(abis)


def _rules(syscalls: object) -> list[tuple[list[str], int, list[tuple[int, str, int, int]]]]:
    """``syscalls`` as (names, return value, [(index, op, value, valueTwo)]) per rule."""
    if syscalls is None:
        return []
    if not isinstance(syscalls, list):
        raise SeccompError(f"linux.seccomp.syscalls: a list, got {syscalls!r}")
    rules = []
    for number, rule in enumerate(syscalls):
        path = f"linux.seccomp.syscalls[{number}]"
        if not isinstance(rule, dict):
            raise SeccompError(f"{path}: an object, got {rule!r}")
        names = rule.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SeccompError(f"{path}.names: a list of system call names, got {names!r}")
        ret = _action(rule, "action", "errnoRet", path)
        args = rule.get("args") or []
        if not isinstance(args, list):
            raise SeccompError(f"{path}.args: a list, got {args!r}")
        conditions = [_condition(arg, f"{path}.args[{index}]") for index, arg in enumerate(args)]
        rules.append((names, ret, conditions))
    return rules


def _condition(arg: object, path: str) -> tuple[int, str, int, int]:
    if not isinstance(arg, dict):
        raise SeccompError(f"{path}: an object, got {arg!r}")
    index, op = arg.get("index"), arg.get("op")
    if not _is_int(index) or not 0 <= index <= 5:
        raise SeccompError(f"{path}.index: an argument from 0 to 5, got {index!r}")
    if op not in OPERATORS:
        raise SeccompError(f"{path}.op: unknown operator {op!r} (one of {', '.join(OPERATORS)})")
    values = arg.get("value"), arg.get("valueTwo", 0)
    for key, value in zip(("value", "valueTwo"), values, strict=True):
        if not _is_int(value) or not 0 <= value < 1 << 64:
            raise SeccompError(f"{path}.{key}: a 64-bit unsigned number, got {value!r}")
    return index, op, *values


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- the program -------------------------------------------------------------------------------

_NUMBERS: dict[str, dict[str, int]] = {}


def _numbers(table: str) -> dict[str, int]:
    """Name -> number in ``table`` of runtime.syscall_table, made once per process."""
    if table not in _NUMBERS:
        _NUMBERS[table] = syscall_table.numbers(getattr(syscall_table, table))
    return _NUMBERS[table]


def _calls(
    rules: list, table: str, offset: int, wide: bool, default: int, enosys_from: int | None,
    above_named: bool,
) -> list[bytes]:  # fmt: skip
    """One ABI's section after ``ld nr``: the ENOSYS stub, a block per call, the default."""
    numbers = _numbers(table)
    calls: dict[int, list[tuple[list, int]]] = {}  # number -> its rules, in order
    for names, ret, conditions in rules:
        for name in names:
            if name in numbers:  # else unknown for this ABI: skipped, as runc does
                calls.setdefault(numbers[name] + offset, []).append((conditions, ret))
    code = []
    if enosys_from is not None or (above_named and calls):
        first_unknown = offset + enosys_from if enosys_from is not None else max(calls) + 1
        code += [_jump(JGE_K, first_unknown, 0, 1), _ret(RET_ERRNO | errno.ENOSYS)]
    otherwise = _ret(default)
    returns = {}  # one instruction per action: a profile has few
    for number, alternatives in calls.items():
        block = []
        for conditions, ret in alternatives:
            if ret not in returns:
                returns[ret] = _ret(ret)
            block += _rule(conditions, returns[ret], wide)
            if not conditions:
                break  # it always holds: the rules after it are never reached
        else:
            block.append(otherwise)
        if block != [otherwise]:  # else the default does it
            code += _if_call(number, block)
    code.append(otherwise)
    return code


def _if_call(number: int, block: list[bytes]) -> list[bytes]:
    """``block``, run when the call is ``number``; a jump over it otherwise."""
    if len(block) <= 255:
        return [_jump(JEQ_K, number, 0, len(block)), *block]
    return [_jump(JEQ_K, number, 1, 0), _jump(JA, len(block)), *block]


def _rule(conditions: list[tuple[int, str, int, int]], ret: bytes, wide: bool) -> list[bytes]:
    """Tests of the arguments, then the return ``ret``: a test that fails jumps past it, to
    the next rule. Built from the end, so each test knows how far that is."""
    code = [ret]
    for index, op, value, value_two in reversed(conditions):
        code = _compare(index, op, value, value_two, wide, len(code)) + code
    return code


def _compare(index: int, op: str, value: int, value_two: int, wide: bool, fail: int) -> list[bytes]:
    """Whether argument ``index`` compares with ``value`` by ``op``: fall through when it
    does, else skip ``fail`` instructions past the end. 64-bit (``wide``): the high halves
    decide unless they are equal; then the low halves do."""
    mask = 0xFFFFFFFFFFFFFFFF
    if op == "SCMP_CMP_MASKED_EQ":
        mask, value = value, value_two
    high, low = value >> 32, value & 0xFFFFFFFF
    jump, holds = LOW_TESTS[op]
    low_test = [_jump(jump, low, 0, fail) if holds else _jump(jump, low, fail, 0)]
    if op == "SCMP_CMP_MASKED_EQ":
        low_test.insert(0, _and(mask & 0xFFFFFFFF))
    code = [_load(ARGS_OFFSET + 8 * index), *low_test]
    if not wide:
        return code
    rest = len(code)
    if op == "SCMP_CMP_EQ":
        high_test = [_jump(JEQ_K, high, 0, rest + fail)]
    elif op == "SCMP_CMP_MASKED_EQ":
        high_test = [_and(mask >> 32), _jump(JEQ_K, high, 0, rest + fail)]
    elif op == "SCMP_CMP_NE":
        high_test = [_jump(JEQ_K, high, 0, rest)]  # different: it holds
    elif op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):  # greater: holds; smaller: fails
        high_test = [_jump(JGT_K, high, rest + 1, 0), _jump(JEQ_K, high, 0, rest + fail)]
    else:  # LT, LE: smaller: holds; greater: fails
        high_test = [_jump(JGE_K, high, 0, rest + 1), _jump(JEQ_K, high, 0, rest + fail)]
    return [_load(ARGS_OFFSET + 8 * index + 4), *high_test, *code]


# One instruction, struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }: a jump skips jt
# instructions when its test holds, jf when it does not (JA: k instructions, always).


_INSTRUCTION = struct.Struct("=HBBI")


def _load(offset: int) -> bytes:
    return _INSTRUCTION.pack(LD_W_ABS, 0, 0, offset)


def _and(k: int) -> bytes:
    return _INSTRUCTION.pack(AND_K, 0, 0, k)


def _jump(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    if jt > 255 or jf > 255:
        raise SeccompError("linux.seccomp: a rule with too many arguments for one BPF jump")
    return _INSTRUCTION.pack(code, jt, jf, k)


def _ret(value: int) -> bytes:
    return _INSTRUCTION.pack(RET_K, 0, 0, value)
