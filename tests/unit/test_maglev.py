"""The Maglev table builder of the L4 load balancer, without a kernel.

Speed is not tested here (speed targets live in benchmarks): run
``python -m xdpkit.apps.lb.maglev`` for build times.
"""
import hashlib
import random
import struct
from collections import Counter

import pytest

from xdpkit.apps.lb.maglev import (
    Backend, build_table, disruption, is_prime, next_prime, table_bytes,
)
from xdpkit.errors import ConfigError

SIZE = 65537
SMALL = 10007  # prime, >= 100 x the pools used with it; keeps the tests fast


def pool(n, weight=1, prefix="10.0.0."):
    return [Backend(f"{prefix}{i}:80", weight) for i in range(n)]


def names(table, backends):
    return [backends[i].name for i in table]


def assert_spread(table, backends, tolerance=0.05):
    counts = Counter(table)
    total = sum(b.weight for b in backends)
    for i, b in enumerate(backends):
        share = len(table) * b.weight / total
        assert abs(counts[i] - share) <= tolerance * share, (b, counts[i], share)


# --- determinism ---------------------------------------------------------------------------

def test_same_config_same_table():
    bs = pool(100)
    t = build_table(bs, seed=7)
    assert len(t) == SIZE and set(t) == set(range(100))
    assert build_table(list(bs), seed=7) == t
    assert build_table([Backend(b.name, b.weight) for b in bs], seed=7) == t


# A fixed fingerprint: catches any use of Python's randomised hash() or an algorithm change
# that would make LB nodes running different builds disagree. Change only deliberately.
PINNED_101 = "5be545601b625ebb8b1302686751ad185cb8e38a41c37e723b844793ff42d22a"


def test_table_is_pinned_across_processes_and_versions():
    t = build_table([Backend("a"), Backend("b"), Backend("c", 2)], size=101, seed=1)
    assert Counter(t) == {0: 25, 1: 25, 2: 51}
    assert hashlib.sha256(table_bytes(t)).hexdigest() == PINNED_101


def test_first_slots_follow_the_documented_hash():
    # The module docstring specifies offset = u64le(blake2b(...)[0:8]) % M: in the first round
    # each backend, in name order, claims its offset slot (if still free).
    size, seed = 1009, 5
    bs = [Backend("zeta"), Backend("alpha")]
    offsets = {}
    for b in bs:
        d = hashlib.blake2b(b.name.encode(), digest_size=16, key=seed.to_bytes(8, "little"),
                            person=b"xdpkit-maglev").digest()
        offsets[b.name] = struct.unpack("<Q", d[:8])[0] % size
    assert offsets["alpha"] != offsets["zeta"]
    t = build_table(bs, size=size, seed=seed)
    assert t[offsets["alpha"]] == 1 and t[offsets["zeta"]] == 0


def test_seed_changes_the_table():
    bs = pool(100)
    t0, t1, t2 = (build_table(bs, size=SMALL, seed=s) for s in (0, 1, 2**64 - 1))
    assert t0 != t1 and t0 != t2 and t1 != t2
    # ... and every seed still gives a good table.
    for t in (t0, t1, t2):
        assert_spread(t, bs)


def test_list_order_does_not_change_who_gets_a_slot():
    bs = pool(50, prefix="192.0.2.")
    shuffled = bs[:]
    random.Random(3).shuffle(shuffled)
    assert (names(build_table(bs, size=SMALL), bs)
            == names(build_table(shuffled, size=SMALL), shuffled))


# --- spread --------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 10, 100])
def test_equal_weights_spread_within_5_percent(n):
    bs = pool(n)
    assert_spread(build_table(bs), bs)


def test_mixed_weights_spread_within_5_percent():
    bs = [Backend(f"be{i}", i % 4 + 1) for i in range(100)]
    assert_spread(build_table(bs), bs)


def test_skewed_weights_spread():
    bs = [Backend("big", 50)] + [Backend(f"small{i}", 1) for i in range(50)]
    assert_spread(build_table(bs), bs)


# --- disruption ----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [10, 100])
def test_removing_one_backend_moves_at_most_its_share_plus_1_percent(n):
    bs = pool(n)
    before = build_table(bs)
    for gone in range(0, n, max(1, n // 10)):
        after_bs = bs[:gone] + bs[gone + 1:]
        after = build_table(after_bs)
        assert disruption(before, bs, after, after_bs) <= 1 / n + 0.01
        # Adding it back (at the end of the list) restores every slot's backend.
        back = after_bs + [bs[gone]]
        assert names(build_table(back), back) == names(before, bs)


def test_adding_a_backend_moves_at_most_its_share_plus_1_percent():
    bs = pool(100)
    more = bs + [Backend("10.0.1.1:80")]
    d = disruption(build_table(bs), bs, build_table(more), more)
    assert d <= 1 / 101 + 0.01


def test_drained_backend_gets_no_slots_and_draining_moves_little():
    bs = pool(100)
    before = build_table(bs)
    drained = [Backend(b.name, 0) if i == 42 else b for i, b in enumerate(bs)]
    after = build_table(drained)
    assert 42 not in after and len(set(after)) == 99
    assert disruption(before, bs, after, drained) <= 1 / 100 + 0.01
    # Draining is the same as removing, by name.
    removed = bs[:42] + bs[43:]
    assert names(after, drained) == names(build_table(removed), removed)


def test_disruption_compares_names_not_indexes():
    bs = pool(10)
    t = build_table(bs, size=1009)
    rev = bs[::-1]
    assert disruption(t, bs, build_table(rev, size=1009), rev) == 0.0
    assert disruption(t, bs, t, rev) > 0.5
    with pytest.raises(ConfigError, match="size"):
        disruption(t, bs, build_table(bs, size=1013), bs)


# --- encoding ------------------------------------------------------------------------------

def test_table_bytes_is_little_endian_u32():
    assert table_bytes([0, 1, 0x01020304]) == b"\0\0\0\0\1\0\0\0\4\3\2\1"
    t = build_table(pool(3), size=101)
    raw = table_bytes(t)
    assert len(raw) == 4 * 101 and list(struct.unpack("<101I", raw)) == t


# --- primes and bad input ------------------------------------------------------------------

def test_primes():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    assert is_prime(65537) and is_prime(2**61 - 1) and not is_prime(65535)
    assert not is_prime(3215031751)  # strong pseudoprime to bases 2, 3, 5, 7
    assert next_prime(65536) == 65537 and next_prime(65537) == 65537 and next_prime(0) == 2
    assert next_prime(100 * 1000) == 100003


@pytest.mark.parametrize("size", [65536, 1, 0, -7, 100])
def test_non_prime_size_is_refused(size):
    with pytest.raises(ConfigError, match=f"size {size} is not a prime"):
        build_table(pool(2), size=size)


def test_size_must_exceed_active_backends():
    with pytest.raises(ConfigError, match="not larger than the 7 active"):
        build_table(pool(7), size=7)
    assert sorted(set(build_table(pool(6), size=7))) == list(range(6))


def test_negative_weight_is_refused():
    with pytest.raises(ConfigError, match=r"'bad'.*weight -1 is negative") as e:
        build_table([Backend("ok"), Backend("bad", -1)])
    assert "weight 0" in e.value.hint


@pytest.mark.parametrize("backends,message", [
    ([], "no backends"),
    ([Backend("a", 0), Backend("b", 0)], "no active backends"),
    ([Backend("a"), Backend("b"), Backend("a", 2)], "duplicate backend name 'a'"),
    ([Backend("")], "non-empty"),
    ([Backend("a", 1.5)], "integer"),
    (["a"], "not a Backend"),
])
def test_bad_backends_are_refused(backends, message):
    with pytest.raises(ConfigError, match=message):
        build_table(backends)


@pytest.mark.parametrize("seed", [-1, 2**64, "x", 1.0])
def test_bad_seed_is_refused(seed):
    with pytest.raises(ConfigError, match="seed"):
        build_table(pool(2), seed=seed)
