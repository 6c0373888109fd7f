"""Planning a load balancer change, without the kernel: what the tables hold now (a
``KernelView`` read by control.py) and a config in, every write out (an ``LbPlan``).

Pure and unit-tested without root (tests/unit/test_lb_plan.py). control.py reads the view,
calls ``plan_apply`` and writes the plan in an order packets can live with.

The rules it keeps: a kept VIP keeps its id, and its flows; ids, backend slots and Maglev regions
of the config in force stay taken during the change (packets may use them until the switch);
a kept VIP's changed table goes to a new region when there is room, so it takes effect with
the VIP table switch; a kept (VIP, backend) pair keeps its slot and generation.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import struct
from dataclasses import dataclass, field

from xdpkit.apps.lb import maglev, viptable
from xdpkit.apps.lb.config import PROTOCOLS, LbConfig, VipConfig
from xdpkit.errors import ConfigError

SLOT_NONE = 0xFFFFFFFF
VIP_NO_SPORT = 1
LINE_SLOTS = 16                            # LB_RING_LINE_SLOTS: Maglev slots per lb_ring entry
STATE_CHUNK = 4096                         # bytes per lb_state entry
VIP = struct.Struct("<IIII")               # struct lb_vip {id, ring base, table size, flags}
BACKEND = struct.Struct("<16sIIB3x")       # struct lb_backend {addr, gen, vip id, family}


def addr16(address: str) -> bytes:
    return ipaddress.ip_address(address).packed.ljust(16, b"\0")


def vip_key(v: VipConfig) -> bytes:
    return addr16(v.address) + struct.pack("!H", v.port) + bytes([PROTOCOLS[v.protocol], v.family])


def backend_id(vip: VipConfig, address: str) -> str:
    """A backend of a VIP as the health state names it: "<vip key> <address>"."""
    return f"{vip.key} {address}"


def table_signature(seed: int, base: int, size: int, weights: list) -> str:
    """What a VIP's Maglev table was built from: an unchanged signature means no rebuild."""
    return hashlib.sha256(json.dumps([seed, base, size, weights]).encode()).hexdigest()[:32]


def region(table_size: int) -> int:
    """Maglev slots a table takes: whole lines, so that the next one starts a line."""
    return -(-table_size // LINE_SLOTS) * LINE_SLOTS


def ring_lines(slots: list[int]) -> bytes:
    """Maglev slots as whole lb_ring lines, padded with SLOT_NONE (at least one line)."""
    n = region(max(1, len(slots)))
    return struct.pack(f"<{n}I", *slots, *[SLOT_NONE] * (n - len(slots)))


def first_fit(regions: list[tuple[int, int]], size: int, capacity: int) -> int | None:
    at = 0
    for lo, hi in regions:
        if lo - at >= size:
            return at
        at = max(at, hi)
    return at if capacity - at >= size else None


@dataclass
class KernelView:
    """What the planner needs to know of the kernel's tables."""

    vip_half: int                     # VIP table entries per half
    vip_base: int                     # the half in force (0 or vip_half)
    vip_seed: int
    vips: dict                        # VIP key -> (id, ring base, table size, flags), in force
    backends: dict                    # slot -> (addr16, generation, VIP id, family); family 0 = free
    max_vips: int
    max_backends: int
    ring_slots: int
    state_entries: int                # lb_state entries (STATE_CHUNK bytes each)


@dataclass
class LbPlan:
    """Every write of one change, in the order control.py makes them."""

    backend_rows: list                # (slot, packed lb_backend) for new slots
    rollback_rows: list               # (slot, packed free lb_backend) undoing backend_rows
    zero_backend_stats: list          # slots whose counters start from zero
    zero_vip_stats: list              # VIP ids whose counters start from zero
    tables: dict                      # VIP key -> (ring base, Maglev slots)
    vip_base: int                     # the half the switch puts in force
    vip_seed: int
    vip_entries: bytes                # that half, whole
    state_chunks: list                # lb_state entries
    freed_rows: list                  # (slot, packed free lb_backend) after the switch
    vips: int = 0
    backends: int = 0
    placed: dict = field(default_factory=dict)   # VIP key -> (id, ring base, table size)


def state_chunks(state: dict, entries: int) -> list[bytes]:
    """lb_state's entries for ``state``; ConfigError if it cannot hold them."""
    blob = json.dumps(state, separators=(",", ":")).encode()
    data = len(blob).to_bytes(4, "little") + blob
    chunks = [data[i:i + STATE_CHUNK].ljust(STATE_CHUNK, b"\0") for i in range(0, len(data), STATE_CHUNK)]
    if len(chunks) > entries:
        raise ConfigError(f"the configuration is too large to keep in the kernel "
                          f"({len(blob)} bytes, at most {entries * STATE_CHUNK - 4})")
    return chunks


def _free_row(gen: int) -> bytes:
    return BACKEND.pack(bytes(16), (gen + 1) & 0xFFFFFFFF, 0, 0)


def plan_apply(cfg: LbConfig, state: dict, view: KernelView, *, down: set[str],
               health_change: str = "") -> LbPlan:
    """Everything that makes ``cfg`` (validated) the config in force, given ``view`` and the
    kernel-held ``state`` (the JSON saved by the last change); ConfigError before any write."""
    old_vips = view.vips
    old_slots = {(vid, addr): slot for slot, (addr, _gen, vid, family) in view.backends.items() if family}
    gens = {slot: gen for slot, (_a, gen, _v, _f) in view.backends.items()}

    # VIP ids and Maglev regions: kept VIPs keep theirs, so their flows and tables stay.
    new_keys = {vip_key(v): v for v in cfg.vips}
    if len(new_keys) > view.max_vips:
        raise ConfigError(f"{len(new_keys)} VIPs; this load balancer holds at most {view.max_vips}",
                          hint="reload it with a larger --max-vips")
    kept = {k: old_vips[k] for k in new_keys if k in old_vips and old_vips[k][2] == new_keys[k].table_size}
    used_ids = {v[0] for v in old_vips.values()}
    regions = sorted((v[1], v[1] + region(v[2])) for v in old_vips.values())
    placed = {}
    free_ids = (i for i in range(view.max_vips) if i not in used_ids)
    for k, v in new_keys.items():
        if k in kept:
            placed[k] = kept[k][:3]
            continue
        vid = old_vips[k][0] if k in old_vips else next(free_ids, None)
        if vid is None:
            raise ConfigError(f"VIP {v.key}: no free VIP id (at most {view.max_vips}, and removed VIPs "
                              "free theirs only after this change)", hint="apply the removal first, or reload "
                              "with a larger --max-vips")
        base = first_fit(regions, region(v.table_size), view.ring_slots)
        if base is None:
            raise ConfigError(f"VIP {v.key}: no room for a table of {v.table_size} slots "
                              f"(the load balancer has {view.ring_slots} in all)",
                              hint="use a smaller table_size or reload with a larger --ring")
        regions = sorted(regions + [(base, base + region(v.table_size))])
        placed[k] = (vid, base, v.table_size)

    vip_seed, at = viptable.layout(new_keys, view.vip_half, view.vip_seed)

    # Backend slots: one per (VIP, backend); kept pairs keep slot and generation.
    wanted = {}
    for k, v in new_keys.items():
        for b in v.backends:
            wanted[(placed[k][0], addr16(b.address))] = (v, b)
    taken = set(old_slots.values())
    free_slots = (s for s in range(view.max_backends) if s not in taken)
    slot_of = {}
    fresh = []
    for p, (v, b) in wanted.items():
        if p in old_slots:
            slot_of[p] = old_slots[p]
            continue
        s = next(free_slots, None)
        if s is None:
            raise ConfigError(f"more than {view.max_backends} backends in all",
                              hint="reload with a larger --max-backends")
        slot_of[p] = s
        fresh.append((s, p, b))

    # Tables: rebuilt only where their inputs changed.
    tables = {}
    signatures = state.get("tables", {})
    new_signatures = {}
    for k, v in new_keys.items():
        vid, base, size = placed[k]
        active = [maglev.Backend(b.address, 0 if backend_id(v, b.address) in down else b.weight)
                  for b in v.backends]
        weights = sorted((x.name, x.weight) for x in active)
        if k in kept and signatures.get(v.key) == table_signature(cfg.seed, base, size, weights):
            new_signatures[v.key] = signatures[v.key]
            continue
        if k in kept:  # a region of its own, switched in with the VIP table (in place if full)
            moved = first_fit(regions, region(size), view.ring_slots)
            if moved is not None:
                regions = sorted(regions + [(moved, moved + region(size))])
                base = moved
                placed[k] = (vid, base, size)
        new_signatures[v.key] = table_signature(cfg.seed, base, size, weights)
        slots = [slot_of[(vid, addr16(b.address))] for b in v.backends]
        if any(x.weight for x in active):
            table = maglev.build_table(active, size=size, seed=cfg.seed)
            tables[k] = (base, [slots[i] for i in table])
        else:
            tables[k] = (base, [SLOT_NONE] * size)

    keys = {backend_id(v, b.address) for v in cfg.vips for b in v.backends}
    changes = {k: n for k, n in state.get("health_changes", {}).items() if k in keys}
    if health_change:
        changes[health_change] = changes.get(health_change, 0) + 1
    chunks = state_chunks({"config": cfg.to_dict(), "down": sorted(down & keys),
                           "tables": new_signatures, "health_changes": changes}, view.state_entries)
    entries = [bytes(viptable.ENTRY.size)] * view.vip_half
    for k, v in new_keys.items():
        entries[at[k]] = viptable.ENTRY.pack(k, VIP.pack(*placed[k], VIP_NO_SPORT if v.hash == "no-sport" else 0))
    return LbPlan(
        backend_rows=[(s, BACKEND.pack(addr, (gens.get(s, 0) + 1) & 0xFFFFFFFF, vid, b.family))
                      for s, (vid, addr), b in fresh],
        rollback_rows=[(s, _free_row(gens.get(s, 0))) for s, _, _ in fresh],
        zero_backend_stats=[s for s, _, _ in fresh],
        zero_vip_stats=[placed[k][0] for k in new_keys if k not in old_vips],
        tables=tables, vip_base=view.vip_half if view.vip_base == 0 else 0, vip_seed=vip_seed,
        vip_entries=b"".join(entries), state_chunks=chunks,
        freed_rows=[(s, _free_row(gens[s])) for p, s in old_slots.items() if p not in wanted],
        vips=len(new_keys), backends=len(wanted), placed=placed)
