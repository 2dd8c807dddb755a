"""Tasks for the lab, run with invoke (https://www.pyinvoke.org): ``invoke --list``.

On Linux as root the tasks run here; elsewhere (macOS, Windows, Linux without root) ``test``
and ``step`` run inside the lab VM that ``invoke vm.up`` starts from the Vagrantfile.
"""

from __future__ import annotations

import glob
import os
import shlex
import sys

from invoke import Collection, Exit, task

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.join(HERE, ".venv", "bin")


def find_steps() -> dict[int, str]:
    """Every steps/stepN_*.py by N, read from the folder so that a new step needs no edit here."""
    paths = glob.glob(os.path.join(HERE, "steps", "step[0-9]*_*.py"))
    names = (os.path.basename(path).removesuffix(".py") for path in paths)
    return {int(name[len("step") :].split("_")[0]): name for name in names}


STEPS = find_steps()


def can_run_here() -> bool:
    """Containers need Linux and root."""
    return sys.platform == "linux" and os.geteuid() == 0


def python() -> str:
    """The project's venv Python when it exists (setup.sh makes it), else this one."""
    venv_python = os.path.join(VENV_BIN, "python")
    return venv_python if os.path.exists(venv_python) else sys.executable


def in_vm(c, command: str) -> None:
    """Run ``command`` in the project folder inside the Vagrant VM, as root."""
    c.run(f"vagrant ssh -c {shlex.quote(f'cd /vagrant && sudo {command}')}", pty=True)


@task
def rootfs(c):
    """Build the busybox root filesystem (for the steps) and the busybox image (no internet)."""
    from runtime import image
    from runtime import rootfs as builder

    name = builder.build_busybox_image()
    print(f"busybox rootfs ready: {image.built_in_rootfs('busybox')}")
    print(f"image ready: {name} (try: mycontainer run busybox)")


@task(
    help={
        "vm": "run inside the Vagrant VM even where this machine could run it",
        "qemu": "run inside a throw-away cgroup v2 QEMU VM (Linux hosts, CI)",
        "arch": "with --qemu: x86_64 or arm64",
        "pytest-args": "extra arguments for pytest (or put them after --: invoke test -- -x)",
    }
)
def test(c, vm=False, qemu=False, arch="x86_64", pytest_args=""):
    """Run the test suite: here as root on Linux, otherwise inside the lab VM."""
    pytest_args = f"{pytest_args} {c.remainder}".strip()
    pytest = f"{python()} -m pytest {pytest_args}".strip()
    if qemu:
        from lab import qemu as lab_qemu

        command = ["python3", "-m", "pytest", "-p", "no:cacheprovider", *shlex.split(pytest_args)]
        sys.exit(lab_qemu.run_in_vm(command, arch=arch))
    if vm or not can_run_here():
        if not vm and sys.platform == "linux":
            print("not root: running the suite without the privileged tests (sudo runs them all)")
            c.run(pytest, pty=sys.stdout.isatty())
            return
        in_vm(c, f".venv/bin/python -m pytest {pytest_args}")
        return
    c.run(pytest, pty=sys.stdout.isatty())


@task(
    positional=["number"],
    help={
        "number": f"the step, 1 to {len(STEPS)}",
        "hostname": "hostname inside",
        "rootfs-dir": "root filesystem of steps 3 and 4 (default: the busybox one)",
        "image": "image of steps 5 and on (default: busybox)",
    },
)
def step(c, number, hostname="container", rootfs_dir=None, image="busybox"):
    """Run step N of the lab, here or in the VM: invoke step 3 -- ps (default command: sh).

    Step 6 changes the network of the namespace it runs in: here, it runs in a new one
    (unshare --net), so that this machine's network stays as it is.
    """
    from runtime import image as images

    number = int(number)
    if number not in STEPS:
        raise Exit(f"invoke step: no step {number}: the steps are 1 to {len(STEPS)}")
    command = c.remainder or "sh"
    options = f"--hostname {shlex.quote(hostname)}"
    if number in (3, 4):
        options += f" --rootfs {shlex.quote(rootfs_dir or images.built_in_rootfs('busybox'))}"
    elif number >= 5:
        options += f" {shlex.quote(image)}"
    line = f"-m steps.{STEPS[number]} {options} -- {command}"
    prefix = "unshare --net " if number == 6 else ""
    if can_run_here():
        c.run(f"{prefix}{python()} {line}", pty=sys.stdin.isatty())
    else:
        in_vm(c, f"{prefix}.venv/bin/python {line}")


@task
def lint(c):
    """ruff check and ruff format --check."""
    c.run(f"{python()} -m ruff check .")
    c.run(f"{python()} -m ruff format --check .")


@task(help={"serve": "serve on localhost:8000 with live reload instead of building"})
def docs(c, serve=False):
    """Build the tutorial with mkdocs (strict: a broken link fails)."""
    c.run(f"{python()} -m mkdocs {'serve' if serve else 'build --strict'}")


@task(
    help={
        "runs": "timed runs per tool (start latency, default 30) or rounds (--image, default 3)",
        "image": "the image import benchmark: mycontainer load against umoci and GNU tar",
        "json": "also write every sample and the summary to this file",
    }
)
def bench(c, runs=None, image=False, json=None):
    """Start latency against runc, crun and unshare; with --image, image import instead."""
    script = "bench/image_import.py" if image else "bench/start_latency.py"
    options = f" --runs {int(runs)}" if runs else ""
    if json:
        options += f" --json {shlex.quote(json)}"
    c.run(f"{python()} {script}{options}", pty=sys.stdout.isatty())


@task(
    help={
        "runtime": "the runtime to check (default: .venv/bin/mycontainer-oci)",
        "results": "copy each group's TAP output and summary.tsv into this directory",
    }
)
def conformance(c, runtime=None, results=None):
    """The OCI runtime-tools suite against mycontainer-oci, as root (lab.conformance)."""
    options = f" --runtime {shlex.quote(runtime)}" if runtime else ""
    if results:
        options += f" --results {shlex.quote(results)}"
    c.run(f"{python()} -m lab.conformance{options}")


@task(name="up")
def vm_up(c):
    """Start (and on first use create and provision) the lab VM."""
    c.run("vagrant up", pty=True)


@task(name="ssh")
def vm_ssh(c):
    """Open a shell in the lab VM."""
    c.run("vagrant ssh", pty=True)


@task(name="halt")
def vm_halt(c):
    """Stop the lab VM (its disk stays)."""
    c.run("vagrant halt", pty=True)


@task(name="destroy")
def vm_destroy(c):
    """Delete the lab VM."""
    c.run("vagrant destroy -f", pty=True)


@task(name="status")
def vm_status(c):
    """Is the lab VM running?"""
    c.run("vagrant status", pty=True)


@task(
    name="box",
    help={
        "output": "also copy the box there, e.g. onto an instructor's USB stick",
        "add": "then `vagrant box add` it as mycontainer-lab (as the user who runs vagrant)",
        "rebuild": "build it even if the cache has one for this recipe",
    },
)
def vm_box(c, output=None, add=False, rebuild=False):
    """Build the lab's own libvirt box (Debian 12, systemd), which provisions offline (root)."""
    options = " --rebuild" if rebuild else ""
    if output:
        options += f" --output {shlex.quote(output)}"
    path = c.run(f"{python()} -m lab.box{options}", hide="out").stdout.strip()
    print(path)
    if add:
        c.run(f"vagrant box add --force --name mycontainer-lab {shlex.quote(path)}", pty=True)
        print("now: MYCONTAINER_BOX=mycontainer-lab vagrant up --provider libvirt")


@task(
    name="check",
    help={"pytest-args": "the guest's pytest arguments (default: the lab's smoke set)"},
)
def vm_check(c, pytest_args=""):
    """vagrant up of the Vagrantfile on the lab's box here, in namespaces of its own (root, CI)."""
    args = f"{pytest_args} {c.remainder}".strip()
    c.run(f"{python()} -m lab.vagrant_check {'-- ' + args if args else ''}".strip())


namespace = Collection(rootfs, test, step, lint, docs, bench)
namespace.add_collection(
    Collection("vm", vm_up, vm_ssh, vm_halt, vm_destroy, vm_status, vm_box, vm_check)
)
namespace.add_task(conformance)
