"""The VIP table's layout (open addressing in the BPF array) as the control plane computes it."""
import ipaddress
import struct

import pytest

from xdpkit import ConfigError
from xdpkit.apps.lb import viptable
from xdpkit.apps.lb.flowhash import vip_hash


def _key(i: int) -> bytes:
    return ipaddress.ip_address(f"198.18.{i // 250}.{i % 250 + 1}").packed.ljust(16, b"\0") + \
        struct.pack("!HBB", 80, 6, 4)


@pytest.mark.parametrize("vips", [1, 64, 4096])
def test_every_vip_is_within_reach_of_its_home_entry(vips):
    slots = viptable.slots_per_half(vips)
    assert slots >= 4 * vips and slots & (slots - 1) == 0
    keys = [_key(i) for i in range(vips)]
    seed, at = viptable.layout(keys, slots)
    assert sorted(at) == sorted(keys) and len(set(at.values())) == vips
    for k, i in at.items():
        assert (i - vip_hash(k, seed)) % slots < viptable.PROBES


def test_layout_depends_on_the_vips_not_their_order():
    keys = [_key(i) for i in range(100)]
    assert viptable.layout(keys, 512, 5) == viptable.layout(list(reversed(keys)), 512, 5)


def test_vip_hash_is_seeded_and_covers_the_whole_key():
    k = _key(1)
    assert vip_hash(k, 1) != vip_hash(k, 2)
    assert vip_hash(k, 1) != vip_hash(k[:-2] + bytes([17, 4]), 1)  # protocol
    assert vip_hash(k, 1) != vip_hash(k[:16] + struct.pack("!H", 81) + k[18:], 1)  # port


def test_too_many_vips_for_the_table():
    with pytest.raises(ConfigError, match="do not fit"):
        viptable.layout([_key(i) for i in range(65)], 256)
