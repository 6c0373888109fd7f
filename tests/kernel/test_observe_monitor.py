"""`xdpkit monitor`: XDP events from tracepoints, probed first; missing ones skipped."""
import argparse
import errno
import json
import threading
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

import xdpkit
from xdpkit import lab
from xdpkit._sys import netns as xns
from xdpkit.cli import observe_cmd
from xdpkit.features import tracepoint_exists
from xdpkit.observe.monitor import EVENTS, Monitor

pytestmark = pytest.mark.kernel

MISSING_IFINDEX = 4000000

SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} out SEC(".maps");

SEC("xdp") int mon_abort(struct xdp_md *ctx) { return XDP_ABORTED; }
SEC("xdp") int mon_redirect_missing(struct xdp_md *ctx) { return bpf_redirect(%d, 0); }
SEC("xdp") int mon_devmap(struct xdp_md *ctx) { return bpf_redirect_map(&out, 0, 0); }
SEC("xdp") int mon_sink(struct xdp_md *ctx) { return XDP_DROP; }
char _license[] SEC("license") = "GPL";
""" % MISSING_IFINDEX

FRAME = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
              IP(src="198.18.1.2", dst="198.18.2.2") / UDP(dport=9) / (b"m" * 20))


@pytest.fixture
def pair(make_netns):
    gen, rcv = make_netns(ipv6=False), make_netns(ipv6=False)  # only our frames on the wire
    gen.veth("g0", "r0", peer_ns=rcv.name)
    return gen, rcv


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "mon.bpf.c"
    p.write_text(SRC)
    return p


@pytest.fixture
def attached(pair, src):
    """attached(name) attaches program ``name`` on r0 (native) for the rest of the test."""
    gen, rcv = pair
    made = []

    def attach(name, iface="r0"):
        with xns.inside(rcv.name):
            obj = xdpkit.Object.from_file(src, program=name)
            link = obj.program().attach(iface, mode="native")
        made.append((obj, link))
        return obj

    yield gen, rcv, attach
    for obj, link in reversed(made):
        with xns.inside(rcv.name):
            link.detach()
        obj.close()


def poll_until(mon, pred, timeout=3.0):
    rows, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows += mon.poll()
        if pred(rows):
            break
        time.sleep(0.05)
    return rows


def test_probes_match_the_kernel_and_missing_ones_are_skipped():
    with Monitor() as mon:
        for p in mon.probes:
            assert p.available == tracepoint_exists("xdp", p.event), p
        assert [p.event for p in mon.probes] == list(EVENTS)
        assert "xdp_exception" in mon.monitored
    if not tracepoint_exists("xdp", "xdp_redirect_map_err"):  # removed in 6.16: not fatal
        with Monitor(["xdp_redirect_map_err", "xdp_exception"]) as mon:
            assert mon.monitored == ["xdp_exception"]
            assert "no such tracepoint" in mon.probes[0].detail


def test_sees_xdp_aborted_exactly(attached):
    gen, rcv, attach = attached
    with Monitor() as mon:
        obj = attach("mon_abort")
        pid = obj.program().id
        lab.send_frames(gen.name, "g0", [FRAME] * 5)
        rows = poll_until(mon, lambda rs: sum(r.events for r in rs if r.prog_id == pid) >= 5)
        time.sleep(0.1)
        rows += mon.poll()
    mine = [r for r in rows if r.prog_id == pid]
    assert len({(r.event, r.ifindex, r.action) for r in mine}) == 1
    r = mine[0]
    assert (r.event, r.action, r.prog_name) == ("xdp_exception", "XDP_ABORTED", "mon_abort")
    assert r.ifname == f"r0@{rcv.name}"
    assert sum(x.events for x in mine) == 5


def test_sees_redirect_error_to_a_missing_ifindex(attached):
    gen, rcv, attach = attached
    with Monitor() as mon:
        pid = attach("mon_redirect_missing").program().id
        lab.send_frames(gen.name, "g0", [FRAME] * 4)
        rows = poll_until(mon, lambda rs: sum(r.events for r in rs if r.prog_id == pid) >= 4)
    mine = [r for r in rows if r.prog_id == pid]
    assert {(r.event, r.errno, r.target, r.action) for r in mine} == {
        ("xdp_redirect_err", errno.errorcode[errno.EINVAL], MISSING_IFINDEX, "XDP_REDIRECT")}
    assert sum(r.events for r in mine) == 4 and mine[0].err == -errno.EINVAL


def test_sees_devmap_transmit_with_packet_counts(attached, pair):
    gen, rcv = pair
    with xns.inside(rcv.name):
        lab.add_veth("r1", "s1")  # r0 -> devmap -> r1; s1 has XDP so r1 accepts xdp_frames
        ifindex_r1 = xdpkit._sys.netlink.ifindex_of("r1")
    _, _, attach = attached
    attach("mon_sink", "s1")
    with Monitor(["xdp_devmap_xmit"]) as mon:
        obj = attach("mon_devmap")
        with xns.inside(rcv.name):  # the kernel resolves a devmap's ifindex in the caller's namespace
            obj.maps["out"][0] = ifindex_r1
        lab.send_frames(gen.name, "g0", [FRAME] * 6)
        rows = poll_until(mon, lambda rs: sum(r.packets for r in rs if r.target == ifindex_r1) >= 6)
    mine = [r for r in rows if r.target == ifindex_r1 and r.ifname == f"r0@{rcv.name}"]
    assert mine and all(r.event == "xdp_devmap_xmit" and r.err == 0 for r in mine)
    assert sum(r.packets for r in mine) == 6 and sum(r.drops for r in mine) == 0


def test_cli_json_lines(attached, capsys):
    gen, rcv, attach = attached
    pid = attach("mon_abort").program().id
    parser = argparse.ArgumentParser()
    observe_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["monitor", "--json", "--duration", "2", "--interval", "0.25"])
    sender = threading.Timer(0.8, lambda: lab.send_frames(gen.name, "g0", [FRAME] * 3))
    sender.start()
    try:
        assert args.func(args) == 0
    finally:
        sender.join()
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert lines[0]["type"] == "probe"
    assert {p["event"] for p in lines[0]["probes"]} == set(EVENTS)
    events = [ln for ln in lines[1:] if ln["type"] == "event" and ln["prog_id"] == pid]
    assert sum(e["events"] for e in events) == 3
    assert all(e["event"] == "xdp_exception" and e["action"] == "XDP_ABORTED" for e in events)
