"""Deterministic prefix blocklists for benchmarks, in netset text (one CIDR per line).

The same seed always gives the same file, so figures from two runs (or two hosts) describe
the same set. Every prefix is written as its network address (host bits zero): the firewall
would mask them anyway, but a file that reads back unchanged keeps the distinct-prefix counts
honest. A million lines are written or read back in about a second: the loops stay on plain
ints and socket's text conversions instead of ipaddress objects.
"""
from __future__ import annotations

import os
import random
import socket

#: The lab's listed source network: every generated set blocks it, so live floods are dropped.
LAB_V4 = "198.18.1.0/24"
LAB_V6 = "2001:db8:1::/48"

_MASK32 = tuple((0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF for p in range(33))
_MASK128 = tuple(((1 << p) - 1) << (128 - p) for p in range(129))
_GLOBAL_UNICAST = 1 << 125  # 2000::/3: the top three bits 001
_LINES_PER_WRITE = 65536


def _v4_text(a: int) -> str:
    return f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"


def _write_lines(path, first: str | None, lines) -> None:
    """Write ``first`` then the generated lines, in blocks (one write per line is the slow part)."""
    with open(path, "w") as f:
        if first is not None:
            f.write(first + "\n")
        block: list[str] = []
        for line in lines:
            block.append(line)
            if len(block) >= _LINES_PER_WRITE:
                f.write("".join(block))
                block.clear()
        f.write("".join(block))


def _mixed_v4_lines(rnd: random.Random, count: int):
    """Lengths uniform over /8../32 and addresses uniform over the whole space, so short
    lengths repeat (there are only 256 /8s) and /32s almost never do."""
    bits, below, masks, text = rnd.getrandbits, rnd.randrange, _MASK32, _v4_text
    for _ in range(count):
        plen = below(8, 33)
        yield f"{text(bits(32) & masks[plen])}/{plen}\n"


def write_mixed_v4(path: str | os.PathLike, n: int, seed: int = 1) -> None:
    """n IPv4 prefixes (198.18.1.0/24 first, counted in n), /8../32; duplicates allowed."""
    if n < 1:
        raise ValueError(f"n must be at least 1 (the lab's {LAB_V4} comes first), not {n}")
    _write_lines(path, LAB_V4, _mixed_v4_lines(random.Random(seed), n - 1))


def _v6_plen(rnd: random.Random) -> int:
    """Mostly what IPv6 blocklists hold: 70% /32../64 (allocations down to subnets), 10% /128
    host routes, 10% /65../127, 10% /16../31 (large allocations)."""
    r = rnd.random()
    if r < 0.7:
        return rnd.randrange(32, 65)
    if r < 0.8:
        return 128
    if r < 0.9:
        return rnd.randrange(65, 128)
    return rnd.randrange(16, 32)


def _mixed_v6_lines(rnd: random.Random, count: int):
    """Addresses uniform within global unicast (2000::/3), where real blocklists live."""
    bits, ntop, af, masks = rnd.getrandbits, socket.inet_ntop, socket.AF_INET6, _MASK128
    for _ in range(count):
        plen = _v6_plen(rnd)
        net = (_GLOBAL_UNICAST | bits(125)) & masks[plen]
        yield f"{ntop(af, net.to_bytes(16, 'big'))}/{plen}\n"


def write_mixed_v6(path: str | os.PathLike, n: int, seed: int = 1) -> None:
    """n IPv6 prefixes (2001:db8:1::/48 first, counted in n), /16../128; duplicates allowed.

    inet_ntop writes the canonical compressed text (RFC 5952, as ipaddress does): no address
    in 2000::/3 takes the embedded-IPv4 forms, which need the first 80 bits zero."""
    if n < 1:
        raise ValueError(f"n must be at least 1 (the lab's {LAB_V6} comes first), not {n}")
    _write_lines(path, LAB_V6, _mixed_v6_lines(random.Random(seed), n - 1))


def _legacy_v4_lines(rnd: random.Random, count: int):
    bits = rnd.getrandbits
    for i in range(count):
        a = bits(32)
        if i % 10 == 0:
            yield f"{_v4_text(a & 0xFFFFFF00)}/24\n"
        else:
            yield f"{_v4_text(a)}\n"


def write_legacy_v4(path: str | os.PathLike, n: int, seed: int = 1) -> None:
    """bench/firewall.py's blocklist, byte for byte: a comment, 198.18.1.0/24, then n - 1
    prefixes, every tenth a /24 and the rest bare /32 addresses, from the same random stream.
    Kept identical so that figures measured before and after the switch compare."""
    _write_lines(path, "# xdpkit benchmark blocklist\n" + LAB_V4,
                 _legacy_v4_lines(random.Random(seed), n - 1))


def _words(path: str | os.PathLike) -> list[str]:
    """The file's CIDRs: # comments and blank lines dropped."""
    with open(path) as f:
        text = f.read()
    if "#" in text:
        text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return text.split()


def _prefixes(path: str | os.PathLike, af: int, width: int, masks) -> list[tuple[int, int]]:
    pton, from_bytes = socket.inet_pton, int.from_bytes
    out = []
    for word in _words(path):
        addr, _, plen_text = word.partition("/")
        plen = int(plen_text) if plen_text else width
        out.append((from_bytes(pton(af, addr), "big") & masks[plen], plen))
    return out


def prefixes_v4(path: str | os.PathLike) -> list[tuple[int, int]]:
    """(network, prefix length) per line; a bare address is a /32. inet_pton is strict (no
    octal or short forms), and host bits are masked as the firewall masks them."""
    return _prefixes(path, socket.AF_INET, 32, _MASK32)


def prefixes_v6(path: str | os.PathLike) -> list[tuple[int, int]]:
    """(network, prefix length) per line; a bare address is a /128; host bits masked."""
    return _prefixes(path, socket.AF_INET6, 128, _MASK128)
