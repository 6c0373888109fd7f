"""`xdpkit trace --program`: bpf_printk lines attributed to the program that printed them."""
import argparse
import json
import os
import threading
import time

import pytest

import xdpkit
from xdpkit.observe import trace
from xdpkit.cli import system_cmd

pytestmark = pytest.mark.kernel

PROGS = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __attribute__((noinline)) int helper_prints(struct xdp_md *ctx)
{
	bpf_printk("xdpkit-obs-trace from a subprogram");
	return XDP_PASS;
}

SEC("xdp") int obs_trace_alpha_long_name(struct xdp_md *ctx)
{
	bpf_printk("xdpkit-obs-trace alpha");
	return XDP_PASS;
}
SEC("xdp") int obs_trace_beta(struct xdp_md *ctx)
{
	bpf_printk("xdpkit-obs-trace beta");
	return helper_prints(ctx);
}
char _license[] SEC("license") = "GPL";
"""
FRAME = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(50)


@pytest.fixture
def progs(tmp_path):
    src = tmp_path / "obs_trace.bpf.c"
    src.write_text(PROGS)
    with xdpkit.Object.from_file(src) as obj:
        yield obj


def run_later(obj, times=3, delay=0.5):
    """Run both programs after the stream had time to set up its tracefs instance."""
    def go():
        time.sleep(delay)
        for _ in range(times):
            for p in obj.programs.values():
                p.run(FRAME)
    t = threading.Thread(target=go)
    t.start()
    return t


def instances() -> list:
    d = os.path.join(trace.ensure_tracefs(), "instances")
    return [n for n in os.listdir(d) if n.startswith("xdpkit-trace-")]


def test_filters_by_full_name(progs):
    t = run_later(progs)
    lines = list(trace.stream(duration=4, count=3, program="obs_trace_alpha_long_name"))
    t.join()
    assert [ln.message for ln in lines] == ["xdpkit-obs-trace alpha"] * 3
    assert {ln.program for ln in lines} == {"obs_trace_alpha_long_name"}
    assert instances() == []


def test_filters_by_id_and_follows_subprograms(progs):
    beta = progs.programs["obs_trace_beta"]
    t = run_later(progs)
    lines = list(trace.stream(duration=2.5, program=beta.id))
    t.join()
    assert sorted(ln.message for ln in lines) == (["xdpkit-obs-trace beta"] * 3 +
                                                  ["xdpkit-obs-trace from a subprogram"] * 3)
    # the innermost frame names the subprogram; the filter matched the program below it
    assert {ln.program for ln in lines} == {"obs_trace_beta", "helper_prints"}


def test_cli_program_json(progs, capsys):
    parser = argparse.ArgumentParser()
    system_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["trace", "--program", "obs_trace_beta", "--match", "beta",
                              "--count", "2", "--duration", "4", "--json"])
    t = run_later(progs)
    assert args.func(args) == 0
    t.join()
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [(r["program"], r["message"]) for r in rows] == [("obs_trace_beta", "xdpkit-obs-trace beta")] * 2
