"""Maglev consistent hashing: the backend lookup table of the L4 load balancer.

Algorithm from Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer"
(NSDI 2016), section 3.4. The table has ``size`` slots, ``size`` a prime M. Each backend gets a
permutation of the slots, ``offset, offset + skip, offset + 2*skip, ... (mod M)``, derived from a
hash of its name; since M is prime every ``skip`` in [1, M-1] visits all M slots. Backends then
take turns claiming the next still-empty slot of their own permutation until the table is full.
A flow is forwarded to ``backends[table[flow_hash % M]]``.

Weights: every round each active backend earns ``weight * N`` credit (N = active backends) and
claims one slot per ``sum(weights)`` of credit it holds, so a round hands out about N slots,
split in proportion to the weights. With equal weights this is exactly the paper's round-robin.
Weight 0 means drained: the backend keeps its place in the list but gets no slot.

Determinism: the table depends only on the backend names, their weights, ``size`` and ``seed``
(not on the order of the list, not on the process, not on Python's ``hash()``), so several LB
nodes with the same config pick the same backend for the same flow without sharing state.
Per backend, ``d = blake2b(name as UTF-8, digest_size=16, key=seed as 8 bytes little-endian,
person=b"xdpkit-maglev")``; ``offset = u64le(d[0:8]) % M``; ``skip = u64le(d[8:16]) % (M-1) + 1``.
Backends take their turns in order of their names (Unicode code points).

Sizing: ``size`` must be prime and larger than the number of active backends; ``size >= 100 * N``
keeps each backend's share of slots within about ±5% of its weight share and the churn on a
backend change close to the minimum (the removed backend's own slots). The default 65537 suits up
to ~650 backends; use ``next_prime(100 * n)`` or more for larger pools.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from xdpkit.errors import ConfigError

__all__ = ["Backend", "build_table", "disruption", "is_prime", "next_prime", "table_bytes"]

DEFAULT_SIZE = 65537
_PERSON = b"xdpkit-maglev"
_MAX_SEED = 2**64


@dataclass(frozen=True)
class Backend:
    """One backend server: a unique ``name`` and a ``weight`` (0 = drained, never chosen)."""

    name: str
    weight: int = 1


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime (deterministic Miller-Rabin, exact for n < 3.3e24)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def next_prime(n: int) -> int:
    """The smallest prime >= ``n``: a valid table ``size``, e.g. ``next_prime(100 * backends)``."""
    n = max(n, 2)
    while not is_prime(n):
        n += 1
    return n


def _check_backends(backends: Sequence[Backend]) -> list[int]:
    """Validate ``backends``; return the indexes of the active ones (weight > 0)."""
    seen: set[str] = set()
    active = []
    for i, b in enumerate(backends):
        if not isinstance(b, Backend):
            raise ConfigError(f"backend #{i} is {type(b).__name__}, not a Backend")
        if not isinstance(b.name, str) or not b.name:
            raise ConfigError(f"backend #{i}: the name must be a non-empty string, not {b.name!r}")
        if b.name in seen:
            raise ConfigError(f"duplicate backend name {b.name!r}",
                              hint="every backend needs a unique name; it picks its table slots")
        seen.add(b.name)
        if isinstance(b.weight, bool) or not isinstance(b.weight, int):
            raise ConfigError(f"backend {b.name!r}: weight must be an integer, not {b.weight!r}")
        if b.weight < 0:
            raise ConfigError(f"backend {b.name!r}: weight {b.weight} is negative",
                              hint="use weight 0 to drain a backend")
        if b.weight > 0:
            active.append(i)
    if not active:
        what = "no backends" if not backends else "no active backends (all have weight 0)"
        raise ConfigError(f"cannot build a Maglev table with {what}")
    return active


def _permutation(name: str, size: int, key: bytes) -> tuple[int, int]:
    """(offset, skip) of the backend called ``name`` in a table of ``size`` slots."""
    d = hashlib.blake2b(name.encode(), digest_size=16, key=key, person=_PERSON).digest()
    h1, h2 = struct.unpack("<QQ", d)
    return h1 % size, h2 % (size - 1) + 1


def build_table(backends: Sequence[Backend], *, size: int = DEFAULT_SIZE,
                seed: int = 0) -> list[int]:
    """The Maglev lookup table: for each of ``size`` slots, an index into ``backends``.

    ``size`` must be a prime larger than the number of active backends (see ``next_prime``);
    ``size >= 100 * active backends`` keeps the load spread within ±5% of the weights. ``seed``
    (0 <= seed < 2**64) selects a different, equally good table; nodes sharing a config must
    share the seed. Raises ConfigError on bad input: a non-prime size, a negative weight,
    duplicate names, no backends with weight > 0.
    """
    active = _check_backends(backends)
    if isinstance(size, bool) or not isinstance(size, int):
        raise ConfigError(f"table size {size!r} is not an integer")
    if not is_prime(size):
        raise ConfigError(f"table size {size} is not a prime number",
                          hint=f"use a prime such as next_prime({size}) = {next_prime(size)}")
    if size <= len(active):
        raise ConfigError(f"table size {size} is not larger than the {len(active)} active backends",
                          hint=f"use at least next_prime(100 * {len(active)}) = "
                               f"{next_prime(100 * len(active))}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _MAX_SEED:
        raise ConfigError(f"seed {seed!r} must be an integer in [0, 2**64)")

    key = seed.to_bytes(8, "little")
    # Turns are taken in name order, so the slot -> name mapping ignores the list order.
    order = sorted(active, key=lambda i: backends[i].name)
    n = len(order)
    weights = [backends[i].weight for i in order]
    total = sum(weights)
    earn = [w * n for w in weights]            # credit earned per round
    credit = [0] * n
    pos = []                                   # next slot of each backend's permutation
    skips = []
    for i in order:
        offset, skip = _permutation(backends[i].name, size, key)
        pos.append(offset)
        skips.append(skip)

    EMPTY = -1
    table = [EMPTY] * size
    left = size
    turns = range(n)
    while True:
        for k in turns:
            c = credit[k] + earn[k]
            if c < total:
                credit[k] = c
                continue
            p = pos[k]
            skip = skips[k]
            idx = order[k]
            while c >= total:
                c -= total
                # Walk this backend's permutation to its next empty slot.
                while table[p] != EMPTY:
                    p += skip
                    if p >= size:
                        p -= size
                table[p] = idx
                left -= 1
                if left == 0:
                    return table
                p += skip
                if p >= size:
                    p -= size
            credit[k] = c
            pos[k] = p


def table_bytes(table: Sequence[int]) -> bytes:
    """``table`` packed as little-endian u32s, one per slot: a stable form to compare or pin."""
    return struct.pack(f"<{len(table)}I", *table)


def disruption(old_table: Sequence[int], old_backends: Sequence[Backend],
               new_table: Sequence[int], new_backends: Sequence[Backend]) -> float:
    """The fraction of slots whose backend name differs between two tables of the same size.

    Each table is read with the backend list it was built from, so adding, removing or
    reordering backends is compared by name, not by index.
    """
    if len(old_table) != len(new_table):
        raise ConfigError(f"tables differ in size ({len(old_table)} vs {len(new_table)}); "
                          "every slot moves")
    if not old_table:
        return 0.0
    old_names = [b.name for b in old_backends]
    new_names = [b.name for b in new_backends]
    moved = sum(old_names[a] != new_names[b] for a, b in zip(old_table, new_table))
    return moved / len(old_table)

