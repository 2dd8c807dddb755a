"""The ctypes system-call layer: numbers per architecture, and errors that say what failed."""

from __future__ import annotations

import errno
import sys

import pytest

from runtime import syscalls

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="calls Linux-only functions")


def test_pivot_root_numbers_for_both_architectures():
    # arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h
    assert syscalls.syscall_number("pivot_root", "x86_64") == 155
    assert syscalls.syscall_number("pivot_root", "aarch64") == 41
    assert syscalls.syscall_number("pivot_root", "arm64") == 41  # as macOS names it


def test_unknown_architecture_is_an_error():
    with pytest.raises(OSError, match="no system call number known for riscv64"):
        syscalls.syscall_number("pivot_root", "riscv64")


@linux_only
def test_failure_names_the_call_and_its_arguments(tmp_path):
    missing = tmp_path / "x"
    with pytest.raises(OSError) as caught:
        syscalls.pivot_root(missing, missing / ".oldroot")
    assert caught.value.errno in (errno.ENOENT, errno.EPERM)
    assert str(caught.value).startswith(f"pivot_root('{missing}', '{missing}/.oldroot'): ")


@linux_only
def test_mount_flags_are_shown_by_name(tmp_path):
    with pytest.raises(OSError) as caught:
        syscalls.mount(
            str(tmp_path / "nowhere"), tmp_path, None, syscalls.MS_BIND | syscalls.MS_REC
        )
    assert "MS_BIND|MS_REC" in str(caught.value)
    assert "[Errno" not in str(caught.value)


@linux_only
def test_unshare_with_bad_flags_is_einval():
    with pytest.raises(OSError) as caught:
        syscalls.unshare(0x1)  # not a namespace flag
    assert caught.value.errno == errno.EINVAL
