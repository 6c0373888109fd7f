"""The firewall's tables whose size follows the rule set: prefix tables and per-source rate state.

Each lives in a 2-slot array of maps, a slot per generation (firewall.bpf.c). An apply creates
the maps its rule set needs, at the size it needs, fills them while no packet reads them and
puts them in the inactive slot before the flip. After the flip, once no packet can still be
reading the old generation (``wait_for_packets``), the old slot is emptied and its maps are
freed. A failed or killed apply's maps die with its fds, or wait in the inactive slot for the
next apply to replace them: nothing needs cleaning.
"""
from __future__ import annotations

import contextlib
import sys
from array import array
from dataclasses import dataclass, field

from xdpkit.apps.firewall import rangetable as R
from xdpkit.apps.firewall.rules import MAX_RATE_SOURCES
from xdpkit.apps.transaction import checkpoint
from xdpkit.errors import ConfigError
from xdpkit.kernel import MapType
from xdpkit.maps import BPF_F_INNER_MAP, Map, create_map, open_map_by_id
from xdpkit.maps.memory import map_memory

# in enum fw_prefix_table's order (fw_gen.prefix_bits): the trees (and direct index) of each table
PREFIX_MAPS = {"src4": "fw_src4", "dst4": "fw_dst4", "src6": "fw_src6", "dst6": "fw_dst6"}
# the fixed-size direct indexes (rangetable.Format.direct_bits) of the tables that have one
DIRECT_MAPS = {"src4": "fw_src4_dir", "dst4": "fw_dst4_dir"}
RATE4, RATE6 = "fw_rl_src4", "fw_rl_src6"
RATE4_DEFAULT = "fw_rl_src4_dflt"   # the default size's own slots: the program inlines its reads
RATE_MAPS = (RATE4, RATE4_DEFAULT, RATE6)
SLOTTED = (*PREFIX_MAPS.values(), *DIRECT_MAPS.values(), *RATE_MAPS)
RL4_DEFAULT_BITS = 15     # FW_RL4_DEFAULT_BITS
SYNC = "fw_sync"          # a slot written only to wait for programs in flight

RL_SET_BYTES = 64         # struct fw_rl_set4: 2 ways of struct fw_rl_way4
RL_KEY6_BYTES, TAT_BYTES = 20, 16   # struct fw_rl_key6, struct fw_tat
CHUNK = 65536


@dataclass
class Sizes:
    """What an apply creates: the prefix tables and the rate state its rules need."""

    prefix: dict[str, R.Table] = field(default_factory=dict)   # "src4" -> table
    rl4_bits: int = 0        # log2 of IPv4 rate sets (2 sources each); 0: no IPv4 rate state
    rl6_entries: int = 0     # IPv6 rate state entries (LRU); 0: none

    def shapes(self) -> dict[str, tuple[int, int, int, int]]:
        """outer map -> (map type, key size, value size, entries) of the map for its slot."""
        out = {}
        for k, t in self.prefix.items():
            if t.fmt.direct_bits:
                out[DIRECT_MAPS[k]] = (MapType.ARRAY, 4, t.fmt.node_bytes, t.direct_nodes)
            out[PREFIX_MAPS[k]] = (MapType.ARRAY, 4, t.fmt.node_bytes, max(1, len(t.words) // t.fmt.words))
        if self.rl4_bits:
            name = RATE4_DEFAULT if self.rl4_bits == RL4_DEFAULT_BITS else RATE4
            out[name] = (MapType.ARRAY, 4, RL_SET_BYTES, 1 << self.rl4_bits)
        if self.rl6_entries:
            out[RATE6] = (MapType.LRU_HASH, RL_KEY6_BYTES, TAT_BYTES, self.rl6_entries)
        return out

    def memory(self) -> dict[str, int]:
        """Bytes of kernel memory of each map for a slot, named "OUTER[*]" (`firewall stats`
        names them by the slot they are in: "OUTER[0]" or "OUTER[1]")."""
        return {f"{name}[*]": map_memory(*shape) or 0 for name, shape in self.shapes().items()}


def rate_sizes(rules, sources: int) -> tuple[int, int]:
    """(rl4_bits, rl6_entries) for ``sources`` tracked sources per family, for the families
    some per-source rule can match (its address sets say which)."""
    if not 1 <= sources <= MAX_RATE_SOURCES:
        raise ConfigError(f"rate-sources {sources} is out of range 1..{MAX_RATE_SOURCES:,}")
    families: set[int] = set()
    for r in rules:
        if r.per_source:
            fams = {4, 6}
            for prefixes in (r.src, r.dst):
                if prefixes is not None:
                    fams &= {p[0] for p in prefixes}
            families |= fams
    sets = max(2, 1 << ((sources + 1) // 2 - 1).bit_length())
    return (sets.bit_length() - 1 if 4 in families else 0), (sources if 6 in families else 0)


def _index_keys(n: int) -> bytes:
    keys = array("I", range(n))
    if sys.byteorder != "little":
        keys.byteswap()
    return keys.tobytes()


def _inner(outer: Map, slot: int) -> Map | None:
    mid = outer.inner_id(slot)
    return open_map_by_id(mid) if mid else None


def create(fw, sizes: Sizes, gen_in_force: int, step=checkpoint) -> dict[str, Map]:
    """The maps of a new generation, filled (prefix tables) or kept (rate state of the same
    size keeps its sources' state). The caller closes them. ``step(nodes)`` follows each batch
    written (and may raise to stop: the maps made so far are closed, so freed)."""
    made: dict[str, Map] = {}
    try:
        for key, table in sizes.prefix.items():
            parts = [(PREFIX_MAPS[key], table.words, BPF_F_INNER_MAP)]
            if table.fmt.direct_bits:   # the direct index's size is fixed: no BPF_F_INNER_MAP
                parts.append((DIRECT_MAPS[key], table.direct, 0))
            for name, words, flags in parts:
                n = len(words) // table.fmt.words
                m = made[name] = create_map(MapType.ARRAY, name, 4, table.fmt.node_bytes, max(1, n), flags=flags)
                if not n:
                    continue  # no tree: every chunk is one interval
                written = [0]

                def batch(done, _total, written=written):
                    step(done - written[0])
                    written[0] = done

                m.update_batch_buffers(_index_keys(n), table.tobytes(words), n, chunk=CHUNK, progress=batch)
        for name, (mtype, ksize, vsize, n) in sizes.shapes().items():
            if name not in RATE_MAPS:
                continue
            kept = _inner(fw._map(name), gen_in_force)
            if kept is not None and kept.max_entries == n:
                made[name] = kept
                continue
            if kept is not None:
                kept.close()
            inner = mtype == MapType.ARRAY and name != RATE4_DEFAULT   # the default's size is fixed
            made[name] = create_map(mtype, name, ksize, vsize, n, flags=BPF_F_INNER_MAP if inner else 0)
    except BaseException:
        for m in made.values():
            m.close()
        raise
    return made


def install(fw, gen: int, maps: dict[str, Map]) -> None:
    """Put ``maps`` in generation ``gen``'s slots and empty the slots they leave out (only for
    the generation packets do not read)."""
    for name in SLOTTED:
        outer = fw._map(name)
        if name in maps:
            outer[gen] = maps[name]
        elif outer.inner_id(gen):
            del outer[gen]


def wait_for_packets(fw) -> None:
    """Return once every program run that started before the call has ended: the kernel waits
    for an RCU grace period after each update of an array of maps (XDP programs run inside one).
    No program reads fw_sync; writing it is only for the wait."""
    with create_map(MapType.ARRAY, SYNC, 4, 4, 1) as placeholder:
        fw._map(SYNC)[0] = placeholder


def release(fw, gen: int) -> None:
    """Empty generation ``gen``'s slots (after the flip and wait_for_packets): their maps are
    freed unless the generation in force holds them too."""
    install(fw, gen, {})


@contextlib.contextmanager
def inner_maps(fw, names=SLOTTED):
    """(outer name, slot, Map) of every occupied slot; the maps are closed afterwards."""
    opened = []
    try:
        for name in names:
            for slot in (0, 1):
                m = _inner(fw._map(name), slot)
                if m is not None:
                    opened.append((name, slot, m))
        yield opened
    finally:
        for _, _, m in opened:
            m.close()
