"""The four tutorial programs, end to end on the lab: real traffic across namespaces."""
import socket
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

import xdpkit
from xdpkit._sys import netns as xns
from xdpkit.lab import ADDRESSES as A

pytestmark = pytest.mark.kernel

EX = Path(xdpkit.__file__).parent / "examples"

SEND_UDP = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
            "[s.sendto(b'xdpkit-%d' % i, (sys.argv[1], int(sys.argv[2]))) for i in range(int(sys.argv[3]))]\n")


def udp_receiver(ns: str, addr: str, port: int) -> socket.socket:
    """A UDP socket living in namespace ``ns`` (sockets keep the namespace they were made in)."""
    with xns.inside(ns):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((addr, port))
    s.settimeout(0.2)
    return s


def received(sock: socket.socket, wait: float = 1.0) -> int:
    n, deadline = 0, time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            sock.recv(2048)
            n += 1
        except socket.timeout:
            continue
    return n


def send_udp(lab, addr: str, port: int, count: int = 5):
    lab.run("src", [sys.executable, "-c", SEND_UDP, addr, str(port), str(count)], check=True)


def ping(lab, addr: str) -> bool:
    argv = ["ping", "-c", "2", "-i", "0.2", "-W", "1"] + (["-6"] if ":" in addr else []) + [addr]
    return lab.run("src", argv, timeout=10).returncode == 0


def test_pass_all_keeps_traffic_flowing(lab):
    with xns.inside(lab.dut), xdpkit.Object.from_file(EX / "xdp_pass.bpf.c") as obj:
        with obj.program().attach("in0", mode="native") as link:
            assert xdpkit.query("in0")[0].id == link.prog_id
            assert ping(lab, A.dst_ip4) and ping(lab, A.dst_ip6)
        assert xdpkit.query("in0") == []


@pytest.mark.parametrize("addr", [A.dst_ip4, A.dst_ip6])
def test_drop_udp_drops_udp_while_ping_is_answered(lab, addr):
    rx = udp_receiver(lab.dst, addr, 5353)
    try:
        with xns.inside(lab.dst), \
                xdpkit.Object.from_file(EX / "xdp_drop_udp.bpf.c", section="xdp_drop_udp") as obj:
            link = obj.program().attach("eth0", mode="native", netlink=True)
            try:
                send_udp(lab, addr, 5353)
                assert received(rx) == 0
                assert ping(lab, addr)
            finally:
                link.detach()
        send_udp(lab, addr, 5353, count=3)
        assert received(rx) == 3  # detached: UDP flows again
    finally:
        rx.close()


def test_drop_udp_port_variant_drops_only_that_port(lab):
    rx53, rx54 = udp_receiver(lab.dst, A.dst_ip4, 5353), udp_receiver(lab.dst, A.dst_ip4, 5354)
    try:
        spec = xdpkit.ObjectSpec.from_file(EX / "xdp_drop_udp.bpf.c")
        spec.select(section="xdp_drop_udp")
        spec.rodata["drop_port"] = 5353
        with xns.inside(lab.dst), spec.load() as obj:
            with obj.program().attach("eth0", mode="native"):
                send_udp(lab, A.dst_ip4, 5353, 4)
                send_udp(lab, A.dst_ip4, 5354, 4)
                assert received(rx53) == 0
                assert received(rx54) == 4
    finally:
        rx53.close()
        rx54.close()


def _capture_socket(ns: str, ifname: str) -> socket.socket:
    with xns.inside(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((ifname, 0))
    s.settimeout(0.2)
    return s


def test_redirect_via_devmap_forwards_out_of_the_other_interface(lab):
    # TTL 1: the kernel's router would drop it, so arriving at dst proves XDP forwarded it.
    marker = b"xdpkit-redirect-marker"
    frame = bytes(Ether(src=A.src_mac, dst=A.dut_in_mac) / IP(src=A.src_ip4, dst=A.dst_ip4, ttl=1)
                  / UDP(sport=1111, dport=2222) / marker)
    cap = _capture_socket(lab.dst, "eth0")
    try:
        with xns.inside(lab.dut), xdpkit.Object.from_file(EX / "xdp_redirect.bpf.c") as obj:
            obj.maps["tx_port"][0] = "out0"
            obj.maps["egress_mac"][0] = {"dst": A.dst_mac, "src": A.dut_out_mac}
            assert obj.program().run(frame).verdict is xdpkit.Verdict.XDP_REDIRECT
            with obj.program().attach("in0", mode="native"):
                sent = lab.send_frames("src", "eth0", [frame] * 5)
                assert sent == 5
                got = []
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and len(got) < 5:
                    try:
                        data = cap.recv(4096)
                    except socket.timeout:
                        continue
                    if marker in data:
                        got.append(Ether(data))
        assert len(got) == 5
        assert got[0].dst == A.dst_mac and got[0].src == A.dut_out_mac and got[0][IP].ttl == 1
    finally:
        cap.close()


def test_redirect_without_egress_passes(lab):
    with xns.inside(lab.dut), xdpkit.Object.from_file(EX / "xdp_redirect.bpf.c") as obj:
        frame = bytes(Ether(src=A.src_mac, dst=A.dut_in_mac) / IP(src=A.src_ip4, dst=A.dst_ip4) / UDP())
        assert obj.program().run(frame).verdict is xdpkit.Verdict.XDP_PASS


def test_ethertype_counter_counts_each_kind(lab):
    experimental = bytes(Ether(src=A.src_mac, dst=A.dut_in_mac, type=0x88B5) / (b"\0" * 46))
    arp_req = bytes(Ether(src=A.src_mac, dst="ff:ff:ff:ff:ff:ff") /
                    ARP(hwsrc=A.src_mac, psrc=A.src_ip4, pdst="198.18.1.99"))
    with xns.inside(lab.dut), xdpkit.Object.from_file(EX / "xdp_ethertype_count.bpf.c") as obj:
        with obj.program().attach("in0", mode="native"):
            lab.send_frames("src", "eth0", [experimental] * 7 + [arp_req] * 4)
            assert ping(lab, A.dst_ip4) and ping(lab, A.dst_ip6)
            time.sleep(0.2)
            counts = {k: v.sum() for k, v in obj.maps["ethertype_count"].items()}
    assert counts[0x88B5] == 7          # nobody else sends this EtherType
    assert counts[0x0806] >= 4
    assert counts[0x0800] >= 2 and counts[0x86DD] >= 2


def test_demo_runs_and_leaves_nothing(capsys):
    from xdpkit import bpffs
    from xdpkit.lab.demo import run_demo

    pin_roots = bpffs.existing_pin_roots()
    result = run_demo(lab_name="tdemo", log=print)
    assert result["ok"]
    assert bpffs.existing_pin_roots() <= pin_roots  # the lab's pin root goes when nothing is pinned
    names = {r["name"]: r["packets"] for r in result["counts"]}
    assert names["IPv4"] > 0 and names["IPv6"] > 0 and names["ARP"] > 0
    assert not [n for n in xns.list_namespaces() if n.startswith("tdemo-")]
    assert "0x0800     IPv4" in capsys.readouterr().out
