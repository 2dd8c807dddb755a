"""Tests of the VM lab: the Vagrantfile, the provisioning script, the QEMU runner.

Where each runs:
- host, always: Vagrantfile validation, script syntax, the runner's pure parts;
- inside the lab VM only (MYCONTAINER_IN_VM=1): the guest really is cgroup v2;
- host, opt-in: MYCONTAINER_TEST_QEMU=1 boots a VM (minutes on a cold cache),
  MYCONTAINER_TEST_VAGRANT=1 drives a real `vagrant up` through pytest-vagrant.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab import vm

REPO = Path(__file__).resolve().parents[1]
IN_VM = os.environ.get("MYCONTAINER_IN_VM") == "1"


def test_vagrantfile_validates(tmp_path):
    """`vagrant validate` accepts the Vagrantfile, with the default box and an override."""
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed here (apt-get install vagrant to run this)")
    # Keep vagrant's per-project state out of the work tree.
    env = {**os.environ, "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"), "VAGRANT_NO_COLOR": "1"}
    for box in ("bento/ubuntu-24.04", "debian/bookworm64"):
        env["MYCONTAINER_BOX"] = box
        result = subprocess.run(
            ["vagrant", "validate"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "validated successfully" in result.stdout


def test_vagrantfile_provisions_with_our_script():
    text = (REPO / "Vagrantfile").read_text()
    assert 'path: "lab/provision.sh"' in text
    assert 'ENV.fetch("MYCONTAINER_BOX", "bento/ubuntu-24.04")' in text


@pytest.mark.parametrize("script", ["lab/provision.sh", "lab/guest/init.sh"])
def test_shell_scripts_parse(script):
    """bash -n: a syntax error would only show up on a user's first `vagrant up`."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed here (apt-get install bash to run this)")
    result = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_initramfs_archive_lists_with_cpio(tmp_path):
    """Our newc writer produces what cpio(1) -- and so the kernel -- reads."""
    if shutil.which("cpio") is None:
        pytest.skip("cpio is not installed here (apt-get install cpio to run this)")
    archive = vm.newc_archive([("lab", 0o755, None), ("lab/run.json", 0o644, b"{}\n")])
    result = subprocess.run(
        ["cpio", "-it", "--quiet"], input=archive, capture_output=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["lab", "lab/run.json"]


def test_exit_marker_is_hidden_even_split_across_reads():
    """The guest's exit marker never reaches the user, however the bytes arrive."""
    prefix = b"\n@@mycontainer-lab:abc:exit="
    stream = b"hello\nno newline at end" + prefix + b"3@@\n"
    out = io.BytesIO()
    relay = vm._Relay(prefix, out)
    for i in range(len(stream)):
        relay.feed(stream[i : i + 1])
    relay.flush()
    assert relay.exit_code == 3
    assert out.getvalue() == b"hello\nno newline at end\n"


@pytest.mark.skipif(not IN_VM, reason="checks the lab VM itself: run via python3 -m lab.qemu")
def test_lab_vm_is_pure_cgroup_v2_and_root():
    fstype = subprocess.run(
        ["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert fstype == "cgroup2fs"
    controllers = Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
    assert {"cpu", "memory", "pids"} <= set(controllers)
    assert os.geteuid() == 0


@pytest.mark.skipif(IN_VM, reason="no VM inside the lab VM: run it on the host")
@pytest.mark.skipif(
    os.environ.get("MYCONTAINER_TEST_QEMU") != "1",
    reason="boots a QEMU VM (about 10 s warm, minutes to build the image): "
    "set MYCONTAINER_TEST_QEMU=1",
)
def test_qemu_runner_streams_output_and_propagates_exit_code():
    result = subprocess.run(
        [sys.executable, "-m", "lab.qemu", "--", "sh", "-c", "echo hello from the vm; exit 3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=45 * 60,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == "hello from the vm\n"


@pytest.mark.skipif(IN_VM, reason="no VM inside the lab VM: run it on the host")
@pytest.mark.skipif(
    os.environ.get("MYCONTAINER_TEST_VAGRANT") != "1",
    reason="runs `vagrant up` with a real provider: set MYCONTAINER_TEST_VAGRANT=1",
)
def test_vagrant_lab_is_cgroup_v2():
    """Our Vagrantfile, driven through pytest-vagrant's Machine (docs/lab/pytest-vagrant.md)."""
    pytest_vagrant = pytest.importorskip(
        "pytest_vagrant", reason="pytest-vagrant is not installed: pip install pytest-vagrant"
    )
    machine = pytest_vagrant.Machine(
        box=os.environ.get("MYCONTAINER_BOX", "bento/ubuntu-24.04"),
        name="mycontainer-lab",
        version=None,
        slug="mycontainer-lab",
        cwd=str(REPO),  # our Vagrantfile, not one from_box() would write
        shell=pytest_vagrant.Shell(),
        ssh_factory=pytest_vagrant.SSH,
    )
    if not machine.status.running:
        machine.up()
    with machine.ssh() as ssh:
        assert ssh.run("stat -fc %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
        assert "memory" in ssh.run("cat /sys/fs/cgroup/cgroup.controllers").stdout


@pytest.mark.skipif(IN_VM, reason="the lab VM has no network for apt and PyPI: run it on the host")
@pytest.mark.skipif(
    os.environ.get("MYCONTAINER_TEST_PROVISION") != "1",
    reason="debootstraps Debian 12 and provisions it from apt and PyPI (about a minute, "
    "root, network): set MYCONTAINER_TEST_PROVISION=1",
)
def test_provision_script_works_on_bare_debian_12():
    if os.geteuid() != 0:
        pytest.skip("needs root for debootstrap and chroot: run it with sudo")
    result = subprocess.run(
        [sys.executable, "-m", "lab.provision_check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=20 * 60,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
