"""The firewall's prefix tables against a plain longest-prefix reference (any mix of lengths)."""
import random

import pytest

from xdpkit.apps.firewall import rangetable as R


def reference_mask(prefixes: dict, width: int, base: int, addr: int) -> int:
    mask = base
    for (net, plen), m in prefixes.items():
        if addr >> (width - plen) == net >> (width - plen):
            mask |= m
    return mask


def random_prefixes(rnd: random.Random, width: int, n: int, nbits: int, lengths) -> dict:
    out: dict = {}
    for _ in range(n):
        plen = rnd.choice(lengths)
        net = (rnd.getrandbits(width) >> (width - plen) << (width - plen)) if plen else 0
        out[(net, plen)] = out.get((net, plen), 0) | (1 << rnd.randrange(nbits))
    return out


def probes(rnd: random.Random, prefixes: dict, width: int, n: int) -> list[int]:
    top = (1 << width) - 1
    out = [0, top] + [rnd.getrandbits(width) for _ in range(n)]
    for net, plen in rnd.sample(sorted(prefixes), min(len(prefixes), 150)):
        end = net + (1 << (width - plen))
        out += [net, end - 1, min(end, top), max(net - 1, 0)]
    return out


def check(fmt: R.Format, prefixes: dict, base: int, rnd: random.Random, nprobe: int = 300) -> R.Table:
    starts, masks = R.intervals(prefixes, fmt.width, base)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert all(a != b for a, b in zip(masks, masks[1:]))
    ids = {m: i for i, m in enumerate(dict.fromkeys(masks))}
    table = R.build(fmt, starts, [ids[m] for m in masks])
    by_id = list(ids)
    for a in probes(rnd, prefixes, fmt.width, nprobe):
        assert by_id[R.lookup(table, a)] == reference_mask(prefixes, fmt.width, base, a), hex(a)
    return table


@pytest.mark.parametrize("seed", range(12))
def test_mixed_ipv4_lengths_overlaps_and_duplicates(seed):
    rnd = random.Random(seed)
    n = rnd.choice([1, 3, 40, 400, 1500])
    prefixes = random_prefixes(rnd, 32, n, 5, [0, 1, 2, 7, 8, 15, 16, 17, 23, 24, 25, 31, 32] if seed % 2
                               else list(range(8, 33)))
    check(R.V4, prefixes, 1 << 9, rnd)


@pytest.mark.parametrize("seed", range(12))
def test_mixed_ipv6_lengths_overlaps_and_duplicates(seed):
    rnd = random.Random(100 + seed)
    n = rnd.choice([1, 3, 40, 400, 1500])
    prefixes = random_prefixes(rnd, 128, n, 5, [0, 1, 16, 32, 48, 63, 64, 65, 96, 127, 128] if seed % 2
                               else list(range(16, 129)))
    check(R.V6, prefixes, 1 << 9, rnd)


def test_dense_chunk_builds_deep_trees_that_still_answer():
    """Every /32 of one /20 listed with alternating rules: 4,096 intervals in a few chunks."""
    rnd = random.Random(7)
    prefixes = {(0xC6120000 + i, 32): 1 << (i % 2) for i in range(4096)}
    t = check(R.V4, prefixes, 0, rnd, 100)
    assert t.depth >= 3
    prefixes6 = {((0x20010DB8 << 96) + i, 128): 1 << (i % 2) for i in range(4096)}
    assert check(R.V6, prefixes6, 0, rnd, 100).depth >= 4


def test_host_routes_at_both_ends_of_the_space():
    rnd = random.Random(1)
    for fmt in (R.V4, R.V6):
        top = (1 << fmt.width) - 1
        check(fmt, {(0, fmt.width): 1, (top, fmt.width): 2, (0, 0): 4}, 0, rnd, 10)


def test_memory_follows_the_set():
    """At most 32 bytes of nodes per interval (a leaf is 8 of them), beside a direct index that grows with the set."""
    rnd = random.Random(3)
    small = check(R.V4, random_prefixes(rnd, 32, 10, 1, [24, 32]), 0, rnd, 10)
    assert small.tree_nodes * R.V4.node_bytes <= 2048 and small.direct_nodes << 4 == 1 << R.V4.direct_bits
    small6 = check(R.V6, random_prefixes(rnd, 128, 10, 1, [48, 128]), 0, rnd, 10)
    assert small6.nbytes <= 4096
    big_prefixes = random_prefixes(rnd, 32, 50_000, 1, list(range(20, 33)))
    starts, masks = R.intervals(big_prefixes, 32, 0)
    big = R.build(R.V4, starts, [int(m != 0) for m in masks])
    assert big.bits == R.V4.direct_bits and big.tree_nodes * R.V4.node_bytes < 32 * len(starts)


def test_interval_sweep_merges_neighbours_with_the_same_rules():
    # 10.0.0.0/9 and 10.128.0.0/9 of one rule are one interval, as is their /8
    starts, masks = R.intervals({(0x0A000000, 9): 1, (0x0A800000, 9): 1}, 32, 0)
    assert starts == [0, 0x0A000000, 0x0B000000] and masks == [0, 1, 0]
    starts, masks = R.intervals({(0x0A000000, 8): 1, (0x0A000000, 9): 1, (0x0A800000, 9): 2}, 32, 0)
    assert starts == [0, 0x0A000000, 0x0A800000, 0x0B000000] and masks == [0, 1, 3, 0]
