"""Load balancer data plane through BPF_PROG_TEST_RUN: exact output packets (outer headers,
inner packet intact), non-VIP traffic untouched, flow stickiness, drain and removal semantics,
MTU handling, fragments, counters, and the decapsulation program."""
import ipaddress
import secrets
import struct
from collections import Counter

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import Dot1Q, Ether

from xdpkit import ConfigError, Verdict
from xdpkit._sys import netns as xns
from xdpkit.apps.lb.config import parse_config
from xdpkit.apps.lb.control import LoadBalancer, decap_load, decap_stats, decap_unload
from xdpkit.apps.lb.flowhash import flow_hash, flow_key, outer_source
from xdpkit.object import Object
from xdpkit.builtin import builtin_object

pytestmark = pytest.mark.kernel

CLIENT_MAC, LB_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
VIP4, VIP6 = "198.18.200.1", "2001:db8:200::1"
BE4 = ["198.18.21.2", "198.18.22.2", "198.18.23.2"]
BE6 = ["2001:db8:21::2", "2001:db8:22::2", "2001:db8:23::2"]
SEED = 7
BASE = f"""
seed = {SEED}
encap_source_v4 = "198.18.99.0/24"
encap_source_v6 = "2001:db8:99::/64"
mtu = 1500

[[vip]]
address = "{VIP4}"
protocol = "tcp"
port = 80
table_size = 1009
backends = [{{ address = "{BE4[0]}" }}, {{ address = "{BE4[1]}" }}, {{ address = "{BE4[2]}" }}]

[[vip]]
address = "{VIP6}"
protocol = "udp"
table_size = 1009
backends = [{{ address = "{BE6[0]}" }}, {{ address = "{BE6[1]}" }}]

[[vip]]
address = "{VIP4}"
protocol = "udp"
port = 53
hash = "no-sport"
table_size = 1009
backends = [{{ address = "{BE6[2]}" }}]
"""


def tcp4(sport=40000, dport=80, dst=VIP4, payload=b"hello", **ip):
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.10.2", dst=dst, **ip)
                 / TCP(sport=sport, dport=dport, flags="S") / payload)


def udp6(sport=40000, dport=5000, payload=b"hello"):
    return bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="2001:db8:10::2", dst=VIP6)
                 / UDP(sport=sport, dport=dport) / payload)


@pytest.fixture(scope="module")
def loaded():
    from xdpkit.lab import add_veth, lo_up
    from xdpkit.testing.plugin import _claim

    name = "xdpkt-lb-" + secrets.token_hex(3)
    _claim(name)
    xns.create(name)
    try:
        with xns.inside(name):
            lo_up()
            add_veth("la", "lb")
            lb = LoadBalancer.load("la", parse_config(BASE))
        yield name, lb
        with xns.inside(name):
            LoadBalancer.unload("la")
        lb.close()
    finally:
        xns.remove(name)


@pytest.fixture
def lb(loaded):
    name, lb = loaded
    with xns.inside(name):
        lb.apply(parse_config(BASE), down=set())
        lb.forget_flows()
        yield lb


def run(lb, frame):
    return lb._obj.programs["xdpkit_lb"].run(frame)


def expected_backend(lb, src, dst, proto, sport, dport):
    return lb.backend_of(src, dst, proto, sport, dport)


def test_ipv4_vip_is_encapsulated_exactly(lb):
    frame = tcp4()
    res = run(lb, frame)
    assert res.verdict == Verdict.XDP_TX
    out = Ether(res.data)
    h = flow_hash(flow_key("198.18.10.2", VIP4, "tcp", 40000, 80), SEED)
    assert out.src == LB_MAC and out.dst == CLIENT_MAC  # back to the sender (the router)
    outer = out[IP]
    assert outer.proto == 4 and outer.ttl == 64 and outer.flags == "DF" and outer.len == len(frame) - 14 + 20
    assert outer.dst == BE4[[ipaddress.ip_address(b) for b in BE4].index(
        ipaddress.ip_address(expected_backend(lb, "198.18.10.2", VIP4, "tcp", 40000, 80)))]
    assert outer.src == outer_source(h, "198.18.99.0/24")
    assert IP(bytes(outer)).chksum == IP(bytes(outer)).__class__(bytes(outer)).chksum
    rebuilt = IP(bytes(outer))
    del rebuilt.chksum
    assert IP(bytes(rebuilt)).chksum == outer.chksum  # the program's header checksum is right
    assert bytes(outer.payload) == frame[14:]  # inner packet intact


def test_ipv6_vip_is_encapsulated_exactly(lb):
    frame = udp6()
    res = run(lb, frame)
    assert res.verdict == Verdict.XDP_TX
    out = Ether(res.data)
    outer = out[IPv6]
    h = flow_hash(flow_key("2001:db8:10::2", VIP6, "udp", 40000, 5000), SEED)
    assert outer.nh == 41 and outer.hlim == 64 and outer.plen == len(frame) - 14
    assert outer.fl == h & 0xFFFFF
    assert outer.dst in BE6[:2]
    assert outer.dst == expected_backend(lb, "2001:db8:10::2", VIP6, "udp", 40000, 5000)
    assert outer.src == outer_source(h, "2001:db8:99::/64")
    assert bytes(outer.payload) == frame[14:]


def test_ipv4_vip_to_ipv6_backend_and_no_sport(lb):
    """udp/VIP4:53 has one IPv6 backend (4-in-6) and hashes without the source port."""
    frame = bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.10.2", dst=VIP4) / UDP(sport=1111, dport=53))
    res = run(lb, frame)
    outer = Ether(res.data)[IPv6]
    assert res.verdict == Verdict.XDP_TX and outer.nh == 4 and outer.dst == BE6[2]
    assert bytes(outer.payload) == frame[14:]
    hits = lb.stats()["flows"]["hits"]
    for sport in (2222, 3333):  # the same flow to a no-sport VIP: remembered, not placed again
        res = run(lb, bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.10.2", dst=VIP4) / UDP(sport=sport, dport=53)))
        assert Ether(res.data)[IPv6].dst == BE6[2]
    assert lb.stats()["flows"]["hits"] == hits + 2


@pytest.mark.parametrize("frame", [
    tcp4(dport=81),                                                     # port not served
    tcp4(dst="198.18.200.2"),                                           # address not a VIP
    bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.10.2", dst=VIP4) / ICMP()),
    bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / Dot1Q(vlan=5) / IP(src="198.18.10.2", dst=VIP4) / TCP(dport=80)),
    bytes(Ether(src=CLIENT_MAC, dst=LB_MAC, type=0x0806) / (b"\0" * 28)),
], ids=["other-port", "other-address", "icmp", "vlan", "arp"])
def test_non_vip_traffic_passes_untouched(lb, frame):
    res = run(lb, frame)
    assert res.verdict == Verdict.XDP_PASS and res.data == frame


def test_truncated_packets_pass_and_are_counted(lb):
    before = lb.stats()["events"].get("malformed", {}).get("packets", 0)
    frame = tcp4()[:14 + 20 + 2]  # IPv4 header, half the ports
    res = run(lb, frame)
    assert res.verdict == Verdict.XDP_PASS and res.data == frame
    assert lb.stats()["events"]["malformed"]["packets"] == before + 1


@pytest.mark.parametrize("frame", [
    bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.10.2", dst=VIP4, len=1500) / TCP(dport=80)),
    bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.10.2", dst=VIP4, len=0) / TCP(dport=80)),
    bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.10.2", dst=VIP4, len=19) / TCP(dport=80)),
    bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="2001:db8:10::2", dst=VIP6, plen=900) / UDP(dport=5000)),
], ids=["v4-len-past-frame", "v4-len-0", "v4-len-below-header", "v6-payload-past-frame"])
def test_ip_lengths_that_do_not_fit_are_malformed_not_balanced(lb, frame):
    before = lb.stats()["events"].get("malformed", {}).get("packets", 0)
    res = run(lb, frame)
    assert res.verdict == Verdict.XDP_PASS and res.data == frame
    assert lb.stats()["events"]["malformed"]["packets"] == before + 1


def test_ethernet_padding_after_a_vip_packet_is_balanced(lb):
    frame = bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IP(src="198.18.10.2", dst=VIP4) / TCP(dport=80, flags="S"))
    padded = frame + b"\0" * (60 - len(frame)) if len(frame) < 60 else frame + b"\0" * 6
    assert run(lb, padded).verdict == Verdict.XDP_TX


def test_flows_stick_when_the_pool_changes(lb):
    flows = [tcp4(sport=20000 + i) for i in range(300)]
    first = [Ether(run(lb, f).data)[IP].dst for f in flows]
    assert len(set(first)) == 3
    lb.add_backend(f"tcp/{VIP4}:80", "198.18.24.2")
    again = [Ether(run(lb, f).data)[IP].dst for f in flows]
    assert again == first  # remembered flows keep their backend
    lb.forget_flows()
    fresh = [Ether(run(lb, f).data)[IP].dst for f in flows]
    moved = sum(a != b for a, b in zip(first, fresh))
    assert "198.18.24.2" in fresh
    # to the new one; Maglev moves a few slots between old backends too (4 of 1,009 here)
    assert sum(b != "198.18.24.2" for a, b in zip(first, fresh) if a != b) <= 300 * 0.01
    assert 0 < moved < 300 * 0.4


def test_drained_backend_keeps_flows_gets_no_new_ones(lb):
    flows = [tcp4(sport=30000 + i) for i in range(200)]
    first = [Ether(run(lb, f).data)[IP].dst for f in flows]
    lb.drain(f"tcp/{VIP4}:80", BE4[0])
    assert [Ether(run(lb, f).data)[IP].dst for f in flows] == first
    new = [Ether(run(lb, tcp4(sport=50000 + i)).data)[IP].dst for i in range(200)]
    assert BE4[0] not in new and set(new) == set(BE4[1:])
    st = lb.stats()["vips"][0]["backends"][0]
    assert st["state"] == "drained" and st["weight"] == 0


def test_removed_backend_loses_its_flows(lb):
    flows = [tcp4(sport=31000 + i) for i in range(200)]
    first = [Ether(run(lb, f).data)[IP].dst for f in flows]
    lb.delete_backend(f"tcp/{VIP4}:80", BE4[1])
    after = [Ether(run(lb, f).data)[IP].dst for f in flows]
    assert BE4[1] not in after
    assert all(a == b for a, b in zip(first, after) if a != BE4[1])  # the others stay


def test_health_down_drains(lb):
    lb.set_health(f"tcp/{VIP4}:80", BE4[2], up=False)
    new = {Ether(run(lb, tcp4(sport=52000 + i)).data)[IP].dst for i in range(100)}
    assert BE4[2] not in new
    assert lb.stats()["vips"][0]["backends"][2]["state"] == "down"
    lb.set_health(f"tcp/{VIP4}:80", BE4[2], up=True)
    new = {Ether(run(lb, tcp4(sport=53000 + i)).data)[IP].dst for i in range(100)}
    assert BE4[2] in new


def test_weights_spread_new_flows(lb):
    cfg = parse_config(BASE.replace(f'{{ address = "{BE4[0]}" }}', f'{{ address = "{BE4[0]}", weight = 2 }}'))
    lb.apply(cfg)
    spread = Counter(Ether(run(lb, tcp4(sport=1024 + i)).data)[IP].dst for i in range(2000))
    assert 0.42 < spread[BE4[0]] / 2000 < 0.58  # weight 2 of 4
    assert 0.18 < spread[BE4[1]] / 2000 < 0.32


def test_no_active_backend_drops_and_counts(lb):
    for b in BE4:
        lb.drain(f"tcp/{VIP4}:80", b)
    res = run(lb, tcp4(sport=60001))
    assert res.verdict == Verdict.XDP_DROP
    assert lb.stats()["events"]["no_backend"]["packets"] >= 1


def test_ipv4_too_big_with_df_gets_icmp(lb):
    frame = tcp4(payload=b"x" * (1500 - 40), flags="DF")  # 1500-byte IP packet; +20 > mtu
    res = run(lb, frame)
    assert res.verdict == Verdict.XDP_TX
    out = Ether(res.data)
    assert out.dst == CLIENT_MAC and out.src == LB_MAC
    assert out[IP].src == VIP4 and out[IP].dst == "198.18.10.2" and out[IP].proto == 1
    icmp = out[ICMP]
    assert icmp.type == 3 and icmp.code == 4 and icmp.nexthopmtu == 1480
    check = ICMP(bytes(icmp))
    del check.chksum
    assert ICMP(bytes(check)).chksum == icmp.chksum
    assert IP(bytes(out[IP])).chksum == out[IP].chksum
    assert bytes(out[IPerror])[:20] == frame[14:34] and out[TCPerror].sport == 40000
    assert len(res.data) == 14 + 20 + 8 + 28
    assert lb.stats()["events"]["too_big_icmp"]["packets"] >= 1


def test_ipv4_too_big_without_df_is_dropped(lb):
    res = run(lb, tcp4(payload=b"x" * (1500 - 40)))
    assert res.verdict == Verdict.XDP_DROP
    assert lb.stats()["events"]["too_big_drop"]["packets"] >= 1


def test_ipv6_too_big_gets_packet_too_big(lb):
    frame = udp6(payload=b"y" * (1500 - 48))  # 1500-byte IPv6 packet; +40 > mtu
    res = run(lb, frame)
    assert res.verdict == Verdict.XDP_TX
    out = Ether(res.data)
    assert out[IPv6].src == VIP6 and out[IPv6].dst == "2001:db8:10::2" and out[IPv6].nh == 58
    ptb = out[ICMPv6PacketTooBig]
    assert ptb.mtu == 1460
    check = IPv6(bytes(out[IPv6]))
    del check[ICMPv6PacketTooBig].cksum
    assert IPv6(bytes(check))[ICMPv6PacketTooBig].cksum == ptb.cksum
    assert bytes(ptb.payload) == frame[14:14 + 256]


def test_fragments_go_by_addresses_to_all_port_vips(lb):
    frag = bytes(Ether(src=CLIENT_MAC, dst=LB_MAC) / IPv6(src="2001:db8:10::2", dst=VIP6)
                 / IPv6ExtHdrFragment(nh=17, offset=100, m=0) / (b"f" * 32))
    res = run(lb, frag)
    assert res.verdict == Verdict.XDP_TX
    assert Ether(res.data)[IPv6].dst == lb.backend_of("2001:db8:10::2", VIP6, "udp", 0, 0)
    frag4 = tcp4(frag=10)  # port-specific VIP: fragments are not its
    assert run(lb, frag4).verdict == Verdict.XDP_PASS
    assert lb.stats()["events"]["fragment"]["packets"] >= 1


def test_counters_per_vip_and_backend(lb):
    before = lb.stats()
    frame = tcp4(sport=41000)
    for _ in range(5):
        run(lb, frame)
    st = lb.stats()
    v0, b0 = before["vips"][0], st["vips"][0]
    assert b0["packets"] - v0["packets"] == 5
    assert b0["bytes"] - v0["bytes"] == 5 * (len(frame) - 14)
    dst = Ether(run(lb, frame).data)[IP].dst
    row = next(b for b in st["vips"][0]["backends"] if b["address"] == dst)
    old = next(b for b in v0["backends"] if b["address"] == dst)
    assert row["packets"] - old["packets"] == 5
    assert st["flows"]["misses"] - before["flows"]["misses"] == 1
    assert st["flows"]["hits"] - before["flows"]["hits"] == 4


def test_open_from_another_handle_sees_config(loaded):
    name, _ = loaded
    with xns.inside(name):
        with LoadBalancer.open("la") as other:
            assert {v.key for v in other.config().vips} == {f"tcp/{VIP4}:80", f"udp/[{VIP6}]:*", f"udp/{VIP4}:53"}
            assert other.stats()["vips"][0]["table_size"] == 1009


def test_bad_changes_change_nothing(lb):
    before = lb.config()
    with pytest.raises(ConfigError, match="no backend"):
        lb.delete_backend(f"tcp/{VIP4}:80", "198.18.29.9")
    with pytest.raises(ConfigError, match="no VIP"):
        lb.drain("tcp/198.18.201.1:80", BE4[0])
    with pytest.raises(ConfigError, match="not prime"):
        lb.apply(parse_config(BASE.replace("1009", "1000", 1)))
    with pytest.raises(ConfigError, match="room"):
        lb.apply(parse_config(BASE.replace("1009", "16777213", 1)))
    assert lb.config() == before


def test_decap_strips_outer_headers(netns):
    from xdpkit.lab import add_veth

    add_veth("da", "db")
    with Object.from_file(builtin_object("lb_decap")) as obj:
        prog = obj.programs["xdpkit_lb_decap"]
        inner = IP(src="198.18.10.2", dst=VIP4) / TCP(sport=1, dport=80) / b"data"
        for outer in (IP(src="198.18.99.3", dst=BE4[0], proto=4), IPv6(src="2001:db8:99::3", dst=BE6[0], nh=4)):
            frame = bytes(Ether(src=LB_MAC, dst=CLIENT_MAC) / outer / inner)
            res = prog.run(frame)
            assert res.verdict == Verdict.XDP_PASS
            assert res.data == bytes(Ether(src=LB_MAC, dst=CLIENT_MAC) / inner)
        inner6 = IPv6(src="2001:db8:10::2", dst=VIP6) / UDP(sport=1, dport=2)
        res = prog.run(bytes(Ether(src=LB_MAC, dst=CLIENT_MAC) / IPv6(src="2001:db8:99::3", dst=BE6[0], nh=41) / inner6))
        assert res.data == bytes(Ether(src=LB_MAC, dst=CLIENT_MAC) / inner6)
        plain = bytes(Ether(src=LB_MAC, dst=CLIENT_MAC) / IP(src="198.18.99.3", dst=BE4[0]) / UDP())
        assert prog.run(plain).data == plain
    decap_load("da")
    try:
        st = decap_stats("da")  # (pass may count router solicitations from the fresh veth)
        assert set(st["events"]) == {"decap_v4", "decap_v6", "pass", "error"}
        assert st["events"]["decap_v4"]["packets"] == st["events"]["error"]["packets"] == 0
    finally:
        decap_unload("da")
    with pytest.raises(Exception, match="no xdpkit decapsulation"):
        decap_unload("da")


def test_redirect_to_another_interface(lb):
    """redirect = IFACE: XDP_REDIRECT through the devmap, our MAC on that interface as source,
    the configured gateway as destination."""
    from xdpkit._sys.netlink import get_link, ifindex_of

    cfg = parse_config('redirect = "lb"\ngateway_mac = "02:00:00:00:00:99"\n' + BASE)
    lb.apply(cfg)
    res = run(lb, tcp4(sport=42000))
    assert res.verdict == Verdict.XDP_REDIRECT
    out = Ether(res.data)
    assert out.src == get_link(ifindex_of("lb")).address and out.dst == "02:00:00:00:00:99"
    assert out[IP].proto == 4 and out[IP].dst in BE4
    port = lb._map("lb_tx_port").lookup_raw(struct.pack("<I", 0))
    assert struct.unpack("<I", port)[0] == ifindex_of("lb")
    with pytest.raises(Exception, match="no such interface"):
        lb.apply(parse_config('redirect = "nope0"\n' + BASE))


def test_a_thousand_backends(lb):
    """Big pools: tables, slots and the kernel-held config all take 1,000 backends."""
    pool = ", ".join(f'"198.18.{30 + i // 250}.{i % 250 + 1}"' for i in range(1000))
    cfg = parse_config(BASE + f'\n[[vip]]\naddress = "198.18.201.1"\nprotocol = "tcp"\nport = 443\n'
                              f'backends = [{pool}]\n')
    res = lb.apply(cfg)
    assert res.backends == 1000 + 6
    seen = {Ether(run(lb, tcp4(sport=10000 + i, dport=443, dst="198.18.201.1")).data)[IP].dst for i in range(1500)}
    assert len(seen) > 600  # 1,500 flows over 1,000 equal backends
    assert len(lb.config().vips[-1].backends) == 1000
    lb.add_backend("tcp/198.18.201.1:443", "198.18.29.1")
    assert len(lb.config().vips[-1].backends) == 1001


def test_exporter_labels_vips_and_backends(lb, loaded):
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    name, _ = loaded
    frame = tcp4(sport=43000)
    for _ in range(3):
        res = run(lb, frame)
    dst = Ether(res.data)[IP].dst
    lb.drain(f"tcp/{VIP4}:80", BE4[0])
    r = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-m", "xdpkit", "exporter", "--once"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    fams = {f.name: f for f in text_string_to_metric_families(r.stdout)}
    per_backend = {(s.labels["vip"], s.labels["backend"]): s.value
                   for s in fams["xdpkit_lb_backend_packets"].samples if s.name.endswith("_total")}
    assert per_backend[(f"tcp/{VIP4}:80", dst)] >= 3
    weights = {s.labels["backend"]: s.value for s in fams["xdpkit_lb_backend_weight"].samples
               if s.labels["vip"] == f"tcp/{VIP4}:80"}
    assert weights == {BE4[0]: 0.0, BE4[1]: 1.0, BE4[2]: 1.0}
    events = {s.labels["event"]: s.value for s in fams["xdpkit_lb_events"].samples if s.name.endswith("_total")}
    assert events["flow_hit"] >= 2 and events["flow_miss"] >= 1


def _many_vips(first: int, count: int) -> str:
    vips = "".join(f"""
[[vip]]
address = "198.18.201.{i % 200 + 1}"
protocol = "tcp"
port = {1000 + i}
table_size = 7
backends = ["198.18.{21 + i % 3}.2"]
""" for i in range(first, first + count))
    return f'seed = {SEED}\nencap_source_v4 = "198.18.99.0/24"\n{vips}'


def _forwards(lb, i: int) -> bool:
    frame = tcp4(dst=f"198.18.201.{i % 200 + 1}", dport=1000 + i)
    r = run(lb, frame)
    if r.verdict == Verdict.XDP_PASS:
        assert r.data == frame
        return False
    assert r.verdict == Verdict.XDP_TX and Ether(r.data)[IP].dst == f"198.18.{21 + i % 3}.2"
    return True


def test_vip_table_holds_every_vip_and_switches_them_all_at_once(lb):
    lb.apply(parse_config(_many_vips(0, 0)))  # ids of removed VIPs are free after the apply
    half_before = lb._vip_half()[1]
    lb.apply(parse_config(_many_vips(0, 64)))  # the default limit
    assert all(_forwards(lb, i) for i in range(64))
    assert lb._vip_half()[1] != half_before
    lb.apply(parse_config(_many_vips(16, 48)))  # 16 removed
    assert [_forwards(lb, i) for i in range(80)] == [False] * 16 + [True] * 48 + [False] * 16
    lb.apply(parse_config(_many_vips(16, 64)))  # 16 new, in the ids the removed ones freed
    assert [_forwards(lb, i) for i in range(80)] == [False] * 16 + [True] * 64
    with pytest.raises(ConfigError, match="at most 64"):
        lb.apply(parse_config(_many_vips(0, 65)))
    assert [_forwards(lb, i) for i in range(80)] == [False] * 16 + [True] * 64
