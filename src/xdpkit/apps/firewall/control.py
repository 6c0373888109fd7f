"""The firewall's control plane: rule sets in, kernel tables out, atomically.

    fw = Firewall.load("eth0", parse_config(text))     # compile, fill, attach (persistent)
    fw = Firewall.open("eth0")                         # any later process: find it on eth0
    fw.apply(new_ruleset, progress=cb)                 # atomic swap, counters of kept rules stay
    fw.stats()                                         # per rule, per reason, per verdict, memory
    Firewall.unload("eth0")

The kernel holds the whole state (rule texts included), so no file or daemon is needed.
"""
from __future__ import annotations

import functools
import os
import struct
import sys
import time
from array import array
from dataclasses import dataclass

from xdpkit.apps.firewall import compiler as C, sized
from xdpkit.apps.firewall.rules import RuleSet, parse_config, parse_rule
from xdpkit.apps.handle import AppHandle, zero_array
from xdpkit.apps.transaction import checkpoint
from xdpkit.builtin import builtin_object
from xdpkit.errors import ConfigError, NotFoundError
from xdpkit.kernel import VERDICT_NAMES, bind_map, kernel_name
from xdpkit.maps.memory import map_memory
from xdpkit.maps.percpu import summed_counters
from xdpkit.object import ObjectSpec
from xdpkit.textfile import read_text
from xdpkit.xdp import XdpMode

PROGRAM = "xdpkit_firewall"
REASONS = ("rule", "policy", "malformed", "non_ip", "rate_limited", "within_rate", "fragment")
VERDICTS = VERDICT_NAMES   # the stats header counts verdicts by their value

# The kernel layouts this file packs, mirrored from firewall.h (little-endian hosts).
# tests/unit/test_layouts.py checks every one against the BTF of the shipped object.
_U32 = struct.Struct("<I")             # __u32: array indexes, class numbers
_ACTIVE = struct.Struct("<I")          # struct fw_active {gen}
_GEN = struct.Struct("<7IBBBB4BIQQII")  # struct fw_gen {nrules, nwords, fields, src_default4,
                                       #   src_default6, dst_default4, dst_default6, policy_drop,
                                       #   malformed_drop, non_ip_drop, rl4_bits, prefix_bits[4],
                                       #   rate_sources, memo_addrs_mask, memo_l4_mask,
                                       #   memo_len_mask, pad}
_GEN_SETTINGS = 10                     # fields before rl4_bits: what the rule set says
_GEN_RATE_SOURCES = 15
_RULE = struct.Struct("<IBBBBQQQQ")    # struct fw_rule {slot, drop, per_source, rated, pad,
                                       #   pps_interval, pps_tau, byte_ns_x1k, bps_tau}
_TEXT = struct.Struct("<I508s")        # struct fw_text {len, text[508]}
TEXT_MAX = 507                         # longest rule text: fw_text.text less one byte (a NUL)
_BITMAP = struct.Struct(f"<{C.WORDS}QII")  # struct fw_bitmap {w[FW_WORDS], decide_dst, pad}
_TAT = struct.Struct("<QQ")            # struct fw_tat {pps, bps}
_RL_WAY4 = struct.Struct("<IIQQQ")     # struct fw_rl_way4 {addr, tag, seen, tat {pps, bps}}
_RL_TAG = 4                            # offsetof(struct fw_rl_way4, tag)
_RL_WAYS = 2                           # struct fw_rl_set4 {way[2]}
_RL_KEY6 = struct.Struct("<I16s")      # struct fw_rl_key6 {slot, addr}
# (map, Compiled attribute, entries per generation) of the per-value class arrays (FW_TABLE)
_TABLES = (("fw_proto", "proto", 256), ("fw_sport", "sport", C.PORT_NONE + 1),
           ("fw_dport", "dport", C.PORT_NONE + 1), ("fw_flags", "flags", C.BYTE_NONE + 1),
           ("fw_icmp", "icmp", C.BYTE_NONE + 1), ("fw_len", "length", C.LEN_SIZE))


@dataclass
class ApplyResult:
    rules: int
    classes: int
    entries: int
    seconds: float
    generation: int


def _pack_rule(slot: int, r) -> bytes:
    pps_int = pps_tau = byte_ns = bps_tau = 0
    if r.rate_pps:
        pps_int = max(1, 10**9 // r.rate_pps)
        pps_tau = 10**9 - pps_int  # a burst of one second's packets, then the rate
    if r.rate_bps:
        byte_ns = max(1, round(8 * 10**9 * 1024 / r.rate_bps))
        bps_tau = 10**9
    return _RULE.pack(slot, int(r.verdict_drop), int(r.per_source), int(r.rated), 0,
                      pps_int, pps_tau, byte_ns, bps_tau)


def _pack_text(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > TEXT_MAX:
        raise ConfigError(f"rule is {len(raw)} bytes; at most {TEXT_MAX} (put long sets in file:)")
    return _TEXT.pack(len(raw), raw)


def _unpack_text(raw: bytes) -> str:
    n, text = _TEXT.unpack_from(raw)
    return text[:n].decode()


@dataclass
class Plan:
    """Everything an apply writes, checked before the first write (``check`` makes the same)."""

    compiled: C.Compiled
    rule_rows: list          # (index, packed struct fw_rule without its slot) per rule
    text_rows: list          # packed struct fw_text per rule
    sizes: sized.Sizes       # the maps this rule set needs beside the fixed ones
    rate_sources: int

    @property
    def entries(self) -> int:
        """What an apply writes: prefix-table nodes and class bitmaps."""
        return sum(t.nodes for t in self.sizes.prefix.values()) + len(self.compiled.classes)

    def memory(self) -> dict[str, int]:
        """Predicted kernel memory per map with this rule set loaded (see `fixed_memory`)."""
        return {**fixed_memory(), **self.sizes.memory()}


def plan(ruleset: RuleSet) -> Plan:
    """Compile and pack ``ruleset`` without touching the kernel; ConfigError names what is wrong.
    ``firewall check`` and every apply run exactly this."""
    compiled = C.compile_rules(ruleset)
    texts = []
    for i, r in enumerate(compiled.rules):
        try:
            texts.append(_pack_text(r.text))
        except ConfigError as exc:
            raise ConfigError(f"rule {i + 1}: {exc}", hint=exc.hint) from None
    rl4_bits, rl6_entries = sized.rate_sizes(compiled.rules, ruleset.rate_sources)
    sizes = sized.Sizes(dict(compiled.prefix_tables), rl4_bits, rl6_entries)
    return Plan(compiled, [_pack_rule(0, r) for r in compiled.rules], texts, sizes, ruleset.rate_sources)


@functools.lru_cache(maxsize=1)
def fixed_memory() -> dict[str, int]:
    """Kernel memory of the maps every firewall has whatever its rules, from the shipped
    object's map definitions (the array-of-maps slots hold the sized maps: Plan.memory)."""
    spec = ObjectSpec.from_file(builtin_object("firewall"))
    try:
        return {kernel_name(m.name): map_memory(m.type, m.key_size, m.value_size, m.max_entries,
                                                mmapable=m.internal) or 0
                for m in spec.maps.values()}
    finally:
        spec.close()


def _memlock(fd: int) -> int:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("memlock:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Firewall(AppHandle):
    """A firewall instance on one interface (maps from a loaded Object or from the kernel)."""

    KIND = "firewall"
    COMMAND = "firewall"
    PROGRAM = PROGRAM
    CHANGE_HINT = "change its rules with `xdpkit firewall apply {ifname} CONFIG`"

    # ---- lifecycle --------------------------------------------------------------------------
    @classmethod
    def load(cls, iface, ruleset: RuleSet | None = None, *, mode=XdpMode.AUTO, force: bool = False,
             progress=None, src_memo: bool = True) -> "Firewall":
        """Load the firewall, fill it with ``ruleset`` and attach it to ``iface`` (persistent).

        ``src_memo=False`` switches off the per-CPU memos (of decisions and of source classes),
        so every packet walks the tables (what the benchmark's table-cost figures measure).
        """
        ifname = cls._ifname_free(iface)
        planned = plan(ruleset or RuleSet())  # a bad rule set fails before anything is loaded
        spec = ObjectSpec.from_file(builtin_object("firewall"))
        try:
            spec.select(program=PROGRAM)
            spec.rodata["cfg_src_memo"] = int(bool(src_memo))
            obj = spec.load()
        finally:
            spec.close()
        try:
            prog = obj.programs[PROGRAM]
            # fw_text and fw_sync are for the control plane only: bind them so that they live
            # with the program and later processes find them among the program's maps.
            for name in ("fw_text", sized.SYNC):
                bind_map(prog.fd, obj.maps[name].fd)
            fw = cls._from_object(ifname, obj, prog)
            with fw.transaction():
                fw._apply(planned, progress)
            prog.attach(ifname, mode=mode, netlink=True, force=force)
            return fw
        except BaseException:
            obj.close()
            raise

    # ---- reading the current state ---------------------------------------------------------
    @property
    def generation(self) -> int:
        return self._map("fw_active").lookup_raw(b"\0" * 4)[0] & 1

    def _gen_info(self, gen: int) -> tuple:
        return _GEN.unpack_from(self._map("fw_gen").lookup_raw(_U32.pack(gen)))

    def ruleset(self) -> RuleSet:
        """The rule set in force, rebuilt from the kernel."""
        gen = self.generation
        info = self._gen_info(gen)
        nrules, _nw, _f, _s4, _s6, _d4, _d6, pol, mal, nonip = info[:_GEN_SETTINGS]
        rs = RuleSet(policy="deny" if pol else "allow", malformed="drop" if mal else "pass",
                     non_ip="drop" if nonip else "pass",
                     rate_sources=info[_GEN_RATE_SOURCES])  # every apply (load's too) writes it
        texts = self._map("fw_text")
        for i in range(nrules):
            text = _unpack_text(texts.lookup_raw(_U32.pack(gen * C.MAX_RULES + i)))
            rs.rules.append(parse_rule(text, line=i + 1))
        return rs

    def fingerprint(self) -> tuple:
        """``RuleSet.fingerprint()`` of the rule set in force, read without parsing its rules (a
        ``file:`` set would be read again)."""
        gen = self.generation
        info = self._gen_info(gen)
        pol, mal, nonip = info[7:_GEN_SETTINGS]
        texts = self._map("fw_text")
        keys = tuple(" ".join(_unpack_text(texts.lookup_raw(_U32.pack(gen * C.MAX_RULES + i))).split())
                     for i in range(info[0]))  # every rule, a repeated one too
        return ("deny" if pol else "allow", "drop" if mal else "pass", "drop" if nonip else "pass",
                info[_GEN_RATE_SOURCES], keys)

    def _slots(self, gen: int) -> dict[str, int]:
        nrules = self._gen_info(gen)[0]
        texts, rules = self._map("fw_text"), self._map("fw_rule")
        out = {}
        for i in range(nrules):
            k = _U32.pack(gen * C.MAX_RULES + i)
            text = _unpack_text(texts.lookup_raw(k))
            out[" ".join(text.split())] = _RULE.unpack_from(rules.lookup_raw(k))[0]
        return out

    # ---- changing rules ----------------------------------------------------------------------
    def apply(self, ruleset: RuleSet, *, progress=None) -> ApplyResult:
        """Replace the rule set atomically: fill the inactive generation, flip, clean up.

        All or nothing: the rule set is checked completely before the first write; writes go
        only to the generation packets do not read, and to maps created for this apply, so a
        failure, Ctrl-C, SIGTERM or SIGKILL before the flip leaves the rule set in force as it
        was. One apply at a time per firewall (other processes wait). ``progress(done, total)`` is called
        while large tables are written. A rule kept from the old set (same text) keeps its
        counters and rate state, also when the apply fails; new rules start from zero.
        """
        planned = plan(ruleset)
        with self.transaction():
            return self._apply(planned, progress)

    def _apply(self, p: Plan, progress) -> ApplyResult:
        t0 = time.monotonic()
        old = self.generation
        new = 1 - old
        slots, fresh, reused = self._assign_slots(p.compiled, old)
        done = [0]

        def step(n):
            done[0] += n
            if progress:
                progress(done[0], p.entries)
            checkpoint()

        maps = sized.create(self, p.sizes, old, step)
        try:
            self._reset_slots(fresh)  # no rule in force counts into these
            self._fill(p, new, slots, step)
            sized.install(self, new, maps)
            checkpoint()  # the last point where a signal stops this apply
            self._reset_slots(reused)  # counted into by the old rule set until the flip
            applies = _ACTIVE.unpack_from(self._map("fw_active").lookup_raw(b"\0" * 4))[0]
            self._map("fw_active").update_raw(b"\0" * 4, _ACTIVE.pack((applies + 1) & 0xFFFFFFFF))
        finally:
            for m in maps.values():
                m.close()  # the slots hold them now (or nothing does: they are freed)
        sized.wait_for_packets(self)  # no packet reads the old generation any more
        sized.release(self, old)
        return ApplyResult(rules=len(p.compiled.rules), classes=len(p.compiled.classes), entries=p.entries,
                           seconds=time.monotonic() - t0, generation=new)

    def _assign_slots(self, compiled: C.Compiled, old: int) -> tuple[list[int], list[int], list[int]]:
        """Counter slots for the new rules: (slot per rule, fresh slots no rule in force uses,
        fresh slots taken from rules in force, which only happens when the old and the new set
        together have more than MAX_RULES rules)."""
        current = self._slots(old)
        in_force = set(current.values())
        taken = set()
        slots: list[int | None] = []
        for r in compiled.rules:
            s = current.get(r.key())
            if s is not None and s not in taken:
                taken.add(s)
                slots.append(s)
            else:
                slots.append(None)
        unused = (s for s in range(C.MAX_RULES) if s not in in_force)
        retired = (s for s in sorted(in_force) if s not in taken)
        fresh, reused = [], []
        for i, s in enumerate(slots):
            if s is None:
                s = next(unused, None)
                if s is None:
                    s = next(retired)
                    reused.append(s)
                else:
                    fresh.append(s)
                slots[i] = s
        return slots, fresh, reused  # type: ignore[return-value]

    def _reset_slots(self, slots: list[int]) -> None:
        """A rule starting in a slot starts from zero: counters and rate state."""
        if not slots:
            return
        counters, tats = self._map("fw_counters"), self._map("fw_rl_rule")
        for s in slots:
            counters.update_raw(_U32.pack(s), bytes(counters.value_buf_size))  # every CPU
            tats.update_raw(_U32.pack(s), bytes(tats.value_buf_size))
        self._forget_sources(set(slots))

    def _forget_sources(self, slots: set[int]) -> None:
        """A rule taking over a counter slot must not inherit its predecessor's rate state."""
        with sized.inner_maps(self, sized.RATE_MAPS) as held:
            seen = set()
            for name, _slot, m in held:
                if m.id in seen:
                    continue  # both generations hold the same map
                seen.add(m.id)
                if name != sized.RATE6:
                    _forget_sources4(m, slots)
                else:
                    for k in [k for k, _ in m.raw_items() if _RL_KEY6.unpack_from(k)[0] in slots]:
                        m.delete_raw(k)

    def _fill(self, p: Plan, gen: int, slots: list[int], step) -> None:
        """Write the fixed maps' half of generation ``gen`` (packets do not read it)."""
        c = p.compiled
        bm = self._map("fw_bitmap")
        bm.update_batch_raw([(_U32.pack(gen * C.MAX_CLASSES + i), _BITMAP.pack(*c.bitmap(i), c.decides(i)[1], 0))
                             for i in range(len(c.classes))])
        step(len(c.classes))
        self._map("fw_rule").update_batch_raw([(_U32.pack(gen * C.MAX_RULES + i),
                                                _RULE.pack(slots[i], *_RULE.unpack(row)[1:]))
                                               for i, row in enumerate(p.rule_rows)])
        self._map("fw_text").update_batch_raw([(_U32.pack(gen * C.MAX_RULES + i), row)
                                               for i, row in enumerate(p.text_rows)])
        for name, attr, size in _TABLES:
            table = getattr(c, attr)
            if table:
                base = gen * size
                self._map(name).update_batch_raw([(_U32.pack(base + k), _U32.pack(v))
                                                  for k, v in enumerate(table)])
        bits = [c.prefix_tables[k].bits if k in c.prefix_tables else 0 for k in sized.PREFIX_MAPS]
        self._map("fw_gen").update_raw(_U32.pack(gen), _GEN.pack(
            len(c.rules), c.nwords, c.fields, c.src_value(c.src_default4), c.src_value(c.src_default6), c.dst_default4,
            c.dst_default6, c.policy_drop, c.malformed_drop, c.non_ip_drop, p.sizes.rl4_bits, *bits,
            p.rate_sources, *_memo_masks(c.fields), 0))

    def add_rule(self, text: str, *, position: int | None = None) -> ApplyResult:
        rule = parse_rule(text)
        with self.transaction():  # the rule set read and the one written are one change
            rs = self.ruleset()
            if rule.key() in {r.key() for r in rs.rules}:
                raise ConfigError(f"rule already present: {rule.text}")
            pos = len(rs.rules) if position is None else position - 1
            if not 0 <= pos <= len(rs.rules):
                raise ConfigError(f"position {position} out of range 1..{len(rs.rules) + 1}")
            rs.rules.insert(pos, rule)
            return self._apply(plan(rs), None)

    def delete_rule(self, which: str) -> ApplyResult:
        with self.transaction():
            return self._delete_rule(which)

    def _delete_rule(self, which: str) -> ApplyResult:
        rs = self.ruleset()
        if which.isdigit():
            idx = int(which) - 1
            if not 0 <= idx < len(rs.rules):
                raise ConfigError(f"no rule number {which} (there are {len(rs.rules)})")
        else:
            key = " ".join(which.split())
            matches = [i for i, r in enumerate(rs.rules) if r.key() == key]
            if not matches:
                raise NotFoundError(f"no rule {which!r}", hint="see `xdpkit firewall rule list IFACE`")
            idx = matches[0]
        del rs.rules[idx]
        return self._apply(plan(rs), None)

    # ---- counters --------------------------------------------------------------------------
    def reset_counters(self) -> None:
        """Zero every counter (rules, reasons, verdicts) and forget rate-limit state."""
        for name in ("fw_counters", "fw_reasons", "xdpkit_st_etype", "xdpkit_st_proto", "xdpkit_st_verdict"):
            m = self.maps.get(kernel_name(name))
            if m is None:
                continue
            zero = bytes(m.value_buf_size)
            keys = b"".join(_U32.pack(i) for i in range(m.max_entries))
            m.update_batch_buffers(keys, zero * m.max_entries, m.max_entries)
        tats = self._map("fw_rl_rule")
        tats.update_batch_buffers(b"".join(_U32.pack(i) for i in range(tats.max_entries)),
                                  bytes(_TAT.size) * tats.max_entries, tats.max_entries)
        with sized.inner_maps(self, sized.RATE_MAPS) as held:
            for name, _slot, m in held:
                if name != sized.RATE6:
                    zero_array(m)
                else:
                    m.clear()

    def stats(self) -> dict:
        gen = self.generation
        slots = self._slots(gen)
        per_slot = summed_counters(self._map("fw_counters"))
        rules = []
        for i, r in enumerate(self.ruleset().rules):
            packets, nbytes = per_slot.get(slots[r.key()], (0, 0))
            rules.append({"index": i + 1, "rule": r.text, "packets": packets, "bytes": nbytes})
        reasons = {REASONS[k]: {"packets": pk, "bytes": by}
                   for k, (pk, by) in summed_counters(self._map("fw_reasons")).items() if k < len(REASONS)}
        verdicts = {}
        vmap = self.maps.get(kernel_name("xdpkit_st_verdict"))
        if vmap is not None:
            verdicts = {VERDICTS[k]: {"packets": pk, "bytes": by}
                        for k, (pk, by) in summed_counters(vmap).items() if k < len(VERDICTS)}
        memory = {m.name: _memlock(m.fd) for m in self.maps.values()}
        with sized.inner_maps(self) as held:  # the sized maps, under their slot's name
            memory.update({f"{name}[{slot}]": _memlock(m.fd) for name, slot, m in held})
        return {"ifname": self.ifname, "program_id": self.prog_id, "generation": gen, "rules": rules,
                "reasons": reasons, "verdicts": verdicts, "memory_bytes": sum(memory.values()),
                "memory_by_map": memory}


def _memo_masks(fields: int) -> tuple[int, int, int]:
    """fw_gen's masks of the verdict memo's key (struct fw_verdict_memo): the bits of the fields
    the rule set uses."""
    def on(flag: int, mask: int) -> int:
        return mask if fields & flag else 0
    addrs = on(C.F_SRC, 0xFFFFFFFF << 32) | on(C.F_DST, 0xFFFFFFFF)
    l4 = (on(C.F_PROTO, 0xFF) | on(C.F_SPORT, 0x1FFFF << 8) | on(C.F_DPORT, 0x1FFFF << 25)
          | on(C.F_FLAGS, 0x1FF << 42) | on(C.F_ICMP, 0x1FF << 51))
    return addrs, l4, on(C.F_LEN, 0xFFFF)


def _forget_sources4(sets, slots: set[int]) -> None:
    """Empty the ways of IPv4 rate state that belong to ``slots``."""
    keys, values, n = sets.lookup_batch_buffers(chunk=65536)
    words = array("I", values)  # struct fw_rl_set4 as u32 words: _RL_WAYS ways of _RL_WAY4
    if sys.byteorder != "little":
        words.byteswap()
    want = {s + 1 for s in slots}
    stride = sets.value_size // 4
    hits = []
    for way in range(0, _RL_WAYS * _RL_WAY4.size, _RL_WAY4.size):
        hits += [i for i, t in enumerate(words[(way + _RL_TAG) // 4::stride]) if t in want]
    changed = {}
    for i in hits:
        raw = changed.setdefault(i, bytearray(values[i * sets.value_size:(i + 1) * sets.value_size]))
        for off in range(0, _RL_WAYS * _RL_WAY4.size, _RL_WAY4.size):
            if _U32.unpack_from(raw, off + _RL_TAG)[0] in want:
                raw[off:off + _RL_WAY4.size] = bytes(_RL_WAY4.size)
    if changed:
        sets.update_batch_raw([(keys[i * 4:(i + 1) * 4], bytes(raw)) for i, raw in changed.items()])


def load_config_file(path: str) -> RuleSet:
    return parse_config(read_text(path), source=os.path.basename(path))
