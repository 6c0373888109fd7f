"""<xdpkit/parsing.h> through the firewall: IPv6 non-first fragments stop at the fragment header
(whatever its next header says), IP lengths that reach past the frame or below the header are
malformed, and Ethernet padding after the IP packet is not."""
import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment
from scapy.layers.l2 import Ether

from xdpkit import Verdict
from xdpkit._sys import netns as xns
from xdpkit.apps.firewall.control import Firewall
from xdpkit.apps.firewall.rules import parse_config
from xdpkit.testing.plugin import new_netns

pytestmark = pytest.mark.kernel

E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

# A non-first IPv6 fragment (offset 185) whose fragment header says "destination options next";
# its payload starts with bytes that read as an extension header longer than the frame.
FRAG_DSTOPTS_HEX = ("02000000000202000000000186dd6000000000182c4020010db801400000000000000000000120"
                    "010db80140000000000000000000023c0005c80000000711ff00000000000000000000000000"
                    "00")

# Bytes that, parsed as an extension header, claim (0xff + 1) * 8 bytes: past any frame here.
BAD_EXT = b"\x11\xff" + b"\x00" * 14


def v4(src="198.18.1.2", dst="198.18.2.2", **kw):
    return Ether(**E) / IP(src=src, dst=dst, **kw)


def v6(src="2001:db8:1::2", dst="2001:db8:2::2", **kw):
    return Ether(**E) / IPv6(src=src, dst=dst, **kw)


@pytest.fixture(scope="module")
def loaded_fw():
    """One firewall (generic mode) for the module: loading it is the slow part. IPv6 off in the
    namespace: no router solicitations or MLD reports reach the attached program and its counters."""
    ns = new_netns(ipv6=False)
    try:
        ns.veth("xa", "xb")
        with ns.inside():
            f = Firewall.load("xa", parse_config("policy allow"), mode="generic")
        try:
            yield ns, f
        finally:
            with ns.inside():
                Firewall.unload("xa")
            f.close()
    finally:
        xns.remove(ns.name)


@pytest.fixture
def fw(loaded_fw):
    ns, f = loaded_fw
    with ns.inside():
        f.apply(parse_config("policy allow"))  # malformed drop is the default
        f.reset_counters()
        yield f


def use(fw, text):
    fw.apply(parse_config(text))
    fw.reset_counters()


def run(fw, frame):
    return fw._obj.programs["xdpkit_firewall"].run(bytes(frame)).verdict


def reasons(fw):
    s = fw.stats()["reasons"]
    return {k: s.get(k, {}).get("packets", 0) for k in ("malformed", "fragment", "rule", "policy")}



def assert_malformed_either_way(fw, frame):
    """Dropped and counted as malformed under the default, passed under `malformed pass`."""
    assert run(fw, frame) is Verdict.XDP_DROP
    r = reasons(fw)
    assert r["malformed"] == 1 and r["fragment"] == 0
    use(fw, "policy allow\nmalformed pass")
    assert run(fw, frame) is Verdict.XDP_PASS
    assert reasons(fw)["malformed"] == 1

# --- (a) IPv6 non-first fragments -------------------------------------------------------------

def test_reported_frame_passes_as_fragment(fw):
    frame = bytes.fromhex(FRAG_DSTOPTS_HEX)
    assert len(frame) == 78
    assert run(fw, frame) is Verdict.XDP_PASS
    r = reasons(fw)
    assert r["fragment"] == 1 and r["malformed"] == 0


@pytest.mark.parametrize("nh", [0, 43, 44, 60])
def test_non_first_fragment_with_extension_next_header_is_a_fragment(fw, nh):
    frame = v6(src="2001:db8:140::1", dst="2001:db8:140::2") / \
        IPv6ExtHdrFragment(offset=185, m=0, id=7, nh=nh) / BAD_EXT
    assert run(fw, frame) is Verdict.XDP_PASS
    r = reasons(fw)
    assert r["fragment"] == 1 and r["malformed"] == 0
    # the fragment header's next header is the protocol rules see; addresses still match
    use(fw, f"policy allow\ndeny proto {nh}")
    assert run(fw, frame) is Verdict.XDP_DROP
    assert reasons(fw)["rule"] == 1
    use(fw, "policy allow\ndeny src 2001:db8:140::1")
    assert run(fw, frame) is Verdict.XDP_DROP
    use(fw, "policy allow\ndeny dst 2001:db8:141::/48")
    assert run(fw, frame) is Verdict.XDP_PASS


@pytest.mark.parametrize("nh", [0, 43, 44, 60])
def test_first_fragment_with_broken_extension_chain_is_malformed(fw, nh):
    # a fragment header has a fixed size: behind nh 44 put a second (first) fragment header
    # whose chain then breaks
    chain = BAD_EXT if nh != 44 else bytes(IPv6ExtHdrFragment(offset=0, id=8, nh=60)) + BAD_EXT
    frame = v6() / IPv6ExtHdrFragment(offset=0, m=1, id=7, nh=nh) / chain
    assert_malformed_either_way(fw, frame)


def test_first_fragment_keeps_parsing_extension_headers_to_l4(fw):
    use(fw, "policy allow\ndeny udp dport 53")
    frame = v6() / IPv6ExtHdrFragment(offset=0, m=1, id=7) / IPv6ExtHdrDestOpt() / UDP(dport=53)
    assert run(fw, frame) is Verdict.XDP_DROP
    frame = v6() / IPv6ExtHdrFragment(offset=0, m=1, id=7) / IPv6ExtHdrDestOpt() / UDP(dport=54)
    assert run(fw, frame) is Verdict.XDP_PASS
    r = reasons(fw)
    assert r["rule"] == 1 and r["malformed"] == 0 and r["fragment"] == 0


# --- (b) IP lengths that do not fit ---------------------------------------------------------------

def _pad_to(frame, size):
    raw = bytes(frame)
    return raw + b"\x00" * max(0, size - len(raw))


def _v4_plus_one():
    raw = bytearray(bytes(v4() / UDP(dport=53) / b"x"))
    raw[16:18] = (len(raw) - 14 + 1).to_bytes(2, "big")  # one byte more than the frame holds
    return bytes(raw)


def _v6_plus_one():
    raw = bytearray(bytes(v6() / UDP(dport=53) / b"x"))
    raw[18:20] = (len(raw) - 54 + 1).to_bytes(2, "big")
    return bytes(raw)


TRUNCATED = {
    "v4_tot_len_1500_in_62_bytes": _pad_to(v4(len=1500) / UDP(dport=53), 62),
    "v4_tot_len_0": v4(len=0) / UDP(dport=53),
    "v4_tot_len_below_ihl": v4(len=19) / UDP(dport=53),
    "v4_tot_len_below_ihl_with_options": v4(len=22, options=[IPOption_NOP()] * 4) / UDP(dport=53),
    "v4_tot_len_one_past_frame": _v4_plus_one(),
    "v6_payload_len_past_frame": v6(plen=200) / UDP(dport=53),
    "v6_payload_len_one_past_frame": _v6_plus_one(),
    "v6_fragment_payload_len_past_frame": v6(plen=300) / IPv6ExtHdrFragment(offset=185, nh=17) / (b"z" * 16),
}


@pytest.mark.parametrize("name", sorted(TRUNCATED))
def test_ip_length_not_fitting_is_malformed(fw, name):
    frame = bytes(TRUNCATED[name])
    assert_malformed_either_way(fw, frame)
    # no rule sees it: a malformed packet is decided before the rules
    use(fw, "policy allow\nmalformed pass\ndeny udp dport 53\ndeny src 198.18.0.0/15\n"
            "deny src 2001:db8::/32")
    assert run(fw, frame) is Verdict.XDP_PASS


def test_exact_ip_length_is_not_malformed(fw):
    use(fw, "policy allow\ndeny udp dport 53")
    for frame in (v4() / UDP(dport=53) / b"x", v6() / UDP(dport=53) / b"x",
                  v6() / IPv6ExtHdrFragment(offset=185, nh=17) / (b"z" * 16)):
        raw = bytes(frame)
        assert run(fw, raw) is (Verdict.XDP_PASS if IPv6ExtHdrFragment in frame else Verdict.XDP_DROP)
    assert reasons(fw)["malformed"] == 0


# --- (c) Ethernet padding after the IP packet -----------------------------------------------------

@pytest.mark.parametrize("fam,pad_to", [(4, 60), (4, 64), (4, 1514), (6, 64), (6, 128), (6, 1514)])
def test_padding_after_ip_packet_is_not_malformed(fw, fam, pad_to):
    use(fw, "policy allow\ndeny udp dport 53")
    base = v4 if fam == 4 else v6
    hit = _pad_to(base() / UDP(dport=53), pad_to)
    miss = _pad_to(base() / UDP(dport=54), pad_to)
    assert len(hit) == pad_to and len(bytes(base() / UDP(dport=53))) < pad_to
    assert run(fw, hit) is Verdict.XDP_DROP
    assert run(fw, miss) is Verdict.XDP_PASS
    r = reasons(fw)
    assert r["rule"] == 1 and r["policy"] >= 1 and r["malformed"] == 0


def test_padded_tcp_syn_still_matches_port_rule(fw):
    use(fw, "policy allow\ndeny tcp dport 22")
    frame = _pad_to(v4() / TCP(dport=22, flags="S"), 60)  # 54 bytes on the wire, padded to 60
    assert run(fw, frame) is Verdict.XDP_DROP
    assert reasons(fw)["malformed"] == 0


# ---- edges the README now states (issue 15) ----------------------------------------------------

def test_an_icmp_header_must_be_complete(fw):
    """ICMP/ICMPv6 need type, code and checksum (4 bytes); fewer is malformed, not a match."""
    use(fw, "policy allow\ndeny icmp icmp-type 8\n")
    whole = bytes(v4(proto=1) / b"\x08\x00\xf7\xff")
    for cut in (1, 2, 3):
        frame = bytes(v4(proto=1, len=20 + cut)) + b"\x08\x00\xf7"[:cut]
        assert run(fw, frame) == Verdict.XDP_DROP
    assert reasons(fw).get("malformed", 0) == 3 and reasons(fw).get("rule", 0) == 0
    assert run(fw, whole) == Verdict.XDP_DROP and reasons(fw)["rule"] == 1


def test_six_ipv6_extension_headers_are_followed_and_seven_are_malformed(fw):
    use(fw, "policy allow\ndeny udp dport 53\n")
    six = v6() / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
                  IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()) / UDP(dport=53) / b"x"
    seven = v6() / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() /
                    IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()) / UDP(dport=53) / b"x"
    assert run(fw, six) == Verdict.XDP_DROP and reasons(fw).get("rule", 0) == 1
    assert run(fw, seven) == Verdict.XDP_DROP and reasons(fw).get("malformed", 0) == 1


def test_more_than_two_vlan_tags_are_non_ip(fw):
    from scapy.layers.l2 import Dot1Q
    use(fw, "policy deny\nnon-ip pass\n")
    three = Ether(**E) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(src="198.18.1.2", dst="198.18.2.2") / UDP()
    two = Ether(**E) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src="198.18.1.2", dst="198.18.2.2") / UDP()
    assert run(fw, three) == Verdict.XDP_PASS
    assert fw.stats()["reasons"]["non_ip"]["packets"] == 1
    assert run(fw, two) == Verdict.XDP_DROP and reasons(fw)["policy"] == 1
