"""Tutorial-style BPF C (raw uapi headers, legacy section names) compiles with the flags users
get, loads, and gives the verdicts it was written for."""
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import Dot1Q

from xdpkit import ObjectSpec, Verdict
from tests.packets import DST4, DST6, SRC4, SRC6, eth, udp4

pytestmark = pytest.mark.kernel

TUTORIAL = Path(__file__).parents[1] / "data" / "tutorial"


def test_icmp6_parser_drops_odd_echo_sequences_through_vlan_tags():
    with ObjectSpec.from_file(TUTORIAL / "parse_icmp6_echo.c").load() as obj:
        prog = obj.program()

        def verdict(frame):
            return prog.run(bytes(frame)).verdict

        echo = IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest(seq=3)
        assert verdict(eth() / echo) == Verdict.XDP_DROP
        assert verdict(eth() / IPv6(src=SRC6, dst=DST6) / ICMPv6EchoRequest(seq=4)) == Verdict.XDP_PASS
        assert verdict(eth() / Dot1Q(vlan=7) / Dot1Q(vlan=8) / echo) == Verdict.XDP_DROP
        assert verdict(udp4()) == Verdict.XDP_PASS
        assert verdict(bytes(eth())[:14]) == Verdict.XDP_PASS   # Ethernet only: nothing to parse


def test_icmp_counter_in_a_legacy_section_counts_per_type():
    spec = ObjectSpec.from_file(TUTORIAL / "count_icmp4.c")
    spec.select(section="xdp_icmp_count")
    with spec.load() as obj:
        prog = obj.program()
        for icmp_type, n in ((8, 3), (0, 2)):
            for _ in range(n):
                assert prog.run(bytes(eth() / IP(src=SRC4, dst=DST4) / ICMP(type=icmp_type))).verdict \
                    == Verdict.XDP_PASS
        prog.run(udp4())
        counts = obj.maps["icmp_types"]
        assert counts[8].sum() == 3 and counts[0].sum() == 2 and counts[17].sum() == 0
