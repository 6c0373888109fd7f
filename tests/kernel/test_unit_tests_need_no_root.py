"""tests/unit runs, and passes, as an unprivileged user: nothing there needs root or the kernel's
BPF syscalls (decisions, encodings and plans are tested through fake kernels)."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import xdpkit

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]


def test_the_unit_tests_pass_as_nobody():
    with tempfile.TemporaryDirectory(prefix="xdpkit-nobody-") as home:  # pytest's tmp_path is root's only
        os.chmod(home, 0o777)
        _run_as_nobody(Path(home))


def _run_as_nobody(tmp_path: Path) -> None:
    site = [p for p in sys.path if p.endswith("site-packages")]
    src = str(Path(xdpkit.__file__).resolve().parents[1])

    def drop():
        os.setgid(65534)
        os.setgroups([])
        os.setuid(65534)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": ":".join([src, str(REPO), *site]),
           "XDPKIT_CACHE_DIR": str(tmp_path / "cache")}
    # Debian's python3 (the set-up installs it): the virtualenv's may sit where nobody cannot read
    r = subprocess.run(["/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "unit")],
                       capture_output=True, text=True, timeout=600, cwd=str(tmp_path), preexec_fn=drop, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
