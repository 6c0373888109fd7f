"""Where each VIP sits in the VIP table (lb_vip_table) and how the program finds it.

The table is an array searched by open addressing: a VIP lies within PROBES entries after entry
``vip_hash(key, seed) & (slots - 1)`` of the half in force, and an empty entry ends a search. An
apply lays out the whole other half and then switches lb_cfg to it, so packets see either the
old VIPs or the new ones, never a mix. The half is kept at most a quarter full, and the seed is
the first one (counting from the previous seed) under which every VIP is within reach.
"""
from __future__ import annotations

import struct

from xdpkit.apps.lb.flowhash import vip_hash
from xdpkit.errors import ConfigError

# Mirrored from lb.h (checked against it and the shipped object's BTF by tests/unit/test_layouts.py):
PROBES = 8                            # LB_VIP_PROBES
ENTRY = struct.Struct("<20s16s28x")   # struct lb_vip_entry {struct lb_vip_key key, struct lb_vip vip, pad[7]}
MAX_VIPS = 65536
_SEED_TRIES = 1024


def slots_per_half(max_vips: int) -> int:
    """Entries in one half for ``max_vips`` VIPs: a power of two, at least four per VIP."""
    return 1 << max(4, (4 * max_vips - 1).bit_length())


def layout(keys, slots: int, seed: int = 0) -> tuple[int, dict[bytes, int]]:
    """(seed, {key: entry within the half}) with every key within PROBES of its home entry."""
    keys = sorted(keys)  # the same VIPs give the same layout, whatever the config's order
    if len(keys) > slots // 4:
        raise ConfigError(f"{len(keys)} VIPs do not fit a VIP table of {slots} entries per half")
    for n in range(_SEED_TRIES):
        s = (seed + n) & 0xFFFFFFFF
        taken: dict[int, bytes] = {}
        for key in keys:
            home = vip_hash(key, s)
            at = next(((home + i) & (slots - 1) for i in range(PROBES)
                       if (home + i) & (slots - 1) not in taken), None)
            if at is None:
                break
            taken[at] = key
        else:
            return s, {k: i for i, k in taken.items()}
    raise ConfigError(f"no VIP table layout found for {len(keys)} VIPs in {slots} entries "
                      f"after {_SEED_TRIES} seeds", hint="reload the load balancer with a larger --max-vips")
