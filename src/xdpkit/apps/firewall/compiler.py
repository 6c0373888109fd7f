"""Compile a RuleSet into the per-field class tables the BPF program reads.

For every field, each possible packet value maps to a class: the set of rules whose condition
on that field holds (as a bitmask; rules without a condition on the field are in every class).
Classes are interned, so a million prefixes of one blocklist rule share one class. Class 0 is
"every rule" and stands for fields no rule uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from xdpkit.apps.firewall import rangetable as R
from xdpkit.apps.firewall.rules import Rule, RuleSet, prefix_contains
from xdpkit.errors import ConfigError

# Mirrored from firewall.h and firewall.bpf.c; tests/unit/test_layouts.py checks each against the
# header and the shipped object (map sizes, array dimensions).
MAX_RULES = 1024         # FW_MAX_RULES
WORDS = MAX_RULES // 64  # FW_WORDS: u64 words of a class bitmap (struct fw_bitmap.w)
MAX_CLASSES = 16384      # FW_MAX_CLASSES
DECIDE_SHIFT = 16        # FW_DECIDE_SHIFT: source class values carry the deciding rule above it
PORT_NONE = 65536        # FW_PORT_NONE: port-table class of packets without ports
BYTE_NONE = 256          # FW_BYTE_NONE: flags/icmp-table class of non-TCP / non-ICMP packets
LEN_SIZE = 65536         # FW_TABLE(fw_len, 65536): one class per frame length

F_SRC, F_DST, F_PROTO, F_SPORT, F_DPORT, F_FLAGS, F_ICMP, F_LEN = (1 << i for i in range(8))  # FW_F_*


@dataclass
class Compiled:
    rules: list[Rule]
    policy_drop: int
    malformed_drop: int
    non_ip_drop: int
    fields: int = 0
    classes: list[int] = field(default_factory=list)         # class id -> rule bitmask
    src_default4: int = 0
    src_default6: int = 0
    dst_default4: int = 0
    dst_default6: int = 0
    # "src4", "dst4", "src6", "dst6" -> the range table of that side's prefixes of that family
    # (absent: no rule names such a prefix; every address has the side's default class)
    prefix_tables: dict[str, R.Table] = field(default_factory=dict)
    proto: list[int] = field(default_factory=list)
    sport: list[int] = field(default_factory=list)
    dport: list[int] = field(default_factory=list)
    flags: list[int] = field(default_factory=list)
    icmp: list[int] = field(default_factory=list)
    length: list[int] = field(default_factory=list)

    def address_class(self, side: str, family: int, addr: int) -> int:
        """The class of an address on one side ("src", "dst"), looked up as the program does."""
        table = self.prefix_tables.get(f"{side}{family}")
        if table:
            return R.lookup(table, addr) & (MAX_CLASSES - 1)   # without the source's decide bits
        return getattr(self, f"{side}_default{family}")

    @property
    def nwords(self) -> int:
        return max(1, (len(self.rules) + 63) // 64)

    def bitmap(self, cls: int) -> list[int]:
        mask = self.classes[cls]
        return [(mask >> (64 * w)) & 0xFFFFFFFFFFFFFFFF for w in range(WORDS)]

    def decides(self, cls: int) -> tuple[int, int]:
        """(decide_src, decide_dst) of a class: rule index + 1 when the class's first rule has
        no condition but that address (and no rate), else 0."""
        return _decides(self.rules, self.classes[cls])

    def src_value(self, cls: int) -> int:
        """What a source prefix table (and fw_gen's source defaults) hold for a class: the class,
        and above DECIDE_SHIFT the rule that decides on the source alone (fw_src_class returns
        it as it is, with no read of the class's bitmap)."""
        return _src_value(self.rules, cls, self.classes[cls])


def _src_value(rules: list[Rule], cls: int, mask: int) -> int:
    return cls | _decides(rules, mask)[0] << DECIDE_SHIFT


def _decides(rules: list[Rule], mask: int) -> tuple[int, int]:
    if not mask:
        return 0, 0
    i = (mask & -mask).bit_length() - 1
    r = rules[i]
    rest = (r.protos, r.sports, r.dports, r.flags, r.icmp_type, r.length)
    if r.rated or any(x is not None for x in rest):
        return 0, 0
    only_src = r.src is not None and r.dst is None
    only_dst = r.dst is not None and r.src is None
    return (i + 1 if only_src else 0), (i + 1 if only_dst else 0)


class _Interner:
    def __init__(self, all_rules: int):
        self.ids: dict[int, int] = {all_rules: 0}
        self.masks: list[int] = [all_rules]

    def __call__(self, mask: int) -> int:
        cid = self.ids.get(mask)
        if cid is None:
            cid = len(self.masks)
            if cid >= MAX_CLASSES:
                raise ConfigError(f"the rule set needs more than {MAX_CLASSES} distinct rule "
                                  "combinations; merge rules with the same action")
            self.ids[mask] = cid
            self.masks.append(mask)
        return cid


def _sweep(size: int, ranges: list[tuple[int, int, int]], wild: int, intern: _Interner) -> list[int]:
    """A table of ``size`` classes from (lo, hi, bit) ranges: value -> class of matching rules."""
    events: dict[int, list[tuple[int, int]]] = {}
    for lo, hi, bit in ranges:
        events.setdefault(lo, []).append((bit, 1))
        events.setdefault(hi + 1, []).append((bit, -1))
    table = [0] * size
    counts: dict[int, int] = {}
    mask, pos = 0, 0
    cls = intern(wild)
    for at in sorted(events) + [size]:
        if at > pos:
            table[pos:min(at, size)] = [cls] * (min(at, size) - pos)
            pos = at
        if at >= size:
            break
        for bit, delta in events.get(at, ()):
            counts[bit] = counts.get(bit, 0) + delta
            mask = mask | bit if counts[bit] > 0 else mask & ~bit
        cls = intern(mask | wild)
    return table


def _prefix_table(fmt: R.Format, prefixes: dict[tuple[int, int], int], wild: int,
                  intern: _Interner, value) -> R.Table:
    """The range table of one side and family: {(network, length): rule mask} -> class values
    (``value(class id, mask)``)."""
    starts, masks = R.intervals(prefixes, fmt.width, wild)
    ids = {m: value(intern(m), m) for m in dict.fromkeys(masks)}
    return R.build(fmt, starts, [ids[m] for m in masks])


def compile_rules(rs: RuleSet) -> Compiled:
    rules = rs.rules
    if len(rules) > MAX_RULES:
        raise ConfigError(f"{len(rules)} rules; the firewall holds at most {MAX_RULES}")
    all_rules = (1 << len(rules)) - 1
    intern = _Interner(all_rules)
    out = Compiled(rules=list(rules), policy_drop=int(rs.policy == "deny"),
                   malformed_drop=int(rs.malformed == "drop"), non_ip_drop=int(rs.non_ip == "drop"))

    def wild(attr: str) -> int:
        return sum(1 << i for i, r in enumerate(rules) if getattr(r, attr) is None)

    for attr, flag in (("src", F_SRC), ("dst", F_DST), ("protos", F_PROTO), ("sports", F_SPORT),
                       ("dports", F_DPORT), ("flags", F_FLAGS), ("icmp_type", F_ICMP), ("length", F_LEN)):
        if any(getattr(r, attr) is not None for r in rules):
            out.fields |= flag

    for side in ("src", "dst"):
        if not out.fields & (F_SRC if side == "src" else F_DST):
            continue
        w = wild(side)
        by_family: dict[int, dict[tuple[int, int], int]] = {4: {}, 6: {}}
        for i, r in enumerate(rules):
            bit = 1 << i
            for version, addr, plen in getattr(r, side) or ():
                sets = by_family[version]
                sets[(addr, plen)] = sets.get((addr, plen), 0) | bit
        for family, prefixes in by_family.items():
            setattr(out, f"{side}_default{family}", intern(w))
            if prefixes:
                out.prefix_tables[f"{side}{family}"] = _prefix_table(
                    R.FORMATS[family], prefixes, w, intern,
                    (lambda cid, m: _src_value(rules, cid, m)) if side == "src"
                    else (lambda cid, m: cid))

    if out.fields & F_PROTO:
        w = wild("protos")
        out.proto = [intern(w | sum(1 << i for i, r in enumerate(rules) if r.protos and p in r.protos))
                     for p in range(256)]
    for attr, flag in (("sports", F_SPORT), ("dports", F_DPORT)):
        if out.fields & flag:
            w = wild(attr)
            ranges = [(lo, hi, 1 << i) for i, r in enumerate(rules) for lo, hi in (getattr(r, attr) or ())]
            table = _sweep(PORT_NONE, ranges, w, intern)
            table.append(intern(w))  # packets without ports match only rules without ports
            setattr(out, "sport" if attr == "sports" else "dport", table)
    if out.fields & F_FLAGS:
        w = wild("flags")
        out.flags = [intern(w | sum(1 << i for i, r in enumerate(rules)
                                    if r.flags and (f & r.flags[1]) == r.flags[0])) for f in range(256)]
        out.flags.append(intern(w))
    if out.fields & F_ICMP:
        w = wild("icmp_type")
        out.icmp = [intern(w | sum(1 << i for i, r in enumerate(rules) if r.icmp_type == t)) for t in range(256)]
        out.icmp.append(intern(w))
    if out.fields & F_LEN:
        w = wild("length")
        out.length = _sweep(LEN_SIZE, [(r.length[0], r.length[1], 1 << i) for i, r in enumerate(rules)
                                       if r.length], w, intern)
    out.classes = intern.masks
    return out


# ---- the reference semantics (what the BPF program must agree with) --------------------------

@dataclass
class PacketView:
    """What the firewall sees of a packet (None: not present, e.g. ports of an ICMP packet)."""

    family: int | None              # 4, 6, or None for non-IP
    src: int = 0
    dst: int = 0
    proto: int | None = None
    sport: int | None = None
    dport: int | None = None
    flags: int | None = None
    icmp_type: int | None = None
    length: int = 0
    malformed: bool = False


def rule_matches(r: Rule, pkt: PacketView) -> bool:
    if r.src is not None and not any(prefix_contains(p, pkt.family, pkt.src) for p in r.src):
        return False
    if r.dst is not None and not any(prefix_contains(p, pkt.family, pkt.dst) for p in r.dst):
        return False
    if r.protos is not None and pkt.proto not in r.protos:
        return False
    if r.sports is not None and (pkt.sport is None or not any(lo <= pkt.sport <= hi for lo, hi in r.sports)):
        return False
    if r.dports is not None and (pkt.dport is None or not any(lo <= pkt.dport <= hi for lo, hi in r.dports)):
        return False
    if r.flags is not None and (pkt.flags is None or (pkt.flags & r.flags[1]) != r.flags[0]):
        return False
    if r.icmp_type is not None and pkt.icmp_type != r.icmp_type:
        return False
    if r.length is not None and not r.length[0] <= min(pkt.length, 65535) <= r.length[1]:
        return False
    return True


def evaluate(rs: RuleSet, pkt: PacketView) -> tuple[bool, int | None, str]:
    """(drop?, index of the deciding rule or None, reason) for rule sets without rates."""
    if pkt.malformed:
        return rs.malformed == "drop", None, "malformed"
    if pkt.family is None:
        return rs.non_ip == "drop", None, "non_ip"
    for i, r in enumerate(rs.rules):
        if rule_matches(r, pkt):
            return r.verdict_drop, i, "rule"
    return rs.policy == "deny", None, "policy"
