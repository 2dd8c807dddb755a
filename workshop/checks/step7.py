"""Step 7's checks: the container's root is refused what docker refuses it: a capability
it lacks, the bounding set of docker's 14, no_new_privs and seccomp, masked /proc paths.

Each probe only reads, or acts on the container's own UTS namespace: where a boundary is
missing, nothing of the host changes (and the sandbox has namespaces of its own besides)."""

from __future__ import annotations

from workshop.checks import step1
from workshop.checks.check import Check

scene = step1.scene
DOCKER_CAPABILITIES = f"{0xA80425FB:016x}"  # docker's 14 default capabilities, as a mask


def status(program, fields: str) -> tuple[dict[str, str], object]:
    """The container's /proc/self/status fields whose names match ``fields``."""
    result = program.run(f"step busybox -- grep -E '^({fields}):' /proc/self/status")
    lines = (line.partition(":") for line in result.out.splitlines())
    return {name: value.strip() for name, _, value in lines}, result


def capability_refused(program, _scene) -> str | None:
    result = program.run("step busybox -- sh -c 'hostname workshop-other 2>/dev/null; hostname'")
    if result.code == 0 and result.last_line() == "container":
        return None
    if result.last_line() == "workshop-other":
        return "the container's root could set its hostname: CAP_SYS_ADMIN was not dropped"
    return result.seen("the container's hostname could not be read")


def bounding_set(program, _scene) -> str | None:
    fields, result = status(program, "CapBnd|CapEff")
    if [fields.get("CapBnd"), fields.get("CapEff")] == [DOCKER_CAPABILITIES] * 2:
        return None
    if not fields:
        return result.seen("the container's /proc/self/status could not be read")
    return (
        f"the bounding set is {fields.get('CapBnd')} and the effective set "
        f"{fields.get('CapEff')}, not docker's {DOCKER_CAPABILITIES}"
    )


def seccomp_filter(program, _scene) -> str | None:
    fields, result = status(program, "NoNewPrivs|Seccomp")
    if fields == {"NoNewPrivs": "1", "Seccomp": "2"}:
        return None
    if not fields:
        return result.seen("the container's /proc/self/status could not be read")
    return (
        f"NoNewPrivs is {fields.get('NoNewPrivs')} and Seccomp {fields.get('Seccomp')}, "
        "not 1 and 2 (a filter)"
    )


def masked_paths(program, _scene) -> str | None:
    result = program.run("step busybox -- sh -c 'head -c 1 /proc/timer_list | wc -c'")
    if result.code == 0 and result.last_line() == "0":
        return None
    if result.last_line() == "1":
        return "/proc/timer_list shows the host's timers: it is not masked"
    return result.seen("/proc/timer_list could not be read")


def device_refused(program, _scene) -> str | None:
    # /dev/kmsg (c 1 11) is not among docker's allowed devices; opened write-only it needs no
    # capability, so only the devices cgroup stops it (a line in the kernel's log otherwise).
    probe = "mknod /tmp/kmsg c 1 11 && (echo workshop check > /tmp/kmsg) 2>/dev/null; echo $?"
    result = program.run(f"step busybox -- sh -c '{probe}'")
    if result.code == 0 and result.last_line() not in ("", "0"):
        return None
    if result.last_line() == "0":
        return "the container could write to a device it made, /dev/kmsg (1:11): no device filter"
    return result.seen("the device probe did not run")


CHECKS = [
    Check(
        "capability-refused",
        "the container's root may not do what docker forbids: set the hostname, say",
        capability_refused,
        (
            "The container's root is root: it is kept from acting as the host's root by what "
            "it may do. Capabilities split root's powers (capabilities(7)); docker keeps 14 "
            "and drops CAP_SYS_ADMIN, which sethostname(2) and mount(2) need.",
            "runtime.security.Boundaries, built from docker's settings (boundaries_of()): "
            "its before_user_switch() shrinks the bounding set (prctl(2) PR_CAPBSET_DROP), "
            "its after_user_switch() sets the other sets (capset(2)), no_new_privs and "
            "seccomp. Call both in setup(), after the pivot into the new root.",
            "In setup(), after `boundaries.protect_paths()`, write "
            "`boundaries.before_user_switch()` then `boundaries.after_user_switch()`.",
        ),
    ),
    Check(
        "docker-capabilities",
        "the container holds docker's 14 capabilities and can never regain the others",
        bounding_set,
        (
            "A process can never gain a capability outside its bounding set, not even through "
            "a set-user-ID program; its effective set is what it may do now (capabilities(7)).",
            "Boundaries.before_user_switch() drops from the bounding set what docker does not "
            "grant; after_user_switch() then sets the effective, permitted and inheritable "
            "sets with capset(2).",
            "In setup(), write `boundaries.before_user_switch()` then "
            "`boundaries.after_user_switch()`.",
        ),
    ),
    Check(
        "seccomp",
        "no_new_privs is set and a seccomp filter is installed",
        seccomp_filter,
        (
            "no_new_privs keeps execve(2) from granting privileges (PR_SET_NO_NEW_PRIVS, "
            "prctl(2)); a seccomp filter refuses system calls a container has no use for, "
            "such as unshare(2) of a user namespace or kexec_load(2) (seccomp(2)).",
            "Boundaries.after_user_switch() sets no_new_privs, then installs the filter, as "
            "the last thing before the command: it does not have to allow what the step "
            "does itself.",
            "In setup(), last, write `boundaries.after_user_switch()`.",
        ),
    ),
    Check(
        "device-refused",
        "a device the container makes, but docker does not allow, cannot be opened",
        device_refused,
        (
            "The container's root may make device nodes (CAP_MKNOD is one of docker's 14), and "
            "a device node is a door to the host's hardware: the devices cgroup controller "
            "decides which ones a group's processes may open (cgroups(7); on v1 devices.allow, "
            "on v2 a BPF program).",
            "runtime.devices.restrict(group) allows the group the default devices only "
            "(/dev/null, zero, full, random, urandom, tty, ptmx, pts); call it in main(), once "
            "the cgroup exists and before any process of the container runs.",
            "In main(), inside the `with`, first write `devices.restrict(group)`.",
        ),
    ),
    Check(
        "masked-paths",
        "/proc paths that show the host's secrets are masked",
        masked_paths,
        (
            "/proc and /sys show things of the host's that no namespace covers: its timers, "
            "its keys, /proc/kcore... docker masks them with an empty file (/dev/null bound on "
            "them) and makes /proc/sys read-only (proc(5)).",
            "Boundaries.protect_paths() masks the masked paths and makes the read-only ones "
            "so, in the new root: call it in setup(), after step 6's setup.",
            "In setup(), after `step6_veth.setup(hostname, layers, storage, cgroup_v2)`, write "
            "`boundaries.protect_paths()`.",
        ),
    ),
]
