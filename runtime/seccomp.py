"""The default seccomp filter: a small classic-BPF program, built here with ``struct.pack``.

What seccomp is
---------------
seccomp(2) in *filter* mode attaches a program to a process: before every system call, the
kernel runs it on a ``struct seccomp_data`` (the call's number, the architecture, six
arguments) and the program's return value decides: run the call (``SECCOMP_RET_ALLOW``),
fail it with an errno without running it (``SECCOMP_RET_ERRNO | errno``), or kill the
process (``SECCOMP_RET_KILL_PROCESS``). Filters are inherited over fork and execve and can
never be removed, only stacked. The program is *classic* BPF (the packet filter of
tcpdump): a few instructions, no loops, checked by the kernel before it is accepted.

Why build it by hand
--------------------
docker and runc describe their profile in JSON and compile it with libseccomp. We need a
fixed deny-list, not a profile language: about 70 system calls and six argument checks,
which is ~170 instructions of a very regular shape. Building them with ``struct.pack``
costs ~0.1 ms, needs no C library or binding (the project's rule is: standard library
first; libseccomp's Python binding is not on PyPI, only in Debian's python3-seccomp), and
shows learners what a filter really is: compare, jump, return.

The rules
---------
In the spirit of docker's default profile (moby's ``profiles/seccomp/default.json``), but as
a *deny*-list (docker's is an allow-list of ~350 calls): denied calls fail with EPERM.
Like docker's, some rules give way to a capability: a container given CAP_SYS_ADMIN
(``--cap-add SYS_ADMIN``) may mount, since that is what the user asked for; no capability
lifts the calls in :data:`ALWAYS_DENIED`. ``--security-opt seccomp=unconfined`` installs
no filter at all. docs/step7-security.md compares the two, call by call, and says where
and why they differ.

Two traps every filter must close:

* **The architecture.** A system call number means nothing without its ABI: on x86_64, a
  process can also enter the kernel through the 32-bit ``int 0x80`` gate, where 165 is not
  ``mount``. So the program first checks ``seccomp_data.arch`` and kills the process on any
  other ABI; and on x86_64 it also denies the *x32* ABI, whose calls arrive with the
  architecture of x86_64 but with bit 30 (``__X32_SYSCALL_BIT``) set in the number.
* **Argument width.** ``seccomp_data.args`` are 64-bit; the ioctl command, clone flags and
  unshare flags the kernel reads are 32-bit. Checking only the low 32 bits, as we do, means
  a caller cannot slip past a rule by setting bits the kernel then ignores.

Man pages: https://man7.org/linux/man-pages/man2/seccomp.2.html,
https://man7.org/linux/man-pages/man2/prctl.2.html,
https://docs.kernel.org/userspace-api/seccomp_filter.html
"""

from __future__ import annotations

import ctypes
import errno
import struct

from runtime.syscalls import (
    CLONE_NEWUSER,
    PR_SET_SECCOMP,
    SECCOMP_MODE_FILTER,
    SYSCALL_NUMBERS,
    prctl,
)

# seccomp_data offsets (<linux/seccomp.h>): int nr; u32 arch; u64 ip; u64 args[6].
NR_OFFSET = 0
ARCH_OFFSET = 4
ARGS_OFFSET = 16  # args[i] at 16 + 8 * i; its low 32 bits first on little-endian machines

# Return values (<linux/seccomp.h>).
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# Classic BPF opcodes (<linux/filter.h>).
LD_W_ABS = 0x20  # A = *(u32 *)(seccomp_data + k)
JEQ_K = 0x15  # if A == k: skip jt instructions, else skip jf
JGE_K = 0x35  # if A >= k (unsigned)
JSET_K = 0x45  # if A & k
RET_K = 0x06  # return k

# AUDIT_ARCH_* (<linux/audit.h>): the ELF machine, with the 64-bit and little-endian flags.
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

# The numbers of the calls the filter checks are in runtime.syscalls: one table for all.

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


def build(capabilities: int, machine: str) -> bytes:
    """The filter for a container holding ``capabilities`` (bit N = capability N), on
    ``machine`` (``x86_64`` or ``aarch64``), as the bytes of a ``struct sock_filter[]``."""
    numbers = SYSCALL_NUMBERS[machine]
    denied = [name for name in ALWAYS_DENIED if name in numbers]
    for caps, *names in DENIED_UNLESS:
        if not any(capabilities >> cap & 1 for cap in caps):
            denied += [name for name in names if name in numbers]
    deny = _ret(RET_ERRNO | errno.EPERM)
    program = [
        _load(ARCH_OFFSET),
        _jump(JEQ_K, AUDIT_ARCH[machine], 1, 0),
        _ret(RET_KILL_PROCESS),  # another ABI: its numbers mean other calls
        _load(NR_OFFSET),
    ]
    if machine == "x86_64":
        program += [_jump(JGE_K, X32_SYSCALL_BIT, 0, 1), deny]
    program += [_jump(JGE_K, FIRST_UNREVIEWED, 0, 1), _ret(RET_ERRNO | errno.ENOSYS)]
    for name in denied:
        program += [_jump(JEQ_K, numbers[name], 0, 1), deny]

    # Calls denied for some arguments only. Each block starts with "is it this call?" and,
    # if so, ends by returning: no later rule concerns that call. ``test`` jumps over the
    # ALLOW that follows it (to the deny) when the argument is one to refuse.
    def argument_rule(name: str, arg: int, test: list[bytes]) -> None:
        nonlocal program
        block = [_load(ARGS_OFFSET + 8 * arg), *test, _ret(RET_ALLOW), deny]
        program += [_jump(JEQ_K, numbers[name], 0, len(block)), *block]

    if not capabilities >> CAP_SYS_ADMIN & 1:
        # A new user namespace gives back every capability, inside it: it is the first step
        # of most kernel exploits from a container. (Its other namespaces need SYS_ADMIN.)
        for name in ("clone", "unshare"):  # the flags are the first argument of both
            argument_rule(name, 0, [_jump(JSET_K, CLONE_NEWUSER, 1, 0)])
        # clone3 passes its flags in a structure that a filter cannot read. ENOSYS, not
        # EPERM: then the C library falls back to clone, which we can check (docker's trick).
        program += [_jump(JEQ_K, numbers["clone3"], 0, 1), _ret(RET_ERRNO | errno.ENOSYS)]
    if not capabilities >> CAP_SYS_PTRACE & 1:
        # Attaching to another process; PTRACE_TRACEME (a child asking its parent to trace
        # it, as debuggers start programs) and requests on a tracee stay allowed.
        argument_rule("ptrace", 0, _one_of(PTRACE_ATTACH, PTRACE_SEIZE))
    # TIOCSTI pushes characters into a terminal's input, TIOCLINUX can paste the console's
    # selection: typed into the shell that started the container, once it exits.
    argument_rule("ioctl", 1, _one_of(TIOCSTI, TIOCLINUX))
    argument_rule("socket", 0, _one_of(AF_ALG, AF_VSOCK))  # the family: an int
    argument_rule("personality", 0, _none_of(*PERSONALITIES))  # an unsigned int
    program.append(_ret(RET_ALLOW))
    return b"".join(program)


def install(program: bytes) -> None:
    """Attach the filter ``program`` to this process, for good (prctl(2) PR_SET_SECCOMP).

    Needs no_new_privs set first, or CAP_SYS_ADMIN: otherwise a filter could trick a
    set-user-ID program into failing halfway, with the privileges it had gained.
    """
    instructions = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack("=H6xQ", len(program) // 8, ctypes.addressof(instructions))
    fprog_buffer = ctypes.create_string_buffer(fprog, len(fprog))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog_buffer))


# One instruction, struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }: a jump skips jt
# instructions when its test holds, jf when it does not.


def _load(offset: int) -> bytes:
    return struct.pack("=HBBI", LD_W_ABS, 0, 0, offset)


def _jump(code: int, k: int, jt: int, jf: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _ret(value: int) -> bytes:
    return struct.pack("=HBBI", RET_K, 0, 0, value)


def _one_of(first: int, second: int) -> list[bytes]:
    """A test for argument_rule: the argument is ``first`` or ``second``."""
    return [_jump(JEQ_K, first, 2, 0), _jump(JEQ_K, second, 1, 0)]


def _none_of(*allowed: int) -> list[bytes]:
    """A test for argument_rule: the argument is none of ``allowed``. Each match jumps to
    the ALLOW after the test; the last comparison, failing, skips it."""
    *first, last = allowed
    tests = [_jump(JEQ_K, value, len(first) - index, 0) for index, value in enumerate(first)]
    return [*tests, _jump(JEQ_K, last, 0, 1)]
