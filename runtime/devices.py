"""Which devices a container may open: docker's allow-list, enforced by its cgroup.

CAP_MKNOD is in docker's default capability set, so a container's root can create a device
node for any major:minor, say the host's disk (``mknod /disk b 8 0``). What stops it from
then reading the disk is not a capability but the *device controller* of its cgroup: every
open(2) of a device node is checked against the group's rules. Creating nodes (``m``) is
allowed for every device (overlayfs needs that to record deletions); reading and writing
(``r``, ``w``) only for the harmless devices of the OCI runtime spec and the terminals.

- **cgroup v1**: the ``devices`` hierarchy takes the rules as text: ``a`` in
  ``devices.deny`` removes everything, then each rule is written to ``devices.allow``.
  https://docs.kernel.org/admin-guide/cgroup-v1/devices.html
- **cgroup v2** has no device files: the kernel runs an eBPF program of type
  BPF_PROG_TYPE_CGROUP_DEVICE attached to the group, which returns 1 (allow) or 0 (deny)
  for each (type, major, minor, access). We build it here, as runc does
  (libcontainer/cgroups/devices/devicefilter.go), load it with bpf(2) and attach it.
  https://docs.kernel.org/admin-guide/cgroup-v2.html#device-controller

Unlike capabilities and seccomp, no option lifts this (docker lifts it only for
``--privileged``).
"""

from __future__ import annotations

import ctypes
import os
import struct

from runtime.cgroups import write_file
from runtime.syscalls import bpf

# docker's defaults (moby's oci/defaults.go, runc's AllowedDevices): type, major, minor
# (None: any), access.
DEFAULT_RULES = (
    ("c", None, None, "m"),  # create any node...
    ("b", None, None, "m"),
    ("c", 1, 3, "rwm"),  # ...but open only /dev/null,
    ("c", 1, 5, "rwm"),  # zero,
    ("c", 1, 7, "rwm"),  # full,
    ("c", 1, 8, "rwm"),  # random,
    ("c", 1, 9, "rwm"),  # urandom,
    ("c", 5, 0, "rwm"),  # tty,
    ("c", 5, 1, "rwm"),  # console,
    ("c", 5, 2, "rwm"),  # ptmx,
    ("c", 136, None, "rwm"),  # and the pseudo-terminals of its devpts (/dev/pts/N)
)


class DeviceError(Exception):
    """The device rules could not be put in place."""


def v1_rules(rules=DEFAULT_RULES) -> list[str]:
    """The rules as devices.allow lines: ``c 1:3 rwm``, ``b *:* m``."""
    return [
        f"{kind} {'*' if major is None else major}:{'*' if minor is None else minor} {access}"
        for kind, major, minor, access in rules
    ]


def restrict(cgroup) -> None:
    """Apply DEFAULT_RULES to ``cgroup`` (a runtime.cgroups.Cgroup), on v1 or v2.

    Call it after the group exists and before any process of the container opens a device.
    """
    try:
        if cgroup.layout.uses_v2:
            attach_v2_filter(cgroup.directories[0])
        elif "devices" in cgroup.paths:
            path = cgroup.paths["devices"]
            write_file(path, "devices.deny", "a")
            for line in v1_rules():
                write_file(path, "devices.allow", line)
        else:
            raise DeviceError("this host has no devices cgroup controller")
    except OSError as error:
        raise DeviceError(f"cannot restrict the container's devices: {error}") from None


# --- cgroup v2: an eBPF program -------------------------------------------------------------

BPF_PROG_LOAD, BPF_PROG_ATTACH = 5, 8
BPF_PROG_TYPE_CGROUP_DEVICE, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI = 15, 6, 2
DEVICE_TYPE = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR
ACCESS = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE

# eBPF opcodes (<linux/bpf.h>); registers r0 (result), r1 (the context), r2-r5 scratch.
LDX_W = 0x61  # dst = *(u32 *)(src + off)
AND_K, RSH_K, MOV_X = 0x54, 0x74, 0xBC  # 32-bit: dst &= imm, dst >>= imm, dst = src
MOV64_K = 0xB7  # dst = imm
JNE_K, JNE_X = 0x55, 0x5D  # if dst != imm (src): pc += off
EXIT = 0x95


def device_filter(rules=DEFAULT_RULES) -> bytes:
    """The eBPF program for ``rules``: 1 if some rule allows the access, else 0.

    Its context is ``struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }``,
    access_type being (access << 16) | type.
    """
    program = [
        _insn(LDX_W, 2, 1, 0),  # r2 = type
        _insn(AND_K, 2, 0, 0, 0xFFFF),
        _insn(LDX_W, 3, 1, 0),  # r3 = access (m, r, w bits)
        _insn(RSH_K, 3, 0, 0, 16),
        _insn(LDX_W, 4, 1, 4),  # r4 = major
        _insn(LDX_W, 5, 1, 8),  # r5 = minor
    ]
    for kind, major, minor, access in rules:
        allowed = sum(ACCESS[letter] for letter in access)
        # Tests that jump to the next rule when they fail: (code, dst, src, imm); a rule
        # that passes them all returns 1.
        tests = [(JNE_K, 2, 0, DEVICE_TYPE[kind])]
        if allowed != 7:  # the access asked for must lie within the allowed one
            tests += [(MOV_X, 1, 3, 0), (AND_K, 1, 0, allowed), (JNE_X, 1, 3, 0)]
        if major is not None:
            tests.append((JNE_K, 4, 0, major))
        if minor is not None:
            tests.append((JNE_K, 5, 0, minor))
        for index, (code, dst, src, imm) in enumerate(tests):
            is_jump = code in (JNE_K, JNE_X)
            to_next_rule = len(tests) - index - 1 + 2  # the tests left, and the two below
            program.append(_insn(code, dst, src, to_next_rule if is_jump else 0, imm))
        program += [_insn(MOV64_K, 0, 0, 0, 1), _insn(EXIT, 0, 0)]  # allow
    program += [_insn(MOV64_K, 0, 0, 0, 0), _insn(EXIT, 0, 0)]  # no rule matched: deny
    return b"".join(program)


def attach_v2_filter(group: str, rules=DEFAULT_RULES) -> None:
    """Load the device filter with bpf(2) and attach it to the cgroup v2 directory ``group``.

    The attached program belongs to the group from then on: our descriptors can be closed,
    and it goes away with the group.
    """
    code = device_filter(rules)
    instructions = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"MIT")
    attr = ctypes.create_string_buffer(128)  # union bpf_attr, zero-filled
    struct.pack_into(
        "=IIQQ",
        attr,
        0,
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(code) // 8,
        ctypes.addressof(instructions),
        ctypes.addressof(license_),
    )
    struct.pack_into("=16s", attr, 48, b"mycontainer_dev")  # prog_name, for bpftool
    program = bpf(BPF_PROG_LOAD, attr)
    try:
        directory = os.open(group, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attr = ctypes.create_string_buffer(128)
            struct.pack_into(
                "=IIII", attr, 0, directory, program, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI
            )
            bpf(BPF_PROG_ATTACH, attr)
        finally:
            os.close(directory)
    finally:
        os.close(program)


def _insn(code: int, dst: int, src: int, off: int = 0, imm: int = 0) -> bytes:
    """One eBPF instruction: struct bpf_insn { u8 code; u8 dst:4, src:4; s16 off; s32 imm; }."""
    return struct.pack("=BBhi", code, src << 4 | dst, off, imm)
