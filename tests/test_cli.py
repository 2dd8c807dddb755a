"""The command line: where options may go, and one-line errors with docker's exit codes.

These run anywhere: bad input is refused before anything needs Linux or root.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime import launcher, runoptions
from runtime.namespaces import check_hostname

from conftest import REPO, environment, mycontainer_command


def mycontainer(*args, state=None):
    env = dict(os.environ, PYTHONPATH=REPO)
    if state:
        env["MYCONTAINER_STATE"] = str(state)
    return subprocess.run(mycontainer_command(*args), capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    ("argv", "image", "command", "options"),
    [
        (["run", "busybox", "ls", "-l"], "busybox", ["ls", "-l"], {}),
        (["run", "busybox"], "busybox", [], {}),  # the image's own command
        (
            ["run", "--hostname", "a", "busybox", "hostname"],
            "busybox",
            ["hostname"],
            {"hostname": "a"},
        ),
        (
            ["run", "busybox", "hostname", "--hostname", "a"],
            "busybox",
            ["hostname"],
            {"hostname": "a"},
        ),
        (
            ["run", "busybox", "hostname", "--hostname=a"],
            "busybox",
            ["hostname"],
            {"hostname": "a"},
        ),
        (
            ["run", "busybox", "--", "echo", "--hostname", "a"],
            "busybox",
            ["echo", "--hostname", "a"],
            {},
        ),
        (["run", "busybox", "sh", "-c", "echo $$"], "busybox", ["sh", "-c", "echo $$"], {}),
    ],
)
def test_plain_run_command_lines(argv, image, command, options):
    assert launcher.parse_plain_run(argv) == (image, command, options)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--help"],
        ["run"],  # no image
        ["run", "--frob", "busybox", "true"],  # unknown option before IMAGE
        ["run", "busybox", "true", "--hostname", "-bad"],
        ["run", "busybox", "echo", "--hostname"],  # option without its value
        ["images"],
    ],
)
def test_everything_else_goes_to_click(argv):
    assert launcher.parse_plain_run(argv) is None


@pytest.mark.parametrize("name", ["a", "box", "t1", "my-host", "a" * 63, "0abc"])
def test_valid_hostnames(name):
    assert check_hostname(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "a_b", "a.b", "a" * 64, "ä", "a b"])
def test_invalid_hostnames(name):
    with pytest.raises(ValueError, match="--hostname takes 1 to 63 letters"):
        check_hostname(name)


def test_help_works_anywhere():
    result = mycontainer("--help")
    assert result.returncode == 0
    assert "run" in result.stdout
    result = mycontainer("run", "--help")
    assert result.returncode == 0
    assert "in a new container made from IMAGE" in result.stdout


def test_bad_hostname_is_one_line_exit_125_and_creates_nothing(tmp_path):
    result = mycontainer("run", "busybox", "hostname", "--hostname", "bad_name", state=tmp_path)
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert result.stderr == (
        "mycontainer: error: --hostname takes 1 to 63 letters, digits or hyphens, "
        "not starting or ending with a hyphen (got 'bad_name')\n"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run"], "Missing argument 'IMAGE'"),
        (["run", "--frob", "busybox", "true"], "--frob"),
        (["run", "busybox", "echo", "--hostname"], "option --hostname needs a value"),
        (["frob"], "No such command 'frob'"),
    ],
)
def test_usage_errors_are_one_line_exit_125(args, message):
    result = mycontainer(*args)
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("mycontainer: error: ")
    assert message in result.stderr


def test_version():
    result = mycontainer("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("mycontainer, version ")


def test_library_does_not_import_click():
    code = (
        "import sys, runtime.container, runtime.launcher, runtime.image, runtime.rootfs; "
        "import steps.step3_mount; print('click' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert result.stdout.strip() == "False"


# Digits that str.isdigit() accepts and int() refuses (²) or reads (١٢: Arabic-Indic 12).
UNICODE_DIGITS = [
    ("--memory", "²m"),
    ("--memory", "١٢m"),
    ("--memory", "1.²g"),
    ("--pids-limit", "²"),
    ("--pids-limit", "١٢"),
    ("--cpu-weight", "١٢"),
    ("--publish", "²:80"),
    ("--publish", "8080:٨٠"),
]


@pytest.mark.parametrize(("option", "value"), UNICODE_DIGITS)
def test_only_ascii_digits_are_numbers(option, value, tmp_path):
    """Each option's parser, and the command line: one line naming the option, exit 125."""
    check, _help = runoptions.RUN_OPTIONS[option]
    with pytest.raises(ValueError, match=f"^{option} "):
        check(value)
    result = mycontainer("run", option, value, "busybox", "true", state=tmp_path)
    assert result.returncode == 125
    assert result.stderr.startswith(f"mycontainer: error: {option} ")
    assert result.stderr.count("\n") == 1 and value in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.privileged
@pytest.mark.parametrize(
    "args",
    [["busybox", ""], ["--entrypoint", "", "busybox", ""]],
    ids=["empty command", "empty command, no entrypoint"],
)
def test_an_empty_command_is_not_found(args, home, state_root):
    """docker: exit 127, 'exec: "": executable file not found in $PATH'; nothing made."""
    storage = home / "containers"
    before = os.listdir(storage) if storage.exists() else []
    result = subprocess.run(
        mycontainer_command("run", "--net", "none", *args),
        capture_output=True,
        text=True,
        env=environment(home, state_root),
    )
    assert result.returncode == 127
    assert result.stderr == (
        "mycontainer: error: cannot run '': executable file not found in $PATH\n"
    )
    assert os.listdir(state_root) == []
    assert (os.listdir(storage) if storage.exists() else []) == before


@pytest.mark.privileged
def test_a_bridge_name_is_ascii(home, state_root):
    """IFNAMSIZ counts bytes: 13 letters of which 11 are 'ü' are 24 of them. Refused by
    name before any container exists (it was the kernel's 'Numerical result out of range')."""
    env = dict(environment(home, state_root), MYCONTAINER_BRIDGE="br" + "ü" * 11)
    result = subprocess.run(
        mycontainer_command("run", "busybox", "true"), capture_output=True, text=True, env=env
    )
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: MYCONTAINER_BRIDGE takes an interface")
    assert result.stderr.count("\n") == 1
    assert os.listdir(state_root) == []


@pytest.mark.parametrize("value", ["0", "4194305", "99999999999999999999"])
def test_pids_limit_is_within_what_the_kernel_takes(value, tmp_path):
    """pids.max takes 1 to PID_MAX_LIMIT: beyond, the kernel's EINVAL or ERANGE named no
    option."""
    result = mycontainer("run", "--pids-limit", value, "busybox", "true", state=tmp_path)
    assert result.returncode == 125
    assert result.stderr == (
        f"mycontainer: error: --pids-limit must be an integer from 1 to 4194304 (got {value})\n"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.privileged
@pytest.mark.parametrize("variable", ["MYCONTAINER_HOME", "MYCONTAINER_STATE"])
def test_a_relative_home_or_state_root_is_refused(variable, home, tmp_path):
    """A relative path would put the store or the state wherever the command happens to run."""
    env = environment(home, tmp_path / "state")
    env[variable] = "relative"
    result = subprocess.run(
        mycontainer_command("run", "--net", "none", "busybox", "true"),
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 125
    assert result.stderr == (
        f"mycontainer: error: {variable} must be an absolute path (got 'relative')\n"
    )
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("option", ["--memory", "--cpu-weight", "--pids-limit", "--publish"])
def test_a_number_of_thousands_of_digits_names_the_option(option, tmp_path):
    """int() refuses over 4,300 digits with a message of its own: the option is named."""
    value = "9" * 5000 + (":80" if option == "--publish" else "")
    result = mycontainer("run", option, value, "busybox", "true", state=tmp_path)
    assert result.returncode == 125
    assert result.stderr.startswith(f"mycontainer: error: {option} ")
    assert result.stderr.count("\n") == 1 and os.listdir(tmp_path) == []
