"""Tests of the VM lab: the Vagrantfile, the provisioning script, the QEMU runner.

Where each runs:
- host, always: Vagrantfile validation, script syntax, the runner's pure parts;
- inside the lab VM only (MYCONTAINER_IN_VM=1): the guest really is cgroup v2;
- host, opt-in: MYCONTAINER_TEST_QEMU=1 boots a VM (minutes on a cold cache),
  MYCONTAINER_TEST_VAGRANT=1 drives a real `vagrant up` through pytest-vagrant
  (lab/vagrant_check.py runs it in CI, on the lab's own box).
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lab import vm

REPO = Path(__file__).resolve().parents[1]
IN_VM = os.environ.get("MYCONTAINER_IN_VM") == "1"


def _vagrant(args, tmp_path, **env):
    # Vagrant's state stays out of the work tree and out of this user's ~/.vagrant.d.
    env = {
        **os.environ,
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot"),
        "VAGRANT_HOME": str(tmp_path / "home"),
        "VAGRANT_NO_COLOR": "1",
        **env,
    }
    return subprocess.run(
        ["vagrant", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "provider", ["libvirt", "virtualbox", "vmware_desktop", "parallels", "qemu"]
)
def test_vagrantfile_validates_per_provider(provider, tmp_path):
    """`vagrant validate` accepts the Vagrantfile for each provider it names, with the default
    box and an override. A provider whose plugin or hypervisor is missing here is skipped,
    saying so (docs/lab/setup.md lists which providers were run end to end)."""
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed here (apt-get install vagrant to run this)")
    for box in ("bento/ubuntu-24.04", "debian/bookworm64"):
        result = _vagrant(
            ["validate"], tmp_path, MYCONTAINER_BOX=box, VAGRANT_DEFAULT_PROVIDER=provider
        )
        output = result.stdout + result.stderr
        if "could not be found, but was requested" in output:
            pytest.skip(f"the {provider} provider's plugin is not installed here")
        if "could not detect VirtualBox" in output:
            pytest.skip("VirtualBox is not installed here: validated without its provider")
        assert result.returncode == 0, output
        assert "validated successfully" in result.stdout


def test_vagrantfile_validates_without_providers(tmp_path):
    """What no provider's absence can hide: the Vagrantfile's own settings."""
    if shutil.which("vagrant") is None:
        pytest.skip("vagrant is not installed here (apt-get install vagrant to run this)")
    result = _vagrant(["validate", "--ignore-provider"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validated successfully" in result.stdout


def test_vagrantfile_provisions_with_our_script():
    text = (REPO / "Vagrantfile").read_text()
    assert 'path: "lab/provision.sh"' in text
    assert 'ENV.fetch("MYCONTAINER_BOX", "bento/ubuntu-24.04")' in text


def test_an_rsynced_project_keeps_what_the_vm_made(tmp_path):
    """With the libvirt and qemu providers, /vagrant is an rsync'd copy, synced again on
    every save under `vagrant rsync-auto`, with Vagrant's default rsync arguments (its
    rsync helper: --archive --delete...): what the VM made there and the host has not is
    deleted, unless excluded. The checker's hint counts are such a file: without the
    exclusion, each save started every hint over at 1 of 3."""
    if shutil.which("rsync") is None:
        pytest.skip("rsync is not installed here (apt-get install rsync to run this)")
    text = (REPO / "Vagrantfile").read_text()
    assert text.count("rsync__exclude: RSYNC_EXCLUDE") == text.count("rsync__exclude:") == 2
    listed = re.search(r"^RSYNC_EXCLUDE = \[([^]]*)\]", text, re.M)
    excludes = [".vagrant/", *re.findall(r'"([^"]+)"', listed.group(1))]
    host, guest = tmp_path / "host", tmp_path / "guest"
    for tree in (host, guest):
        (tree / "workshop/checks").mkdir(parents=True)
        (tree / "workshop/step1_uts.py").write_text("# the learner's, edited on the host\n")
    made_in_vm = ["workshop/checks/.tries.json", ".venv/bin/python", "site/index.html"]
    for name in [*made_in_vm, "stray.txt"]:
        (guest / name).parent.mkdir(parents=True, exist_ok=True)
        (guest / name).write_text("the VM's\n")
    args = ["--verbose", "--archive", "--delete", "-z", "--copy-links"]
    exclude = [arg for pattern in excludes for arg in ("--exclude", pattern)]
    subprocess.run(
        ["rsync", *args, *exclude, f"{host}/", str(guest)], check=True, capture_output=True
    )
    assert not (guest / "stray.txt").exists()  # the --delete that the exclusions stop
    assert [name for name in made_in_vm if not (guest / name).exists()] == []
    assert (guest / "workshop/step1_uts.py").read_text() == "# the learner's, edited on the host\n"


@pytest.mark.parametrize("script", ["lab/provision.sh", "lab/guest/init.sh"])
def test_shell_scripts_parse(script):
    """bash -n: a syntax error would only show up on a user's first `vagrant up`."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed here (apt-get install bash to run this)")
    result = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_lab_box_carries_every_package_the_provisioning_installs():
    """The box provisions offline only if it has each apt package setup.sh and
    provision.sh would install: its list is read from both scripts."""
    from lab import box

    packages = set(box.lab_packages())
    for script, pattern in (
        ("setup.sh", r'^PACKAGES="([^"]*)"'),
        ("lab/provision.sh", r"^packages=\(([^)]*)\)"),
    ):
        listed = re.search(pattern, (REPO / script).read_text(), re.M | re.S)
        assert listed, f"{script}: its package list moved; lab/box.py reads it from there"
        assert set(listed.group(1).split()) <= packages, script


def test_lab_box_vagrantfile_is_valid_ruby(tmp_path):
    """The box's own Vagrantfile (libvirt settings, TCG fallback) parses: a syntax error
    would only show at a learner's `vagrant up`."""
    if shutil.which("ruby") is None:
        pytest.skip("ruby is not installed here (apt-get install vagrant brings it)")
    from lab import box

    (tmp_path / "Vagrantfile").write_text(box.BOX_VAGRANTFILE)
    result = subprocess.run(
        ["ruby", "-c", str(tmp_path / "Vagrantfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def workshop_commands() -> set[str]:
    """The commands the workshop's checkers look up before running them (shutil.which)."""
    found = set()
    for path in (REPO / "workshop/checks").glob("*.py"):
        found |= set(re.findall(r'shutil\.which\("([^"]+)"\)', path.read_text()))
    return found


def test_the_lab_machines_have_what_the_workshop_checkers_run():
    """A checker needs strace (step 1's exercise 3): each such command is in provision.sh's
    packages (the learners' VM, and so the lab's box), in the QEMU image's (CI's VM stage
    runs the checkers' tests), and among what lab.provision_check looks for. (Each command's
    Debian package has its name.)"""
    from lab import box, image, provision_check

    commands = workshop_commands()
    assert commands, 'no shutil.which("...") in workshop/checks: how do checkers look now?'
    provision = (REPO / "lab/provision.sh").read_text()
    provisioned = re.search(r"^packages=\(([^)]*)\)", provision, re.M).group(1).split()
    for command in sorted(commands):
        assert command in provisioned, f"lab/provision.sh does not install {command}"
        assert command in box.lab_packages(), f"lab/box.py's box has no {command}"
        assert command in image.PACKAGES, f"lab/image.py's QEMU image has no {command}"
        assert command in provision_check.COMMANDS, f"lab.provision_check skips {command}"


@pytest.mark.privileged
def test_provision_check_finds_the_commands_a_root_shell_finds():
    """lab.provision_check's last look: `command -v` in a root shell of the chroot, with
    root's PATH; here, the chroot is this machine's own /."""
    from lab import provision_check

    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    expected = [c for c in provision_check.COMMANDS if shutil.which(c, path=path) is None]
    assert provision_check.missing_commands(Path("/"), {"PATH": path}) == expected


@pytest.mark.privileged
def test_vagrant_check_copies_a_clone_its_user_cannot_read(monkeypatch):
    """CI may clone into root's home: Vagrant, run as nobody, then works on a readable copy
    (without .git and .venv); a readable clone is used as it is."""
    from lab import image, vagrant_check

    base = Path(tempfile.mkdtemp(prefix="lab-test-", dir="/var/tmp"))  # tmp_path is 0700
    try:
        base.chmod(0o755)
        private = base / "root-home"
        clone = private / "clone"
        (clone / ".git").mkdir(parents=True)
        (clone / ".venv").mkdir()
        (clone / "Vagrantfile").write_text("# ours\n")
        work = base / "work"
        work.mkdir()
        monkeypatch.setattr(image, "REPO", clone)
        private.chmod(0o755)
        assert vagrant_check.project_for_user(work) == clone
        private.chmod(0o700)
        copy = vagrant_check.project_for_user(work)
        assert copy.parent == work
        assert sorted(p.name for p in copy.iterdir()) == ["Vagrantfile"]
    finally:
        shutil.rmtree(base)


@pytest.mark.privileged
def test_provision_installs_without_initramfs_rebuild_and_times_its_parts(tmp_path):
    """While provision.sh's apt-get install runs, update-initramfs is switched off (a rebuild
    took 11 minutes under TCG), and switched back on after; each part's time is printed.

    apt-get and dpkg-query are stand-ins on PATH that record what the real ones would see:
    the real ones would install packages on this machine. /etc is an overlay in a mount
    namespace of the test's own, so the initramfs-tools config it writes never reaches it.
    """
    fake = tmp_path / "bin"
    fake.mkdir()
    seen = tmp_path / "seen"
    (fake / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")  # every package missing
    (fake / "apt-get").write_text(
        "#!/bin/sh\n"
        '[ "$1" = install ] || [ "$2" = install ] || [ "$3" = install ] || exit 0\n'
        f"grep ^update_initramfs= /etc/initramfs-tools/update-initramfs.conf >> {seen}\n"
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text("")
    (project / "setup.sh").write_text("echo setup.sh ran\n")
    for path in (fake / "dpkg-query", fake / "apt-get"):
        path.chmod(0o755)
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    script = f"""
set -e
mount -t overlay lab-etc -o lowerdir=/etc,upperdir={upper},workdir={work} /etc
mkdir -p /etc/initramfs-tools
echo update_initramfs=yes > /etc/initramfs-tools/update-initramfs.conf
PATH={fake}:$PATH bash {REPO}/lab/provision.sh {project}
cat /etc/initramfs-tools/update-initramfs.conf
"""
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert seen.read_text() == "update_initramfs=no\n"  # off during the install
    assert result.stdout.endswith("update_initramfs=yes\n")  # and on again after
    assert "setup.sh ran" in result.stdout
    for part in ("1. packages", "2. venv, project, rootfs", "3. commands on PATH"):
        assert re.search(rf"^provision: {re.escape(part)}: \d+ s$", result.stdout, re.M), part


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


@pytest.mark.skipif(not IN_VM, reason="checks the lab VM itself: run via python3 -m lab.qemu")
def test_lab_vm_has_what_the_workshop_checkers_run():
    missing = [c for c in sorted(workshop_commands()) if shutil.which(c) is None]
    assert not missing, f"the lab VM has no {' '.join(missing)}: lab/image.py's PACKAGES"


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


class _StreamingShell:
    """pytest-vagrant's Shell, but the output of `vagrant up` (provisioning, with its
    per-part times) reaches the log as it comes, and a failure carries it."""

    def run(self, cmd, cwd):
        proc = subprocess.Popen(
            cmd, shell=True, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if cmd.startswith("vagrant up") and "Progress:" not in line:
                print(line, end="", flush=True)
        if proc.wait() != 0:
            raise AssertionError(f"{cmd} exited with {proc.returncode}:\n{''.join(lines[-60:])}")
        return "".join(lines)


@pytest.mark.skipif(IN_VM, reason="no VM inside the lab VM: run it on the host")
@pytest.mark.skipif(
    os.environ.get("MYCONTAINER_TEST_VAGRANT") != "1",
    reason="runs `vagrant up` with a real provider (minutes): set MYCONTAINER_TEST_VAGRANT=1",
)
def test_vagrant_lab_provisions_and_passes(monkeypatch):
    """Our Vagrantfile, driven through pytest-vagrant's Machine (docs/lab/pytest-vagrant.md):
    `vagrant up` provisions green, the guest is what a learner's systemd machine is, and the
    suite passes inside (`sudo invoke test`) and from here (`invoke test --vm`).

    MYCONTAINER_VAGRANT_TESTS picks the suite's files (default: all of it).
    lab/vagrant_check.py runs this on a host without systemd, as CI does.
    """
    if os.geteuid() == 0:
        pytest.skip(
            "run it as the user who runs vagrant: as root, this session moves into a network "
            "namespace of its own (conftest.py), where the VM cannot be reached"
        )
    pytest_vagrant = pytest.importorskip(
        "pytest_vagrant", reason="pytest-vagrant is not installed: pip install pytest-vagrant"
    )
    tests = os.environ.get("MYCONTAINER_VAGRANT_TESTS", "").split() or ["tests"]
    machine = pytest_vagrant.Machine(
        box=os.environ.get("MYCONTAINER_BOX", "bento/ubuntu-24.04"),
        name="mycontainer-lab",
        version=None,
        slug="mycontainer-lab",
        cwd=str(REPO),  # our Vagrantfile, not one from_box() would write
        shell=_StreamingShell(),
        ssh_factory=pytest_vagrant.SSH,
    )
    started = time.monotonic()
    if not machine.status.running:
        machine.up()
    print(f"lab: vagrant up took {time.monotonic() - started:.0f} s")
    with machine.ssh() as ssh:
        assert ssh.run("ps -o comm= -p 1").stdout.strip() == "systemd"
        assert ssh.run("findmnt -no PROPAGATION /").stdout.strip() == "shared"
        assert ssh.run("stat -fc %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
        assert "memory" in ssh.run("cat /sys/fs/cgroup/cgroup.controllers").stdout
        if os.environ.get("MYCONTAINER_VAGRANT_OFFLINE") == "1":
            # The instructor's promise: it provisioned with no way out (lab/vagrant_check.py).
            probe = "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 443), 5)'"
            assert ssh.run(f"{probe} 2>/dev/null || echo offline").stdout.strip() == "offline"
        assert ssh.run("command -v invoke mycontainer").stdout.split() == [
            "/usr/local/bin/invoke",
            "/usr/local/bin/mycontainer",
        ]
    # The workshop's switch goes along into the VM, through vagrant ssh and sudo, as `invoke
    # step` and `invoke check` run it from a macOS host (tasks.vm_command).
    from tasks import vm_command

    monkeypatch.setenv("WORKSHOP_SOLUTION", "3")
    switch = vm_command("printenv WORKSHOP_SOLUTION")
    solved = subprocess.run(
        ["vagrant", "ssh", "-c", switch], cwd=REPO, capture_output=True, text=True
    )
    assert solved.stdout.strip() == "3", solved.stdout + solved.stderr
    with machine.ssh() as ssh:
        started = time.monotonic()
        try:
            result = ssh.run(f"cd /vagrant && sudo invoke test -- -q {shlex.join(tests)}")
        except pytest_vagrant.RunResultError as error:
            pytest.fail(f"sudo invoke test failed in the VM:\n{error.runresult.stdout[-6000:]}")
        print(result.stdout[-3000:])
        print(f"lab: sudo invoke test in the VM took {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    invoke = [sys.executable, "-m", "invoke", "test", "--vm", "--", "-q", *tests]
    host = subprocess.run(invoke, cwd=REPO, capture_output=True, text=True)
    assert host.returncode == 0, (host.stdout + host.stderr)[-6000:]
    print(host.stdout[-1500:])
    print(f"lab: invoke test --vm took {time.monotonic() - started:.0f} s")


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
