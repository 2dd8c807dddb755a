"""The test session's namespaces (conftest.py): they keep what the tests do off the host,
also on a machine whose ``/`` is shared, as systemd makes it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.privileged

SESSION = """
import conftest, os
from runtime import syscalls
conftest.enter_session_namespaces()
os.makedirs({target!r}, exist_ok=True)
syscalls.mount("tmpfs", {target!r}, "tmpfs")
"""


def test_a_mount_in_the_session_stays_off_a_systemd_host(tmp_path):
    """On a host whose "/" is shared, a new mount namespace's mounts start as peers of the
    host's (mount_namespaces(7)): the session must cut them off before it makes its own
    mounts shared, or a mount made in the session appears on the host."""
    target = str(tmp_path / "mounted-in-the-session")
    session = SESSION.format(target=target)
    host = (  # a namespace of this test's own stands for the host, "/" shared as under systemd
        f"mount --make-rshared / && {sys.executable} -c {quote(session)} && "
        f"if findmnt {target} >/dev/null; then echo on the host; else echo off the host; fi"
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", host],
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO}/tests:{REPO}", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "off the host", result.stdout + result.stderr


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
