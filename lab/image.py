"""Build and cache the lab image: Debian kernel, busybox initramfs, ext4 root.

The image is a ``debootstrap --variant=minbase`` Debian bookworm with the
packages the privileged tests need, Debian's *generic* kernel (the cloud
kernel has no 9p) with its modules in ``/lib/modules`` for modprobe, and a
venv at /opt/lab-venv holding the suite's Python dependencies.

Why it looks like this:

- The guest has no network (``-nic none``), so pip inside cannot reach PyPI:
  wheels are downloaded on the host for the guest's Python and architecture
  and installed with ``--no-index`` during a first boot of the image.
- Building takes a minute or more, so the result is cached outside the clone
  in ``/var/cache/mycontainer-lab/<arch>-<recipe hash>`` and CI runs on the
  same machine reuse it. The recipe hash covers this file, the package list,
  the requirement list and the mirror; change any and the next run rebuilds.
- The arm64 image is bootstrapped with ``--foreign`` on the x86 host and
  finished inside the emulated VM (see lab/guest/init.sh), so the host needs
  no qemu-user binfmt handlers registered.

Must run as root (debootstrap, file ownership in the image). Stdlib only.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lab import vm

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MYCONTAINER_LAB_CACHE", "/var/cache/mycontainer-lab"))
SUITE = "bookworm"
GUEST_PYTHON = "3.11"  # bookworm's python3; wheels are chosen for it
VENV = "/opt/lab-venv"

PACKAGES = (
    "python3",
    "python3-venv",
    "iproute2",
    "kmod",
    "util-linux",
    "procps",
    "busybox-static",
    "nftables",
    "iptables",
    "iputils-ping",
    "libcap2-bin",
    "xz-utils",  # rootfs.tar.xz images
    "umoci",  # the image tests build their images with it
    "strace",  # step 1's exercise 3 and its checker (tests/test_exercise_checks.py)
    # (not skopeo: its golang-github-containers-common fails to configure under debootstrap;
    # the docker-archive tests skip in the VM, saying so, and run on the host)
)

# Used when pyproject.toml is missing or unreadable (Python 3.10 has no tomllib).
DEFAULT_REQUIREMENTS = ("click", "urllib3", "pytest", "invoke")

# Dev extras that run on the host, never in the VM: installing them there
# cost a minute of the first boot under TCG for nothing.
HOST_ONLY_PREFIXES = ("ruff", "mkdocs", "pre-commit", "mypy")

# The modules stage 1 loads before it can mount the root disk; their
# dependencies come from modules.dep. ext4 needs crc32c but only as a softdep.
INITRD_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")

# Driver trees no VM of ours uses: about 250 MB of the 390 MB of modules.
PRUNE_MODULES = (
    "kernel/sound",
    "kernel/drivers/gpu",
    "kernel/drivers/media",
    "kernel/drivers/net/wireless",
    "kernel/drivers/net/ethernet",
    "kernel/drivers/infiniband",
    "kernel/drivers/usb",
    "kernel/drivers/iio",
    "kernel/drivers/staging",
    "kernel/drivers/hwmon",
    "kernel/drivers/bluetooth",
    "kernel/drivers/isdn",
    "kernel/drivers/mtd",
)

# Host command -> Debian package, installed with apt-get when missing.
HOST_TOOLS = {
    "debootstrap": "debootstrap",
    "mkfs.ext4": "e2fsprogs",
    "depmod": "kmod",
    "dpkg-deb": "dpkg",
}

# Runs inside the VM on the image's first boot. No pip inside the venv:
# ensurepip alone takes ~30 s under TCG, so Debian's pip wheel installs the
# downloaded wheels from the outside.
SETUP_SCRIPT = f"""
set -e
python3 -m venv --without-pip {VENV}
set -- /usr/share/python-wheels/pip-*.whl
{VENV}/bin/python "$1/pip" install --no-index --no-cache-dir --disable-pip-version-check \\
    --progress-bar off /run/lab/wheels/*.whl
{VENV}/bin/python "$1/pip" freeze --disable-pip-version-check > {VENV}/lab-freeze.txt
"""


def say(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


# -- inputs -----------------------------------------------------------------


def requirements(repo: Path = REPO) -> list[str]:
    """The suite's Python dependencies, as pyproject.toml declares them.

    [project] dependencies plus the ``dev`` extra minus the host-only tools, plus the
    defaults the in-VM suite cannot do without. Not the ``fast`` extra: without isal
    the runtime inflates layers with zlib, so the VM tests that path.
    """
    found: list[str] = []
    try:
        import tomllib

        project = tomllib.loads((repo / "pyproject.toml").read_text()).get("project", {})
        found += project.get("dependencies", [])
        extras = project.get("optional-dependencies", {})
        found += extras.get("dev", [])
    except (ImportError, OSError, ValueError) as err:
        say(f"pyproject.toml not used ({err}); using the default requirements")

    def name(requirement: str) -> str:
        return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()

    found = [r for r in found if not name(r).startswith(HOST_ONLY_PREFIXES)]
    names = {name(r) for r in found}
    found += [r for r in DEFAULT_REQUIREMENTS if r not in names]
    return sorted(dict.fromkeys(found))


def mirror() -> str:
    """The Debian mirror this host's apt uses: on CI it is the only one reachable."""
    override = os.environ.get("MYCONTAINER_LAB_MIRROR")
    if override:
        return override.rstrip("/")
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        # one-line style: deb URI SUITE COMPONENTS
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and SUITE in parts and "security" not in line:
                uri = next(p for p in parts[1:] if "://" in p)
                return uri.rstrip("/")
        # deb822 style: a stanza with URIs: and Suites:
        for stanza in text.split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if SUITE in fields.get("Suites", "").split() and "security" not in stanza:
                return fields.get("URIs", "").split()[0].rstrip("/")
    return "http://deb.debian.org/debian"


def recipe(arch: vm.Arch) -> dict:
    return {
        "arch": arch.name,
        "suite": SUITE,
        "mirror": mirror(),
        "packages": list(PACKAGES),
        "requirements": requirements(),
        "builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
    }


def image_dir(arch: vm.Arch) -> Path:
    digest = hashlib.sha256(json.dumps(recipe(arch), sort_keys=True).encode()).hexdigest()
    return CACHE / f"{arch.name}-{digest[:16]}"


# -- the entry point ----------------------------------------------------------


def ensure_image(arch: vm.Arch, rebuild: bool = False) -> vm.Image:
    """Return the cached image for ``arch``, building it first if needed."""
    target = image_dir(arch)
    if (target / "recipe.json").exists() and not rebuild:
        return vm.Image(target)
    if os.geteuid() != 0:
        raise RuntimeError(
            f"no lab image at {target}; building one needs root "
            f"(sudo python3 -m lab.qemu --arch {arch.name} --build-only)"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; others wait and reuse
        if (target / "recipe.json").exists() and not rebuild:
            return vm.Image(target)
        work = CACHE / f".build-{target.name}-{os.getpid()}"
        try:
            _remove(work)
            work.mkdir()
            build(arch, work)
            _remove(target)
            work.rename(target)
        finally:
            _remove(work)
        _prune_old(arch, keep=target)
    return vm.Image(target)


def build(arch: vm.Arch, work: Path) -> None:
    """Build an image into ``work``: the steps, timed, in the order they run."""
    started = time.monotonic()
    timings: dict[str, float] = {}

    def step(name: str, func, *args):
        t0 = time.monotonic()
        say(f"{name} ...")
        result = func(*args)
        timings[name] = round(time.monotonic() - t0, 1)
        return result

    ensure_host_tools(arch)
    reqs = requirements()
    wheels = step("download wheels", download_wheels, arch, reqs)
    rootfs = work / "rootfs"
    foreign = arch != vm.host_arch()
    step("debootstrap", debootstrap, arch, rootfs, foreign)
    kver = step("kernel", install_kernel, arch, rootfs, work)
    step("initramfs", write_initrd, arch, rootfs, kver, work / "initrd-base.cpio")
    step("ext4 image", make_ext4, rootfs, work / "rootfs.ext4")
    _remove(rootfs)
    image = vm.Image(work)
    config = vm.VMConfig(
        argv=["/bin/sh", "-c", SETUP_SCRIPT],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
        shares=[vm.Share("wheels", wheels, "/run/lab/wheels", readonly=True)],
        writable=True,
        timeout=60 * 60,
        console_log=work / "setup-console.log",
    )
    say("first boot: " + ("debootstrap second stage, " if foreign else "") + "venv and wheels")
    t0 = time.monotonic()
    code = vm.boot(arch, image, config, out=sys.stderr.buffer)
    timings["first boot"] = round(time.monotonic() - t0, 1)
    if code != 0:
        raise RuntimeError(f"the first boot of the new image failed with exit code {code}")
    timings["total"] = round(time.monotonic() - started, 1)
    info = {
        **recipe(arch),
        "kernel": kver,
        "wheels": sorted(p.name for p in wheels.glob("*.whl")),
        "timings_s": timings,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (work / "recipe.json").write_text(json.dumps(info, indent=2) + "\n")
    say(f"image built in {timings['total']:.0f} s: {json.dumps(timings)}")


# -- steps ------------------------------------------------------------------


def ensure_host_tools(arch: vm.Arch) -> None:
    """apt-get install whatever the build and the run need, if missing."""
    tools = {**HOST_TOOLS, arch.qemu: arch.qemu_package}
    missing = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        missing.append("python3-pip")
    if missing:
        apt_install(missing)


def apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise RuntimeError(f"missing {' '.join(packages)}: apt-get install them as root")
    say(f"apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


def download_wheels(arch: vm.Arch, reqs: list[str]) -> Path:
    """pip download the requirements as wheels for the guest's Python and arch.

    Cached by requirement list and arch, so a rebuild with unchanged inputs
    needs no PyPI; --rebuild of the image removes nothing here.
    """
    key = hashlib.sha256(json.dumps([arch.name, GUEST_PYTHON, reqs]).encode()).hexdigest()
    dest = CACHE / "wheels" / f"{arch.name}-{key[:16]}"
    if (dest / ".complete").exists():
        return dest
    _remove(dest)
    dest.mkdir(parents=True)
    # Explicit platforms make pip pick wheels for the guest, not for us;
    # glibc 2.17 up to bookworm's 2.36 covers every manylinux tag it runs.
    platforms = [f"manylinux_2_{minor}_{arch.machine}" for minor in range(17, 37)]
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--dest", str(dest), "--only-binary=:all:", "--implementation", "cp",
        "--python-version", GUEST_PYTHON, "--abi", f"cp{GUEST_PYTHON.replace('.', '')}",
        *[arg for p in platforms for arg in ("--platform", p)],
        *reqs,
    ]  # fmt: skip
    # Quiet unless it fails: a host pip.conf may add noise about local indexes.
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        raise RuntimeError(f"pip download failed for {' '.join(reqs)}")
    (dest / ".complete").touch()
    return dest


def debootstrap(arch: vm.Arch, rootfs: Path, foreign: bool) -> None:
    """minbase bookworm; for a foreign arch only the first stage runs here."""
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    cmd = [
        "debootstrap",
        "--variant=minbase",
        f"--arch={arch.debian}",
        f"--include={','.join(PACKAGES)}",
        f"--cache-dir={debs}",
        *(["--foreign"] if foreign else []),
        SUITE,
        str(rootfs),
        mirror(),
    ]
    log = rootfs.parent / "debootstrap.log"
    with open(log, "w") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise RuntimeError(f"debootstrap failed with exit code {result.returncode}")


def packages_index(rootfs: Path, arch: vm.Arch) -> dict[str, dict[str, str]]:
    """The Packages index debootstrap left in the rootfs (it verified it)."""
    pattern = str(rootfs / f"var/lib/apt/lists/*_{SUITE}_main_binary-{arch.debian}_Packages")
    paths = glob.glob(pattern)
    if not paths:
        raise RuntimeError(f"no Packages index matching {pattern}")
    index = {}
    for stanza in Path(paths[0]).read_text().split("\n\n"):
        fields = dict(re.findall(r"^(\S+?):\s*(.*)$", stanza, re.M))
        if "Package" in fields:
            index[fields["Package"]] = fields
    return index


def fetch_deb(index: dict[str, dict[str, str]], name: str) -> Path:
    """Download one .deb named in the index into the cache, checking its sha256."""
    fields = index[name]
    path = CACHE / "debs" / Path(fields["Filename"]).name
    if not path.exists() or _sha256(path) != fields["SHA256"]:
        tmp = path.with_suffix(".part")
        url = f"{mirror()}/{fields['Filename']}"
        with urllib.request.urlopen(url, timeout=300) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        if _sha256(tmp) != fields["SHA256"]:
            tmp.unlink()
            raise RuntimeError(f"{name}: sha256 mismatch for {fields['Filename']}")
        tmp.rename(path)
    return path


def install_kernel(arch: vm.Arch, rootfs: Path, work: Path) -> str:
    """Unpack the generic kernel into the rootfs; returns its version.

    dpkg-deb -x rather than dpkg -i: the package's postinst would build an
    initramfs with initramfs-tools, which we neither need nor want to wait for.
    """
    index = packages_index(rootfs, arch)
    meta = f"linux-image-{arch.debian}"
    package = index[meta]["Depends"].split()[0]  # e.g. linux-image-6.1.0-50-amd64
    kver = package.removeprefix("linux-image-")
    # Unpacked aside, then moved: extracting straight into the rootfs would
    # replace bookworm's merged-/usr symlink /lib -> usr/lib with a directory.
    unpacked = work / "kernel-deb"
    subprocess.run(["dpkg-deb", "-x", str(fetch_deb(index, package)), str(unpacked)], check=True)
    moddir = rootfs / "usr/lib/modules" / kver
    moddir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(unpacked / "lib/modules" / kver, moddir)
    shutil.move(unpacked / f"boot/vmlinuz-{kver}", work / "vmlinuz")
    _remove(unpacked)
    for sub in PRUNE_MODULES:
        _remove(moddir / sub)
    subprocess.run(["depmod", "-b", str(rootfs), kver], check=True)
    return kver


def write_initrd(arch: vm.Arch, rootfs: Path, kver: str, target: Path) -> None:
    """busybox plus the few modules stage 1 needs, as an uncompressed cpio."""
    index = packages_index(rootfs, arch)
    unpacked = target.parent / "busybox-deb"
    deb = fetch_deb(index, "busybox-static")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    moddir = rootfs / "lib/modules" / kver
    entries: list[tuple[str, int, bytes | None]] = [
        ("bin", 0o755, None),
        ("bin/busybox", 0o755, (unpacked / "bin/busybox").read_bytes()),
        ("modules", 0o755, None),
    ]
    order = []
    for rel in _module_closure(moddir, INITRD_MODULES):
        data = (moddir / rel).read_bytes()
        name = Path(rel).name
        if name.endswith(".xz"):  # busybox insmod wants plain .ko files
            data, name = lzma.decompress(data), name.removesuffix(".xz")
        entries.append((f"modules/{name}", 0o644, data))
        order.append(name)
    entries.append(("modules/order", 0o644, "".join(f"{n}\n" for n in order).encode()))
    target.write_bytes(vm.newc_archive(entries))
    _remove(unpacked)


def _module_closure(moddir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Module files for ``wanted`` and their dependencies, dependencies first.

    Names missing from modules.dep are built into this kernel: nothing to load.
    """
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        stem = Path(path).name.split(".ko")[0]
        by_name[stem] = by_name[stem.replace("-", "_")] = path
    ordered: list[str] = []

    def visit(path: str) -> None:
        if path in ordered:
            return
        for dep in deps.get(path, []):
            visit(dep)
        ordered.append(path)

    for name in wanted:
        if name in by_name:
            visit(by_name[name])
    return ordered


def make_ext4(rootfs: Path, image: Path) -> None:
    """mkfs.ext4 -d fills the image from the directory: no loop mount needed."""
    du = subprocess.run(["du", "-sbx", str(rootfs)], capture_output=True, text=True, check=True)
    used = int(du.stdout.split()[0])
    size_mb = used // 2**20 + 1536  # room for the venv and for tests writing outside /tmp
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "lab-root", "-d", str(rootfs), str(image), f"{size_mb}M"],
        check=True,
    )


# -- housekeeping -------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return [p for p in points if (p + "/").startswith(prefix)]


def _remove(path: Path) -> None:
    """rm -rf, but never through a mount point a killed debootstrap left behind.

    debootstrap mounts /proc and /sys inside the target while it configures
    packages; if it dies there, those mounts must go before the tree does.
    """
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        for point in sorted(_mounts_under(path), reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        left = _mounts_under(path)
        if left:
            raise RuntimeError(f"refusing to delete {path}: still mounted: {left}")
        shutil.rmtree(path)
    else:
        path.unlink()


def _prune_old(arch: vm.Arch, keep: Path, spare: int = 2) -> None:
    """Keep the ``spare`` newest other images of this arch (other clones may use them).

    Also removes the work directories of killed builds: this runs under the build lock,
    so no other build is running and every ``.build-*`` left is a dead one's.
    """
    for stale in CACHE.glob(".build-*"):
        say(f"removing {stale}, left by a killed build")
        _remove(stale)
    others = sorted(
        (p for p in CACHE.glob(f"{arch.name}-*") if p != keep and p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[spare:]:
        say(f"removing old image {old}")
        _remove(old)
