"""EtherType names, as people read them in counters and tables."""
from __future__ import annotations

ETHERTYPE_NAMES = {
    0x0800: "IPv4",
    0x0806: "ARP",
    0x86DD: "IPv6",
    0x8100: "VLAN",
    0x88A8: "QinQ",
    0x8847: "MPLS",
    0x8848: "MPLS-mc",
    0x88CC: "LLDP",
    0x8035: "RARP",
    0x888E: "EAPOL",
    0x88F7: "PTP",
    0x0000: "truncated",
}


def ethertype_name(value: int) -> str:
    return ETHERTYPE_NAMES.get(value, "other" if value >= 0x0600 else "802.3 length")
