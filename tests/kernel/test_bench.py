"""Benchmark harness: the JSON each mode writes has the documented keys and sane values.
(Speed targets are checked by bench/run.py, never by tests.)"""
import json
import sys
from pathlib import Path

import pytest

import xdpkit
from xdpkit.lab import bench
from xdpkit.lab import trafficgen as tg

pytestmark = pytest.mark.kernel

EX = Path(xdpkit.__file__).parent / "examples"
PROG_KEYS = {"kind", "repeat", "rounds", "packets", "rows"}
PROG_ROW_KEYS = {"name", "ns_per_packet", "ratio", "verdicts"}
LIVE_KEYS = {"kind", "duration_s", "threads", "frame_size", "reference", "rows"}
LIVE_ROW_KEYS = {"receiver", "mpps", "ratio", "samples", "sent_mpps", "cpu_percent"}


def test_bench_prog_json(tmp_path):
    frame = tg.build_template().frame
    out = tmp_path / "prog.json"
    r = __import__("subprocess").run(
        [sys.executable, "-m", "xdpkit", "bench", "prog", str(EX / "xdp_drop_udp.bpf.c"), "--section",
         "xdp_drop_udp", "--packet", frame.hex(), "--repeat", "10000", "--rounds", "2", "--json",
         "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert json.loads(out.read_text()) == res
    assert set(res) == PROG_KEYS and res["kind"] == "prog"
    ref, prog = res["rows"]
    assert set(ref) == PROG_ROW_KEYS and set(prog) == PROG_ROW_KEYS
    assert ref["name"] == bench.REFERENCE and ref["ratio"] == 1.0
    assert prog["verdicts"] == {"XDP_DROP": 1} and prog["ns_per_packet"] > 0 and prog["ratio"] > 0


def test_bench_prog_rejects_tiny_repeat():
    with pytest.raises(xdpkit.ConfigError, match="too small"):
        bench.bench_prog(EX / "xdp_pass.bpf.c", [tg.build_template().frame], repeat=10)


def test_bench_live_json_and_cleanup():
    res = bench.bench_live(receivers=("xdp-drop", "nft-drop"), duration=3)
    assert set(res) == LIVE_KEYS and res["kind"] == "live" and res["reference"] == "native XDP_DROP"
    drop, nft = res["rows"]
    assert set(drop) == LIVE_ROW_KEYS
    assert drop["ratio"] == 1.0 and drop["mpps"] > 0.1 and nft["mpps"] > 0.01
    assert len(drop["samples"]) >= 3
    assert not [n for n in xdpkit._sys.netns.list_namespaces() if n.startswith("xbench-")]


def test_bench_live_unknown_receiver():
    with pytest.raises(xdpkit.ConfigError, match="unknown receiver"):
        bench.bench_live(receivers=("bogus",), duration=3)
