"""The benchmark scripts (not tests themselves) still import and find their inputs after the
tree moves: `make bench` is not run by CI, so this is what notices a path gone stale."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_run_imports_and_finds_the_examples():
    before = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location("xdpkit_bench_run", REPO / "bench" / "run.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = before
        for name in ("agent", "firewall", "firewall_scale", "memory", "prefixsets", "lb", "observe"):
            sys.modules.pop(name, None)
    assert (mod.EXAMPLES / "xdp_pass.bpf.c").is_file()
    assert mod.RESULTS == REPO / "bench" / "results"
