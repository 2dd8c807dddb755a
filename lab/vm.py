"""Boot one throw-away QEMU VM, run one command in it, return its exit code.

Why a bespoke runner instead of libvirt or Vagrant: CI and Linux hosts with a
cgroup v1 hybrid need a *pure cgroup v2* kernel for a few minutes, headless,
with no network device, no daemon and nothing left behind. QEMU alone does
that: ``-kernel``/``-initrd`` skip any bootloader, ``snapshot=on`` throws away
every write to the root filesystem image, and the repository is shared into
the guest over virtio-9p so the tests run against the working tree as it is.

How one run talks to the guest:

- The command, its environment and the shares to mount go into a tiny cpio
  archive appended to the cached initramfs (the kernel command line is
  limited to 2048 bytes, a JSON file is not).
- Stage 1 (``lab/guest/init.sh``, busybox) loads the virtio and ext4 modules
  and switches to the root filesystem image; stage 2 (``lab/guest/init.py``)
  mounts cgroup2 and friends, runs the command and powers the VM off.
- The command's stdout/stderr is a virtio console (``hvc0``) wired to QEMU's
  stdout, which we copy to ours as it arrives. Its exit code follows on the
  same channel as a marker line with a per-run random nonce, so nothing the
  command prints can forge it. Kernel messages go to the serial port and into
  a log file that is shown only when something goes wrong.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

GUEST_DIR = Path(__file__).resolve().parent / "guest"

#: Exit codes of the runner itself, chosen like timeout(1) and podman do.
EXIT_TIMEOUT = 124
EXIT_RUNNER_FAILED = 125


@dataclass(frozen=True)
class Arch:
    """What differs between the architectures we can boot."""

    name: str  # our name, used on the command line and in cache paths
    debian: str  # dpkg architecture
    machine: str  # what platform.machine() says on such a host
    qemu: str  # emulator binary
    qemu_package: str  # Debian package that ships it
    console: str  # serial console device of the guest kernel
    machine_args: tuple[str, ...]
    tcg_cpu: str = "max"  # the CPU model when emulating


ARCHES = {
    # q35 boots reliably with TCG; -M microvm hung in 4 of 6 boots unless the
    # kernel was told the TSC frequency, and saves well under a second.
    "x86_64": Arch(
        name="x86_64",
        debian="amd64",
        machine="x86_64",
        qemu="qemu-system-x86_64",
        qemu_package="qemu-system-x86",
        console="ttyS0",
        machine_args=("-M", "q35"),
    ),
    "arm64": Arch(
        name="arm64",
        debian="arm64",
        machine="aarch64",
        qemu="qemu-system-aarch64",
        qemu_package="qemu-system-arm",
        console="ttyAMA0",
        machine_args=("-M", "virt"),
        # Emulating the architected pointer authentication (QARMA) costs
        # a lot of TCG time; the implementation-defined one is much cheaper.
        tcg_cpu="max,pauth-impdef=on",
    ),
}


@dataclass(frozen=True)
class Image:
    """A built lab image: a directory with a kernel, an initramfs and a disk."""

    directory: Path

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd-base.cpio"

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs.ext4"


@dataclass(frozen=True)
class Share:
    """A host directory mounted into the guest over virtio-9p."""

    tag: str
    host: Path
    guest: str
    readonly: bool = False


@dataclass
class VMConfig:
    """Everything one boot needs besides the image."""

    argv: list[str]
    cwd: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    shares: list[Share] = field(default_factory=list)
    cpus: int = 2
    memory_mb: int = 2048
    timeout: float = 20 * 60
    writable: bool = False  # True only while building: writes reach the image
    console_log: Path | None = None  # keep the kernel log here


def host_arch() -> Arch | None:
    """The Arch this machine is, if we have a recipe for it."""
    return next((a for a in ARCHES.values() if a.machine == platform.machine()), None)


def accel_args(arch: Arch) -> list[str]:
    """KVM only where it can really boot a stock kernel, TCG otherwise.

    Some clouds expose a paravirtual /dev/kvm without VT-x/AMD-V in the vCPU;
    QEMU aborts on it (MSR 0x10a) or the guest hangs. The cpu flags tell the
    two apart: real nested virtualisation shows vmx or svm in /proc/cpuinfo.
    """
    if arch == host_arch() and os.access("/dev/kvm", os.R_OK | os.W_OK):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        if " vmx" in flags or " svm" in flags or arch.name == "arm64":
            return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", arch.tcg_cpu]


def newc_archive(entries: list[tuple[str, int, bytes | None]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks as initramfs.

    ``entries`` are (path, mode, data); data None makes a directory. Parent
    directories must come before their contents: the kernel creates none.
    Written here rather than by cpio(1) so a run needs no extra host tool.
    """

    def pad(n: int) -> bytes:
        return b"\0" * (-n % 4)

    out = bytearray()
    for ino, (path, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        body = data or b""
        kind = 0o040000 if data is None else 0o100000
        if path == "TRAILER!!!":
            kind, ino = 0, 0
        name = path.lstrip("/").encode() + b"\0"
        fields = (ino, kind | mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(name), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        out += header + name + pad(len(header) + len(name)) + body + pad(len(body))
    return bytes(out)


def run_archive(config: VMConfig, marker: str) -> bytes:
    """The per-run cpio: both init stages and the command as JSON."""
    run = {
        "argv": config.argv,
        "cwd": config.cwd,
        "env": config.env,
        "shares": [{"tag": s.tag, "guest": s.guest, "readonly": s.readonly} for s in config.shares],
        "marker": marker,
    }
    return newc_archive(
        [
            ("init", 0o755, (GUEST_DIR / "init.sh").read_bytes()),
            ("lab", 0o755, None),
            ("lab/init.py", 0o644, (GUEST_DIR / "init.py").read_bytes()),
            ("lab/run.json", 0o644, json.dumps(run).encode()),
        ]
    )


def qemu_command(arch: Arch, image: Image, config: VMConfig, initrd: Path, log: Path) -> list[str]:
    """The QEMU command line: no display, no network, no default devices."""
    append = f"console={arch.console} panic=-1 loglevel=4 cgroup_no_v1=all"
    drive = f"if=none,id=root,format=raw,file={image.rootfs}"
    if not config.writable:
        drive += ",snapshot=on"
    cmd = [
        arch.qemu,
        *arch.machine_args,
        *accel_args(arch),
        "-smp", str(config.cpus),
        "-m", str(config.memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-monitor", "none",
        "-no-reboot",
        "-nic", "none",
        "-kernel", str(image.kernel),
        "-initrd", str(initrd),
        "-append", append,
        "-serial", f"file:{log}",
        "-drive", drive,
        "-device", "virtio-blk-pci,drive=root",
        "-device", "virtio-serial-pci",
        "-chardev", "stdio,id=out,signal=off",
        "-device", "virtconsole,chardev=out",
    ]  # fmt: skip
    for i, share in enumerate(config.shares):
        fsdev = f"local,id=fs{i},path={share.host},security_model=none"
        if share.readonly:
            fsdev += ",readonly=on"
        cmd += ["-fsdev", fsdev, "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={share.tag}"]
    return cmd


class _Relay:
    """Copies guest output to ``out`` and picks the exit marker out of it.

    The marker may arrive split over two reads, so up to its length minus one
    byte is held back until we know whether it is the start of the marker.
    """

    def __init__(self, prefix: bytes, out: BinaryIO):
        self.prefix = prefix
        self.out = out
        self.pending = b""
        self.exit_code: int | None = None
        self.last_byte = b"\n"

    def feed(self, chunk: bytes) -> None:
        if self.exit_code is not None:
            return  # nothing after the marker is the command's output
        data = self.pending + chunk
        at = data.find(self.prefix)
        if at >= 0:
            end = data.find(b"@@", at + len(self.prefix))
            if end < 0:
                self.pending = data
                return
            self._emit(data[:at])
            self.exit_code = int(data[at + len(self.prefix) : end])
            if self.last_byte != b"\n":
                self._emit(b"\n")
            self.pending = b""
            return
        keep = self._partial_prefix(data)
        self._emit(data[: len(data) - keep])
        self.pending = data[len(data) - keep :]

    def flush(self) -> None:
        self._emit(self.pending)
        self.pending = b""

    def _partial_prefix(self, data: bytes) -> int:
        for n in range(min(len(self.prefix) - 1, len(data)), 0, -1):
            if self.prefix.startswith(data[-n:]):
                return n
        return 0

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.out.flush()
            self.last_byte = data[-1:]


def boot(arch: Arch, image: Image, config: VMConfig, out: BinaryIO | None = None) -> int:
    """Boot ``image``, run ``config.argv`` inside, return its exit code.

    Returns 124 when the timeout killed the VM and 125 when the VM ended
    without reporting an exit code; both print the kernel log's tail.
    QEMU is killed and the temporary directory removed on every way out,
    including KeyboardInterrupt and SystemExit from a SIGTERM handler.
    """
    out = out or sys.stdout.buffer
    if shutil.which(arch.qemu) is None:
        raise RuntimeError(f"{arch.qemu} not found: apt-get install {arch.qemu_package}")
    nonce = secrets.token_hex(8)
    prefix = f"\n@@mycontainer-lab:{nonce}:exit=".encode()
    with tempfile.TemporaryDirectory(prefix="mycontainer-lab-") as tmp:
        tmpdir = Path(tmp)
        initrd = tmpdir / "initrd"
        initrd.write_bytes(image.initrd.read_bytes() + run_archive(config, nonce))
        log = config.console_log or tmpdir / "console.log"
        errors = tmpdir / "qemu.stderr"
        cmd = qemu_command(arch, image, config, initrd, log)
        # snapshot=on writes its overlay to $TMPDIR: keep it in our temp dir.
        env = {**os.environ, "TMPDIR": tmp}
        with open(errors, "wb") as stderr:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, env=env
            )
        relay = _Relay(prefix, out)
        try:
            reason = _pump(proc, relay, time.monotonic() + config.timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        relay.flush()
        if relay.exit_code is not None:
            return relay.exit_code
        reason = reason or f"QEMU exited ({proc.returncode}) before the command reported its exit"
        _report(reason, log, errors)
        return EXIT_TIMEOUT if reason and reason.startswith("timeout") else EXIT_RUNNER_FAILED


def _pump(proc: subprocess.Popen, relay: _Relay, deadline: float) -> str | None:
    """Relay output until QEMU exits; returns why we gave up, if we did."""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout: the VM ran out of time and was killed"
            if not sel.select(timeout=min(left, 1.0)):
                if relay.exit_code is not None and proc.poll() is not None:
                    return None
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return None
            relay.feed(chunk)
            if relay.exit_code is not None:
                # The guest is powering off; give it a moment, not forever.
                deadline = min(deadline, time.monotonic() + 30)


def _report(reason: str, log: Path, errors: Path) -> None:
    print(f"lab: {reason}", file=sys.stderr)
    for title, path in (("QEMU", errors), ("guest kernel log", log)):
        try:
            lines = path.read_text(errors="replace").splitlines()[-40:]
        except OSError:
            continue
        if lines:
            print(f"lab: --- last lines of the {title} ---", file=sys.stderr)
            print("\n".join(lines), file=sys.stderr)
