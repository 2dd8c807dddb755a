"""Tasks for the lab, run with invoke (https://www.pyinvoke.org): ``invoke --list``.

On Linux as root the tasks run here; elsewhere (macOS, Windows, Linux without root) ``test``
and ``step`` run inside the lab VM that ``invoke vm.up`` starts from the Vagrantfile, and so
does ``check`` on macOS and Windows (:func:`vm_command`).
"""

from __future__ import annotations

import glob
import os
import shlex
import sys

from invoke import Collection, Exit, task

from workshop import SWITCH

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
    c.run(f"vagrant ssh -c {shlex.quote(vm_command(command))}", pty=True)


def vm_command(command: str) -> str:
    """The guest's shell line for ``command``: in /vagrant, as root, with $WORKSHOP_SOLUTION
    if it is set here.

    That switch (workshop/__init__.py) is all of this environment that goes along, as
    ``sudo env``: vagrant ssh passes none of it, and sudo would reset it (sudoers(5),
    env_reset).
    """
    solved = os.environ.get(SWITCH)
    env = f"env {SWITCH}={shlex.quote(solved)} " if solved else ""
    return f"cd /vagrant && sudo {env}{command}"


def step_number(c, name: str, number: str) -> int | None:
    """The step's number that ``invoke NAME`` was given, or None once it has printed the
    task's help: invoke takes the ``--help`` of ``invoke step --help`` for the number."""
    if number in ("-h", "--help"):
        here = shlex.quote(HERE)
        c.run(f"{shlex.quote(sys.executable)} -m invoke --search-root {here} --help {name}")
        return None
    if not number.isdigit():
        raise Exit(
            f"invoke {name}: give the step's number, 1 to {len(STEPS)} (got {number!r}; "
            f"'invoke --help {name}' lists the options)",
            code=2,
        )
    return int(number)


@task
def rootfs(c):
    """Build the busybox root filesystem (for the steps) and the busybox image (no internet)."""
    from runtime import image
    from runtime import rootfs as builder

    name = builder.build_busybox_image()
    print(f"busybox rootfs ready: {image.built_in_rootfs('busybox')}")
    print(f"image ready: {name} (try: mycontainer run -it busybox)")


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
        # The whole suite takes ~15 minutes under TCG on 2 cores; twice that when shared.
        sys.exit(lab_qemu.run_in_vm(command, arch=arch, timeout=45 * 60))
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
    auto_shortflags=False,  # -h is --help, as everywhere, not --hostname
    help={
        "number": f"the step, 1 to {len(STEPS)}",
        "hostname": "hostname inside",
        "rootfs-dir": "root filesystem of steps 3 and 4 (default: the busybox one)",
        "image": "image of steps 5 to 7 (default: busybox)",
        "pid": "step 8: the init of the running container to enter, as the host numbers it",
    },
)
def step(c, number, hostname="container", rootfs_dir=None, image="busybox", pid=None):
    """Run step N of the lab, the solution, here or in the VM: invoke step 3 -- ps.

    Everything after -- is the command to run inside (default: sh). Step 6 changes the
    network of the namespace it runs in: here, it runs in a new one (unshare --net), so
    that this machine's network stays as it is. The step's own options (step 4's --memory,
    say) are its program's: python -m steps.stepN_... --help lists them.
    """
    from runtime import image as images

    number = step_number(c, "step", number)
    if number is None:
        return
    if number not in STEPS:
        raise Exit(
            f"invoke step: no step {number}: the steps are 1 to {len(STEPS)} "
            "(step 9 has no program of its own: docs/step9-oci.md)",
            code=2,
        )
    command = c.remainder or "sh"
    options = f"--hostname {shlex.quote(hostname)}"
    if number == 8:
        if not pid:
            raise Exit(
                "invoke step 8 enters a running container: give its init's PID, --pid N "
                "(with 'invoke step 7 -- sleep 1008' running, pgrep -xf 'sleep 1008' finds it)"
            )
        options = shlex.quote(pid)
    elif number in (3, 4):
        options += f" --rootfs {shlex.quote(rootfs_dir or images.built_in_rootfs('busybox'))}"
    elif number >= 5:
        options += f" {shlex.quote(image)}"
    line = f"-m steps.{STEPS[number]} {options} -- {command}"
    prefix = "unshare --net " if number == 6 else ""
    if can_run_here():
        c.run(f"{prefix}{python()} {line}", pty=sys.stdin.isatty())
    else:
        in_vm(c, f"{prefix}.venv/bin/python {line}")


@task(
    positional=["number"],
    help={
        "number": "the step whose checks to run, 1 to 8; step 9's are its exercises'",
        "solution": "check the solution (steps/) instead of your workshop/ file",
        "exercise": "check exercise K of the step's chapter (its 'Check it:' line) instead",
    },
)
def check(c, number, solution=False, exercise=0):
    """Check your step N of the workshop: PASS or FAIL per check, and hints (here or in the VM).

    Runs workshop/stepN_*.py as a user would; a failed check's hint gets more specific on
    each failed try (python -m workshop.checks). --exercise K checks exercise K of the
    step's chapter instead."""
    number = step_number(c, "check", number)
    if number is None:
        return
    line = f"-m workshop.checks {number}{' --solution' if solution else ''}"
    if exercise:
        line += f" --exercise {exercise}"
    if can_run_here() or sys.platform == "linux":  # without root, the checker says: sudo
        with c.cd(HERE):  # where the workshop package is, wherever invoke was started
            code = c.run(f"{python()} {line}", warn=True, pty=sys.stdout.isatty()).exited
    else:
        from invoke.exceptions import UnexpectedExit

        try:
            in_vm(c, f".venv/bin/python {line}")
            code = 0
        except UnexpectedExit as error:
            code = error.result.exited
    if code:
        raise Exit(code=code)


@task
def lint(c):
    """ruff check and ruff format --check."""
    c.run(f"{python()} -m ruff check .")
    c.run(f"{python()} -m ruff format --check .")


# The kernel headers that runtime/syscall_table.py is made from (Debian's linux-libc-dev), and
# for aarch64 the macros its own <asm/unistd.h> defines before it includes the generic table.
SYSCALL_HEADERS = {
    "X86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
    "X86": "/usr/include/x86_64-linux-gnu/asm/unistd_32.h",
    "X32": "/usr/include/x86_64-linux-gnu/asm/unistd_x32.h",
    "AARCH64": "/usr/include/asm-generic/unistd.h",
}
AARCH64_WANTS = [
    "__ARCH_WANT_RENAMEAT", "__ARCH_WANT_NEW_STAT", "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS", "__ARCH_WANT_SYS_CLONE3", "__ARCH_WANT_MEMFD_SECRET",
]  # fmt: skip


def syscall_numbers(header: str, defined: list[str]) -> dict[str, int]:
    """``#define __NR_name number`` lines of ``header``, name -> number, evaluating its
    ``#if``s as a 64-bit build with the macros ``defined`` (the generic table has some)."""
    import re

    numbers, aliases, live = {}, {}, [True]
    with open(header) as file:
        text = file.read()
    for line in text.splitlines():
        words = line.split()
        directive = words[0] if words else ""
        if directive in ("#if", "#ifdef", "#ifndef"):
            condition = " ".join(words[1:])
            if directive != "#if":
                condition = f"{'!' if directive == '#ifndef' else ''}defined({condition})"
            condition = re.sub(r"defined\((\w+)\)", lambda m: str(m[1] in defined), condition)
            condition = condition.replace("__BITS_PER_LONG", "64").replace("||", " or ")
            condition = condition.replace("&&", " and ")
            live.append(live[-1] and eval(re.sub(r"!(?!=)", " not ", condition)))
        elif directive == "#else":
            live[-1] = live[-2] and not live[-1]
        elif directive == "#endif":
            live.pop()
        elif live[-1] and directive == "#define" and re.match(r"__NR(3264)?_", words[1]):
            name = re.sub(r"^__NR(3264)?_", "", words[1])
            value = " ".join(words[2:]).strip("()").removeprefix("__X32_SYSCALL_BIT + ")
            if value.isdigit() and name not in ("syscalls", "arch_specific_syscall"):
                numbers[name] = int(value)  # (not those two: a count, a range's start)
            elif value.startswith("__NR3264_"):  # the 64-bit name of a generic call
                aliases[name] = value.removeprefix("__NR3264_")
    for name, generic in aliases.items():
        numbers[name] = numbers.pop(generic)
    return numbers


@task(name="syscall-table")
def syscall_table(c):
    """Write runtime/syscall_table.py from this machine's kernel headers (linux-libc-dev)."""
    import subprocess

    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", "linux-libc-dev"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = [
        '"""System call names by number, per ABI: made by ``invoke syscall-table``, do not edit.',
        "",
        f"From the kernel headers of Debian's linux-libc-dev {version}: x86_64, x86 (i386, the",
        "``int 0x80`` gate) and x32 from ``asm/unistd_64.h``, ``unistd_32.h``, ``unistd_x32.h``;",
        "aarch64 from ``asm-generic/unistd.h`` with the macros arm64's ``asm/unistd.h`` defines.",
        "",
        "Each table lists names in the order of their numbers, ten to a line (line N holds the",
        "calls numbered 10N to 10N + 9), ``-`` where no call has the number: a text, not a",
        "dict, because ``mycontainer run`` imports this module and a string costs nothing to",
        "load (four dicts cost ~0.3 ms). X32's numbers are without ``__X32_SYSCALL_BIT``, which",
        "the kernel adds to them.",
        '"""',
        "",
        "# ruff: noqa: E501",
        "# fmt: off",
    ]
    for abi, header in SYSCALL_HEADERS.items():
        numbers = syscall_numbers(header, AARCH64_WANTS if abi == "AARCH64" else [])
        names = ["-"] * (max(numbers.values()) + 1)
        for name, number in numbers.items():
            names[number] = name
        rows = [" ".join(names[start : start + 10]) for start in range(0, len(names), 10)]
        lines += [f'{abi} = """', *rows, '"""']
    lines += [
        "# fmt: on",
        "",
        "",
        "def numbers(table: str) -> dict[str, int]:",
        '    """Name -> number, from one of the tables above."""',
        '    return {name: number for number, name in enumerate(table.split()) if name != "-"}',
    ]
    with open(os.path.join(HERE, "runtime", "syscall_table.py"), "w") as file:
        file.write("\n".join(lines) + "\n")


DOCS_PORT = 8000  # the Vagrantfile forwards it from the lab VM to the host's localhost


@task(
    help={
        "serve": "then serve the built site on 0.0.0.0:PORT: here, to the room, or from the lab VM",
        "live": "serve on localhost:PORT instead, rebuilt and reloaded as you write (mkdocs serve)",
        "port": f"the port of --serve and --live (default {DOCS_PORT})",
    }
)
def docs(c, serve=False, live=False, port=DOCS_PORT):
    """Build the tutorial into site/ with mkdocs (strict: a broken link fails).

    The built site needs no network: no fonts or scripts from the internet, and its pages open
    from the folder too (file://; search needs it served). --serve serves it with Python's
    http.server on every interface, so the lab VM's forwarded port (the Vagrantfile) shows it
    on the host at localhost:PORT.
    """
    port = int(port)
    config = shlex.quote(os.path.join(HERE, "mkdocs.yml"))
    site = os.path.join(HERE, "site")
    if live:
        c.run(f"{python()} -m mkdocs serve --config-file {config} --dev-addr localhost:{port}")
        return
    c.run(
        f"{python()} -m mkdocs build --strict --config-file {config} --site-dir {shlex.quote(site)}"
    )
    if serve:
        import functools
        import http.server

        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=site)
        try:
            server = http.server.ThreadingHTTPServer(("0.0.0.0", port), handler)
        except OSError as error:
            raise Exit(
                f"invoke docs: cannot serve on port {port} ({error.strerror}): "
                "pick another with --port",
                code=1,
            ) from None
        print(f"serving the docs on http://localhost:{port}/ (Ctrl-C stops)", flush=True)
        with server:
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass


@task(
    help={
        "runs": "timed runs per tool (default 30) or rounds (--image, --detached: default 3)",
        "image": "the image import benchmark: mycontainer load against umoci and GNU tar",
        "oci": "the OCI run benchmark: mycontainer-oci run against runc run and crun run",
        "detached": "the detached benchmark: monitors' memory and start time against podman's",
        "exec": "the exec benchmark: mycontainer exec against runc exec and crun exec",
        "network": "the network benchmark: bridge runs against --net none and runc, many at once",
        "json": "also write every sample and the summary to this file",
    }
)
def bench(  # noqa: A002
    c, runs=None, image=False, oci=False, detached=False, exec=False, network=False, json=None
):
    """Start latency against runc, crun and unshare; with --image, image import instead;
    with --oci, mycontainer-oci run of a bundle against runc and crun; with --detached,
    the host memory and start time of 20 detached containers against podman with conmon;
    with --exec, mycontainer exec against runc exec and crun exec; with --network, bridge
    runs against --net none and runc, one at a time and 20 and 50 at once."""
    if image + oci + detached + exec + network > 1:
        raise Exit("invoke bench: one of --image, --oci, --detached, --exec and --network", code=2)
    script = "bench/start_latency.py"
    if image:
        script = "bench/image_import.py"
    elif oci:
        script = "bench/oci_run.py"
    elif detached:
        script = "bench/detached.py"
    elif exec:
        script = "bench/exec.py"
    elif network:
        script = "bench/network.py"
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


@task(
    help={
        "check": "write nothing; fail if a skeleton is not what today's steps make",
        "force": "overwrite the skeletons you have edited too",
    }
)
def workshop(c, check=False, force=False):
    """Write the learners' skeletons, workshop/stepN_*.py, from the steps (the solutions)."""
    options = (" --check" if check else "") + (" --force" if force else "")
    c.run(f"{python()} -m workshop.make{options}")


namespace = Collection(rootfs, test, step, check, lint, docs, bench, syscall_table)
namespace.add_collection(
    Collection("vm", vm_up, vm_ssh, vm_halt, vm_destroy, vm_status, vm_box, vm_check)
)
namespace.add_task(conformance)
namespace.add_task(workshop)
