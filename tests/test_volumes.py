"""``mycontainer run -v`` and ``mycontainer volume``, as a docker user observes them: host
directories and named volumes shared with containers, read-only where asked, never reached
through an image's symbolic link out of its root, never removed while a container uses them;
bad input refused in one line, exit 125, with nothing made."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
import uuid

import pytest

from runtime import image, volumes

from conftest import environment, mycontainer_command, running_containers

pytestmark = pytest.mark.privileged

RUN = ("run", "--net", "none")


@pytest.fixture
def volume_name(home):
    """A volume name of this test's own; the volume, if made, is removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    shutil.rmtree(home / "volumes" / name, ignore_errors=True)


def volume_names(home) -> list[str]:
    directory = home / "volumes"
    return sorted(os.listdir(directory)) if directory.is_dir() else []


# --- bind mounts of host paths ----------------------------------------------------------


def test_a_file_written_in_a_bind_mount_is_on_the_host(mycontainer, tmp_path):
    (tmp_path / "from-host").write_text("hello from the host\n")
    script = "cat /data/from-host && echo hello from the container > /data/from-container"
    result = mycontainer(*RUN, "-v", f"{tmp_path}:/data", "busybox", "sh", "-c", script)
    assert result.stdout == "hello from the host\n", result.stderr
    assert (tmp_path / "from-container").read_text() == "hello from the container\n"


def test_read_only_bind_refuses_writes(mycontainer, tmp_path):
    script = "touch /data/new; echo $?; echo ignored > /dev/null"
    result = mycontainer(*RUN, "--volume", f"{tmp_path}:/data:ro", "busybox", "sh", "-c", script)
    assert result.stdout == "1\n"
    assert "Read-only file system" in result.stderr
    assert not (tmp_path / "new").exists()


def test_a_file_can_be_bind_mounted(mycontainer, tmp_path):
    (tmp_path / "config").write_text("setting=1\n")
    result = mycontainer(*RUN, "-v", f"{tmp_path}/config:/etc/app.conf:ro", "busybox",
                         "cat", "/etc/app.conf")  # fmt: skip
    assert result.stdout == "setting=1\n", result.stderr


def test_relative_host_path_starting_with_a_dot(mycontainer, tmp_path):
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "file").write_text("found\n")
    result = mycontainer(*RUN, "-v", "./here:/data", "busybox", "cat", "/data/file", cwd=tmp_path)
    assert result.stdout == "found\n", result.stderr


def test_mounts_go_parents_first_whatever_their_order(mycontainer, tmp_path):
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    outer.mkdir()
    inner.mkdir()
    (inner / "file").write_text("inner\n")
    result = mycontainer(*RUN, "-v", f"{inner}:/a/b", "-v", f"{outer}:/a", "busybox",
                         "cat", "/a/b/file")  # fmt: skip
    assert result.stdout == "inner\n", result.stderr


def test_short_volume_option_after_image_is_the_commands(mycontainer):
    result = mycontainer(*RUN, "busybox", "echo", "-v", "/x:/y")
    assert result.stdout == "-v /x:/y\n", result.stderr


@pytest.fixture
def escaping_rootfs(tmp_path, busybox_rootfs):
    """A copy of the busybox rootfs with /abs, an absolute link, and /rel, a relative one,
    both aimed at a directory of the host (``outside``), which a mount must not reach."""
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "abs")
    os.symlink(os.path.relpath(outside, root) + "/../../../../../" + str(outside), root / "rel")
    return root, outside


@pytest.mark.parametrize("link", ["abs", "rel"])
def test_a_link_of_the_image_does_not_lead_a_destination_out(
    mycontainer, tmp_path, escaping_rootfs, link
):
    root, outside = escaping_rootfs
    source = tmp_path / "source"
    source.mkdir()
    (source / "file").write_text("mounted\n")
    result = mycontainer(*RUN, "-v", f"{source}:/{link}/sub", str(root),
                         "cat", f"/{link}/sub/file")  # fmt: skip
    assert result.stdout == "mounted\n", result.stderr  # inside the container's root...
    assert os.listdir(outside) == []  # ...and nothing made or mounted on the host's side


# --- named volumes ------------------------------------------------------------------------


def test_a_named_volume_keeps_data_across_runs(mycontainer, home, volume_name):
    first = mycontainer(*RUN, "-v", f"{volume_name}:/data", "busybox", "sh", "-c",
                        "echo kept > /data/file")  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = mycontainer(*RUN, "-v", f"{volume_name}:/other:ro", "busybox", "cat", "/other/file")
    assert second.stdout == "kept\n", second.stderr
    data = home / "volumes" / volume_name / "_data"
    assert (data / "file").read_text() == "kept\n"


def test_volume_commands(mycontainer, home, volume_name):
    assert mycontainer("volume", "create", volume_name).stdout == f"{volume_name}\n"
    assert mycontainer("volume", "create", volume_name).returncode == 0  # exists: fine
    listing = mycontainer("volume", "ls").stdout.splitlines()
    assert listing[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert ["local", volume_name] in [line.split() for line in listing[1:]]
    assert volume_name in mycontainer("volume", "ls", "-q").stdout.split()
    (details,) = json.loads(mycontainer("volume", "inspect", volume_name).stdout)
    assert details["Name"] == volume_name and details["Driver"] == "local"
    assert details["Mountpoint"] == str(home / "volumes" / volume_name / "_data")
    assert os.path.isdir(details["Mountpoint"])
    removed = mycontainer("volume", "rm", volume_name)
    assert removed.stdout == f"{volume_name}\n", removed.stderr
    assert volume_name not in volume_names(home)
    again = mycontainer("volume", "rm", volume_name)
    assert (again.returncode, again.stderr.count("\n")) == (125, 1)
    assert f"no such volume: {volume_name}" in again.stderr


def test_volume_create_without_a_name_makes_a_random_one(mycontainer, home):
    name = mycontainer("volume", "create").stdout.strip()
    try:
        assert len(name) == 64 and int(name, 16) >= 0
        assert name in volume_names(home)
    finally:
        mycontainer("volume", "rm", name)


def test_a_volume_in_use_is_not_removed(mycontainer, background, state_root, home, volume_name):
    runtime = background(*RUN, "-v", f"{volume_name}:/data", "busybox", "sleep", "1003")
    (state,) = running_containers(state_root, runtimes=[runtime])
    for command in (["volume", "rm", volume_name], ["volume", "prune", "-f"]):
        result = mycontainer(*command)
        assert volume_name in volume_names(home), command
    assert result.returncode == 0  # prune leaves what is used, and succeeds
    refused = mycontainer("volume", "rm", volume_name)
    assert refused.returncode == 125
    assert refused.stderr == (
        f"mycontainer: error: volume {volume_name} is in use by container {state['id'][:12]}:"
        " remove the container first\n"
    )
    os.kill(state["pid"], 9)
    assert runtime.wait(timeout=20) == 137


def test_volume_prune_removes_the_unused_ones(mycontainer, home, volume_name):
    assert mycontainer("volume", "create", volume_name).returncode == 0
    (home / "volumes" / volume_name / "_data" / "file").write_bytes(b"x" * 5000)
    declined = mycontainer("volume", "prune", stdin=subprocess.DEVNULL)
    assert declined.returncode == 0 and volume_name in volume_names(home)
    result = mycontainer("volume", "prune", input="y\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Deleted Volumes:" and volume_name in lines
    assert lines[-1].startswith("Total reclaimed space: ") and lines[-1] != (
        "Total reclaimed space: 0B"
    )
    assert volume_name not in volume_names(home)


def test_runs_creating_one_volume_at_once_all_work(mycontainer, home, state_root, volume_name):
    """Each run makes the volume if it finds none: all of them must succeed, and write to
    the same one."""
    script = "echo $HOSTNAME > /data/$HOSTNAME"
    runs = [
        subprocess.Popen(
            mycontainer_command(*RUN, "-v", f"{volume_name}:/data", "busybox", "sh", "-c", script),
            env=environment(home, state_root),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, outputs
    assert len(os.listdir(home / "volumes" / volume_name / "_data")) == 4
    assert not [name for name in volume_names(home) if name.startswith(".")]


def test_volume_rm_waits_for_a_starting_container(mycontainer, home, state_root, volume_name):
    """A starting run holds the store's lock (shared) from making its volumes until its
    state names them: volume rm, which takes it alone, waits until then."""
    assert mycontainer("volume", "create", volume_name).returncode == 0
    env = environment(home, state_root)
    os.environ["MYCONTAINER_HOME"] = env["MYCONTAINER_HOME"]
    try:
        with image.StoreLock():  # as a run between making the volume and recording it
            remover = subprocess.Popen(
                mycontainer_command("volume", "rm", volume_name), env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(1)
            assert remover.poll() is None, remover.communicate()
            assert volume_name in volume_names(home)
    finally:
        del os.environ["MYCONTAINER_HOME"]
    assert remover.wait(timeout=20) == 0
    assert volume_name not in volume_names(home)


@pytest.fixture
def data_rootfs(tmp_path, busybox_rootfs):
    """A copy of the busybox rootfs whose /data, owned by nobody and mode 0750, holds a
    file (0640), a symbolic link, a FIFO and a directory with a file."""
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "file").write_text("from the image\n")
    (data / "sub" / "deep").write_text("deep\n")
    os.symlink("/etc/passwd", data / "link")
    os.mkfifo(data / "fifo")
    for path in (data, data / "file", data / "sub", data / "sub" / "deep", data / "fifo"):
        os.chown(path, 65534, 65534)
    data.chmod(0o750)
    (data / "file").chmod(0o640)
    os.utime(data / "file", (1_000_000_000, 1_000_000_000))
    return root


def test_a_new_volume_is_filled_from_the_image(mycontainer, home, data_rootfs, volume_name):
    """As docker: an empty volume gets what the image has at the mount's destination, owners,
    modes and times kept; the link stays a link, the FIFO a FIFO."""
    mount = ("-v", f"{volume_name}:/data")
    result = mycontainer(*RUN, *mount, str(data_rootfs), "cat", "/data/file", "/data/sub/deep")
    assert result.stdout == "from the image\ndeep\n", result.stderr
    volume = home / "volumes" / volume_name / "_data"
    info = os.stat(volume)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (65534, 65534, 0o750)
    info = os.stat(volume / "file")
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (65534, 65534, 0o640)
    assert info.st_mtime == 1_000_000_000
    assert os.readlink(volume / "link") == "/etc/passwd"
    assert stat.S_ISFIFO(os.lstat(volume / "fifo").st_mode)
    # Not empty any more: the next container finds what the last one wrote.
    mycontainer(*RUN, *mount, str(data_rootfs), "sh", "-c", "echo new > /data/file")
    again = mycontainer(*RUN, *mount, str(data_rootfs), "cat", "/data/file")
    assert again.stdout == "new\n", again.stderr


def test_copy_up_never_follows_a_link_swapped_in_for_what_it_made(tmp_path, monkeypatch):
    """A container already running on a shared, empty volume can swap what a second
    container's copy-up has just made for a symbolic link to a host file, before the copy
    sets its owner, mode and times (it runs before pivot_root, where such a link leads into
    the host). The host file must stay as it was. The swap is made at the worst moment:
    a file once its data is written, its directory too; a FIFO once made."""
    image_directory = tmp_path / "image"
    (image_directory / "sub").mkdir(parents=True)
    (image_directory / "file").write_text("from the image\n")
    (image_directory / "sub" / "deep").write_text("deep\n")
    for path in ("file", "sub/deep", "sub"):
        (image_directory / path).chmod(0o777)
        os.utime(image_directory / path, (1_000_000_000, 1_000_000_000))
    host_file = tmp_path / "host-file"
    host_file.write_text("the host's\n")
    host_file.chmod(0o600)
    before = os.stat(host_file)
    data = tmp_path / "volume"
    data.mkdir()

    def swap(path: str) -> None:  # what the other container does
        os.rename(path, path + "-away")
        os.symlink(host_file, path)

    real_sendfile = os.sendfile

    def sendfile_then_swap(out_fd, in_fd, offset, count):
        written = real_sendfile(out_fd, in_fd, offset, count)
        path = os.readlink(f"/proc/self/fd/{out_fd}")
        if written and not path.endswith("-away"):
            swap(path)
            if os.path.dirname(path) != str(data):
                swap(os.path.dirname(path))
        return written

    monkeypatch.setattr(os, "sendfile", sendfile_then_swap)
    volumes.copy_up(str(image_directory), str(data))
    after = os.stat(host_file)
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)
    for path in ("file-away", "sub-away", "sub-away/deep-away"):  # what the copy made
        info = os.lstat(data / path)
        assert (info.st_mode & 0o7777, info.st_mtime) == (0o777, 1_000_000_000), path

    fifo_image = tmp_path / "fifo-image"
    fifo_image.mkdir()
    os.mkfifo(fifo_image / "fifo", 0o606)
    fifo_volume = tmp_path / "fifo-volume"
    fifo_volume.mkdir()
    real_mknod = os.mknod

    def mknod_then_swap(path, mode, device, *, dir_fd):
        real_mknod(path, mode, device, dir_fd=dir_fd)
        swap(os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path))

    monkeypatch.setattr(os, "mknod", mknod_then_swap)
    with pytest.raises(OSError, match="without following a link"):
        volumes.copy_up(str(fifo_image), str(fifo_volume))
    assert os.stat(host_file).st_mode == before.st_mode


def test_nocopy_leaves_a_new_volume_empty(mycontainer, home, data_rootfs, volume_name):
    result = mycontainer(*RUN, "-v", f"{volume_name}:/data:nocopy", str(data_rootfs),
                         "ls", "-A", "/data")  # fmt: skip
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    assert os.listdir(home / "volumes" / volume_name / "_data") == []


def test_a_host_directory_is_never_filled(mycontainer, tmp_path, data_rootfs):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = mycontainer(*RUN, "-v", f"{empty}:/data", str(data_rootfs), "ls", "-A", "/data")
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    assert os.listdir(empty) == []


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/no/such/dir:/data", "the host path /no/such/dir does not exist"),
        ("HOST:data", "the container path 'data' must be absolute"),
        ("HOST:/", "the container's root cannot be mounted over"),
        ("HOST:/data:rx", "its options are ro or rw"),
        ("HOST:/data:ro,rw", "its options are ro or rw"),
        ("a:/data", "invalid volume name 'a'"),
        ("bad/name:/data", "invalid volume name 'bad/name'"),
        ("bad/name:/data", "a host directory needs an absolute path, or one starting with '.'"),
        ("/data", "anonymous volumes are not supported: name one (-v NAME:/data)"),
        ("HOST:/data:nocopy", "and nocopy for a volume"),
        ("HOST:/a:ro:x", "--volume takes HOST_PATH:CONTAINER_PATH[:ro]"),
    ],
)
def test_bad_volumes_are_one_line_and_125(mycontainer, home, state_root, tmp_path, spec, message):
    before = volume_names(home)
    spec = spec.replace("HOST", str(tmp_path))
    result = mycontainer(*RUN, "-v", spec, "busybox", "true")
    assert result.returncode == 125
    assert result.stderr.startswith("mycontainer: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert os.listdir(state_root) == [] and volume_names(home) == before
    assert not os.path.exists("/no/such/dir")


def test_a_duplicate_mount_point_is_refused_before_any_volume_is_made(
    mycontainer, home, state_root, tmp_path, volume_name
):
    result = mycontainer(*RUN, "-v", f"{volume_name}:/data", "--tmpfs", "/data", "busybox", "true")
    assert (result.returncode, result.stderr) == (
        125,
        "mycontainer: error: duplicate mount point: /data\n",
    )
    assert volume_name not in volume_names(home)


@pytest.mark.parametrize("name", ["a", "-x", "bad/name", "../up"])
def test_volume_create_refuses_bad_names(mycontainer, home, name):
    before = volume_names(home)
    result = mycontainer("volume", "create", "--", name)
    assert (result.returncode, result.stderr.count("\n")) == (125, 1), result.stderr
    assert f"invalid volume name {name!r}" in result.stderr
    assert volume_names(home) == before


def test_a_volume_name_longer_than_a_file_name_is_refused_saying_the_rule(mycontainer, home):
    before = volume_names(home)
    result = mycontainer("volume", "create", "v" * 256)
    assert (result.returncode, result.stderr.count("\n")) == (125, 1), result.stderr
    assert "invalid volume name" in result.stderr and "2 to 255" in result.stderr
    assert volume_names(home) == before


def test_containers_and_volumes_share_dockers_name_rule():
    """daemon/names' [a-zA-Z0-9][a-zA-Z0-9_.-]+ for both (so no one-letter name), and at
    most 255 characters, since a name is a file name here."""
    from runtime import state

    for good in ("ab", "a1", "my_vol.1-x", "0" * 64, "n" * 255):
        assert state.check_name(good) == good
        assert state.check_name(good, "volume") == good
    for bad in ("a", "_a", ".a", "a b", "a/b", "a:b", "", "n" * 256):
        with pytest.raises(state.StateError, match=f"invalid container name {bad!r}"):
            state.check_name(bad)
        with pytest.raises(ValueError, match=f"invalid volume name {bad!r}"):
            state.check_name(bad, "volume")


def test_a_one_letter_container_name_is_refused_as_docker_does(mycontainer, state_root):
    result = mycontainer("run", "--name", "a", "--net", "none", "busybox", "true")
    assert (result.returncode, result.stderr) == (
        125,
        "mycontainer: error: invalid container name 'a': use 2 to 255 letters, "
        "digits, '_', '.' and '-', starting with a letter or digit\n",
    )
    assert [n for n in os.listdir(state_root) if not n.startswith(".")] == []


def test_user_mounts_replace_the_defaults_they_cover_and_go_parents_first(tmp_path):
    from runtime import filesystem, runmounts

    inner = runmounts.parse_volume(f"{tmp_path}:/a/b")
    outer = runmounts.parse_volume(f"{tmp_path}:/a")
    dev = runmounts.parse_tmpfs("/dev:size=1m")
    mounts = runmounts.for_run(filesystem.DEFAULT_MOUNTS, [inner, outer], [dev])
    destinations = [entry["destination"] for entry in mounts]
    assert destinations == ["/proc", "/sys", "/sys/fs/cgroup", "/a", "/dev", "/a/b"]
