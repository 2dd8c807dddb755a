"""config.json's process settings: user, umask, additional groups, rlimits, oomScoreAdj.

Each privileged test applies them as the runtime does to a container's init (see
:func:`in_child`): a child in new namespaces waits at a gate while this process sets its
limits and OOM score; then the child applies the security boundaries and switches user, and
executes ``cat``, whose view of itself (/proc/self/status, /proc/self/limits,
/proc/self/oom_score_adj) is what the tests check.
"""

from __future__ import annotations

import os
import resource

import pytest

from runtime import process_settings, security
from runtime.process_settings import ProcessSettings, ProcessSettingsError
from runtime.syscalls import CLONE_NEWIPC, CLONE_NEWNS, CLONE_NEWUTS, capget, unshare

CAT = "/bin/cat"
SELF = ("/proc/self/status", "/proc/self/limits", "/proc/self/oom_score_adj")


def in_child(boundaries=None, settings=None, argv=(CAT, *SELF)) -> str:
    """What ``argv`` prints, run in a child in new mount, UTS and IPC namespaces with
    ``boundaries`` (a security.Boundaries) and ``settings`` (a ProcessSettings) applied in
    the order the runtime applies them; or the one-line error that stopped it."""
    boundaries = boundaries or security.Boundaries()
    settings = settings or ProcessSettings()
    output_read, output_write = os.pipe()
    gate_read, gate_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(output_read)
            os.close(gate_write)
            unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC)
            if os.read(gate_read, 1) != b"g":
                os._exit(1)
            boundaries.before_user_switch()
            settings.switch_user()
            boundaries.after_user_switch()
            os.dup2(output_write, 1)
            os.execv(argv[0], list(argv))
        except BaseException as error:
            os.write(output_write, f"error: {error}".encode())
        finally:
            os._exit(125)
    os.close(output_write)
    os.close(gate_read)
    try:
        settings.apply_limits(pid)  # from the runtime, while the child waits at its gate
        os.write(gate_write, b"g")
    except ProcessSettingsError as error:
        return f"error: {error}"
    finally:
        os.close(gate_write)
        with os.fdopen(output_read, "rb") as reader:
            output = reader.read().decode()
        os.waitpid(pid, 0)
    return output


def status(output: str) -> dict[str, str]:
    """The ``Name:\\tvalue`` lines of /proc/self/status in ``output``."""
    return dict(line.split(":\t", 1) for line in output.splitlines() if ":\t" in line)


def limits(output: str) -> dict[str, tuple[str, str]]:
    """(soft, hard) by name (``Max open files``) of the /proc/self/limits lines in ``output``."""
    found = {}
    for line in output.splitlines():
        if line.startswith("Max "):
            name, soft, hard = line[:26].strip(), *line[26:].split()[:2]
            found[name] = (soft, hard)
    return found


def holds_sys_resource() -> bool:
    return bool(capget()[0] >> process_settings.CAP_SYS_RESOURCE & 1)


# --- checks (no root needed) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"user": {"uid": -1, "gid": 0}}, "process.user.uid must be a number from 0 to"),
        ({"user": {"uid": 0, "gid": 2**32}}, "process.user.gid must be a number from 0 to"),
        ({"user": {"uid": True, "gid": 0}}, "process.user.uid must be a number"),
        ({"user": {"uid": 0, "gid": 0, "additionalGids": ["5"]}}, "additionalGids must be"),
        ({"user": {"uid": 0, "gid": 0, "umask": 0o1000}}, "process.user.umask must be"),
        (
            {"user": {"uid": 0, "gid": 0, "additionalGids": list(range(65537))}},
            "additionalGids must be a list of at most 65536 numbers",
        ),
        (
            {"rlimits": [{"type": "RLIMIT_TEST", "soft": 1, "hard": 1}]},
            "unknown type 'RLIMIT_TEST'",
        ),
        (
            {"rlimits": [{"type": "RLIMIT_NOFILE", "soft": 9, "hard": 9}] * 2},
            "process.rlimits: RLIMIT_NOFILE is given twice",
        ),
        (
            {"rlimits": [{"type": "RLIMIT_CORE", "soft": 2, "hard": 1}]},
            "process.rlimits: RLIMIT_CORE soft 2 is above its hard 1",
        ),
        (
            {"rlimits": [{"type": "RLIMIT_CORE", "soft": -1, "hard": 1}]},
            "process.rlimits: RLIMIT_CORE soft must be a number from 0 to",
        ),
        ({"oomScoreAdj": 1001}, "process.oomScoreAdj must be a number from -1000 to 1000"),
    ],
)
def test_bad_settings_are_one_line_naming_the_field(settings, message):
    with pytest.raises(ProcessSettingsError) as raised:
        ProcessSettings.from_config({"process": settings})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_unlimited_is_the_largest_rlim_t():
    settings = ProcessSettings(rlimits=[{"type": "RLIMIT_CORE", "soft": 0, "hard": 2**64 - 1}])
    assert settings.rlimits["RLIMIT_CORE"] == (resource.RLIMIT_CORE, 0, resource.RLIM_INFINITY)


# --- applied to a process ----------------------------------------------------------------------


@pytest.mark.privileged
def test_user_groups_and_umask_are_set_as_given():
    """runtime-tools' process_user: uid 10, gid 10, additional gid 5, umask 002."""
    user = {"uid": 10, "gid": 10, "additionalGids": [5, 7], "umask": 0o002}
    seen = status(in_child(settings=ProcessSettings(user)))
    assert seen["Uid"].split() == ["10"] * 4
    assert seen["Gid"].split() == ["10"] * 4
    assert seen["Groups"].split() == ["5", "7"]
    assert seen["Umask"] == "0002"


@pytest.mark.privileged
def test_no_additional_gids_means_no_supplementary_groups():
    """setgroups(2) with the given list only: none of the runtime's groups leak in."""
    ours = os.getgroups()
    os.setgroups([0, 4, 27])
    try:
        seen = status(in_child(settings=ProcessSettings({"uid": 0, "gid": 0})))
    finally:
        os.setgroups(ours)
    assert seen["Groups"].split() == []
    assert seen["Umask"] == f"{_our_umask():04o}"  # unset: the runtime's own stays


def _our_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.privileged
def test_rlimits_are_set_before_the_user_switch():
    """runtime-tools' process_rlimits, and RLIMIT_NPROC: lowered while still root, it
    counts the user's processes once the init becomes that user. Each hard limit stays
    within the runner's own (CI may start with a core hard limit of 0)."""
    gib = 2**30
    wanted = {
        "RLIMIT_AS": (1 * gib, 2 * gib),
        "RLIMIT_CORE": (0, UNLIMITED),
        "RLIMIT_CPU": (60, 120),
        "RLIMIT_NOFILE": (300, 400),
        "RLIMIT_NPROC": (1000, 1000),
    }
    given = {name: _within_ours(name, *pair) for name, pair in wanted.items()}
    rlimits = [{"type": name, "soft": s, "hard": h} for name, (s, h) in given.items()]
    output = in_child(settings=ProcessSettings({"uid": 12345, "gid": 12345}, rlimits))
    seen = limits(output)
    assert "Max address space" in seen, output  # else: what stopped the child
    assert seen["Max address space"] == _shown(given["RLIMIT_AS"])
    assert seen["Max core file size"] == _shown(given["RLIMIT_CORE"])
    assert seen["Max cpu time"] == _shown(given["RLIMIT_CPU"])
    assert seen["Max open files"] == _shown(given["RLIMIT_NOFILE"])
    assert seen["Max processes"] == _shown(given["RLIMIT_NPROC"])
    assert status(output)["Uid"].split()[0] == "12345"


UNLIMITED = 2**64 - 1  # RLIM_INFINITY as config.json writes it


def _within_ours(name: str, soft: int, hard: int) -> tuple[int, int]:
    """(soft, hard) lowered to the runner's own hard limit, which root without
    CAP_SYS_RESOURCE cannot raise."""
    _, ours = resource.getrlimit(getattr(resource, name))
    if ours != resource.RLIM_INFINITY:
        hard, soft = min(hard, ours), min(soft, ours)
    return soft, hard


def _shown(pair: tuple[int, int]) -> tuple[str, str]:
    """A (soft, hard) pair as /proc/PID/limits prints it."""
    return tuple("unlimited" if v == UNLIMITED else str(v) for v in pair)


@pytest.mark.privileged
def test_raising_a_hard_limit_needs_cap_sys_resource():
    _, ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = [{"type": "RLIMIT_NOFILE", "soft": ours, "hard": ours + 1}]
    output = in_child(settings=ProcessSettings(rlimits=wanted))
    if holds_sys_resource():
        assert limits(output)["Max open files"] == (str(ours), str(ours + 1))
    else:
        assert output == (
            f"error: process.rlimits: cannot set RLIMIT_NOFILE to soft {ours}, hard "
            f"{ours + 1}: the hard limit is above mycontainer's own ({ours}), and raising it "
            "needs CAP_SYS_RESOURCE, which mycontainer lacks"
        )


@pytest.mark.privileged
def test_oom_score_adj_is_set_for_any_user():
    """runtime-tools' process_oom_score_adj; set from the runtime, so it holds for a user
    who could not raise it back down, and needs no /proc inside."""
    output = in_child(settings=ProcessSettings({"uid": 10, "gid": 10}, oom_score_adj=500))
    assert output.splitlines()[-1] == "500"


@pytest.mark.privileged
def test_lowering_the_oom_score_needs_cap_sys_resource():
    output = in_child(settings=ProcessSettings(oom_score_adj=-500))
    if holds_sys_resource():
        assert output.splitlines()[-1] == "-500"
    else:
        assert output == (
            "error: process.oomScoreAdj: cannot set -500: lowering it needs CAP_SYS_RESOURCE, "
            "which mycontainer lacks"
        )


@pytest.mark.privileged
def test_a_user_switch_that_fails_is_one_line_naming_the_field():
    """Here the process is no longer root, so setgroups(2) is refused."""
    settings = ProcessSettings({"uid": 10, "gid": 10})
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = "switched"
        try:
            os.setuid(1000)
            settings.switch_user()
        except BaseException as error:
            message = str(error)
        finally:
            os.write(write_end, message.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        message = reader.read().decode()
    os.waitpid(pid, 0)
    assert message == (
        "process.user: cannot become uid 10, gid 10, groups []: Operation not permitted"
    )
