"""Build the lab's own Vagrant box for the libvirt provider: Debian 12 with systemd.

    sudo python3 -m lab.box [--output FILE] [--rebuild]

The box is what a learner's machine looks like -- systemd as PID 1, so ``/`` is a
shared mount and /sys/fs/cgroup pure cgroup v2 -- and it carries everything the
lab's provisioning needs, so ``vagrant up`` with it works without any network:

- Debian bookworm (``debootstrap --variant=minbase``) with systemd, udev,
  systemd-networkd (DHCP on every ethernet) and systemd-resolved, openssh-server,
  sudo, and a ``vagrant`` user (password ``vagrant``, passwordless sudo) whose
  ``authorized_keys`` holds Vagrant's insecure public key, as Vagrant's box format
  documentation requires. ``vagrant up`` replaces that key with a fresh one.
- Every apt package lab/provision.sh and setup.sh install, pre-installed: the
  provisioning finds them and runs no apt, so no kernel or initramfs hook fires.
- A wheelhouse of the project's Python dependencies (``.[dev,fast]`` and the build
  backend) at /opt/mycontainer-lab/wheels, with /etc/pip.conf pointing pip there
  and nowhere else: setup.sh's ``pip install -e`` works in a room without internet.
- Those dependencies already installed in /vagrant/.venv, where setup.sh makes its
  venv: creating it and installing 40 wheels took minutes of an emulated CPU. The
  rsync'd folder excludes .venv/ (the project's Vagrantfile), so the copy stays; a
  provider that mounts /vagrant instead hides it, and setup.sh makes its own.
- Debian's generic kernel, booted directly (kernel, initrd and command line in the
  box's own Vagrantfile, next to box.img): no boot loader, no partition table.
  Where KVM is unusable (no vmx/svm in /proc/cpuinfo, as on our CI machines) that
  Vagrantfile asks libvirt for plain QEMU emulation (TCG) with a Nehalem CPU and
  tells the guest kernel the TSC frequency, which it cannot calibrate under TCG.

The box is cached outside the clone, in /var/cache/mycontainer-lab/box-<recipe
hash>/mycontainer-lab.box, keyed like the QEMU runner's image by this file, the
package lists, the requirements and the mirror. Needs root (debootstrap, chroot).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from lab import exit_on_sigterm, image

NAME = "mycontainer-lab"
DISK_GB = 20
WHEELS = "/opt/mycontainer-lab/wheels"

# What makes it a Vagrant box with systemd (debootstrap --include).
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "sudo",
    "linux-image-amd64",
    "rsync",  # vagrant-libvirt syncs /vagrant with rsync
    "less",
    "ca-certificates",
)


def lab_packages(repo: Path = image.REPO) -> list[str]:
    """The apt packages setup.sh and lab/provision.sh install, read from the scripts.

    Read, not copied: a package added to either script lands in the box (and changes
    its recipe hash) without an edit here.
    """
    found: list[str] = []
    setup = (repo / "setup.sh").read_text()
    match = re.search(r'^PACKAGES="([^"]*)"', setup, re.M)
    if match:
        found += match.group(1).split()
    provision = (repo / "lab/provision.sh").read_text()
    match = re.search(r"^packages=\(\n?(.*?)\)", provision, re.M | re.S)
    if match:
        found += match.group(1).split()
    return sorted(set(found))


def python_requirements(repo: Path = image.REPO) -> list[str]:
    """What setup.sh's ``pip install -e '.[dev,fast]'`` needs: the build backend too,
    since pip builds the editable project in an isolated environment."""
    import tomllib

    project = tomllib.loads((repo / "pyproject.toml").read_text())
    reqs = list(project.get("build-system", {}).get("requires", []))
    reqs += project["project"].get("dependencies", [])
    for extra in ("dev", "fast"):
        reqs += project["project"].get("optional-dependencies", {}).get(extra, [])
    return sorted(dict.fromkeys(reqs))


def recipe() -> dict:
    return {
        "suite": image.SUITE,
        "mirror": image.mirror(),
        "base": list(BASE_PACKAGES),
        "packages": lab_packages(),
        "requirements": python_requirements(),
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }


def box_path() -> Path:
    digest = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()
    return image.CACHE / f"box-{digest[:16]}" / f"{NAME}.box"


def ensure_box(rebuild: bool = False) -> Path:
    """The cached box file for the current recipe, built first if missing."""
    target = box_path()
    if target.exists() and not rebuild:
        return target
    if os.geteuid() != 0:
        raise RuntimeError(f"no box at {target}; building one needs root: sudo python3 -m lab.box")
    image.CACHE.mkdir(parents=True, exist_ok=True)
    with open(image.CACHE / ".box-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; others wait and reuse
        if target.exists() and not rebuild:
            return target
        work = Path(tempfile.mkdtemp(prefix=".box-build-", dir=image.CACHE))
        try:
            build(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            (work / f"{NAME}.box").rename(target)
            (work / "recipe.json").rename(target.parent / "recipe.json")
        finally:
            image._remove(work)
        for old in image.CACHE.glob("box-*"):
            if old != target.parent:
                image.say(f"removing old box {old}")
                image._remove(old)
    return target


def build(work: Path) -> None:
    """Build ``work/mycontainer-lab.box``: the steps, timed, in the order they run."""
    started = time.monotonic()
    timings: dict[str, float] = {}

    def step(name: str, func, *args):
        t0 = time.monotonic()
        image.say(f"box: {name} ...")
        result = func(*args)
        timings[name] = round(time.monotonic() - t0, 1)
        return result

    missing = [p for c, p in (("debootstrap", "debootstrap"), ("qemu-img", "qemu-utils"),
               ("mkfs.ext4", "e2fsprogs")) if shutil.which(c) is None]  # fmt: skip
    if missing:
        image.apt_install(missing)
    rootfs = work / "rootfs"
    step("download wheels", download_wheels, work / "wheels")
    step("debootstrap", debootstrap, rootfs)
    step("lab packages", in_chroot, rootfs, install_script(lab_packages()))
    step("configure", configure, rootfs, work / "wheels")
    step("disk image", make_disk, rootfs, work)
    step("package", package, work)
    timings["total"] = round(time.monotonic() - started, 1)
    info = {**recipe(), "timings_s": timings, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    (work / "recipe.json").write_text(json.dumps(info, indent=2) + "\n")
    image.say(f"box built in {timings['total']:.0f} s: {json.dumps(timings)}")


# -- steps ------------------------------------------------------------------


def download_wheels(dest: Path) -> None:
    """pip download for bookworm's Python 3.11 on x86_64: the box's wheelhouse."""
    dest.mkdir()
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)]
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--dest", str(dest), "--only-binary=:all:", "--implementation", "cp",
        "--python-version", image.GUEST_PYTHON, "--abi", "cp311",
        *[arg for p in platforms for arg in ("--platform", p)],
        *python_requirements(),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        raise RuntimeError("pip download of the box's wheels failed")


def debootstrap(rootfs: Path) -> None:
    debs = image.CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    cmd = [
        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        f"--cache-dir={debs}", image.SUITE, str(rootfs), image.mirror(),
    ]  # fmt: skip
    log = rootfs.parent / "debootstrap.log"
    with open(log, "w") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise RuntimeError(f"debootstrap failed with exit code {result.returncode}")


def install_script(packages: list[str]) -> str:
    """apt-get install in the chroot; policy-rc.d keeps every service from starting."""
    return f"""
set -e
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends {" ".join(packages)}
rm /usr/sbin/policy-rc.d
"""


def in_chroot(rootfs: Path, script: str) -> None:
    """Run ``script`` with sh in the chroot, in a mount namespace of its own: the /proc
    and /sys it mounts there go away with it, whatever happens."""
    shutil.copy2("/etc/resolv.conf", rootfs / "etc/resolv.conf")
    wrapper = (
        'mount --make-rprivate / && mount -t proc proc "$0/proc" && '
        'mount -t sysfs sysfs "$0/sys" && exec chroot "$0" sh -c "$1"'
    )
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
    subprocess.run(
        ["unshare", "--mount", "--fork", "sh", "-c", wrapper, str(rootfs), script],
        env=env, check=True,
    )  # fmt: skip


def configure(rootfs: Path, wheels: Path) -> None:
    """Users, network, ssh, fstab, the wheelhouse: what makes it a Vagrant box."""
    key = insecure_public_key()
    reqs = shlex.join(python_requirements())
    shutil.copytree(wheels, rootfs / WHEELS.lstrip("/"))
    (rootfs / "etc/pip.conf").write_text(
        f"# The lab's wheels, so that setup.sh works offline (docs/lab/instructors.md).\n"
        f"# To install other packages from PyPI: PIP_CONFIG_FILE=/dev/null pip install ...\n"
        f"[global]\nno-index = true\nfind-links = {WHEELS}\n"
    )
    (rootfs / "etc/hostname").write_text(f"{NAME}\n")
    (rootfs / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {NAME}\n")
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    (rootfs / "etc/systemd/network/80-dhcp.network").write_text(
        "[Match]\nType=ether\n\n[Network]\nDHCP=yes\n"
    )
    (rootfs / "etc/sudoers.d/vagrant").write_text("vagrant ALL=(ALL) NOPASSWD:ALL\n")
    os.chmod(rootfs / "etc/sudoers.d/vagrant", 0o440)
    # Host keys are made at each machine's first boot, not shared by every copy of the box.
    dropin = rootfs / "etc/systemd/system/ssh.service.d"
    dropin.mkdir(parents=True)
    (dropin / "host-keys.conf").write_text(
        "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\n"
        "ExecStartPre=/usr/sbin/sshd -t\n"
    )
    for old in (rootfs / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    (rootfs / "etc/ssh/sshd_config.d/vagrant.conf").write_text("UseDNS no\n")
    script = f"""
set -e
useradd --create-home --shell /bin/bash --groups sudo vagrant
echo vagrant:vagrant | chpasswd
install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
echo '{key}' > /home/vagrant/.ssh/authorized_keys
chown vagrant:vagrant /home/vagrant/.ssh/authorized_keys
chmod 600 /home/vagrant/.ssh/authorized_keys
systemctl enable systemd-networkd.service ssh.service
python3 -m venv /vagrant/.venv
/vagrant/.venv/bin/python -m pip install -q --disable-pip-version-check {reqs}
{install_script(["systemd-resolved"])}
ln -sf /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
apt-get clean
rm -rf /var/lib/apt/lists/*
: > /etc/machine-id
"""
    in_chroot(rootfs, script)


def insecure_public_key() -> str:
    """Vagrant's well-known insecure key, from the installed vagrant package."""
    found = sorted(Path("/usr/share").glob("**/vagrant-*/keys/vagrant.pub"))
    found += sorted(Path("/opt/vagrant").glob("embedded/gems/**/keys/vagrant.pub"))
    if not found:
        raise RuntimeError("Vagrant's insecure public key not found: apt-get install vagrant")
    return found[-1].read_text().strip()


def make_disk(rootfs: Path, work: Path) -> None:
    """ext4 straight on the disk (root=/dev/vda), filled by mkfs.ext4 -d, as qcow2."""
    boot = rootfs / "boot"
    shutil.copy2(sorted(boot.glob("vmlinuz-*"))[-1], work / "vmlinuz")
    shutil.copy2(sorted(boot.glob("initrd.img-*"))[-1], work / "initrd.img")
    raw = work / "disk.raw"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(raw), f"{DISK_GB}G"],
        check=True,
    )
    image._remove(rootfs)
    subprocess.run(
        ["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(work / "box.img")],
        check=True,
    )
    raw.unlink()


BOX_VAGRANTFILE = """\
# The mycontainer lab box's own settings (lab/box.py), merged under the project's Vagrantfile.
Vagrant.configure("2") do |config|
  config.vm.provider "libvirt" do |lv|
    here = File.dirname(__FILE__)
    lv.kernel = File.join(here, "vmlinuz")
    lv.initrd = File.join(here, "initrd.img")
    cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
    cpuinfo = File.read("/proc/cpuinfo") rescue ""
    if File.exist?("/dev/kvm") && cpuinfo =~ /\\b(vmx|svm)\\b/
      lv.driver = "kvm"
    else
      # No usable KVM: plain QEMU emulation. TCG has no host-passthrough CPU, and the
      # guest cannot calibrate the TSC under it: tell it the host's frequency.
      lv.driver = "qemu"
      lv.cpu_mode = "custom"
      lv.cpu_model = "Nehalem"
      mhz = cpuinfo[/^cpu MHz\\s*:\\s*([\\d.]+)/, 1]
      cmd_line += " tsc_early_khz=#{(mhz.to_f * 1000).round}" if mhz
    end
    lv.cmd_line = cmd_line
  end
end
"""


def package(work: Path) -> None:
    """A box is a tar of metadata.json, the box's Vagrantfile and the disk (+ kernel)."""
    (work / "metadata.json").write_text(
        json.dumps({"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GB}) + "\n"
    )
    (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    with tarfile.open(work / f"{NAME}.box", "w") as tar:
        for name in ("metadata.json", "Vagrantfile", "vmlinuz", "initrd.img", "box.img"):
            tar.add(work / name, arcname=name)
            (work / name).unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m lab.box",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rebuild", action="store_true", help="build even if one is cached")
    parser.add_argument("--output", help="also copy the box to this file (a USB stick)")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    try:
        path = ensure_box(rebuild=args.rebuild)
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"lab.box: {err}", file=sys.stderr)
        return 1
    if args.output:
        shutil.copyfile(path, args.output)
        path = Path(args.output)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
