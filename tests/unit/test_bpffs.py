"""bpffs.pin_root's choice between /sys/fs/bpf and /run/xdpkit/bpffs, without mounting anything."""
import os

import pytest

from xdpkit import bpffs
from xdpkit.errors import XdpkitError


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Point both candidate locations into tmp_path; ``state`` says which ones are 'bpffs'."""
    sys_dir, run_dir = tmp_path / "sys-fs-bpf", tmp_path / "run-xdpkit-bpffs"
    sys_dir.mkdir()
    state = {"bpffs": set(), "mounts": []}
    monkeypatch.setattr(bpffs, "SYS_BPFFS", str(sys_dir))
    monkeypatch.setattr(bpffs, "RUN_BPFFS", str(run_dir))
    monkeypatch.setattr(bpffs, "is_bpffs", lambda p: p in state["bpffs"])

    def mount(target):
        state["mounts"].append(target)
        state["bpffs"].add(target)

    monkeypatch.setattr(bpffs, "_mount_bpffs", mount)
    return sys_dir, run_dir, state


def test_uses_sys_fs_bpf_when_it_is_a_bpffs(fake):
    sys_dir, run_dir, state = fake
    state["bpffs"].add(str(sys_dir))
    root = bpffs.pin_root()
    assert root == str(sys_dir / "xdpkit") and os.path.isdir(root)
    assert state["mounts"] == [] and not run_dir.exists()


def test_mounts_run_bpffs_when_sys_has_none(fake):
    sys_dir, run_dir, state = fake
    root = bpffs.pin_root()
    assert root == str(run_dir / "xdpkit") and os.path.isdir(root)
    assert state["mounts"] == [str(run_dir)]
    assert bpffs.pin_root() == root and state["mounts"] == [str(run_dir)]  # reused, not remounted


def test_mount_that_does_not_take_is_an_error_with_a_hint(fake, monkeypatch):
    monkeypatch.setattr(bpffs, "_mount_bpffs", lambda target: None)
    with pytest.raises(XdpkitError) as info:
        bpffs.pin_root()
    assert "mount -t bpf" in info.value.hint


def test_failed_mount_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(bpffs._libc, "mount", lambda *a: -1)
    with pytest.raises(XdpkitError) as info:
        bpffs._mount_bpffs(str(tmp_path))
    assert f"mount -t bpf bpf {tmp_path}" in info.value.hint


def test_is_bpffs_on_ordinary_and_missing_paths(tmp_path):
    assert not bpffs.is_bpffs(str(tmp_path))
    assert not bpffs.is_bpffs("/proc")
    assert not bpffs.is_bpffs(str(tmp_path / "missing"))


def test_is_bpffs_agrees_with_proc_mounts():
    # The last mount listed at a mount point is the one on top (/sys/fs/bpf is listed twice).
    kinds = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            _src, target, fstype = line.split()[:3]
            kinds[target] = fstype
    if "/sys/fs/bpf" not in kinds:
        pytest.skip("/sys/fs/bpf is not a mount point here")
    assert bpffs.is_bpffs("/sys/fs/bpf") == (kinds["/sys/fs/bpf"] == "bpf")
