"""Traffic statistics (<xdpkit/stats.h>, xdpkit.observe.stats, `xdpkit stats`): exact counters for
known frames, reading an app in place without detaching it, refusing to replace others."""
import argparse
import json
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

import xdpkit
from xdpkit import lab, xdp
from xdpkit._sys import netns as xns
from xdpkit.builtin import builtin_object
from xdpkit.cli import observe_cmd
from xdpkit.errors import AttachError
from xdpkit.observe.stats import StatsReader, StatsSession

pytestmark = pytest.mark.kernel

MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"
S4, D4, S6, D6 = "198.18.1.2", "198.18.2.2", "2001:db8:1::2", "2001:db8:2::2"

# "An app": any xdpkit-attached program that follows the counter convention, plus a per-rule
# counter map valued struct xdpkit_counter (what the exporter picks up without changes).
APP_SRC = r"""
#include <xdpkit/stats.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, struct xdpkit_counter);
} rule_hits SEC(".maps");

SEC("xdp")
int test_app(struct xdp_md *ctx)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;
	__u16 port;

	xdpkit_cursor_init(&c, ctx);
	if (xdpkit_parse_eth(&c, &eth, NULL) != ETH_P_IP || xdpkit_parse_ipv4(&c, &ip, NULL) != IPPROTO_UDP ||
	    xdpkit_parse_udp(&c, &udp) < 0)
		return xdpkit_stats_record(ctx, XDP_PASS);
	port = bpf_ntohs(udp->dest);
	if (port != 53)
		return xdpkit_stats_record(ctx, XDP_PASS);
	struct xdpkit_counter *h = bpf_map_lookup_elem(&rule_hits, &port);
	if (h) {
		h->packets++;
		h->bytes += ctx->data_end - ctx->data;
	} else {
		struct xdpkit_counter one = { 1, ctx->data_end - ctx->data };
		bpf_map_update_elem(&rule_hits, &port, &one, BPF_NOEXIST);
	}
	return xdpkit_stats_record(ctx, XDP_DROP);
}

/* verdict = last byte of the destination MAC: every verdict through BPF_PROG_TEST_RUN */
SEC("xdp")
int test_verdicts(struct xdp_md *ctx)
{
	__u8 *d = (void *)(long)ctx->data;

	if ((void *)(d + 6) > (void *)(long)ctx->data_end)
		return xdpkit_stats_record(ctx, XDP_PASS);
	return xdpkit_stats_record(ctx, d[5] % 5);
}

SEC("xdp")
int test_verdict_only(struct xdp_md *ctx)
{
	return xdpkit_stats_verdict(ctx, XDP_TX);
}

SEC("xdp")
int test_known_indexes(struct xdp_md *ctx)
{
	return xdpkit_stats_count(ctx, XDPKIT_ST_ET_IPV6, XDPKIT_ST_P_UDP, XDP_DROP);
}

char _license[] SEC("license") = "GPL";
"""

FOREIGN_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int plain_pass(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
"""


def frame_set():
    """{name: (frames, etype, proto)}: distinguishable frames with known classification."""
    e = Ether(src=MAC_A, dst=MAC_B)
    return {
        "udp4": ([bytes(e / IP(src=S4, dst=D4) / UDP(sport=1000, dport=7) / (b"u" * n)) for n in range(5)],
                 "IPv4", "UDP"),
        "dns4": ([bytes(e / IP(src=S4, dst=D4) / UDP(sport=1000, dport=53) / (b"d" * 30))] * 4, "IPv4", "UDP"),
        "tcp4": ([bytes(e / IP(src=S4, dst=D4) / TCP(sport=1, dport=80, flags="S"))] * 3, "IPv4", "TCP"),
        "icmp4": ([bytes(e / IP(src=S4, dst=D4) / ICMP())] * 2, "IPv4", "ICMP"),
        "udp6": ([bytes(e / IPv6(src=S6, dst=D6) / UDP(sport=1, dport=9) / (b"x" * 40))] * 6, "IPv6", "UDP"),
        "icmp6": ([bytes(e / IPv6(src=S6, dst=D6) / ICMPv6EchoRequest())] * 7, "IPv6", "ICMPv6"),
        "tcp6": ([bytes(e / IPv6(src=S6, dst=D6) / TCP(sport=1, dport=443, flags="S"))], "IPv6", "TCP"),
        "arp": ([bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=S4, pdst=D4, hwsrc=MAC_A))] * 8,
                "ARP", "non-IP"),
        "vlan": ([bytes(e / Dot1Q(vlan=10) / IP(src=S4, dst=D4) / UDP(dport=7) / (b"v" * 20))] * 9,
                 "VLAN", "UDP"),  # exclusive: VLAN only in etype, its inner UDP in proto
        "gre": ([bytes(e / IP(src=S4, dst=D4, proto=47) / (b"g" * 24))] * 2, "IPv4", "other"),
        "lldp": ([bytes(Ether(src=MAC_A, dst="01:80:c2:00:00:0e", type=0x88CC) / (b"l" * 46))], "LLDP", "non-IP"),
        "raw": ([bytes(Ether(src=MAC_A, dst=MAC_B, type=0x9000) / (b"r" * 46))] * 2, "other", "non-IP"),
    }


def expected(frames: dict, drop=("dns4",)):
    exp = {"etype": {}, "proto": {}, "verdict": {}}

    def add(group, name, fs):
        p, b = exp[group].get(name, (0, 0))
        exp[group][name] = (p + len(fs), b + sum(map(len, fs)))

    for kind, (fs, et, pr) in frames.items():
        add("etype", et, fs)
        add("proto", pr, fs)
        add("verdict", "XDP_DROP" if kind in drop else "XDP_PASS", fs)
    return exp


def nonzero(sample) -> dict:
    return {g: {n: (c.packets, c.bytes) for n, c in slots.items() if c.packets or c.bytes}
            for g, slots in sample.counters.items()}


@pytest.fixture
def pair(make_netns):
    """gen (g0) -> rcv (r0); IPv6 off in both so no router solicitations or MLD reach r0."""
    gen, rcv = make_netns(ipv6=False), make_netns(ipv6=False)  # only our frames on the wire
    gen.veth("g0", "r0", peer_ns=rcv.name)
    return gen, rcv


@pytest.fixture
def app_src(tmp_path):
    p = tmp_path / "test_app.bpf.c"
    p.write_text(APP_SRC)
    return p


@pytest.fixture
def app_on_r0(pair, app_src):
    """The test app attached to r0 the way `xdpkit load` does (netlink, persistent)."""
    gen, rcv = pair
    with xns.inside(rcv.name):
        obj = xdpkit.Object.from_file(app_src, program="test_app")
        link = obj.program().attach("r0", netlink=True)
    try:
        yield gen, rcv, obj
    finally:
        with xns.inside(rcv.name):
            link.detach()
        obj.close()


def send_all(gen, frames: dict) -> None:
    for fs, _, _ in frames.values():
        lab.send_frames(gen.name, "g0", fs)


def wait_total(read, want: int, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        s = read()
        if s.total().packets >= want or time.monotonic() > deadline:
            return s
        time.sleep(0.02)


def test_builtin_program_counts_every_class_exactly(pair):
    gen, rcv = pair
    frames = frame_set()
    with xns.inside(rcv.name), StatsSession("r0", mode="native") as session:
        assert session.source == "attached"
        assert xdp.query("r0")[0].name == "xdpkit_stats"
        send_all(gen, frames)
        sample = wait_total(session.read, sum(len(f) for f, _, _ in frames.values()))
    assert nonzero(sample) == expected(frames, drop=())
    with xns.inside(rcv.name):
        assert xdp.query("r0") == []  # the statistics program went with the session


def test_app_counters_read_in_place_without_detaching(app_on_r0):
    gen, rcv, obj = app_on_r0
    prog_id = obj.program().id
    frames = frame_set()
    send_all(gen, frames)
    with xns.inside(rcv.name), StatsSession("r0") as session:
        assert session.source == "app"
        assert session.attachment.id == prog_id
        sample = wait_total(session.read, sum(len(f) for f, _, _ in frames.values()))
    assert nonzero(sample) == expected(frames)
    with xns.inside(rcv.name):
        atts = xdp.query("r0")
    assert [a.id for a in atts] == [prog_id]  # still the app, still attached
    dns = frames["dns4"][0]
    assert obj.maps["rule_hits"][53].sum() == {"packets": len(dns), "bytes": sum(map(len, dns))}


def test_every_verdict_and_the_cheaper_variants(app_src):
    base = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=S4, dst=D4) / UDP(dport=7) / (b"p" * 10))
    with xdpkit.Object.from_file(app_src, program="test_verdicts") as obj:
        for v in range(5):
            f = base[:5] + bytes([v]) + base[6:]
            assert int(obj.program().run(f, repeat=v + 1).verdict) == v
        s = StatsReader.for_object(obj).read()
    assert {n: c.packets for n, c in s.counters["verdict"].items()} == {
        "XDP_ABORTED": 1, "XDP_DROP": 2, "XDP_PASS": 3, "XDP_TX": 4, "XDP_REDIRECT": 5}
    assert s.total().packets == 15 and s.total().bytes == 15 * len(base)
    assert s.counters["etype"]["IPv4"].packets == 15 and s.counters["proto"]["UDP"].packets == 15

    with xdpkit.Object.from_file(app_src, program="test_verdict_only") as obj:
        obj.program().run(base, repeat=3)
        s = StatsReader.for_object(obj).read()
    assert nonzero(s) == {"etype": {}, "proto": {}, "verdict": {"XDP_TX": (3, 3 * len(base))}}

    with xdpkit.Object.from_file(app_src, program="test_known_indexes") as obj:
        obj.program().run(base, repeat=2)
        s = StatsReader.for_object(obj).read()
    assert (s.counters["etype"]["IPv6"].packets, s.counters["proto"]["UDP"].packets,
            s.counters["verdict"]["XDP_DROP"].packets) == (2, 2, 2)


def test_truncated_frames_get_defined_slots():
    e = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x8100))  # a VLAN tag announced, then nothing
    ip_cut = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=S4, dst=D4) / UDP())[:20]
    with xdpkit.Object.from_file(builtin_object("stats")) as obj:
        assert obj.program().run(e).verdict == xdpkit.program.Verdict.XDP_PASS
        obj.program().run(ip_cut)
        s = StatsReader.for_object(obj).read()
    assert nonzero(s)["etype"] == {"VLAN": (1, 14), "IPv4": (1, 20)}
    assert nonzero(s)["proto"] == {"other": (2, 34)}


def test_refuses_to_replace_a_program_without_counters(pair, tmp_path):
    gen, rcv = pair
    src = tmp_path / "plain.bpf.c"
    src.write_text(FOREIGN_SRC)
    with xns.inside(rcv.name):
        obj = xdpkit.Object.from_file(src)
        link = obj.program().attach("r0", netlink=True)
        try:
            with pytest.raises(AttachError) as err:
                StatsSession("r0").open()
            assert "without xdpkit counters" in str(err.value) and "stats.h" in err.value.hint
            assert xdp.query("r0")[0].id == obj.program().id
        finally:
            link.detach()
            obj.close()


def _cli(argv):
    parser = argparse.ArgumentParser()
    observe_cmd.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_once_json_reads_the_app(app_on_r0, capsys):
    gen, rcv, obj = app_on_r0
    frames = frame_set()
    send_all(gen, frames)
    time.sleep(0.1)
    with xns.inside(rcv.name):
        assert _cli(["stats", "r0", "--once", "--json", "--interval", "0.2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    s = json.loads(lines[0])
    assert s["source"] == "app" and s["program"]["id"] == obj.program().id and s["ifname"] == "r0"
    exp = expected(frames)
    for group in ("etype", "proto", "verdict"):
        got = {n: (r["packets"], r["bytes"]) for n, r in s[group].items() if r["packets"]}
        assert got == exp[group]
        assert all({"pps", "bps"} <= set(r) for r in s[group].values())
    assert s["total"]["packets"] == sum(len(f) for f, _, _ in frames.values())
