"""docker's security defaults and flags, as the config.json values they stand for.

The mechanism (runtime.security) applies whatever sets and paths a config.json gives; an
engine such as podman chooses them. For ``mycontainer run`` this module is that engine, and
makes docker's choices:

- **Capabilities**: docker's 14 (:data:`DEFAULT_CAPABILITIES`), changed by ``--cap-add`` and
  ``--cap-drop`` as moby's oci/caps TweakCapabilities does. The set becomes the *bounding*
  set, and for root the *permitted* and *effective* sets; a USER other than root gets none,
  and *inheritable* and *ambient* stay empty for everyone (docker's rules since
  CVE-2022-24769): left filled, they would let a program with file capabilities gain them,
  even under no_new_privs, which only caps what execve(2) grants at what the process held.
- **no_new_privs** on; ``--security-opt no-new-privileges=false`` lifts it.
- **seccomp**: runtime.seccomp's filter for those capabilities; ``seccomp=unconfined`` lifts
  it.
- **Masked and read-only paths**: the OCI runtime spec's defaults (:data:`MASKED_PATHS`,
  :data:`READONLY_PATHS`); ``systempaths=unconfined`` lifts them, as docker's does.

Man pages: https://man7.org/linux/man-pages/man7/capabilities.7.html,
https://docs.docker.com/engine/containers/run/#runtime-privilege-and-linux-capabilities
"""

from __future__ import annotations

import os

from runtime import seccomp
from runtime.capabilities import CAPABILITIES, mask_of, names_of, spec_names
from runtime.syscalls import capget, machine_name

# docker's default set (moby's oci/caps/defaults.go): 00000000a80425fb in /proc/PID/status.
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip

# The OCI runtime spec's defaults (runc spec; docker masks and protects the same).
MASKED_PATHS = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

SECURITY_OPTS = "no-new-privileges[=true|false], seccomp=unconfined or systempaths=unconfined"


# --- docker's flags --------------------------------------------------------------------------


def _capability_parser(option: str):
    def parse(text: str) -> str:
        """``NET_ADMIN``, ``CAP_NET_ADMIN``, ``net_admin`` -> ``NET_ADMIN``; ``ALL`` stays."""
        name = text.strip().upper()  # ASCII only: "ſys_admin".upper() is SYS_ADMIN
        name = name[4:] if name.startswith("CAP_") else name
        if not text.isascii() or name != "ALL" and name not in CAPABILITIES:
            raise ValueError(
                f"{option}: unknown capability {text!r} (a name from capabilities(7), such "
                "as NET_ADMIN or CAP_NET_ADMIN, or ALL)"
            )
        return name

    parse.__name__ = f"parse_{option.lstrip('-').replace('-', '_')}"
    return parse


parse_cap_add = _capability_parser("--cap-add")
parse_cap_drop = _capability_parser("--cap-drop")


def parse_security_opt(text: str) -> str:
    """A ``--security-opt`` as docker spells it, normalised: ``no-new-privileges=true``,
    ``no-new-privileges=false``, ``seccomp=unconfined`` or ``systempaths=unconfined``.

    docker also accepts ``:`` for ``=`` (``no-new-privileges:true``), and so do we.
    """
    key, separator, value = text.replace(":", "=", 1).partition("=")
    key, value = key.strip().lower(), value.strip().lower()
    if key == "no-new-privileges" and (not separator or value in ("true", "false")):
        return f"{key}={value or 'true'}"
    if key in ("seccomp", "systempaths") and value == "unconfined":
        return f"{key}=unconfined"
    if key == "seccomp":
        raise ValueError(
            f"--security-opt: seccomp profiles from a file are not supported; only "
            f"seccomp=unconfined (got {text!r})"
        )
    raise ValueError(f"--security-opt takes {SECURITY_OPTS} (got {text!r})")


# --- what they stand for ----------------------------------------------------------------------


def capability_set(cap_add=(), cap_drop=()) -> int:
    """The container's capabilities (a mask) from ``--cap-add`` and ``--cap-drop`` values
    (parse_cap_add's forms), as docker computes them.

    docker's rules (moby's oci/caps TweakCapabilities): ``--cap-add ALL`` gives every
    capability but the dropped ones; ``--cap-drop ALL`` keeps only the added ones; else the
    default set, minus the dropped, plus the added (adding wins).
    """
    if "ALL" in cap_add:
        return (1 << len(CAPABILITIES)) - 1 & ~mask_of(n for n in cap_drop if n != "ALL")
    if "ALL" in cap_drop:
        return mask_of(cap_add)
    return mask_of(DEFAULT_CAPABILITIES) & ~mask_of(cap_drop) | mask_of(cap_add)


def security_settings(
    cap_add=(), cap_drop=(), security_opt=(), uid: int = 0
) -> tuple[dict, bytes | None]:
    """What docker's flags stand for, for a container whose user is ``uid``: the config.json
    pieces (``process.capabilities``, ``process.noNewPrivileges``, ``linux.maskedPaths``,
    ``linux.readonlyPaths``, in the spec's own field names, to merge into a config) and the
    seccomp filter (a BPF program for runtime.seccomp.install, or None for
    ``seccomp=unconfined``).

    ``security_opt`` holds parse_security_opt's forms.
    """
    _, held, _ = capget()
    missing = mask_of(n for n in cap_add if n != "ALL") & ~held
    if missing:  # the container would silently lack it
        raise OSError(
            f"cannot add {', '.join(names_of(missing))}: mycontainer itself does not have it "
            "(see CapBnd in /proc/self/status)"
        )
    mask = capability_set(cap_add, cap_drop) & held  # --cap-add ALL: all that we have
    names = spec_names(mask)
    held_by_user = names if uid == 0 else []
    options = dict(option.split("=", 1) for option in security_opt)
    system_paths = options.get("systempaths") != "unconfined"
    config = {
        "process": {
            "capabilities": {
                "bounding": names,
                "effective": held_by_user,
                "permitted": held_by_user,
                "inheritable": [],
                "ambient": [],
            },
            "noNewPrivileges": options.get("no-new-privileges", "true") == "true",
        },
        "linux": {
            "maskedPaths": list(MASKED_PATHS) if system_paths else [],
            "readonlyPaths": list(READONLY_PATHS) if system_paths else [],
        },
    }
    if options.get("seccomp") == "unconfined":
        return config, None
    machine = machine_name()
    if machine not in seccomp.AUDIT_ARCH:
        raise OSError(
            f"no seccomp filter for {machine}: run with --security-opt seccomp=unconfined"
        )
    return config, seccomp.build(mask, machine)


def boundaries(cap_add=(), cap_drop=(), security_opt=()):
    """The runtime.security.Boundaries that docker's flags stand for. docker resolves USER
    before it creates the container; mycontainer resolves it in the init, after the gate
    (runtime.users), so these are root's sets, which a non-root USER loses on the switch,
    as docker gives it none (CVE-2022-24769)."""
    from runtime.security import Boundaries

    class DockerBoundaries(Boundaries):
        def after_user_switch(self) -> None:
            if os.geteuid() != 0:
                self.sets = {**self.sets, "effective": 0, "permitted": 0}
            super().after_user_switch()

    config, program = security_settings(cap_add, cap_drop, security_opt)
    return DockerBoundaries.from_config(config, program)
