"""The firewall rule language: one rule per line, also the config file format.

    policy allow|deny                  default verdict when no rule matches (default: allow)
    malformed drop|pass                truncated/malformed IP packets (default: drop)
    non-ip pass|drop                   ARP, LLDP and other non-IP frames (default: pass)
    rate-sources N                     sources per family with per-source rate state (default
                                       65536; a new source takes the place of one idle longer)

    ACTION [MATCH ...] [rate LIMITS [per-source]]

ACTION: allow | deny | ratelimit (= deny with a rate).
MATCH (all must hold; any combination):
    src SET | dst SET           SET: a CIDR, a comma list of CIDRs, or file:/path (one CIDR per
                                line, # comments; firehol .netset files load as they are)
    tcp | udp | icmp | icmpv6   or: proto NAME|NUMBER
    sport PORTS | dport PORTS   PORTS: 53, 1000-1999, or a comma list (implies tcp or udp)
    flags F[/MASK]              TCP flags, e.g. syn/syn,ack = SYN set and ACK clear (implies tcp)
    icmp-type N                 (implies icmp or icmpv6)
    len A-B | len N             frame length in bytes (Ethernet header included, no FCS)
rate LIMITS: 1000/s (packets), 10mbit/s or 500kbit/s (bits), or both comma-separated.
    A rated rule applies its action only to what exceeds the rate; traffic within the rate
    falls through to the next rules. Global per rule, or per source address with per-source.

Precedence: rules are evaluated in order; the first matching rule decides.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field

from xdpkit.errors import ConfigError
from xdpkit.textfile import read_text

ACTIONS = ("allow", "deny", "ratelimit")
PROTO_NAMES = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
TCP_FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20,
             "ece": 0x40, "cwr": 0x80}
MAX_LEN = 65535
DEFAULT_RATE_SOURCES = 65536   # sources per family with per-source rate state
MAX_RATE_SOURCES = 1 << 24


# A prefix is a plain tuple (version, network as int, prefix length): blocklists hold millions
# and a tuple costs a fraction of an object.
Prefix = tuple
_MASK32 = [(0xFFFFFFFF << (32 - n)) & 0xFFFFFFFF for n in range(33)]


def prefix_str(p: Prefix) -> str:
    version, addr, plen = p
    if version == 4:
        return f"{socket.inet_ntop(socket.AF_INET, addr.to_bytes(4, 'big'))}/{plen}"
    return f"{socket.inet_ntop(socket.AF_INET6, addr.to_bytes(16, 'big'))}/{plen}"


def prefix_contains(p: Prefix, version: int | None, addr: int) -> bool:
    pv, paddr, plen = p
    if version != pv:
        return False
    shift = (32 if pv == 4 else 128) - plen
    return (addr >> shift) == (paddr >> shift)


@dataclass
class Rule:
    action: str
    text: str = ""
    line: int | None = None
    src: tuple[Prefix, ...] | None = None
    dst: tuple[Prefix, ...] | None = None
    src_spec: str | None = None
    dst_spec: str | None = None
    protos: frozenset[int] | None = None
    sports: tuple[tuple[int, int], ...] | None = None
    dports: tuple[tuple[int, int], ...] | None = None
    flags: tuple[int, int] | None = None          # (value, mask)
    icmp_type: int | None = None
    length: tuple[int, int] | None = None
    rate_pps: int = 0
    rate_bps: int = 0
    per_source: bool = False

    @property
    def rated(self) -> bool:
        return bool(self.rate_pps or self.rate_bps)

    @property
    def verdict_drop(self) -> bool:
        return self.action in ("deny", "ratelimit")

    def key(self) -> str:
        """Identity for keeping counters across re-applies: the normalised rule text."""
        return " ".join(self.text.split())


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    policy: str = "allow"
    malformed: str = "drop"
    non_ip: str = "pass"
    rate_sources: int = DEFAULT_RATE_SOURCES

    def settings_text(self) -> list[str]:
        out = [f"policy {self.policy}", f"malformed {self.malformed}", f"non-ip {self.non_ip}"]
        if self.rate_sources != DEFAULT_RATE_SOURCES:
            out.append(f"rate-sources {self.rate_sources}")
        return out

    def fingerprint(self) -> tuple:
        """What a firewall in force shows of this rule set without reading address files: its
        settings and normalised rule texts (``Firewall.fingerprint`` reads the same)."""
        return (self.policy, self.malformed, self.non_ip, self.rate_sources, tuple(r.key() for r in self.rules))


# Dotted-quad decimal only: no leading zeros (octal to inet_aton), no hex, no short forms, and a
# prefix length of 0..32 written plainly. inet_aton then reads exactly what a person reads.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_V4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}(?:/(?:3[0-2]|[12]?\d))?")


def parse_prefix(text: str) -> Prefix:
    text = text.strip()
    addr, slash, plen = text.partition("/")
    if slash and not (plen.isdigit() and plen.isascii() and (plen == "0" or plen[0] != "0")):
        raise ConfigError(f"bad prefix length {plen!r} in {text!r}: use 0..32 for IPv4, 0..128 for IPv6")
    if addr.count(".") == 3 and ":" not in addr:
        if not _V4_RE.fullmatch(text):
            if _V4_RE.fullmatch(addr):
                raise ConfigError(f"prefix length {plen} is over 32 in {text!r} (IPv4 lengths are 0..32)")
            raise ConfigError(f"not an IPv4 address: {text!r} (dotted-quad decimal, no leading zeros)")
        n = int(plen) if plen else 32
        return (4, int.from_bytes(socket.inet_aton(addr), "big") & _MASK32[n], n)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        if ":" in addr and slash:
            raise ConfigError(f"not an IPv6 prefix: {text!r} (prefix length 0..128)") from None
        raise ConfigError(f"not a CIDR: {text!r} ({exc})") from None
    return (net.version, int(net.network_address), net.prefixlen)


def read_set_file(path: str) -> list[Prefix]:
    """One CIDR per line, # comments (firehol .netset files load as they are)."""
    text = original = read_text(path, "address set")
    if "#" in text:
        text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    out: list[Prefix] = []
    append, aton, from_bytes, masks, strict = out.append, socket.inet_aton, int.from_bytes, _MASK32, _V4_RE.fullmatch
    words = text.split()
    try:
        for word in words:
            # The common case inline (a million lines): a plain IPv4 address or prefix, checked
            # by the strict pattern before inet_aton (which would take 010 as octal, 0x0a as hex).
            if strict(word):
                addr, _, plen = word.partition("/")
                value = from_bytes(aton(addr), "big")
                if plen:
                    n = int(plen)
                    append((4, value & masks[n], n))
                else:
                    append((4, value, 32))
            else:
                append(parse_prefix(word))
    except (OSError, ValueError, IndexError, ConfigError):
        bad = word  # noqa: F821 - the loop variable at the failure
        lineno = next((i for i, line in enumerate(original.splitlines(), 1) if bad in line), "?")
        try:
            parse_prefix(bad)
            reason = f"not a CIDR: {bad!r}"
        except ConfigError as exc:
            reason = str(exc)
        raise ConfigError(f"{path}:{lineno}: {reason}") from None
    return out


def _parse_set(spec: str) -> tuple[Prefix, ...]:
    out: list[Prefix] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("file:"):
            out.extend(read_set_file(part[5:]))
        else:
            out.append(parse_prefix(part))
    if not out:
        raise ConfigError(f"empty address set {spec!r}")
    return tuple(out)


def _parse_ports(spec: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in spec.split(","):
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ConfigError(f"not a port or port range: {part!r}") from None
        if not 0 <= a <= b <= 65535:
            raise ConfigError(f"port range {part!r} must lie within 0..65535, low to high")
        out.append((a, b))
    return tuple(out)


def _parse_flags(spec: str) -> tuple[int, int]:
    value_s, _, mask_s = spec.partition("/")

    def bits(s: str) -> int:
        v = 0
        for name in s.split(","):
            name = name.strip().lower()
            if name not in TCP_FLAGS:
                raise ConfigError(f"unknown TCP flag {name!r} (known: {', '.join(TCP_FLAGS)})")
            v |= TCP_FLAGS[name]
        return v

    value = bits(value_s) if value_s else 0
    mask = bits(mask_s) if mask_s else value
    if value & ~mask:
        raise ConfigError(f"flags {spec!r}: every flag on the left must also be in the mask")
    return value, mask


_RATE_RE = re.compile(r"^(\d+)(k|m|g)?(pps|/s|bit/s|bps)$")


def _parse_rate(spec: str) -> tuple[int, int]:
    pps = bps = 0
    for part in spec.lower().split(","):
        m = _RATE_RE.match(part.strip())
        if not m:
            raise ConfigError(f"bad rate {part!r}: use e.g. 1000/s, 10mbit/s or 1000/s,10mbit/s")
        n = int(m.group(1)) * {None: 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2)]
        if n <= 0:
            raise ConfigError(f"rate {part!r} must be positive")
        if m.group(3) in ("pps", "/s"):
            pps = n
        else:
            bps = n
    return pps, bps


def parse_rule(text: str, line: int | None = None) -> Rule:
    words = text.split()
    if not words or words[0] not in ACTIONS:
        raise ConfigError(f"a rule starts with {', '.join(ACTIONS)}; got {text.strip()!r}", line=line)
    rule = Rule(action=words[0], text=" ".join(words), line=line)
    i = 1
    seen: set[str] = set()

    def value(name: str) -> str:
        nonlocal i
        if i + 1 >= len(words):
            raise ConfigError(f"{name} needs a value", line=line)
        i += 1
        return words[i]

    try:
        while i < len(words):
            w = words[i].lower()
            if w in seen and w not in ("per-source",):
                raise ConfigError(f"{w} given twice")
            seen.add(w)
            if w in ("src", "dst"):
                spec = value(w)
                prefixes = _parse_set(spec)
                if w == "src":
                    rule.src, rule.src_spec = prefixes, spec
                else:
                    rule.dst, rule.dst_spec = prefixes, spec
            elif w in PROTO_NAMES:  # several protocol words: any of them
                rule.protos = (rule.protos or frozenset()) | {PROTO_NAMES[w]}
            elif w == "proto":
                v = value(w).lower()
                num = PROTO_NAMES.get(v)
                if num is None:
                    try:
                        num = int(v)
                    except ValueError:
                        raise ConfigError(f"unknown protocol {v!r}") from None
                if not 0 <= num <= 255:
                    raise ConfigError(f"protocol {num} out of range 0..255")
                rule.protos = (rule.protos or frozenset()) | {num}
            elif w == "sport":
                rule.sports = _parse_ports(value(w))
            elif w == "dport":
                rule.dports = _parse_ports(value(w))
            elif w == "flags":
                rule.flags = _parse_flags(value(w))
            elif w == "icmp-type":
                try:
                    rule.icmp_type = int(value(w))
                except ValueError:
                    raise ConfigError("icmp-type needs a number 0..255") from None
                if not 0 <= rule.icmp_type <= 255:
                    raise ConfigError("icmp-type needs a number 0..255")
            elif w == "len":
                spec = value(w)
                lo, sep, hi = spec.partition("-")
                try:
                    a, b = int(lo), int(hi) if sep else int(lo)
                except ValueError:
                    raise ConfigError(f"len needs N or A-B, got {spec!r}") from None
                if not 0 <= a <= b <= MAX_LEN:
                    raise ConfigError(f"len range {spec!r} must lie within 0..{MAX_LEN}, low to high")
                rule.length = (a, b)
            elif w == "rate":
                rule.rate_pps, rule.rate_bps = _parse_rate(value(w))
            elif w == "per-source":
                rule.per_source = True
            else:
                raise ConfigError(f"unknown word {words[i]!r}")
            i += 1
    except ConfigError as exc:
        if exc.line is None and line is not None:
            raise ConfigError(str(exc), line=line) from None
        raise
    _check(rule)
    return rule


def _check(rule: Rule) -> None:
    def fail(msg: str):
        raise ConfigError(msg, line=rule.line)

    # Implied protocols: ports need TCP/UDP, flags need TCP, ICMP types need ICMP. Without a
    # protocol word the rule gets what every field it names allows (dport + flags: tcp).
    needs = []
    if rule.sports is not None or rule.dports is not None:
        needs.append(("ports only exist for tcp and udp", frozenset([6, 17])))
    if rule.flags is not None:
        needs.append(("flags only exist for tcp", frozenset([6])))
    if rule.icmp_type is not None:
        needs.append(("icmp-type only exists for icmp and icmpv6", frozenset([1, 58])))
    if needs and rule.protos is None:
        implied = frozenset.intersection(*(allowed for _, allowed in needs))
        if not implied:
            fail("no protocol has all of " + ", ".join(
                w for w, f in (("ports", rule.sports or rule.dports), ("flags", rule.flags),
                               ("icmp-type", rule.icmp_type)) if f is not None))
        rule.protos = implied
    for why, allowed in needs:
        if not rule.protos <= allowed:
            fail(why)
    if rule.action == "ratelimit" and not rule.rated:
        fail("ratelimit needs a rate, e.g. rate 1000/s")
    if rule.rated and rule.action == "allow":
        fail("a rate only makes sense with deny or ratelimit: it drops what exceeds the rate")
    if rule.per_source and not rule.rated:
        fail("per-source needs a rate")


def parse_config(text: str, *, source: str = "config") -> RuleSet:
    """Parse a whole config. Any bad line fails the whole config (nothing is applied)."""
    rs = RuleSet()
    errors = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        try:
            if words[0] in ("policy", "malformed", "non-ip"):
                allowed = {"policy": ("allow", "deny"), "malformed": ("drop", "pass"),
                           "non-ip": ("pass", "drop")}[words[0]]
                if len(words) != 2 or words[1] not in allowed:
                    raise ConfigError(f"{words[0]} takes one of {', '.join(allowed)}", line=n)
                setattr(rs, words[0].replace("-", "_"), words[1])
            elif words[0] == "rate-sources":
                if len(words) != 2 or not (words[1].isdigit() and words[1].isascii()) \
                        or not 1 <= int(words[1]) <= MAX_RATE_SOURCES:
                    raise ConfigError(f"rate-sources takes a number of sources, 1..{MAX_RATE_SOURCES:,}", line=n)
                rs.rate_sources = int(words[1])
            else:
                rs.rules.append(parse_rule(line, line=n))
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        more = f" (and {len(errors) - 1} more bad lines)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {errors[0]}{more}; nothing was applied")
    return rs
