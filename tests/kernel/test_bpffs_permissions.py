"""Only root may change xdpkit's pins: the bpffs it mounts and its pin root are not writable by
other users, and one an older version mounted world-writable is made safe."""
import os
import stat
import subprocess

import pytest

from xdpkit import bpffs

pytestmark = pytest.mark.kernel

NOBODY = 65534


def as_nobody(code: str) -> subprocess.CompletedProcess:
    def drop():
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    # Debian's python3 (the set-up installs it): the virtualenv's may sit where nobody cannot read
    return subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=30,
                          preexec_fn=drop, env={"HOME": "/nonexistent", "PATH": os.environ["PATH"]})


def test_a_bpffs_mounted_by_xdpkit_is_not_world_writable(tmp_path):
    target = tmp_path / "bpffs"
    target.mkdir()
    bpffs._mount_bpffs(str(target))
    try:
        assert bpffs.is_bpffs(str(target))
        assert stat.S_IMODE(os.stat(target).st_mode) & 0o777 == 0o755   # bpffs adds the sticky bit
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_the_pin_roots_refuse_other_users():
    keep = bpffs.existing_pin_roots()
    try:
        for root in (bpffs.pin_root(), bpffs.pin_root(shared=True)):
            st = os.stat(root)
            assert st.st_uid == 0 and not st.st_mode & 0o022
            r = as_nobody(f"import os; os.mkdir({os.path.join(root, 'intruder')!r})")
            assert r.returncode != 0 and "PermissionError" in r.stderr
        st = os.stat(bpffs.RUN_BPFFS)
        assert not st.st_mode & 0o022
    finally:
        bpffs.remove_empty_pin_roots(keep)


def test_a_world_writable_shared_bpffs_is_repaired():
    bpffs.pin_root(shared=True)              # mounted (or reused) at /run/xdpkit/bpffs
    os.chmod(bpffs.RUN_BPFFS, 0o1777)        # as an older xdpkit left it
    keep = bpffs.existing_pin_roots()
    try:
        bpffs.pin_root(shared=True)
        assert stat.S_IMODE(os.stat(bpffs.RUN_BPFFS).st_mode) & 0o777 == 0o755
    finally:
        bpffs.remove_empty_pin_roots(keep)
