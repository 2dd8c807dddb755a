"""The checks of step 7's exercises (docs/step7-security.md), ``invoke check 7 --exercise K``.

Exercise 4 moves the runtime's seccomp.install after capset(2): its checker runs
``mycontainer`` (``python -m runtime``) with no_new_privs off, which must then fail as the
chapter shows, while the default run still works; it passes while the lines are moved, as
the exercise asks (put them back after).

Exercises 2 and 3 change the policy's sets for a non-root user (runtime/policy.py): their
checkers run ``mycontainer --user nobody`` on a copy of the busybox rootfs with a secret
of root's (mode 0600) and a copy of busybox as /fcap/cat carrying a file capability,
DAC_OVERRIDE, written as the security.capability extended attribute that setcap(8)
writes (capabilities(7), "File capabilities"): with the permitted set kept (2), ``=ep``
reads the secret; with the inheritable set given (3), nobody's CapInh holds the
container's set, and ``=ei`` reads it with no_new_privs off. They pass while the policy is
changed so; put the line back after.

Exercise 1 is reading (bit masks, capabilities(7)); 5's rule changes nothing a container
shows by default (it holds NET_RAW), and its observable form, a rule that always refuses,
is a second edit; 6 plants a link that the runtime refuses as it is: no checker for these.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import struct

from workshop.checks import scenes
from workshop.checks.check import Check, Exercise

RUN = "step run --rm --net none"


def filter_refused(program, _scene) -> str | None:
    result = program.run(
        f'{RUN} --security-opt no-new-privileges=false busybox echo hello; echo "exit $?"'
    )
    if result.last_line() == "exit 125" and "Permission denied" in result.err:
        return None
    if "hello" in result.out.split():
        return "with no-new-privileges=false the container ran: the filter still goes in first"
    return result.seen(f"the run ended with {result.last_line()!r}, not a refused filter")


def default_runs(program, _scene) -> str | None:
    result = program.run(f"{RUN} busybox echo hello")
    if result.code == 0 and result.last_line() == "hello":
        return None
    return result.seen("the default run (no_new_privs on) did not print hello")


FILTER_ORDER = Exercise(
    [
        Check(
            "ex4-filter-refused",
            "with the filter installed after capset, a run with no-new-privileges=false fails "
            "(EACCES)",
            filter_refused,
            (
                "seccomp(2) lets a process install a filter only if it has no_new_privs set or "
                "CAP_SYS_ADMIN in its effective set; after capset(2) the container's set has "
                "no SYS_ADMIN.",
                "In runtime/security.py, move the seccomp.install of before_user_switch (the "
                "case of no_new_privs off) into after_user_switch, after the ambient loop.",
                "Delete `if self.seccomp and not self.no_new_privileges: "
                "seccomp.install(self.seccomp)` from `before_user_switch` and add it to "
                "`after_user_switch`; put it back after.",
            ),
        ),
        Check(
            "ex4-default-runs",
            "the default run (no_new_privs on) still works",
            default_runs,
            (
                "With no_new_privs on, the filter goes in last, after prctl(PR_SET_NO_NEW_PRIVS): "
                "the move changes nothing for it (prctl(2), seccomp(2)).",
                "after_user_switch's own seccomp.install, under if self.no_new_privileges, "
                "stays as it is.",
                "Keep the lines under `after_user_switch` as they were; move only the two of "
                "`before_user_switch`.",
            ),
        ),
    ],
    module="runtime",
)

SECRET = "root only"
DOCKER = "00000000a80425fb"  # docker's 14 capabilities, the container's set
CAP_DAC_OVERRIDE = 1
# struct vfs_cap_data of <linux/capability.h>, revision 2: magic and flags, then the
# permitted and inheritable words of capabilities 0-31, then of 32-63
REVISION_2, FLAGS_EFFECTIVE = 0x02000000, 0x000001


def file_capability(permitted: int, inheritable: int) -> bytes:
    """The security.capability attribute of ``setcap CAPS=e...`` (effective flag set)."""
    return struct.pack("<5I", REVISION_2 | FLAGS_EFFECTIVE, permitted, inheritable, 0, 0)


def capable_rootfs(permitted: bool):
    """A scene: a copy of the busybox rootfs with /secret (root's, 0600) and /fcap/cat, a
    copy of busybox with DAC_OVERRIDE in its file permitted set (``=ep``) or inheritable set
    (``=ei``); removed afterwards."""

    @contextlib.contextmanager
    def scene():
        with scenes.rootfs_copy() as rootfs:
            secret = os.path.join(rootfs, "secret")
            with open(secret, "w") as file:
                file.write(SECRET + "\n")
            os.chmod(secret, 0o600)
            os.mkdir(os.path.join(rootfs, "fcap"))
            cat = os.path.join(rootfs, "fcap", "cat")
            shutil.copyfile(os.path.join(rootfs, "bin", "busybox"), cat)
            os.chmod(cat, 0o755)
            bit = 1 << CAP_DAC_OVERRIDE
            caps = file_capability(bit, 0) if permitted else file_capability(0, bit)
            os.setxattr(cat, "security.capability", caps)
            yield rootfs

    return scene


def nobody(rootfs: str, command: str, *options: str) -> str:
    """The script that runs ``command`` as nobody in a container of ``rootfs``."""
    return " ".join([RUN, "--user nobody", *options, shlex.quote(rootfs), command])


def reads_secret(program, rootfs, *options: str) -> str | None:
    result = program.run(nobody(rootfs, "/fcap/cat /secret", *options))
    if result.code == 0 and result.last_line() == SECRET:
        return None
    if "Permission denied" in result.out + result.err:
        return "nobody's /fcap/cat could not read /secret: Permission denied"
    return result.seen("nobody's /fcap/cat /secret did not run")


def kept_permitted_reads(program, rootfs) -> str | None:
    return reads_secret(program, rootfs)


KEPT_PERMITTED = Exercise(
    [
        Check(
            "ex2-kept-permitted-reads",
            "with the permitted set kept, nobody's /fcap/cat (cap_dac_override=ep) reads "
            "root's /secret, mode 0600",
            kept_permitted_reads,
            (
                "At execve(2), a file's permitted capabilities join the new permitted set, "
                'capped by no_new_privs at the old one (capabilities(7), "Transformation of '
                'capabilities during execve()"): a non-root user whose permitted set is kept '
                "gets DAC_OVERRIDE back from a file that has it.",
                "In runtime/policy.py, DockerBoundaries.after_user_switch: the line that empties "
                "a non-root user's effective and permitted sets; keep the permitted one.",
                'Write `self.sets = {**self.sets, "effective": 0}` in place of '
                '`self.sets = {**self.sets, "effective": 0, "permitted": 0}`; put it back after.',
            ),
        )
    ],
    module="runtime",
    scene=capable_rootfs(permitted=True),
)


def inheritable_held(program, rootfs) -> str | None:
    result = program.run(nobody(rootfs, "grep CapInh /proc/self/status"))
    if result.code == 0 and result.last_line().split() == ["CapInh:", DOCKER]:
        return None
    if result.code == 0:
        seen = " ".join(result.last_line().split())  # its tab as a space
        return f"nobody's {seen}, not the container's set {DOCKER}"
    return result.seen("grep CapInh /proc/self/status did not run as nobody")


def inherited_reads(program, rootfs) -> str | None:
    return reads_secret(program, rootfs, "--security-opt no-new-privileges=false")


GIVEN_INHERITABLE = Exercise(
    [
        Check(
            "ex3-inheritable-held",
            f"nobody's CapInh holds the container's set, {DOCKER}",
            inheritable_held,
            (
                "The inheritable set passes through execve(2) unchanged (capabilities(7)): "
                "given to a non-root user, it shows in /proc/self/status as CapInh. docker "
                "leaves it empty since CVE-2022-24769.",
                "In runtime/policy.py, DockerBoundaries.after_user_switch: where a non-root "
                'user\'s sets are emptied, add "inheritable": self.sets["permitted"], the '
                "container's set, before it is emptied.",
                'Add `"inheritable": self.sets["permitted"]}` to the line '
                '`self.sets = {**self.sets, "effective": 0, "permitted": 0}`; put it back after.',
            ),
        ),
        Check(
            "ex3-inherited-reads",
            "with no_new_privs off, nobody's /fcap/cat (cap_dac_override=ei) reads root's /secret",
            inherited_reads,
            (
                "At execve(2) a program gets the capabilities in both the process's inheritable "
                "set and the file's (capabilities(7)); no_new_privs would cap them at the old "
                "permitted set, empty, so it takes no-new-privileges=false.",
                "The same line of DockerBoundaries.after_user_switch: with the inheritable set "
                "given, the file's =ei brings DAC_OVERRIDE back.",
                'Write `"inheritable": self.sets["permitted"]}` into '
                '`self.sets = {**self.sets, "effective": 0, "permitted": 0}`.',
            ),
        ),
    ],
    module="runtime",
    scene=capable_rootfs(permitted=False),
)

EXERCISES = {2: KEPT_PERMITTED, 3: GIVEN_INHERITABLE, 4: FILTER_ORDER}
