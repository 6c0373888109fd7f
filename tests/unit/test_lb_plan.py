"""Load balancer planning without the kernel: a fake kernel holds the tables as plan_apply's
view of them, and each plan is "written" into it as control.py would write it."""
import json
from dataclasses import replace

import pytest

from xdpkit.apps.lb import viptable
from xdpkit.apps.lb.config import parse_config
from xdpkit.apps.lb.maglev import next_prime
from xdpkit.apps.lb.control import Limits, check_config, empty_view
from xdpkit.apps.lb.plan import BACKEND, SLOT_NONE, VIP, addr16, plan_apply, vip_key
from xdpkit.errors import ConfigError


def config(*vips: tuple[str, list]) -> str:
    out = 'seed = 7\nencap_source_v4 = "198.18.99.0/24"\n'
    for address, backends in vips:
        out += (f'[[vip]]\naddress = "{address}"\nport = 80\ntable_size = 1009\n'
                f'backends = [{", ".join(backends)}]\n')
    return out


class FakeKernel:
    """The kernel's tables as KernelView fields, changed only by writing plans into them."""

    def __init__(self, limits=Limits(vips=8, backends=64, ring=4 * 1024)):
        self.view = empty_view(limits)
        self.state: dict = {}
        self.ring: dict[int, int] = {}

    def apply(self, text: str, down=frozenset()):
        cfg = parse_config(text)
        p = plan_apply(cfg, self.state, self.view, down=set(down))
        backends = dict(self.view.backends)
        for slot, row in p.backend_rows + p.freed_rows:
            backends[slot] = BACKEND.unpack(row)
        for base, table in p.tables.values():
            self.ring.update({base + i: s for i, s in enumerate(table)})
        half = self.view.vip_half
        vips = {}
        for i in range(half):
            key, vip = viptable.ENTRY.unpack_from(p.vip_entries, i * viptable.ENTRY.size)
            if key[19]:
                vips[key] = VIP.unpack(vip)
        data = b"".join(p.state_chunks)
        self.state = json.loads(data[4:4 + int.from_bytes(data[:4], "little")])
        self.view = replace(self.view, vip_base=p.vip_base, vip_seed=p.vip_seed, vips=vips, backends=backends)
        return cfg, p

    def slot_of(self, address: str) -> int:
        return next(s for s, (a, _g, _v, fam) in self.view.backends.items() if fam and a == addr16(address))

    def table(self, cfg, i: int = 0) -> list:
        _vid, base, size, _flags = self.view.vips[vip_key(cfg.vips[i])]
        return [self.ring[base + j] for j in range(size)]


def test_a_first_apply_places_everything_in_the_unused_half():
    k = FakeKernel()
    cfg, p = k.apply(config(("198.18.200.1", ['"198.18.21.2"', '"198.18.22.2"'])))
    assert p.vip_base == k.view.vip_half and p.vips == 1 and p.backends == 2
    assert sorted(s for s, _ in p.backend_rows) == [0, 1] and p.zero_backend_stats == [0, 1]
    assert p.rollback_rows and not p.freed_rows and p.zero_vip_stats == [0]
    table = k.table(cfg)
    assert set(table) == {0, 1} and abs(table.count(0) - table.count(1)) <= 1   # Maglev, equal weights


def test_the_same_config_again_writes_no_table_and_no_slot():
    k = FakeKernel()
    text = config(("198.18.200.1", ['"198.18.21.2"']))
    k.apply(text)
    _, p = k.apply(text)
    assert p.tables == {} and p.backend_rows == [] and p.freed_rows == [] and p.vip_base == 0


def test_a_weight_change_moves_the_table_to_a_new_region_and_keeps_slots():
    k = FakeKernel()
    cfg, _ = k.apply(config(("198.18.200.1", ['"198.18.21.2"', '"198.18.22.2"'])))
    before = k.view.vips[vip_key(cfg.vips[0])]
    slot_a = k.slot_of("198.18.21.2")
    cfg, p = k.apply(config(("198.18.200.1", ['{ address = "198.18.21.2", weight = 0 }', '"198.18.22.2"'])))
    after = k.view.vips[vip_key(cfg.vips[0])]
    assert after[0] == before[0] and after[1] != before[1]          # same VIP id, new region
    assert k.slot_of("198.18.21.2") == slot_a and not p.backend_rows
    assert set(k.table(cfg)) == {k.slot_of("198.18.22.2")}           # the drained one gets no new flows


def test_a_down_backend_is_drained_and_the_state_says_so():
    k = FakeKernel()
    cfg, _ = k.apply(config(("198.18.200.1", ['"198.18.21.2"', '"198.18.22.2"'])))
    down = {f"{cfg.vips[0].key} 198.18.21.2"}
    cfg, _ = k.apply(config(("198.18.200.1", ['"198.18.21.2"', '"198.18.22.2"'])), down=down)
    assert set(k.table(cfg)) == {k.slot_of("198.18.22.2")} and k.state["down"] == sorted(down)


def test_a_removed_backend_is_freed_after_the_switch_with_a_new_generation():
    k = FakeKernel()
    k.apply(config(("198.18.200.1", ['"198.18.21.2"', '"198.18.22.2"'])))
    slot = k.slot_of("198.18.22.2")
    gen = k.view.backends[slot][1]
    _, p = k.apply(config(("198.18.200.1", ['"198.18.21.2"'])))
    assert [s for s, _ in p.freed_rows] == [slot]
    assert k.view.backends[slot][3] == 0 and k.view.backends[slot][1] == gen + 1   # remembered flows re-hash


def test_slots_of_the_config_in_force_are_not_reused_during_a_change():
    k = FakeKernel()
    k.apply(config(("198.18.200.1", ['"198.18.21.2"'])))
    old = k.slot_of("198.18.21.2")
    _, p = k.apply(config(("198.18.200.1", ['"198.18.23.2"'])))
    assert old not in [s for s, _ in p.backend_rows] and [s for s, _ in p.freed_rows] == [old]


def test_refusals_come_before_any_write():
    k = FakeKernel(Limits(vips=2, backends=2, ring=2048))
    three = config(*[(f"198.18.200.{i}", ['"198.18.21.2"']) for i in range(1, 4)])
    with pytest.raises(ConfigError, match="3 VIPs; this load balancer holds at most 2"):
        k.apply(three)
    with pytest.raises(ConfigError, match="more than 2 backends"):
        k.apply(config(("198.18.200.1", ['"198.18.21.2"', '"198.18.22.2"', '"198.18.23.2"'])))
    with pytest.raises(ConfigError, match="no room for a table"):
        k.apply(config(("198.18.200.1", ['"198.18.21.2"']), ("198.18.200.2", ['"198.18.21.2"'])).replace(
            "table_size = 1009", "table_size = 1031"))
    assert k.view.backends == {} and k.state == {}


def test_check_refuses_what_apply_would():
    many = [f'"2001:db8:1::{i:x}"' for i in range(1, 7001)]
    text = config(("198.18.200.1", many)).replace("table_size = 1009", f"table_size = {next_prime(10 * 7000)}")
    with pytest.raises(ConfigError, match="too large to keep in the kernel"):
        check_config(parse_config(text), Limits(backends=8192))
    with pytest.raises(ConfigError, match="VIPs; this load balancer holds at most"):
        check_config(parse_config(config(*[(f"198.18.201.{i}", ['"198.18.21.2"']) for i in range(1, 70)])))
    assert check_config(parse_config(config(("198.18.200.1", ['"198.18.21.2"']))))["vips"] == 1


def test_a_vip_without_active_backends_gets_an_empty_table():
    k = FakeKernel()
    cfg, _ = k.apply(config(("198.18.200.1", ['{ address = "198.18.21.2", weight = 0 }'])))
    assert set(k.table(cfg)) == {SLOT_NONE}
