"""The echo tool's address swap: both directions of every field, checksums still valid."""
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from xdpkit.apps.afxdp.tools import swap_addresses, swap_batch

E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def swapped(pkt) -> Ether:
    f = bytearray(bytes(pkt))
    swap_addresses(memoryview(f))
    return Ether(bytes(f))


def valid(e: Ether, l3) -> bool:
    """The checksums scapy computes from scratch equal the ones in the frame."""
    again = e.copy()
    if l3 is IP:
        del again[IP].chksum
    for layer in (TCP, UDP):
        if again.haslayer(layer):
            del again[layer].chksum
    return bytes(Ether(bytes(again))) == bytes(e)


def test_ipv4_udp_without_options():
    e = swapped(Ether(**E) / IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=1, dport=2) / b"x")
    assert (e.src, e.dst, e[IP].src, e[IP].dst, e[UDP].sport, e[UDP].dport) == \
        (E["dst"], E["src"], "198.18.0.2", "198.18.0.1", 2, 1)
    assert valid(e, IP)


def test_ipv4_tcp_with_options():
    e = swapped(Ether(**E) / IP(src="198.18.0.1", dst="198.18.0.2", options=b"\x01" * 8) /
                TCP(sport=1000, dport=80) / b"x")
    assert (e[IP].src, e[IP].dst, e[TCP].sport, e[TCP].dport) == ("198.18.0.2", "198.18.0.1", 80, 1000)
    assert valid(e, IP)


def test_ipv6_udp():
    e = swapped(Ether(**E) / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=6) / b"x")
    assert (e.src, e[IPv6].src, e[IPv6].dst, e[UDP].sport, e[UDP].dport) == (E["dst"], "2001:db8::2", "2001:db8::1", 6, 5)
    assert valid(e, IPv6)


def test_non_ip_only_swaps_macs():
    pkt = Ether(**E) / ARP(psrc="198.18.0.1", pdst="198.18.0.2")
    e = swapped(pkt)
    assert (e.src, e.dst) == (E["dst"], E["src"]) and bytes(e[ARP]) == bytes(pkt[ARP])


def test_a_batch_swaps_like_one_at_a_time():
    frames = [Ether(**E) / IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=1, dport=2) / b"x",
              Ether(**E) / IP(src="198.18.0.1", dst="198.18.0.2", options=b"\x01" * 4) / TCP() / b"y",
              Ether(**E) / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=3, dport=4),
              Ether(**E) / ARP()]
    umem = bytearray(4096 * len(frames))
    addrs, lens = [], []
    for i, p in enumerate(frames):
        raw = bytes(p)
        umem[4096 * i + 256:4096 * i + 256 + len(raw)] = raw
        addrs.append(4096 * i + 256)
        lens.append(len(raw))
    swap_batch(memoryview(umem), addrs, lens)
    for i, p in enumerate(frames):
        assert bytes(umem[addrs[i]:addrs[i] + lens[i]]) == bytes(swapped(p))
