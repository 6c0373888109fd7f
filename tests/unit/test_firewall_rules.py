"""The firewall rule language and compiler, without a kernel."""
import random

import pytest
from hypothesis import given, settings, strategies as st

from xdpkit.apps.firewall import compiler as C
from xdpkit.apps.firewall.rules import parse_config, parse_prefix, parse_rule, read_set_file
from xdpkit.errors import ConfigError


def test_examples_from_the_issue_parse():
    r = parse_rule("deny src 203.0.113.0/24 udp dport 53")
    assert r.action == "deny" and r.protos == {17} and r.dports == ((53, 53),)
    r = parse_rule("allow src 198.18.0.0/15 tcp dport 22")
    assert r.src == ((4, 0xC6120000, 15),)
    r = parse_rule("deny tcp flags syn/syn,ack rate 1000/s per-source")
    assert r.flags == (0x02, 0x12) and r.rate_pps == 1000 and r.per_source
    r = parse_rule("ratelimit udp rate 1000/s,10mbit/s")
    assert (r.rate_pps, r.rate_bps) == (1000, 10_000_000)


def test_implied_protocols():
    assert parse_rule("deny dport 80").protos == {6, 17}
    assert parse_rule("deny flags syn").protos == {6}
    assert parse_rule("deny icmp-type 8").protos == {1, 58}


@pytest.mark.parametrize("text,msg", [
    ("block src 1.2.3.4", "a rule starts with"),
    ("deny src 1.2.3.999", "not an IPv4 address"),
    ("deny src 1.2.3.0/33", "over 32"),
    ("deny dport 70000", "0..65535"),
    ("deny udp flags syn", "flags only exist for tcp"),
    ("deny icmp dport 5", "ports only exist"),
    ("deny flags bogus", "unknown TCP flag"),
    ("deny flags syn/ack", "must also be in the mask"),
    ("allow udp rate 10/s", "only makes sense with deny"),
    ("ratelimit udp", "needs a rate"),
    ("deny udp per-source", "per-source needs a rate"),
    ("deny len 10-5", "low to high"),
    ("deny udp dport", "needs a value"),
    ("deny udp udp2", "unknown word"),
    ("deny src 1.2.3.4 src 1.2.3.5", "given twice"),
])
def test_bad_rules_name_the_problem(text, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_rule(text)


def test_config_with_a_bad_line_applies_nothing_and_names_the_line():
    with pytest.raises(ConfigError) as exc:
        parse_config("deny udp dport 53\npolicy deny\nallow src nonsense\n", source="fw.conf")
    assert "fw.conf: line 3" in str(exc.value) and "nothing was applied" in str(exc.value)


def test_netset_file_with_comments(tmp_path):
    f = tmp_path / "block.netset"
    f.write_text("# firehol style\n198.18.0.0/16\n203.0.113.7 # one host\n\n2001:db8::/32\n")
    assert read_set_file(str(f)) == [(4, 0xC6120000, 16), (4, 0xCB007107, 32), parse_prefix("2001:db8::/32")]
    rule = parse_rule(f"deny src file:{f}")
    assert len(rule.src) == 3
    f.write_text("198.18.0.0/16\n10.0.0.300\n")
    with pytest.raises(ConfigError, match=r"block.netset:2: not an IPv4 address"):
        read_set_file(str(f))


def test_compiler_classes_are_shared_and_class0_is_every_rule():
    prefixes = "\n".join(f"deny src 198.18.{i}.0/24" for i in range(3))
    c = C.compile_rules(parse_config(prefixes + "\nallow tcp dport 22"))
    assert c.classes[0] == 0b1111
    assert c.fields == C.F_SRC | C.F_PROTO | C.F_DPORT
    # three neighbouring /24s of three rules: four intervals and the rest of the space
    assert c.prefix_tables["src4"].intervals == 5 and set(c.prefix_tables) == {"src4"}


def test_a_longer_prefix_inside_a_shorter_one_is_in_both_rules():
    c = C.compile_rules(parse_config("deny src 198.18.1.0/24\ndeny src 198.18.1.128/25"))
    assert c.classes[c.address_class("src", 4, 0xC6120180)] & 0b11 == 0b11
    assert c.classes[c.address_class("src", 4, 0xC612017F)] & 0b11 == 0b01
    assert c.address_class("src", 4, 0xC6120200) == c.src_default4


# ---- property: the compiled tables decide like the reference evaluator ---------------------------

def _lookup(c: C.Compiled, pkt: C.PacketView) -> tuple[bool, int | None, str]:
    """Evaluate the compiled tables exactly as the BPF program does."""
    if pkt.malformed:
        return bool(c.malformed_drop), None, "malformed"
    if pkt.family is None:
        return bool(c.non_ip_drop), None, "non_ip"
    mask = c.classes[0]

    def addr_class(side, addr):
        return c.address_class(side, pkt.family, addr)

    if c.fields & C.F_SRC:
        mask &= c.classes[addr_class("src", pkt.src)]
    if c.fields & C.F_DST:
        mask &= c.classes[addr_class("dst", pkt.dst)]
    if c.fields & C.F_PROTO:
        mask &= c.classes[c.proto[pkt.proto]]
    if c.fields & C.F_SPORT:
        mask &= c.classes[c.sport[C.PORT_NONE if pkt.sport is None else pkt.sport]]
    if c.fields & C.F_DPORT:
        mask &= c.classes[c.dport[C.PORT_NONE if pkt.dport is None else pkt.dport]]
    if c.fields & C.F_FLAGS:
        mask &= c.classes[c.flags[C.BYTE_NONE if pkt.flags is None else pkt.flags]]
    if c.fields & C.F_ICMP:
        mask &= c.classes[c.icmp[C.BYTE_NONE if pkt.icmp_type is None else pkt.icmp_type]]
    if c.fields & C.F_LEN:
        mask &= c.classes[c.length[min(pkt.length, 65535)]]
    if mask:
        i = (mask & -mask).bit_length() - 1
        return c.rules[i].verdict_drop, i, "rule"
    return bool(c.policy_drop), None, "policy"


NETS4 = ["198.18.0.0/15", "198.18.1.0/24", "198.18.1.128/25", "198.18.1.2", "198.19.0.0/16", "0.0.0.0/0"]
NETS6 = ["2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::2/128"]


def random_rule(rnd: random.Random) -> str:
    parts = [rnd.choice(["allow", "deny"])]
    if rnd.random() < 0.5:
        parts += ["src", ",".join(rnd.sample(NETS4 + NETS6, rnd.randint(1, 2)))]
    if rnd.random() < 0.3:
        parts += ["dst", rnd.choice(NETS4 + NETS6)]
    proto = rnd.choice([None, "tcp", "udp", "icmp", "icmpv6"])
    if proto:
        parts.append(proto)
    if proto in ("tcp", "udp") and rnd.random() < 0.5:
        lo = rnd.randint(0, 100)
        parts += [rnd.choice(["sport", "dport"]), f"{lo}-{lo + rnd.randint(0, 20)}"]
    if proto == "tcp" and rnd.random() < 0.3:
        parts += ["flags", rnd.choice(["syn/syn,ack", "ack", "fin/fin"])]
    if proto in ("icmp", "icmpv6") and rnd.random() < 0.5:
        parts += ["icmp-type", str(rnd.choice([0, 8, 128, 129]))]
    if rnd.random() < 0.2:
        lo = rnd.randint(40, 200)
        parts += ["len", f"{lo}-{lo + rnd.randint(0, 300)}"]
    return " ".join(parts)


def random_packet(rnd: random.Random) -> C.PacketView:
    family = rnd.choice([4, 4, 6, None])
    if family is None:
        return C.PacketView(None, length=60)
    if family == 4:
        src = parse_prefix(rnd.choice(["198.18.1.2", "198.18.1.200", "198.19.5.5", "203.0.113.1"]))[1]
        dst = parse_prefix(rnd.choice(["198.18.2.2", "198.18.1.130"]))[1]
    else:
        src = parse_prefix(rnd.choice(["2001:db8:1::2", "2001:db8:2::9", "2001:db9::1"]))[1]
        dst = parse_prefix(rnd.choice(["2001:db8:2::2", "2001:db8:1::5"]))[1]
    proto = rnd.choice([6, 17, 1, 58, 47])
    pkt = C.PacketView(family, src, dst, proto, length=rnd.randint(40, 600))
    if proto in (6, 17) and rnd.random() < 0.9:  # else a non-first fragment
        pkt.sport, pkt.dport = rnd.randint(0, 120), rnd.randint(0, 120)
        if proto == 6:
            pkt.flags = rnd.choice([0x02, 0x12, 0x10, 0x01, 0x11])
    elif proto in (1, 58):
        pkt.icmp_type = rnd.choice([0, 8, 128, 129, 3])
    return pkt


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_compiled_tables_agree_with_reference(seed):
    rnd = random.Random(seed)
    rs = parse_config("\n".join(random_rule(rnd) for _ in range(rnd.randint(1, 12)))
                      + f"\npolicy {rnd.choice(['allow', 'deny'])}")
    c = C.compile_rules(rs)
    for _ in range(40):
        pkt = random_packet(rnd)
        assert _lookup(c, pkt) == C.evaluate(rs, pkt), (rs.rules, pkt)


def test_address_only_rules_decide_at_the_address_lookup():
    c = C.compile_rules(parse_config("deny src 198.18.1.0/24\ndeny udp\nallow dst 198.18.2.0/24"))
    src, dst = 0xC6120101, 0xC6120202
    blocked = c.address_class("src", 4, src)
    assert c.decides(blocked) == (1, 0)
    # a class's first rule is rule 1 (source only): it decides only when reached by the source
    assert c.decides(c.address_class("dst", 4, dst)) == (1, 0)
    c = C.compile_rules(parse_config("allow dst 198.18.2.0/24\ndeny udp"))
    assert c.decides(c.address_class("dst", 4, dst)) == (0, 1)
    c = C.compile_rules(parse_config("deny src 198.18.1.0/24 udp"))
    assert c.decides(c.address_class("src", 4, src)) == (0, 0)  # more than the address: no shortcut
    c = C.compile_rules(parse_config("deny src 198.18.1.0/24 rate 10/s"))
    assert c.decides(c.address_class("src", 4, src)) == (0, 0)  # rated rules may pass packets on
