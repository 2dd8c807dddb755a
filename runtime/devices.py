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

A bundle's ``linux.resources.devices`` (config-linux.md, "Device allowlist") comes first:
rules applied in order from "nothing allowed", each allowing or denying a type, major,
minor and access, the last one that matches deciding; the defaults above follow, as runc
appends its own (libcontainer/specconv), so that /dev/null and the terminals always work.

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
    return [_v1_line(rule) for rule in rules]


def _v1_line(rule) -> str:
    kind, major, minor, access = rule[-4:]
    return f"{kind} {'*' if major is None else major}:{'*' if minor is None else minor} {access}"


def oci_rules(devices) -> list[tuple]:
    """``(allow, type, major, minor, access)`` for a bundle's linux.resources.devices (None:
    any), checked, then the defaults: the rules in the order they apply."""
    if not isinstance(devices, list):
        raise DeviceError("config.json: linux.resources.devices must be a list")
    rules = []
    for index, rule in enumerate(devices):
        where = f"config.json: linux.resources.devices[{index}]"
        if not isinstance(rule, dict) or not isinstance(rule.get("allow"), bool):
            raise DeviceError(f"{where}: an object with allow (true or false) is required")
        kind, access = rule.get("type") or "a", rule.get("access") or "rwm"
        numbers = [rule.get("major"), rule.get("minor")]
        if kind not in ("a", "b", "c"):
            raise DeviceError(f"{where}.type must be a, b or c (got {kind!r})")
        if not isinstance(access, str) or not set(access) <= set("rwm"):
            raise DeviceError(f"{where}.access must be letters of rwm (got {access!r})")
        for name, number in zip(("major", "minor"), numbers, strict=True):
            valid = number is None or (type(number) is int and -1 <= number < 1 << 32)
            if not valid:
                raise DeviceError(f"{where}.{name} must be a number, or -1 or null for any")
        major, minor = (None if n in (None, -1) else n for n in numbers)
        access = "".join(letter for letter in "rwm" if letter in access)
        rules.append((rule["allow"], kind, major, minor, access))
    return rules + [(True, *rule) for rule in DEFAULT_RULES]


def restrict(cgroup) -> None:
    """Apply the container's device rules (its resources', then DEFAULT_RULES) to
    ``cgroup`` (a runtime.cgroups.Cgroup), on v1 or v2.

    Call it after the group exists and before any process of the container opens a device.
    """
    rules = oci_rules(cgroup.resources.get("devices") or [])
    try:
        if cgroup.layout.uses_v2:
            attach_v2_filter(cgroup.directories[0], rules)
        elif "devices" in cgroup.paths:
            path = cgroup.paths["devices"]
            for name, line in v1_writes(rules):
                write_file(path, name, line)
        else:
            raise DeviceError("this host has no devices cgroup controller")
    except OSError as error:
        raise DeviceError(f"cannot restrict the container's devices: {error}") from None


def v1_writes(rules) -> list[tuple[str, str]]:
    """The (file, line) writes that give a v1 devices group ``rules``, from deny-all.

    v1 keeps a default (allow or deny everything) and a list of exceptions to it. ``a`` with
    all access resets both; any other rule adds an exception, or takes one away if it
    undoes one, which the kernel does only for an exception of the same type, major and
    minor. A rule that would carve a hole in a wider exception (deny ``c 1:3`` after
    allowing ``c *:*``) is beyond v1: refused, rather than silently not applied.
    """
    writes = [("devices.deny", "a")]
    default_allow, exceptions = False, {}  # (type, major, minor) -> access
    for allow, kind, major, minor, access in rules:
        name = "devices.allow" if allow else "devices.deny"
        if kind == "a" and major is None and minor is None and access == "rwm":
            writes.append((name, "a"))
            default_allow, exceptions = allow, {}
            continue
        key = (kind, major, minor)
        if allow != default_allow:  # an exception to the default
            exceptions[key] = "".join(c for c in "rwm" if c in access + exceptions.get(key, ""))
        elif key in exceptions:  # takes the exception's access away
            exceptions[key] = "".join(c for c in exceptions[key] if c not in access)
            if not exceptions[key]:
                del exceptions[key]
        elif any(_covers(other, key) for other in exceptions):
            raise DeviceError(
                f"the device rule {'allow' if allow else 'deny'} {_v1_line(key + (access,))}"
                " cannot be expressed with cgroup v1 after a wider rule: reorder the rules"
            )
        else:
            continue  # the default does it already
        writes.append((name, _v1_line(key + (access,))))
    return writes


def _covers(wider, narrower) -> bool:
    """Whether (type, major, minor) ``wider`` matches every device ``narrower`` does."""
    return all(w in ("a", None) or w == n for w, n in zip(wider, narrower, strict=True))


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


def device_filter(rules=None) -> bytes:
    """The eBPF program for ``rules`` (oci_rules's): the last rule that matches the access
    decides, 1 (allow) or 0 (deny); none: 0. So the rules are tested from the last.

    Its context is ``struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }``,
    access_type being (access << 16) | type.
    """
    rules = oci_rules([]) if rules is None else rules
    program = [
        _insn(LDX_W, 2, 1, 0),  # r2 = type
        _insn(AND_K, 2, 0, 0, 0xFFFF),
        _insn(LDX_W, 3, 1, 0),  # r3 = access (m, r, w bits)
        _insn(RSH_K, 3, 0, 0, 16),
        _insn(LDX_W, 4, 1, 4),  # r4 = major
        _insn(LDX_W, 5, 1, 8),  # r5 = minor
    ]
    for allow, kind, major, minor, access in reversed(rules):
        allowed = sum(ACCESS[letter] for letter in access)
        # Tests that jump to the next rule when they fail: (code, dst, src, imm); a rule
        # that passes them all returns its verdict.
        tests = [(JNE_K, 2, 0, DEVICE_TYPE[kind])] if kind != "a" else []
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
        program += [_insn(MOV64_K, 0, 0, 0, int(allow)), _insn(EXIT, 0, 0)]
        if not tests:
            break  # it matches everything: the verifier refuses code that cannot be reached
    else:
        program += [_insn(MOV64_K, 0, 0, 0, 0), _insn(EXIT, 0, 0)]  # no rule matched: deny
    return b"".join(program)


def attach_v2_filter(group: str, rules=None) -> None:
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
