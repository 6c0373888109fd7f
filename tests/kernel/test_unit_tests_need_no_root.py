"""tests/unit runs, and passes, without any privilege: nothing there needs root's capabilities
or the kernel's BPF syscalls (decisions, encodings and plans are tested through fake kernels)."""
import sys
from pathlib import Path

import pytest

from tests.unprivileged import run_without_capabilities

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]


def test_the_unit_tests_pass_without_capabilities(tmp_path):
    r = run_without_capabilities([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  "--basetemp", str(tmp_path / "t"), str(REPO / "tests" / "unit")],
                                 env={"XDPKIT_CACHE_DIR": str(tmp_path / "cache")}, cwd=str(REPO), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
    # and the same run really had no privilege: it could not list BPF objects
    probe = run_without_capabilities([sys.executable, "-c", "from xdpkit.kernel import bpf_usable; print(bpf_usable())"])
    assert "not usable" in probe.stdout, probe.stdout + probe.stderr
