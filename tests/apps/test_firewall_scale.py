"""The firewall's prefix tables at scale, in the kernel: any mix of prefix lengths agrees with a
plain longest-prefix reference (IPv4 and IPv6, /0 to host routes, overlaps, duplicates); a set
covering more than 4M /24 blocks loads, re-applies and is edited; memory follows the rule set
and `check` predicts it; rate state exists only for per-source rules, sized by rate-sources; and
growing the tables to 1M prefixes and back under a live flood passes every legitimate packet."""
import random
import socket
import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from xdpkit import Verdict
from xdpkit.apps.firewall import compiler as C, sized
from xdpkit.apps.firewall.control import Firewall, plan
from xdpkit.apps.firewall.rules import parse_config
from xdpkit._sys import netns as xns
from xdpkit.lab import ADDRESSES as A, trafficgen as tg

pytestmark = pytest.mark.kernel

E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
MiB = 2**20


def verdict(fw, frame) -> int:
    return fw._obj.programs["xdpkit_firewall"].run(bytes(frame)).verdict


def text(family: int, addr: int) -> str:
    return socket.inet_ntop(socket.AF_INET if family == 4 else socket.AF_INET6,
                            addr.to_bytes(4 if family == 4 else 16, "big"))


def random_set(rnd: random.Random, family: int, n: int) -> list[tuple[int, int]]:
    width = 32 if family == 4 else 128
    lengths = [0, 1, 2, 7, 8, 12, 16, 17, 23, 24, 25, 31, 32] if family == 4 else \
        [0, 1, 16, 20, 32, 47, 48, 56, 63, 64, 65, 96, 127, 128]
    out = []
    for _ in range(n):
        plen = rnd.choice(lengths[1:] if rnd.random() < 0.97 else lengths)  # /0 now and then
        net = rnd.getrandbits(width) >> (width - plen) << (width - plen) if plen else 0
        out.append((net, plen))
    out += rnd.sample(out, min(5, len(out)))       # duplicates, also across rules
    return out


def probes(rnd: random.Random, sets, family: int, n: int) -> list[int]:
    width = 32 if family == 4 else 128
    out = [0, (1 << width) - 1] + [rnd.getrandbits(width) for _ in range(n)]
    for net, plen in rnd.sample([p for s in sets for p in s], min(n, sum(map(len, sets)))):
        end = net + (1 << (width - plen))
        out += [net, end - 1, end % (1 << width), (net - 1) % (1 << width)]
    return out


@pytest.fixture
def fw(netns):
    netns.veth("xa", "xb")
    f = Firewall.load("xa", parse_config("policy allow"), mode="generic")
    try:
        yield f
    finally:
        Firewall.unload("xa")
        f.close()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mixed_prefix_lengths_agree_with_the_reference(fw, tmp_path, family, seed):
    """Three rules over overlapping random sets of every length; each probe's verdict and
    deciding rule (by its counter) is the reference's."""
    rnd = random.Random(seed * 10 + family)
    sets = [random_set(rnd, family, n) for n in (rnd.choice([30, 300]), 2000, 7)]
    lines = []
    for i, (s, action) in enumerate(zip(sets, ("deny", "allow", "deny"))):
        path = tmp_path / f"set{i}.netset"
        path.write_text("".join(f"{text(family, net)}/{plen}\n" for net, plen in s))
        lines.append(f"{action} src file:{path}" + (" udp" if i == 2 else ""))
    rs = parse_config("\n".join(lines) + "\npolicy deny\n")
    fw.apply(rs)
    assert fw.stats()["memory_by_map"].get(f"fw_src{family}[{fw.generation}]")
    width = 32 if family == 4 else 128
    for addr in probes(rnd, sets, family, 120):
        src = text(family, addr)
        ip = IP(src=src, dst="198.18.2.2") if family == 4 else IPv6(src=src, dst="2001:db8:2::2")
        want_drop, _rule, _ = C.evaluate(rs, C.PacketView(family, addr, 0, 17, 1000, 53, length=60))
        got = verdict(fw, Ether(**E) / ip / UDP(sport=1000, dport=53))
        assert got == (Verdict.XDP_DROP if want_drop else Verdict.XDP_PASS), f"{src} (of {width} bits)"


def test_a_set_over_4m_blocks_loads_reapplies_and_is_edited(fw, tmp_path):
    """0.0.0.0/2 alone is 4,194,304 /24 blocks: what the old tables refused."""
    hosts = tmp_path / "hosts.netset"
    hosts.write_text("".join(f"203.0.{i >> 8}.{i & 255}\n" for i in range(0, 4096, 3)))
    conf = f"deny src 0.0.0.0/2,128.0.0.0/9\ndeny src file:{hosts}\npolicy allow\n"
    for _ in range(2):                               # the same set again: room for both generations
        fw.apply(parse_config(conf))
        assert verdict(fw, Ether(**E) / IP(src="10.1.2.3") / UDP()) == Verdict.XDP_DROP
        assert verdict(fw, Ether(**E) / IP(src="128.100.0.1") / UDP()) == Verdict.XDP_DROP
        assert verdict(fw, Ether(**E) / IP(src="203.0.0.3") / UDP()) == Verdict.XDP_DROP
        assert verdict(fw, Ether(**E) / IP(src="203.0.0.4") / UDP()) == Verdict.XDP_PASS
        assert verdict(fw, Ether(**E) / IP(src="198.18.1.1") / UDP()) == Verdict.XDP_PASS
    fw.add_rule("allow src 10.0.0.0/8", position=1)
    assert verdict(fw, Ether(**E) / IP(src="10.1.2.3") / UDP()) == Verdict.XDP_PASS
    fw.delete_rule("1")
    assert verdict(fw, Ether(**E) / IP(src="10.1.2.3") / UDP()) == Verdict.XDP_DROP
    with sized.inner_maps(fw) as held:
        assert held and all(slot == fw.generation for _, slot, _m in held)


def test_memory_follows_the_rule_set_and_check_predicts_it(fw, tmp_path):
    s = fw.stats()
    assert s["memory_bytes"] <= 16 * MiB                     # no rules: no prefix table, no rate state
    assert not [k for k in s["memory_by_map"] if "[" in k]
    rnd = random.Random(5)
    path = tmp_path / "k.netset"
    path.write_text("".join(f"{text(4, net)}/{plen}\n" for net, plen in random_set(rnd, 4, 1000)))
    rs = parse_config(f"deny src file:{path}\ndeny tcp flags syn/syn,ack rate 1000/s per-source\n"
                      "rate-sources 4096\n")
    fw.apply(rs)
    s = fw.stats()
    assert s["memory_bytes"] <= 24 * MiB
    predicted = plan(rs).memory()
    # the prediction names the sized maps OUTER[*]; the kernel reports the slot's number
    by_map = {k.replace(f"[{fw.generation}]", "[*]"): v for k, v in s["memory_by_map"].items()}
    assert predicted == by_map


def test_rate_state_exists_only_for_per_source_rules_sized_by_rate_sources(fw):
    def rate_maps():
        with sized.inner_maps(fw, sized.RATE_MAPS) as held:
            return {name: (m.id, m.max_entries) for name, _slot, m in held}

    fw.apply(parse_config("deny udp rate 100/s\n"))          # rated, but not per source
    assert rate_maps() == {}
    fw.apply(parse_config("deny src 198.18.0.0/15 udp rate 100/s per-source\nrate-sources 1000\n"))
    maps = rate_maps()
    assert set(maps) == {sized.RATE4} and maps[sized.RATE4][1] == 512   # 512 sets of 2 ways
    frame = Ether(**E) / IP(src="198.18.1.1") / UDP()
    passed = sum(verdict(fw, frame) == Verdict.XDP_PASS for _ in range(150))
    assert 100 <= passed <= 102
    fw.apply(parse_config("deny src 198.18.0.0/15 udp rate 100/s per-source\nrate-sources 1000\ndeny tcp\n"))
    assert rate_maps() == maps                                # same size: same map, the state goes on
    # still near its rate: a fresh state would pass a burst of 100 (a packet per 10 ms came back
    # during the apply's few tens of ms)
    assert sum(verdict(fw, frame) == Verdict.XDP_PASS for _ in range(50)) < 40
    fw.apply(parse_config("deny udp rate 100/s per-source\nrate-sources 70000\n"))
    maps = rate_maps()
    assert set(maps) == {sized.RATE4, sized.RATE6}
    assert maps[sized.RATE4][1] == 65536 and maps[sized.RATE6][1] == 70000
    assert fw.ruleset().rate_sources == 70000
    fw.apply(parse_config("deny udp rate 100/s per-source\n"))   # the default size: its own slots
    maps = rate_maps()
    assert set(maps) == {sized.RATE4_DEFAULT, sized.RATE6}
    assert maps[sized.RATE4_DEFAULT][1] == 1 << sized.RL4_DEFAULT_BITS and maps[sized.RATE6][1] == 65536
    raw, prog = bytes(Ether(**E) / IP(src="198.18.1.9") / UDP()), fw._obj.programs["xdpkit_firewall"]
    passed = sum(prog.run(raw).verdict == Verdict.XDP_PASS for _ in range(150))
    assert 100 <= passed <= 102                               # a burst of one second's packets
    fw.apply(parse_config("policy allow\n"))
    assert rate_maps() == {}


def test_growing_to_a_million_prefixes_and_back_under_a_flood_drops_nothing_legitimate(lab, tmp_path):
    big = tmp_path / "big.netset"
    rnd = random.Random(9)
    lines = []
    for _ in range(1_000_000):
        plen = rnd.randint(8, 32)
        a = rnd.getrandbits(32) >> (32 - plen) << (32 - plen)
        if a >> 24 in (198, 10):          # keep the flood's source and the lab's networks unlisted
            continue
        lines.append(f"{text(4, a)}/{plen}\n")
    big.write_text("".join(lines))
    small = "deny src 203.0.113.0/24\npolicy allow\n"
    with xns.inside(lab.dut):
        fw = Firewall.load("in0", parse_config(small), mode="native")
    try:
        with xns.inside(lab.src):
            t = tg.build_template(proto="udp", size=64, src_mac=A.src_mac, dst_mac=A.dut_in_mac,
                                  src_ip=A.src_ip4, dst_ip=A.dst_ip4, dport=9)
            gen = tg.TrafficGen("eth0", t, tg.Flows(src_ips=16, sport_count=64))
        result = {}
        stop = threading.Event()

        def flood():
            with xns.inside(lab.src):
                result["sent"] = 0
                while not stop.is_set() and result["sent"] < 50_000_000:
                    result["sent"] += gen.run(count=200_000, duration=2).sent

        flooder = threading.Thread(target=flood)
        flooder.start()
        try:
            with xns.inside(lab.dut):
                fw.reset_counters()
                for conf in (f"deny src file:{big}\npolicy allow\n", small):
                    fw.apply(parse_config(conf))
        finally:
            stop.set()
            flooder.join(timeout=60)
            gen.close()
        with xns.inside(lab.dut):
            s = fw.stats()
    finally:
        with xns.inside(lab.dut):
            Firewall.unload("in0")
        fw.close()
    passed = s["verdicts"].get("XDP_PASS", {}).get("packets", 0)
    dropped = sum(s["verdicts"].get(v, {}).get("packets", 0) for v in ("XDP_DROP", "XDP_ABORTED"))
    assert result["sent"] > 100_000 and passed > 100_000
    assert dropped == 0, s["reasons"]
