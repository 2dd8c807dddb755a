"""A bundle's filesystem: config.json's mounts, devices, readonly root and propagation.

Each test runs ``filesystem.enter_rootfs`` as a container's init does: in a forked child, in
new mount, PID, IPC and network namespaces (mounts made there vanish with it), on a copy of
the busybox rootfs; then runs a shell script inside and looks at what it prints.
"""

from __future__ import annotations

import os
import shutil
import stat
import traceback
from pathlib import Path

import pytest

from runtime import filesystem, mounts, namespaces, sysctl
from runtime.syscalls import MS_NOEXEC, MS_NOSUID, mount

from conftest import host_mounts

pytestmark = pytest.mark.privileged

NAMESPACES = namespaces.MOUNT | namespaces.PID | namespaces.IPC | namespaces.NET


@pytest.fixture
def rootfs(tmp_path, busybox_rootfs):
    root = tmp_path / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    return root


def inside(rootfs, script, mounts=filesystem.DEFAULT_MOUNTS, before=None, after=None,
           kinds=NAMESPACES, **kw):  # fmt: skip
    """(exit status, output) of ``sh -c script`` in a container on ``rootfs`` made by
    ``enter_rootfs(rootfs, mounts, **kw)``; ``before()`` runs first, in its namespaces,
    ``after()`` after it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.dup2(write, 1)
            os.dup2(write, 2)
            namespaces.enter_new(kinds)
            if before:
                before()
            init = os.fork()
            if init == 0:
                try:
                    filesystem.enter_rootfs(str(rootfs), mounts, **kw)
                    if after:
                        after()
                    os.execv("/bin/sh", ["sh", "-c", script])
                except BaseException as error:
                    os.write(1, f"error: {error}\n".encode())
                    os._exit(125)
            os._exit(os.waitstatus_to_exitcode(os.waitpid(init, 0)[1]))
        except BaseException:
            traceback.print_exc()
            os._exit(126)
    os.close(write)
    output = b""
    while chunk := os.read(read, 65536):
        output += chunk
    os.close(read)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), output.decode()


def mountinfo(output: str) -> dict[str, tuple[str, str, str, str]]:
    """Mount point -> (root, mount options, type, super options), from mountinfo lines."""
    found = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) > 9 and "-" in fields:
            dash = fields.index("-")
            found[fields[4]] = (fields[3], fields[5], fields[dash + 1], fields[dash + 3])
    return found


def test_mounts_are_made_in_order_with_their_options(rootfs, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "data").write_text("from the host\n")
    config = [
        *filesystem.DEFAULT_MOUNTS,
        {"destination": "/mnt/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "size=1m", "mode=700"]},
        {"destination": "/mnt/tmp/ro", "type": "bind", "source": str(host), "options": ["ro"]},
        {"destination": "/mnt/rw", "source": str(host), "options": ["rbind", "rw"]},
        {"destination": "/mnt/file", "source": str(host / "data"), "options": ["bind"]},
    ]  # fmt: skip
    script = (
        "cat /proc/self/mountinfo; stat -c '%a' /mnt/tmp; cat /mnt/file;"
        " touch /mnt/tmp/ro/x 2>&1; touch /mnt/rw/y && echo wrote"
    )
    status, output = inside(rootfs, script, config)
    assert status == 0, output
    points = [line.split()[4] for line in output.splitlines() if line.count(" - ")]
    assert points[-4:] == ["/mnt/tmp", "/mnt/tmp/ro", "/mnt/rw", "/mnt/file"]
    found = mountinfo(output)
    assert found["/mnt/tmp"][2] == "tmpfs" and "size=1024k" in found["/mnt/tmp"][3]
    assert {"rw", "nosuid", "nodev"} <= set(found["/mnt/tmp"][1].split(","))
    assert found["/mnt/tmp/ro"][1].startswith("ro,")
    assert found["/mnt/rw"][1].startswith("rw,")
    assert "700\nfrom the host\n" in output
    assert "Read-only file system" in output and "wrote" in output
    assert (host / "y").exists() and not (host / "x").exists()
    assert (rootfs / "mnt/file").read_text() == ""  # created empty, as a mount point
    assert host_mounts(str(tmp_path)) == []  # nothing reached the session's "/", shared


def test_a_read_only_bind_keeps_the_flags_its_source_has(rootfs, tmp_path):
    source = tmp_path / "locked"
    source.mkdir()

    def mount_source():
        mount("tmpfs", str(source), "tmpfs", MS_NOSUID | MS_NOEXEC)

    config = [{"destination": "/locked", "source": str(source), "options": ["bind", "ro"]}]
    config.insert(0, filesystem.DEFAULT_MOUNTS[0])  # /proc
    status, output = inside(rootfs, "cat /proc/self/mountinfo", config, before=mount_source)
    assert status == 0, output
    assert set(mountinfo(output)["/locked"][1].split(",")) >= {"ro", "nosuid", "noexec"}


@pytest.mark.parametrize("link", ["{host}", "../../../..{host}", "/../{host}/./"])
def test_a_destination_linked_out_of_the_rootfs_stays_inside(rootfs, tmp_path, link):
    host = tmp_path / "outside"
    host.mkdir()
    os.symlink(link.format(host=host), rootfs / "escape")
    config = [
        filesystem.DEFAULT_MOUNTS[0],
        {"destination": "/escape/sub", "type": "tmpfs", "source": "tmpfs", "options": []},
    ]
    status, output = inside(rootfs, "cat /proc/self/mountinfo", config)
    assert status == 0, output
    assert os.listdir(host) == []  # the host's directory got nothing
    inside_path = f"{host}/sub"  # where the link leads, read inside the rootfs
    assert mountinfo(output)[inside_path][2] == "tmpfs"
    assert (rootfs / inside_path.lstrip("/")).is_dir()


def test_a_dangling_link_is_followed_inside_the_rootfs(rootfs, tmp_path):
    os.symlink("/../../../../nowhere/at/all", rootfs / "dangling")
    config = [{"destination": "/dangling", "type": "tmpfs", "source": "tmpfs", "options": []}]
    status, output = inside(rootfs, "true", [filesystem.DEFAULT_MOUNTS[0], *config])
    assert status == 0, output
    assert (rootfs / "nowhere/at/all").is_dir()
    assert not os.path.exists("/nowhere")


def test_bad_mounts_are_one_line(rootfs, tmp_path):
    missing = {"destination": "/m", "source": str(tmp_path / "none"), "options": ["bind"]}
    status, output = inside(rootfs, "true", [missing])
    assert (status, output) == (
        125,
        f"error: cannot mount /m: its source {tmp_path / 'none'} does not exist\n",
    )
    (rootfs / "afile").write_text("")
    onto_file = {"destination": "/afile/x", "type": "tmpfs", "source": "tmpfs"}
    status, output = inside(rootfs, "true", [onto_file])
    assert status == 125
    assert output == "error: cannot mount /afile/x: /afile/x: not a directory\n"


def test_devices_are_made_with_their_mode_and_owner(rootfs):
    devices = [
        {"path": "/dev/test1", "type": "c", "major": 10, "minor": 666, "fileMode": 0o660,
         "uid": 1, "gid": 2},
        {"path": "/dev/sub/test2", "type": "b", "major": 8, "minor": 666, "fileMode": 0o600},
        {"path": "/dev/test3", "type": "p", "fileMode": 0o640},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
    ]  # fmt: skip
    script = "stat -c '%n %F %a %u:%g %t:%T' /dev/test1 /dev/sub/test2 /dev/test3 /dev/null"
    status, output = inside(rootfs, script + "; readlink /dev/ptmx", devices=devices)
    assert status == 0, output
    assert output.splitlines() == [
        "/dev/test1 character special file 660 1:2 a:29a",
        "/dev/sub/test2 block special file 600 0:0 8:29a",
        "/dev/test3 fifo 640 0:0 0:0",
        "/dev/null character special file 600 0:0 1:3",
        "pts/ptmx",
    ]


def test_a_device_of_unknown_type_is_one_line(rootfs):
    devices = [{"path": "/dev/x", "type": "q", "major": 1, "minor": 1}]
    status, output = inside(rootfs, "true", devices=devices)
    assert (status, output) == (125, "error: device /dev/x: its type must be c, u, b or p\n")


def test_a_bind_mounted_dev_gets_no_devices(rootfs, tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    config = [{"destination": "/dev", "type": "bind", "source": str(dev), "options": ["rbind"]}]
    status, output = inside(rootfs, "ls /dev", config)
    assert (status, output) == (0, "")


def test_a_readonly_root_keeps_its_other_mounts_writable(rootfs):
    script = "touch /x; touch /dev/shm/x && echo shm; awk '$5 == \"/\"' /proc/self/mountinfo"
    status, output = inside(rootfs, script, readonly=True)
    assert "touch: /x: Read-only file system" in output
    assert "shm\n" in output
    assert mountinfo(output)["/"][1].startswith("ro")
    status, output = inside(rootfs, "touch /x && echo written")
    assert output == "written\n"


# What linux.rootfsPropagation does, checked as runtime-tools' runtimetest checks it: a
# mount under "/" after "/" was bind-mounted elsewhere shows there only if "/" is shared.
PROPAGATION_SCRIPT = """
mkdir -p /target /mnt/test /mnt/mount; touch /mnt/test/file
mount -o rbind / /target || { echo unbindable; exit; }
mount -o bind /mnt/test /mnt/mount
test -e /target/mnt/mount/file && echo exposed || echo hidden
"""


@pytest.mark.parametrize(
    ("propagation", "seen"),
    [(None, "hidden"), ("shared", "exposed"), ("rshared", "exposed"), ("slave", "hidden"),
     ("private", "hidden"), ("unbindable", "unbindable")],
)  # fmt: skip
def test_root_propagation(rootfs, propagation, seen):
    status, output = inside(rootfs, PROPAGATION_SCRIPT, propagation=propagation)
    assert output.splitlines()[-1] == seen, output


def test_cgroups_show_the_containers_own_group(rootfs):
    """Without a cgroup namespace, the container's own group covers the hierarchy's root;
    with one, the hierarchy's root is the group already."""
    own = dict(
        line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().splitlines()
    )
    script = "cat /proc/self/mountinfo; touch /sys/fs/cgroup/x"
    status, output = inside(rootfs, script)
    found = mountinfo(output)
    assert "Read-only file system" in output
    if "memory" in own:  # cgroup v1
        assert found["/sys/fs/cgroup"][2] == "tmpfs"
        assert found["/sys/fs/cgroup/memory"][:1] == (own["memory"],)
        assert found["/sys/fs/cgroup/memory"][1].startswith("ro,")
    else:
        assert found["/sys/fs/cgroup"][0] == own[""]
    status, output = inside(rootfs, script, kinds=NAMESPACES | namespaces.CGROUP)
    found = mountinfo(output)
    cgroup = "/sys/fs/cgroup/memory" if "memory" in own else "/sys/fs/cgroup"
    assert found[cgroup][0] == "/"


def test_options_become_flags_propagation_and_data():
    options = mounts.Options(["rbind", "ro", "nosuid", "rw", "rslave", "size=1m", "mode=755"])
    assert options.flags == filesystem.MS_BIND | filesystem.MS_REC | MS_NOSUID
    assert options.cleared == filesystem.MS_RDONLY
    assert options.propagation == [mounts.PROPAGATION["rslave"]]
    assert options.data == "size=1m,mode=755"
    assert stat.S_ISCHR(filesystem.DEVICE_TYPES["u"])


def test_sysctls_are_set_in_the_containers_namespaces_only(rootfs):
    settings = {"kernel.shmmax": "4096", "fs/mqueue/msg_max": "20", "net.ipv4.ip_forward": "1"}
    host = {key: Path("/proc/sys", sysctl.path(key)).read_text() for key in settings}
    script = "cat /proc/sys/kernel/shmmax /proc/sys/fs/mqueue/msg_max /proc/sys/net/ipv4/ip_forward"
    status, output = inside(rootfs, script, after=lambda: sysctl.apply(settings))
    assert (status, output) == (0, "4096\n20\n1\n")
    assert host == {key: Path("/proc/sys", sysctl.path(key)).read_text() for key in settings}


def test_a_sysctl_that_cannot_be_written_is_one_line(rootfs):
    status, output = inside(rootfs, "true", after=lambda: sysctl.apply({"kernel.nothing": "1"}))
    assert (status, output) == (
        125,
        "error: cannot set sysctl kernel.nothing to '1': No such file or directory\n",
    )


def test_a_dotted_name_in_a_slashed_key_stays_one_name():
    assert sysctl.path("net/ipv4/conf/eth0.100/forwarding") == "net/ipv4/conf/eth0.100/forwarding"
    assert sysctl.path("net.ipv4.conf.all.forwarding") == "net/ipv4/conf/all/forwarding"


def test_runtime_tools_mounts_group(rootfs):
    """The mounts of runtime-tools' validation/mounts: tmpfs and bind mounts of /etc with
    every propagation, each with tmpfs options a bind mount must ignore."""
    config = [*filesystem.DEFAULT_MOUNTS]
    for name in ("shared", "slave", "private"):
        options = ["nosuid", "strictatime", "mode=755", "size=1k", name]
        config.append({"destination": f"/tmp/test-{name}", "type": "tmpfs", "options": options})
    for name in ("shared", "slave", "private", "unbindable"):
        for prefix, bind in (("", "bind"), ("r", "rbind")):
            config.append({"destination": f"/mnt/etc-{prefix}{name}", "source": "/etc",
                           "options": ["nosuid", "strictatime", "mode=755", "size=1k", bind,
                                       prefix + name]})  # fmt: skip
    status, output = inside(rootfs, "cat /proc/self/mountinfo", config)
    assert status == 0, output
    lines = [line for line in output.splitlines() if "/test-" in line or "/etc-" in line]
    assert [line.split()[4] for line in lines] == [entry["destination"] for entry in config[7:]]
    for line in lines:
        fields = line.split()
        name = fields[4].rsplit("-", 1)[1].removeprefix("r")  # rshared: shared, recursively
        assert fields[3] == ("/" if "/test-" in line else "/etc"), line
        assert "nosuid" in fields[5].split(","), line
        propagation = {"shared": "shared:", "slave": "master:", "unbindable": "unbindable"}
        optional = " ".join(fields[6 : fields.index("-")])
        if name in propagation and name != "slave":  # a slave of a private mount is private
            assert propagation[name] in optional, line
        else:
            assert "shared:" not in optional and "master:" not in optional, line


def test_recursive_attributes_reach_the_mounts_below(rootfs, tmp_path):
    """ "rro" makes the bind mount and the mounts below it read-only (mount_setattr(2));
    "ro" alone would leave the mounts below writable."""
    (tmp_path / "top" / "below").mkdir(parents=True)

    def mount_below():
        mount("tmpfs", str(tmp_path / "top" / "below"), "tmpfs")

    script = "touch /r/x /r/below/x /o/below/x 2>&1; grep -E ' /(r|o)' /proc/self/mountinfo"
    config = [
        filesystem.DEFAULT_MOUNTS[0],
        {"destination": "/r", "source": str(tmp_path / "top"), "options": ["rbind", "rro"]},
        {"destination": "/o", "source": str(tmp_path / "top"), "options": ["rbind", "ro"]},
        {"destination": "/s", "source": str(tmp_path / "top"),
         "options": ["rbind", "rnosuid", "rnoatime", "rrelatime"]},
    ]  # fmt: skip
    status, output = inside(rootfs, script + "; grep ' /s' /proc/self/mountinfo", config,
                            before=mount_below)  # fmt: skip
    assert "touch: /r/x: Read-only file system" in output
    assert "touch: /r/below/x: Read-only file system" in output
    assert "/o/below/x" not in output  # "ro" alone: the mount below stays writable
    found = mountinfo(output)
    assert found["/r/below"][1].startswith("ro,") and found["/o/below"][1].startswith("rw,")
    assert "nosuid" in found["/s/below"][1] and "relatime" in found["/s/below"][1]


def test_a_device_that_cannot_be_made_is_one_line(rootfs):
    (rootfs / "dev/sub").write_text("")  # where a directory is needed
    devices = [{"path": "/dev/sub/x", "type": "c", "major": 1, "minor": 3}]
    status, output = inside(rootfs, "true", filesystem.DEFAULT_MOUNTS[:1], devices=devices)
    assert (status, output) == (
        125,
        "error: cannot make device /dev/sub/x: Not a directory\n",
    )
