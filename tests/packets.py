"""scapy-built frames for tests (scapy is a test-only dependency)."""
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

SRC_MAC, DST_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
SRC4, DST4 = "198.18.1.2", "198.18.2.2"
SRC6, DST6 = "2001:db8:1::2", "2001:db8:2::2"


def eth(**kw):
    return Ether(src=SRC_MAC, dst=DST_MAC, **kw)


def udp4(dport=53, sport=1234, payload=b"x" * 18):
    return bytes(eth() / IP(src=SRC4, dst=DST4) / UDP(sport=sport, dport=dport) / payload)


def udp6(dport=53, sport=1234, payload=b"x" * 18):
    return bytes(eth() / IPv6(src=SRC6, dst=DST6) / UDP(sport=sport, dport=dport) / payload)


def tcp4(dport=80):
    return bytes(eth() / IP(src=SRC4, dst=DST4) / TCP(sport=40000, dport=dport, flags="S"))


def icmp4():
    return bytes(eth() / IP(src=SRC4, dst=DST4) / ICMP())


def arp():
    return bytes(Ether(src=SRC_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=SRC4, pdst=DST4, hwsrc=SRC_MAC))


def vlan_udp4(dport=53):
    return bytes(eth() / Dot1Q(vlan=10) / IP(src=SRC4, dst=DST4) / UDP(dport=dport) / (b"y" * 18))


def ipv4_fragment(offset_units=10):
    return bytes(eth() / IP(src=SRC4, dst=DST4, proto=17, frag=offset_units) / (b"z" * 24))
