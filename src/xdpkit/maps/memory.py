"""Kernel memory a map will take, before it exists: the figures the kernel itself reports
(fdinfo "memlock", from each map type's mem_usage), so a plan can be checked against a budget.

Array maps allocate every value up front (rounded to 8 bytes; per-CPU ones once per possible
CPU); preallocated hash maps (LRU) allocate every element and a power-of-two bucket array.
Maps that allocate on insert (BPF_F_NO_PREALLOC hashes, LPM tries) are not predicted here.
"""
from __future__ import annotations

from xdpkit.kernel import MapType, possible_cpus

_ARRAY_HEADER = 312       # struct bpf_array and its bookkeeping, as memlock reports it (6.x)
_HTAB_ELEM = 48           # struct htab_elem before the key
_HTAB_BUCKET = 16
_HTAB_HEADER = 960       # struct bpf_htab and the LRU lists


def _up8(n: int) -> int:
    return (n + 7) & ~7


def _page(n: int) -> int:
    return (n + 4095) & ~4095


def map_memory(map_type: int, key_size: int, value_size: int, max_entries: int, *,
               mmapable: bool = False) -> int | None:
    """Bytes of kernel memory for a map of this shape, or None for types not predicted.
    ``mmapable``: BPF_F_MMAPABLE (libbpf's .data/.rodata/.bss maps), whose parts are whole pages."""
    if mmapable and map_type == MapType.ARRAY:
        return _page(_ARRAY_HEADER) + _page(_up8(value_size) * max_entries)
    if map_type in (MapType.ARRAY, MapType.ARRAY_OF_MAPS, MapType.PROG_ARRAY):
        size = 8 if map_type != MapType.ARRAY else _up8(value_size)
        return _ARRAY_HEADER + size * max_entries
    if map_type == MapType.PERCPU_ARRAY:
        return _ARRAY_HEADER + (8 + _up8(value_size) * possible_cpus()) * max_entries
    if map_type in (MapType.LRU_HASH, MapType.HASH):
        buckets = 1 << max(0, (max_entries - 1).bit_length())
        return _HTAB_HEADER + (_HTAB_ELEM + _up8(key_size) + _up8(value_size)) * max_entries + _HTAB_BUCKET * buckets
    return None
