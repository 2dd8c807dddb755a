"""docker's options of ``mycontainer run`` for the command's process and its filesystem:
-w, -u, --env-file, --read-only and --tmpfs, as a user observes them inside the container;
bad values refused in one line, exit 125, with nothing made."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.privileged

RUN = ("run", "--net", "none")


def test_workdir_is_made_and_entered(mycontainer):
    result = mycontainer(*RUN, "-w", "/new/dir", "busybox", "sh", "-c", "pwd; ls -ld .")
    assert result.returncode == 0, result.stderr
    pwd, listing = result.stdout.splitlines()
    assert pwd == "/new/dir" and listing.startswith("drwxr-xr-x")


def test_workdir_long_option_after_the_command(mycontainer):
    result = mycontainer("run", "--net", "none", "busybox", "pwd", "--workdir", "/etc")
    assert result.stdout == "/etc\n", result.stderr


def test_short_options_after_image_are_the_commands(mycontainer):
    """As docker's: after IMAGE, -w and -u belong to the command (here: to ``sh -c``'s
    script as $0 and $1), and the container runs as root in /."""
    result = mycontainer(*RUN, "busybox", "sh", "-c", "echo $0 $1; id -u; pwd", "-w", "/x")
    assert result.stdout == "-w /x\n0\n/\n", result.stderr


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("nobody", "65534 65534 /nonexistent"),
        ("nobody:tty", "65534 5 /nonexistent"),
        ("1234", "1234 0 /"),  # in no /etc/passwd: group root, home /, as docker
        ("1234:5", "1234 5 /"),
        ("0", "0 0 /root"),
    ],
)
def test_user_names_and_numbers(mycontainer, user, expected):
    script = 'echo "$(id -u) $(id -g) $HOME"'
    result = mycontainer(*RUN, "-u", user, "busybox", "sh", "-c", script)
    assert result.stdout == expected + "\n", result.stderr


def test_user_is_who_writes_files(mycontainer):
    script = "cd /tmp && touch mine && ls -n mine | awk '{print $3, $4}'"
    result = mycontainer(*RUN, "--user", "1234:5", "busybox", "sh", "-c", script)
    assert result.stdout == "1234 5\n", result.stderr


def test_env_file_as_docker_reads_it(mycontainer, tmp_path, monkeypatch):
    first = tmp_path / "first.env"
    first.write_text(
        '# a comment\n\nPLAIN=1\n  INDENTED=two words\nQUOTED="kept"\nFROM_HERE\nUNSET_HERE\n'
        "EMPTY=\nTWICE=file\n"
    )
    second = tmp_path / "second.env"
    second.write_text("PLAIN=second file wins\n")
    monkeypatch.setenv("FROM_HERE", "host value")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    result = mycontainer(
        *RUN, "--env-file", str(first), "--env-file", str(second), "-e", "TWICE=flag",
        "busybox", "env",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert env["PLAIN"] == "second file wins"
    assert env["INDENTED"] == "two words"
    assert env["QUOTED"] == '"kept"'
    assert env["FROM_HERE"] == "host value"
    assert "UNSET_HERE" not in env
    assert env["EMPTY"] == ""
    assert env["TWICE"] == "flag"  # -e wins over --env-file


@pytest.fixture
def bad_env_file(tmp_path):
    path = tmp_path / "bad.env"
    path.write_text("GOOD=1\nBAD KEY=2\n")
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-w", "relative"], "--workdir must be an absolute path (got 'relative')"),
        (["-u", ""], "--user takes USER[:GROUP]"),
        (["-u", "a:"], "--user takes USER[:GROUP]"),
        (["-u", "a:b:c"], "--user takes USER[:GROUP]"),
        (["--env-file", "/no/such.env"], "--env-file /no/such.env: No such file or directory"),
        (["--env-file", "BAD"], "line 2: 'BAD KEY' is no variable name"),
    ],
)
def test_bad_values_are_one_line_and_125(mycontainer, state_root, bad_env_file, args, message):
    args = [bad_env_file if arg == "BAD" else arg for arg in args]
    result = mycontainer(*RUN, *args, "busybox", "true")
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert os.listdir(state_root) == []


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("nosuch", "user 'nosuch' is not in the container's /etc/passwd"),
        ("nobody:nosuch", "group 'nosuch' is not in the container's /etc/group"),
    ],
)
def test_unknown_user_is_one_line_and_125(mycontainer, state_root, user, message):
    result = mycontainer(*RUN, "-u", user, "busybox", "true")
    assert (result.returncode, result.stderr) == (125, f"mycontainer: error: {message}\n")


def test_read_only_root_with_tmpfs_where_programs_write(mycontainer):
    script = (
        "touch /x 2>&1; echo $?; "
        "for d in /tmp /var/tmp /run; do touch $d/file && echo $d writable; done; "
        "ls -ld /tmp | cut -c1-10"
    )
    result = mycontainer(*RUN, "--read-only", "busybox", "sh", "-c", script)
    assert result.stdout.splitlines() == [
        "touch: /x: Read-only file system",
        "1",
        "/tmp writable",
        "/var/tmp writable",
        "/run writable",
        "drwxrwxrwt",
    ], result.stderr


def test_read_only_keeps_mounts_writable_where_asked(mycontainer, tmp_path):
    script = "echo hi > /data/f && echo ok; touch /etc/x"
    result = mycontainer(*RUN, "--read-only", "-v", f"{tmp_path}:/data", "busybox", "sh", "-c",
                         script)  # fmt: skip
    assert result.stdout == "ok\n" and "Read-only file system" in result.stderr
    assert (tmp_path / "f").read_text() == "hi\n"


def test_tmpfs_size_and_docker_default_options(mycontainer):
    script = "df -k /scratch | tail -1; grep ' /scratch ' /proc/mounts; ls -ld /scratch"
    result = mycontainer(*RUN, "--tmpfs", "/scratch:size=2m,mode=700", "busybox", "sh", "-c",
                         script)  # fmt: skip
    assert result.returncode == 0, result.stderr
    df, mount, listing = result.stdout.splitlines()
    assert df.split()[:2] == ["tmpfs", "2048"]
    options = mount.split()[3].split(",")
    assert {"rw", "nosuid", "nodev", "noexec", "size=2048k", "mode=700"} <= set(options)
    assert listing.startswith("drwx------")


def test_tmpfs_exec_overrides_docker_default(mycontainer):
    script = "cp /bin/busybox /fast/true && /fast/true && echo ran"
    result = mycontainer(*RUN, "--tmpfs", "/fast:exec", "busybox", "sh", "-c", script)
    assert result.stdout == "ran\n", result.stderr
    denied = mycontainer(*RUN, "--tmpfs", "/fast", "busybox", "sh", "-c", script)
    assert "Permission denied" in denied.stderr and denied.returncode != 0


def test_tmpfs_replaces_a_default_mount(mycontainer):
    result = mycontainer(*RUN, "--tmpfs", "/dev/shm:size=1g", "busybox", "df", "-k", "/dev/shm")
    assert result.stdout.splitlines()[-1].split()[1] == str(1 << 20), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tmpfs", "relative"], "the container path 'relative' must be absolute"),
        (["--tmpfs", "/"], "the container's root cannot be mounted over"),
        (["--tmpfs", "/t:size=lots"], "'size=lots' is no valid size (tmpfs(5))"),
        (["--tmpfs", "/t:mode=999"], "'mode=999' is no valid mode"),
        (["--tmpfs", "/t:bind"], "unknown option 'bind'"),
        (["--tmpfs", "/t:nonsense"], "unknown option 'nonsense'"),
        (["--tmpfs", "/t", "--tmpfs", "/t/"], "duplicate mount point: /t"),
    ],
)
def test_bad_tmpfs_is_one_line_and_125(mycontainer, state_root, args, message):
    result = mycontainer(*RUN, *args, "busybox", "true")
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert os.listdir(state_root) == []


def test_read_only_root_still_gets_its_missing_workdir(mycontainer):
    """docker makes the working directory before the root turns read-only."""
    result = mycontainer(*RUN, "--read-only", "-w", "/app/dir", "busybox", "sh", "-c",
                         "pwd; touch x")  # fmt: skip
    assert result.stdout == "/app/dir\n"
    assert "Read-only file system" in result.stderr
