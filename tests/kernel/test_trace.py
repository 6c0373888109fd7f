"""bpf_printk output read back through trace_pipe."""
import os
import time

import pytest

import xdpkit
from xdpkit.observe import trace

pytestmark = pytest.mark.kernel

if os.geteuid() != 0:
    if os.environ.get("CI") == "true":
        raise RuntimeError("kernel tests must run as root under CI=true")
    pytest.skip("needs root and a BPF-capable kernel", allow_module_level=True)

PROG = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int trace_test(struct xdp_md *ctx)
{
    bpf_printk("xdpkit-trace-test %d", 42);
    return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
"""

FRAME = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(50)


def test_ensure_tracefs():
    d = trace.ensure_tracefs()
    assert os.path.exists(os.path.join(d, "trace_pipe"))
    assert trace.ensure_tracefs() == d  # idempotent


def test_bpf_printk_is_streamed(tmp_path):
    src = tmp_path / "trace_test.bpf.c"
    src.write_text(PROG)
    with xdpkit.Object.from_file(src) as obj:
        prog = obj.program()
        for _ in range(5):
            assert prog.run(FRAME).retval == 2
    lines = list(trace.stream(duration=3, match="xdpkit-trace-test"))
    assert lines, "no bpf_printk output seen in trace_pipe"
    for ln in lines:
        assert "xdpkit-trace-test" in ln.raw
        assert ln.message == "xdpkit-trace-test 42"
        assert ln.timestamp > 0 and ln.cpu >= 0
        assert ln.to_dict()["message"] == ln.message


def test_count_stops_early(tmp_path):
    src = tmp_path / "trace_test.bpf.c"
    src.write_text(PROG)
    with xdpkit.Object.from_file(src) as obj:
        prog = obj.program()
        for _ in range(4):
            prog.run(FRAME)
    t0 = time.monotonic()
    lines = list(trace.stream(duration=10, count=2, match="xdpkit-trace-test"))
    assert len(lines) == 2
    assert time.monotonic() - t0 < 5
    list(trace.stream(duration=0.5, match="xdpkit-trace-test"))  # drain the rest


def test_duration_honoured_without_output():
    t0 = time.monotonic()
    lines = list(trace.stream(duration=1.0, match="xdpkit-never-printed-marker"))
    elapsed = time.monotonic() - t0
    assert lines == []
    assert 0.9 <= elapsed < 3.0
