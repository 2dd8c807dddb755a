"""The busybox rootfs that `invoke rootfs` builds with no internet."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from runtime import rootfs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    try:
        busybox = rootfs.find_static_busybox()
    except rootfs.RootfsError as error:
        pytest.skip(str(error))
    return rootfs.build_busybox_rootfs(str(tmp_path_factory.mktemp("r") / "busybox"), busybox)


def test_applets_link_to_busybox(built):
    for applet in ("bin/sh", "bin/ls", "bin/hostname", "bin/ps"):
        assert os.readlink(os.path.join(built, applet)) == "/bin/busybox"


def test_users_groups_and_tmp(built):
    with open(os.path.join(built, "etc/passwd")) as file:
        assert file.readline().startswith("root:x:0:0:")
    with open(os.path.join(built, "etc/group")) as file:
        assert file.readline() == "root:x:0:\n"
    assert stat.S_IMODE(os.stat(os.path.join(built, "tmp")).st_mode) == 0o1777


def test_rebuild_replaces_in_place(built):
    marker = os.path.join(built, "stale")
    open(marker, "w").close()
    rootfs.build_busybox_rootfs(built, rootfs.find_static_busybox())
    assert not os.path.exists(marker)
    assert not [n for n in os.listdir(os.path.dirname(built)) if n.startswith(".rootfs-")]


def test_a_dynamically_linked_busybox_is_refused_with_what_to_install(tmp_path, monkeypatch):
    os.symlink(sys.executable, tmp_path / "busybox")  # any dynamically linked program
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(rootfs.RootfsError, match="install 'busybox-static'"):
        rootfs.find_static_busybox()
