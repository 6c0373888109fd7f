"""BPF_PROG_TEST_RUN: verdicts, output bytes, timing, pcap in and out, CLI JSON."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.l2 import Ether

import xdpkit
from xdpkit import ConfigError, Verdict, pcap
from tests.packets import arp, icmp4, ipv4_fragment, tcp4, udp4, udp6, vlan_udp4

pytestmark = pytest.mark.kernel

EX = Path(xdpkit.__file__).parent / "examples"

SWAP_SRC = r"""
#include <xdpkit/parsing.h>
/* Swap MACs and bounce the frame: shows that output bytes come back from the kernel. */
SEC("xdp")
int swap_tx(struct xdp_md *ctx)
{
	struct xdpkit_cursor c;
	struct ethhdr *eth;
	__u8 tmp[ETH_ALEN];

	xdpkit_cursor_init(&c, ctx);
	if (xdpkit_parse_eth(&c, &eth, NULL) < 0)
		return XDP_ABORTED;
	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
	return XDP_TX;
}
char _license[] SEC("license") = "GPL";
"""


@pytest.fixture
def drop_udp():
    with xdpkit.Object.from_file(EX / "xdp_drop_udp.bpf.c", section="xdp_drop_udp") as obj:
        yield obj.program()


@pytest.mark.parametrize("frame,verdict", [
    (udp4(), Verdict.XDP_DROP), (udp6(), Verdict.XDP_DROP), (vlan_udp4(), Verdict.XDP_DROP),
    (ipv4_fragment(), Verdict.XDP_DROP), (tcp4(), Verdict.XDP_PASS), (icmp4(), Verdict.XDP_PASS),
    (arp(), Verdict.XDP_PASS), (udp4()[:20], Verdict.XDP_PASS),  # truncated IP header passes
])
def test_drop_udp_verdicts(drop_udp, frame, verdict):
    result = drop_udp.run(frame)
    assert result.verdict is verdict
    assert result.data == frame  # this program never edits


def test_output_bytes_and_repeat(tmp_path):
    src = tmp_path / "swap.bpf.c"
    src.write_text(SWAP_SRC)
    with xdpkit.Object.from_file(src) as obj:
        frame = udp4()
        r = obj.program().run(frame)
        assert r.verdict is Verdict.XDP_TX
        out = Ether(r.data)
        assert (out.src, out.dst) == (Ether(frame).dst, Ether(frame).src)
        assert r.data[12:] == frame[12:]
        timed = obj.program().run(frame, repeat=1000)  # the kernel reuses one buffer for all runs
        assert timed.verdict is Verdict.XDP_TX and 0 < timed.duration_ns < 100_000
        assert r.to_dict()["verdict"] == "XDP_TX"


def test_short_frame_is_a_clear_error(drop_udp):
    with pytest.raises(ConfigError, match="at least 14"):
        drop_udp.run(b"\x00" * 10)


def test_ingress_ifindex_reaches_the_program(netns, tmp_path):
    netns.veth("xa", "xb")
    src = tmp_path / "ifx.bpf.c"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("xdp") int ifx(struct xdp_md *c) { return c->ingress_ifindex == IFX ? XDP_DROP : XDP_PASS; }\n'
                   'char _license[] SEC("license") = "GPL";\n'.replace(
                       "IFX", str(xdpkit._sys.netlink.ifindex_of("xa"))))
    with xdpkit.Object.from_file(src) as obj:
        ifx = xdpkit._sys.netlink.ifindex_of("xa")
        assert obj.program().run(udp4(), ingress_ifindex=ifx).verdict is Verdict.XDP_DROP
        assert obj.program().run(udp4()).verdict is Verdict.XDP_PASS


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "xdpkit", *args], capture_output=True, text=True)


def test_cli_run_packet_json():
    r = _cli("run", str(EX / "xdp_drop_udp.bpf.c"), "--section", "xdp_drop_udp", "--packet", udp4().hex(), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "XDP_DROP" and out["data"] == udp4().hex() and out["duration_ns"] >= 0


def test_cli_run_pcap_summary_and_write(tmp_path):
    frames = [udp4(), tcp4(), udp6(), icmp4(), arp()]
    pcap.write_frames(tmp_path / "in.pcap", frames)
    r = _cli("run", str(EX / "xdp_drop_udp.bpf.c"), "--section", "xdp_drop_udp",
             "--pcap", str(tmp_path / "in.pcap"), "-w", str(tmp_path / "out.pcap"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["packets"] == 5 and out["verdicts"] == {"XDP_DROP": 2, "XDP_PASS": 3}
    assert list(pcap.read_frames(tmp_path / "out.pcap")) == [tcp4(), icmp4(), arp()]
    text = _cli("run", str(EX / "xdp_drop_udp.bpf.c"), "--section", "xdp_drop_udp",
                "--pcap", str(tmp_path / "in.pcap"))
    assert "XDP_PASS" in text.stdout and "5 packets" in text.stdout


def test_cli_run_rejects_bad_pcap(tmp_path):
    (tmp_path / "bad.pcap").write_bytes(b"garbage-garbage-garbage-garbage")
    r = _cli("run", str(EX / "xdp_pass.bpf.c"), "--pcap", str(tmp_path / "bad.pcap"))
    assert r.returncode == 1 and "not a pcap" in r.stderr and "Traceback" not in r.stderr
