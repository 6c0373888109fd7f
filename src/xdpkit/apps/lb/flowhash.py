"""The data plane's flow hash, in Python: which Maglev slot and outer source a flow gets.

It mirrors ``lb_flow_hash`` in lb.bpf.c bit for bit (one seeded 64-bit pass over the 64-bit
words of ``struct lb_flow_key`` as they lie in memory), so the control plane and tests
can predict the backend of a flow without sending it, and ``xdpkit lb lookup`` can answer
"where does this flow go" on any node with the same config.
"""
from __future__ import annotations

import ipaddress
import struct

from xdpkit.apps.lb.config import PROTOCOLS

_M32 = 0xFFFFFFFF

# Mirrored from lb.h (checked against the shipped object's BTF by tests/unit/test_layouts.py):
FLOW_KEY = struct.Struct("!16s16sHHBBxx")  # struct lb_flow_key {src, dst, sport, dport (network
                                           #   order), proto, family, pad}
_FLOW_WORDS = struct.Struct("<5Q")         # struct lb_flow_key as the program hashes it: 64-bit words
_FLOW_FAMILY = 37                          # offsetof(struct lb_flow_key, family)
_VIP_KEY_WORDS = struct.Struct("<5I")      # struct lb_vip_key as lb_vip_hash reads it: 32-bit words


def _rol(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _mix(h: int, k: int) -> int:
    k = (k * 0xCC9E2D51) & _M32
    k = _rol(k, 15)
    k = (k * 0x1B873593) & _M32
    h ^= k
    h = _rol(h, 13)
    return (h * 5 + 0xE6546B64) & _M32


def _fmix(h: int, length: int) -> int:
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def flow_key(src: str, dst: str, proto: str | int, sport: int, dport: int) -> bytes:
    """``struct lb_flow_key`` for a flow (ports 0 for fragments and no-sport VIPs)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError(f"{src} and {dst} are of different IP versions")
    p = PROTOCOLS[proto] if isinstance(proto, str) else int(proto)
    return FLOW_KEY.pack(s.packed, d.packed, sport, dport, p, s.version)  # "16s" pads IPv4 with zeros


_M64 = (1 << 64) - 1
_HASH_MUL = 0x9E3779B97F4A7C15  # LB_HASH_MUL in lb.bpf.c


def flow_hash64(key: bytes, seed: int) -> int:
    """``lb_flow_hash``: the 64-bit hash of a packed flow key (its fingerprint in the flow table)."""
    words = _FLOW_WORDS.unpack(key)  # the program reads the struct's words in host order
    h = (seed & _M32) ^ _HASH_MUL
    for w in (words[0], words[2], words[4]) if key[_FLOW_FAMILY] == 4 else words:
        h = ((h ^ w) * _HASH_MUL) & _M64
        h = ((h << 31) | (h >> 33)) & _M64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    return h ^ (h >> 33)


def flow_hash(key: bytes, seed: int) -> int:
    """The flow's 32-bit hash (the high half of the 64-bit one): its Maglev slot and outer source."""
    return flow_hash64(key, seed) >> 32


def vip_hash(key: bytes, seed: int) -> int:
    """``lb_vip_hash``: the hash of a packed ``struct lb_vip_key`` (its five words folded)."""
    w = _VIP_KEY_WORDS.unpack(key)
    x = w[0] ^ _rol(w[1], 7) ^ _rol(w[2], 14) ^ _rol(w[3], 21) ^ ((w[4] * 0x9E3779B1) & _M32) ^ (seed & _M32)
    return _fmix(x, 20)


def flow_slot(key: bytes, seed: int, sets: int) -> tuple[int, int]:
    """(set index, 64-bit fingerprint) under which the flow table remembers a flow."""
    h = flow_hash64(key, seed)
    return h & (sets - 1), h or 1


def outer_source(hash_: int, prefix: str) -> str:
    """The outer source address the program derives from ``hash_`` within ``prefix``.

    The program ORs ``hash & hostmask`` into the address's last 32-bit word as loaded from
    memory (little-endian hosts), so the hash's bytes land in the address reversed.
    """
    net = ipaddress.ip_network(prefix)
    packed = net.network_address.packed
    host_bits = min(net.max_prefixlen - net.prefixlen, 32)
    word = int.from_bytes(packed[-4:], "little")
    mask = int.from_bytes(((1 << host_bits) - 1).to_bytes(4, "big"), "little")
    last = (word | (hash_ & mask)).to_bytes(4, "little")
    return str(ipaddress.ip_address(packed[:-4] + last))
