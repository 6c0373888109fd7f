"""The live-frames generator: exact counts, real flow spread with valid checksums, replay,
pre-flight, CLI JSON."""
import json
import socket
import sys
import time

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Ether

import xdpkit
import xdpkit.interfaces
from xdpkit import pcap
from xdpkit.lab import trafficgen as tg
from xdpkit._sys import netns as xns
from xdpkit.builtin import builtin_object

pytestmark = pytest.mark.kernel


@pytest.fixture
def pair(make_netns):
    """gen namespace with g0 -> r0 in the receiver namespace (GRO off: not ready by default)."""
    gen, rcv = make_netns(ipv6=False), make_netns(ipv6=False)  # only our frames on the wire
    gen.veth("g0", "r0", peer_ns=rcv.name, gro=False)
    return gen, rcv


@pytest.fixture
def counting_receiver(pair):
    gen, rcv = pair
    with xns.inside(rcv.name):
        obj = xdpkit.Object.from_file(builtin_object("receivers"), program="xdpkit_count_drop")
        link = obj.program().attach("r0", mode="native")
    try:
        yield gen, obj.maps["rx_count"]
    finally:
        link.detach()
        obj.close()


@pytest.mark.parametrize("proto", ["udp", "tcp", "icmp"])
@pytest.mark.parametrize("ipv6", [False, True])
def test_sends_exactly_count_frames(counting_receiver, proto, ipv6):
    gen, rx = counting_receiver
    with xns.inside(gen.name):
        t = tg.build_template(proto=proto, ipv6=ipv6, size=128)
        with tg.TrafficGen("g0", t, tg.Flows(src_ips=3, sport_count=5)) as g:
            result = g.run(count=1000)
    assert result.sent == 1000
    time.sleep(0.05)
    assert rx[0].sum() == 1000


@pytest.mark.parametrize("ipv6", [False, True])
def test_a_receiver_editing_the_page_does_not_change_what_is_sent(pair, ipv6):
    """A router on the peer decrements the TTL in place and the page comes back to the
    generator: every frame must still leave with the template's TTL (it used to fall by one
    each time a page came round, down to 1: the router then dropped everything)."""
    gen, rcv = pair
    with xns.inside(rcv.name):
        obj = xdpkit.Object.from_file(builtin_object("receivers"), program="xdpkit_ttl_dec_drop")
        link = obj.program().attach("r0", mode="native")
    try:
        with xns.inside(gen.name):
            t = tg.build_template(proto="udp", ipv6=ipv6, size=64 if not ipv6 else 78)
            ttl = t.frame[14 + (7 if ipv6 else 8)]
            with tg.TrafficGen("g0", t, tg.Flows(src_ips=4, sport_count=8)) as g:
                result = g.run(count=50_000)
        time.sleep(0.05)
        by_ttl = {k: v.sum() for k, v in obj.maps["rx_ttl"].items() if v.sum()}
    finally:
        link.detach()
        obj.close()
    assert result.sent == 50_000
    assert by_ttl == {ttl: 50_000}


def _capture(ns, ifname):
    with xns.inside(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        # Frames built from XDP pages are page-sized skbs: make room for hundreds of them.
        s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE (we are root)
        s.bind((ifname, 0))
    s.settimeout(0.2)
    return s


def _drain(sock, want, wait=3.0):
    out, deadline = [], time.monotonic() + wait
    while len(out) < want and time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096))
        except socket.timeout:
            continue
    return out


def _checksums_ok(pkt) -> bool:
    """Rebuild with scapy computing every checksum afresh and compare with what was sent."""
    layers = [IP, UDP, TCP, ICMP]
    fresh = pkt.copy()
    for layer in layers:
        if fresh.haslayer(layer) and hasattr(fresh[layer], "chksum"):
            del fresh[layer].chksum
    if fresh.haslayer(IPv6):
        for layer in (UDP, TCP):
            if fresh.haslayer(layer):
                del fresh[layer].chksum
        if fresh.haslayer(ICMPv6EchoRequest):
            del fresh[ICMPv6EchoRequest].cksum
    return bytes(Ether(bytes(fresh))) == bytes(pkt)


@pytest.mark.parametrize("proto,ipv6", [("udp", False), ("tcp", False), ("udp", True), ("tcp", True),
                                        ("icmp", True)])
def test_multi_flow_varies_fields_with_valid_checksums(pair, proto, ipv6):
    gen, rcv = pair
    with xns.inside(rcv.name):
        xdpkit.interfaces.set_gro("r0", True)  # frames reach the stack (and our packet socket)
    cap = _capture(rcv.name, "r0")
    try:
        with xns.inside(gen.name):
            t = tg.build_template(proto=proto, ipv6=ipv6, size=100, sport=1000, dport=2000)
            flows = tg.Flows(src_ips=4, sport_base=1000, sport_count=5, dport_base=2000, dport_count=2)
            with tg.TrafficGen("g0", t, flows) as g:
                g.run(count=200)
        frames = [Ether(f) for f in _drain(cap, 200)]
    finally:
        cap.close()
    assert len(frames) == 200
    ipl = IPv6 if ipv6 else IP
    srcs = {f[ipl].src for f in frames}
    assert len(srcs) == 4
    if proto != "icmp":
        l4 = UDP if proto == "udp" else TCP
        assert {f[l4].sport for f in frames} == set(range(1000, 1005))
        assert {f[l4].dport for f in frames} == {2000, 2001}
        assert len({(f[ipl].src, f[l4].sport, f[l4].dport) for f in frames}) == 40
    bad = [f for f in frames if not _checksums_ok(f)]
    assert not bad, bad[0].show(dump=True)


def test_pcap_replay_sends_the_files_frames_in_turn(pair, tmp_path):
    gen, rcv = pair
    with xns.inside(rcv.name):
        xdpkit.interfaces.set_gro("r0", True)
    files = [tg.build_template(proto=p, size=80 + 10 * i).frame for i, p in enumerate(tg.PROTOS)]
    pcap.write_frames(tmp_path / "in.pcap", files)
    cap = _capture(rcv.name, "r0")
    try:
        with xns.inside(gen.name):
            with tg.TrafficGen("g0", tg.build_template()) as g:
                result = g.run(count=9, frames=list(pcap.read_frames(tmp_path / "in.pcap")))
        got = _drain(cap, 9)
    finally:
        cap.close()
    assert result.sent == 9
    assert got == files * 3


def test_preflight_refuses_unprepared_veth_and_prepare_fixes_it(pair):
    gen, rcv = pair
    with xns.inside(gen.name):
        with pytest.raises(tg.NotReadyError, match="neither an XDP program nor GRO") as exc:
            tg.preflight("g0")
        assert f"ip netns exec {rcv.name} ethtool -K r0 gro on" in exc.value.hint
        notes = tg.preflight("g0", prepare=True)
        assert notes and "enabled GRO on r0" in notes[0]
        assert tg.preflight("g0") == []


def test_bounds_are_required():
    with pytest.raises(xdpkit.ConfigError, match="never runs unbounded"):
        tg.TrafficGen.run(object.__new__(tg.TrafficGen))


def test_cli_json_and_received_rate(counting_receiver):
    gen, _rx = counting_receiver
    r = gen.run([sys.executable, "-m", "xdpkit", "trafficgen", "g0", "--count", "50000", "--json",
                 "--proto", "tcp", "-6", "--src-ips", "8"], timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"sent", "seconds", "pps", "threads", "received", "rx_pps", "cpu_percent"} <= set(out)
    assert out["sent"] == 50000 and out["received"] == 50000


def test_cli_preflight_error_is_one_line(pair):
    gen, _ = pair
    r = gen.run([sys.executable, "-m", "xdpkit", "trafficgen", "g0", "--count", "10"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: g0's veth peer r0") and "--prepare" in r.stderr


def test_peer_found_in_the_right_namespace_when_ifindexes_repeat(make_netns):
    a, b, c, d = (make_netns() for _ in range(4))
    a.veth("g0", "r0", peer_ns=b.name)
    c.veth("g0", "r0", peer_ns=d.name)  # same names and ifindexes, other namespaces
    with xns.inside(a.name):
        assert tg.find_veth_peer("g0").netns == b.name
    with xns.inside(c.name):
        assert tg.find_veth_peer("g0").netns == d.name
