"""The load balancer's control plane: a config in, kernel tables out; counters back.

    lb = LoadBalancer.load("eth0", load_config_file("lb.toml"))   # fill, attach (persistent)
    lb = LoadBalancer.open("eth0")                                # any later process
    lb.add_backend("tcp/198.18.200.1:80", "198.18.24.2", weight=2)
    lb.drain("tcp/198.18.200.1:80", "198.18.21.2")                # no new flows, old ones stay
    lb.stats()
    LoadBalancer.unload("eth0")

The kernel holds the whole state: the tables the program reads, and the config they came from
(JSON in the lb_state map, bound to the program), so no file or daemon is needed to change it.

Writes are ordered so that a packet never meets a half-made service: new backend slots, then
Maglev tables, then the unused half of the VIP table (viptable.py), then lb_cfg, which switches
the program to that half; removed backend slots are freed last (their generation changes, so
remembered flows re-hash).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import struct
import time
from dataclasses import dataclass, replace

from xdpkit import interfaces as nl
from xdpkit.apps.lb import maglev, viptable
from xdpkit.apps.lb.config import (PROTOCOLS, BackendConfig, LbConfig, VipConfig, parse_dict, validate,
                                   validate_weight)
from xdpkit.apps.lb.flowhash import flow_hash, flow_key, flow_slot
from xdpkit.apps.handle import AppHandle, zero_array
from xdpkit.apps.transaction import checkpoint
from xdpkit.builtin import builtin_object
from xdpkit.errors import ConfigError, NotFoundError
from xdpkit.kernel import bind_map
from xdpkit.maps import Map, open_map_by_id
from xdpkit.maps.percpu import summed_counters
from xdpkit.object import Object, ObjectSpec
from xdpkit.xdp import XdpMode, detach, query

PROGRAM = "xdpkit_lb"
DECAP_PROGRAM = "xdpkit_lb_decap"
EVENTS = ("flow_hit", "flow_miss", "not_vip", "no_backend", "encap_error", "too_big_icmp",
          "too_big_drop", "malformed", "fragment")
DECAP_EVENTS = ("decap_v4", "decap_v6", "pass", "error")
SLOT_NONE = 0xFFFFFFFF
VIP_NO_SPORT = 1
VIPS_PORT, VIPS_ALL_PORTS = 1, 2
WAYS = 4
LINE_SLOTS = 16                            # LB_RING_LINE_SLOTS: Maglev slots per lb_ring entry
_WAY = struct.Struct("<QIHH")              # struct lb_flow_way
STATE_CHUNK = 4096
_VIP = struct.Struct("<IIII")              # struct lb_vip
_BACKEND = struct.Struct("<16sIIB3x")      # struct lb_backend
_CFG = struct.Struct("<I4s4s16s4sH6s6sBBB3xIIII")  # struct lb_cfg
_ZERO = struct.pack("<I", 0)


@dataclass
class Limits:
    """Map sizes, fixed at load time (``xdpkit lb load --max-vips ...``)."""

    vips: int = 64
    backends: int = 4096
    ring: int = 16 * maglev.DEFAULT_SIZE   # Maglev slots shared by all VIPs (each table starts a line of 16)
    flows: int = 262144                     # connection-tracking entries (rounded up to 4 x 2^n)


@dataclass
class ApplyResult:
    vips: int
    backends: int
    tables_built: int
    seconds: float


def _addr16(address: str) -> bytes:
    return ipaddress.ip_address(address).packed.ljust(16, b"\0")


def _vip_key(v: VipConfig) -> bytes:
    return _addr16(v.address) + struct.pack("!H", v.port) + bytes([PROTOCOLS[v.protocol], v.family])


def backend_id(vip: VipConfig, address: str) -> str:
    """A backend of a VIP as the health state names it: "<vip key> <address>"."""
    return f"{vip.key} {address}"


def _table_signature(seed: int, base: int, size: int, weights: list) -> str:
    """What a VIP's Maglev table was built from: an unchanged signature means no rebuild."""
    return hashlib.sha256(json.dumps([seed, base, size, weights]).encode()).hexdigest()[:32]


def _zero(m: Map, indexes) -> None:
    indexes = list(indexes)
    if indexes:
        m.update_batch_raw([(struct.pack("<I", i), bytes(m.value_buf_size)) for i in indexes])


class LoadBalancer(AppHandle):
    """The load balancer attached to one interface (maps from a fresh load or from the kernel)."""

    KIND = "load balancer"
    COMMAND = "lb"
    PROGRAM = PROGRAM
    CHANGE_HINT = "change it with `xdpkit lb apply {ifname} CONFIG` or unload it first"

    # ---- lifecycle ------------------------------------------------------------------------
    @classmethod
    def load(cls, iface, config: LbConfig | None = None, *, mode=XdpMode.AUTO, force: bool = False,
             limits: Limits | None = None) -> "LoadBalancer":
        """Load the program, apply ``config`` and attach it to ``iface`` (persistent, netlink)."""
        ifname = cls._ifname_free(iface)
        limits = limits or Limits()
        for what, n, lo, hi in (("max VIPs", limits.vips, 1, viptable.MAX_VIPS),
                                ("max backends", limits.backends, 1, 1 << 26),
                                ("Maglev slots", limits.ring, 3, 1 << 26), ("flow entries", limits.flows, 1024, 1 << 26)):
            if not lo <= n <= hi:
                raise ConfigError(f"{what} {n} is out of range {lo}..{hi}")
        spec = ObjectSpec.from_file(builtin_object("lb"))
        try:
            sets = 1 << max(0, (limits.flows + WAYS - 1) // WAYS - 1).bit_length()
            for name, n in (("lb_vip_table", 2 * viptable.slots_per_half(limits.vips)),
                            ("lb_vip_stats", limits.vips), ("lb_ring", -(-limits.ring // LINE_SLOTS)),
                            ("lb_backends", limits.backends), ("lb_be_stats", limits.backends),
                            ("lb_flows", sets)):
                spec.maps[name].max_entries = n
            obj = spec.load()
        finally:
            spec.close()
        try:
            prog = obj.programs[PROGRAM]
            bind_map(prog.fd, obj.maps["lb_state"].fd)  # read by the control plane only
            lb = cls._from_object(ifname, obj, prog)
            lb._clear_ring()
            lb.apply(config or LbConfig())
            prog.attach(ifname, mode=mode, netlink=True, force=force)
            return lb
        except BaseException:
            obj.close()
            raise

    # ---- the state kept in the kernel -----------------------------------------------------
    def _state(self) -> dict:
        m = self._map("lb_state")
        head = m.lookup_raw(struct.pack("<I", 0)) or b""
        n = int.from_bytes(head[:4], "little")
        if n == 0:
            return {"config": {}, "down": [], "tables": {}}
        raw = bytearray(head[4:])
        i = 1
        while len(raw) < n:
            raw += m.lookup_raw(struct.pack("<I", i))
            i += 1
        return json.loads(bytes(raw[:n]))

    def _state_chunks(self, state: dict) -> list[bytes]:
        """lb_state's entries for ``state``; ConfigError (before any write) if it cannot hold them."""
        m = self._map("lb_state")
        blob = json.dumps(state, separators=(",", ":")).encode()
        data = len(blob).to_bytes(4, "little") + blob
        chunks = [data[i:i + STATE_CHUNK].ljust(STATE_CHUNK, b"\0") for i in range(0, len(data), STATE_CHUNK)]
        if len(chunks) > m.max_entries:
            raise ConfigError(f"the configuration is too large to keep in the kernel "
                              f"({len(blob)} bytes, at most {m.max_entries * STATE_CHUNK - 4})")
        return chunks

    def _save_state(self, chunks: list[bytes]) -> None:
        m = self._map("lb_state")
        # Chunk 0 (with the length) is written last: a reader never sees a length beyond the data.
        m.update_batch_raw([(struct.pack("<I", i), c) for i, c in enumerate(chunks)][1:] or [])
        m.update_raw(struct.pack("<I", 0), chunks[0])

    def config(self) -> LbConfig:
        """The configuration in force (admin weights; health state is separate, see ``down``)."""
        return parse_dict(self._state()["config"])

    def down(self) -> set[str]:
        """Backends the health checker marked down, as ``"<vip key> <address>"``."""
        return set(self._state()["down"])

    # ---- applying a config ------------------------------------------------------------------
    def apply(self, cfg: LbConfig, *, down: set[str] | None = None, health_change: str = "") -> ApplyResult:
        """Make ``cfg`` the configuration in force; flows of kept backends stay where they are.

        All or nothing: everything is planned and checked before the first write; writes go to
        what packets do not read (new backend slots, new Maglev regions, the VIP table's unused
        half) and one write of lb_cfg switches; a failure, Ctrl-C or SIGTERM before it undoes
        them. One change at a time per load balancer (other processes wait).
        """
        validate(cfg)
        with self.transaction():
            return self._apply(cfg, self._state(), down=down, health_change=health_change)

    def _apply(self, cfg: LbConfig, state: dict, *, down: set[str] | None = None,
               health_change: str = "") -> ApplyResult:
        """apply() with the lock held and the kernel-held state already read (by an edit that
        started from it)."""
        t0 = time.monotonic()
        cfg = validate(cfg)
        down = set(state["down"] if down is None else down)
        ifindex = nl.ifindex_of(self.ifname)
        cfg_fields, tx_port = self._cfg_fields(cfg, ifindex)

        be_map, vip_table = self._map("lb_backends"), self._map("lb_vip_table")
        max_vips = self._map("lb_vip_stats").max_entries
        vip_half = self._vip_half()
        half, vip_base, _mask, vip_seed = vip_half
        old_vips = self._placed(vip_half)
        old_slots = {}
        gens = {}
        for k, v in be_map.raw_items():
            slot = int.from_bytes(k, "little")
            addr, gen, vip_id, family = _BACKEND.unpack(v)
            gens[slot] = gen
            if family:
                old_slots[(vip_id, addr)] = slot

        # VIP ids and Maglev regions: kept VIPs keep theirs, so their flows and tables stay.
        new_keys = {_vip_key(v): v for v in cfg.vips}
        if len(new_keys) > max_vips:
            raise ConfigError(f"{len(new_keys)} VIPs; this load balancer holds at most {max_vips}",
                              hint="reload it with a larger --max-vips")
        kept = {k: old_vips[k] for k in new_keys if k in old_vips and old_vips[k][2] == new_keys[k].table_size}
        # Ids and regions of every old VIP stay taken during this apply: packets may still be
        # reading them until the VIP entries are switched.
        used_ids = {v[0] for v in old_vips.values()}
        regions = sorted((v[1], v[1] + _region(v[2])) for v in old_vips.values())
        ring_size = self._map("lb_ring").max_entries * LINE_SLOTS
        placed = {}
        free_ids = (i for i in range(max_vips) if i not in used_ids)
        for k, v in new_keys.items():
            if k in kept:
                placed[k] = kept[k][:3]
                continue
            vid = old_vips[k][0] if k in old_vips else next(free_ids, None)
            if vid is None:
                raise ConfigError(f"VIP {v.key}: no free VIP id (at most {max_vips}, and removed VIPs "
                                  "free theirs only after this change)", hint="apply the removal first, or reload "
                                  "with a larger --max-vips")
            base = _first_fit(regions, _region(v.table_size), ring_size)
            if base is None:
                raise ConfigError(f"VIP {v.key}: no room for a table of {v.table_size} slots "
                                  f"(the load balancer has {ring_size} in all)",
                                  hint="use a smaller table_size or reload with a larger --ring")
            regions = sorted(regions + [(base, base + _region(v.table_size))])
            placed[k] = (vid, base, v.table_size)

        vip_seed, at = viptable.layout(new_keys, half, vip_seed)  # entries in the VIP table's half

        # Backend slots: one per (VIP, backend); kept pairs keep slot and generation.
        wanted = {}
        for k, v in new_keys.items():
            for b in v.backends:
                wanted[(placed[k][0], _addr16(b.address))] = (v, b)
        taken = set(old_slots.values())  # freed only after this apply: packets may still use them
        free_slots = (s for s in range(be_map.max_entries) if s not in taken)
        slot_of = {}
        fresh = []
        for p, (v, b) in wanted.items():
            if p in old_slots:
                slot_of[p] = old_slots[p]
                continue
            s = next(free_slots, None)
            if s is None:
                raise ConfigError(f"more than {be_map.max_entries} backends in all",
                                  hint="reload with a larger --max-backends")
            slot_of[p] = s
            fresh.append((s, p, b))

        # Tables: rebuilt only where their inputs changed. A kept VIP's new table goes to a
        # region of its own when there is room, so it takes effect with the VIP table switch
        # like everything else; only a full ring makes it rewrite its table in place.
        tables = {}
        signatures = state.get("tables", {})
        new_signatures = {}
        for k, v in new_keys.items():
            vid, base, size = placed[k]
            active = [maglev.Backend(b.address, 0 if backend_id(v, b.address) in down else b.weight)
                      for b in v.backends]
            weights = sorted((x.name, x.weight) for x in active)
            if k in kept and signatures.get(v.key) == _table_signature(cfg.seed, base, size, weights):
                new_signatures[v.key] = signatures[v.key]
                continue
            if k in kept:
                moved = _first_fit(regions, _region(size), ring_size)
                if moved is not None:
                    regions = sorted(regions + [(moved, moved + _region(size))])
                    base = moved
                    placed[k] = (vid, base, size)
            new_signatures[v.key] = _table_signature(cfg.seed, base, size, weights)
            slots = [slot_of[(vid, _addr16(b.address))] for b in v.backends]
            if any(x.weight for x in active):
                table = maglev.build_table(active, size=size, seed=cfg.seed)
                tables[k] = (base, [slots[i] for i in table])
            else:
                tables[k] = (base, [SLOT_NONE] * size)

        keys = {backend_id(v, b.address) for v in cfg.vips for b in v.backends}
        changes = {k: n for k, n in state.get("health_changes", {}).items() if k in keys}
        if health_change:
            changes[health_change] = changes.get(health_change, 0) + 1
        state_chunks = self._state_chunks({"config": cfg.to_dict(), "down": sorted(down & keys),
                                           "tables": new_signatures, "health_changes": changes})
        new_base = half if vip_base == 0 else 0
        entries = [bytes(viptable.ENTRY.size)] * half
        for k, v in new_keys.items():
            entries[at[k]] = viptable.ENTRY.pack(k, _VIP.pack(*placed[k], VIP_NO_SPORT if v.hash == "no-sport" else 0))

        # ---- writes: first only what packets do not read yet ----
        try:
            _zero(self._map("lb_be_stats"), (s for s, _, _ in fresh))
            _zero(self._map("lb_vip_stats"), (placed[k][0] for k in new_keys if k not in old_vips))
            if fresh:
                be_map.update_batch_raw([(struct.pack("<I", s), _BACKEND.pack(addr, (gens.get(s, 0) + 1) & 0xFFFFFFFF,
                                                                              vid, b.family))
                                         for s, (vid, addr), b in fresh])
            checkpoint()
            ring = self._map("lb_ring")
            for base, table in tables.values():
                lines = _ring_lines(table)
                first, n = base // LINE_SLOTS, len(lines) // ring.value_size
                ring.update_batch_buffers(struct.pack(f"<{n}I", *range(first, first + n)), lines, n)
                checkpoint()
            vip_table.update_batch_buffers(struct.pack(f"<{half}I", *range(new_base, new_base + half)),
                                           b"".join(entries), half)
            checkpoint()  # the last point where a signal stops this apply
        except BaseException:
            if fresh:  # the new slots were never reachable: give them back
                be_map.update_batch_raw([(struct.pack("<I", s), _BACKEND.pack(bytes(16), (gens.get(s, 0) + 1) & 0xFFFFFFFF,
                                                                              0, 0)) for s, _, _ in fresh])
            raise
        # ---- the switch: lb_cfg points packets at the new VIP table half, all VIPs at once ----
        if tx_port is not None:
            self._map("lb_tx_port").update_raw(struct.pack("<I", 0), struct.pack("<I", tx_port))
        self._map("lb_cfg").update_raw(_ZERO, _CFG.pack(*cfg_fields, new_base, half - 1, vip_seed))
        self._save_state(state_chunks)
        gone = [s for p, s in old_slots.items() if p not in wanted]
        if gone:
            be_map.update_batch_raw([(struct.pack("<I", s), _BACKEND.pack(bytes(16), (gens[s] + 1) & 0xFFFFFFFF, 0, 0))
                                     for s in gone])
        return ApplyResult(vips=len(new_keys), backends=len(wanted), tables_built=len(tables),
                           seconds=time.monotonic() - t0)

    def _vip_half(self) -> tuple[int, int, int, int]:
        """(entries per half, base and mask of the half in force, VIP hash seed); mask 0 = none yet."""
        *_, base, mask, seed = _CFG.unpack(self._map("lb_cfg").lookup_raw(_ZERO))
        return self._map("lb_vip_table").max_entries // 2, base, mask, seed

    def _placed(self, vip_half: tuple[int, int, int, int] | None = None) -> dict[bytes, tuple[int, int, int, int]]:
        """The VIPs in force, from the VIP table: key -> (id, ring base, table size, flags).
        ``vip_half`` is _vip_half() when the caller has read it already."""
        _half, base, mask, _seed = vip_half or self._vip_half()
        if not mask:
            return {}
        out = {}
        for k, v in self._map("lb_vip_table").raw_items():
            if base <= int.from_bytes(k, "little") <= base + mask:
                key, vip = viptable.ENTRY.unpack(v)
                if key[19]:  # family: 0 = empty
                    out[key] = _VIP.unpack(vip)
        return out

    def _cfg_fields(self, cfg: LbConfig, ifindex: int) -> tuple[tuple, int | None]:
        """lb_cfg's fields but the VIP table's, and lb_tx_port's ifindex when redirecting
        (checked before anything is written; written by the switch)."""
        link = nl.get_link(ifindex)
        addrs = nl.addresses(ifindex)
        families = {b.family for v in cfg.vips for b in v.backends}
        src4, host4 = _source(cfg.encap_source_v4, addrs, 4, 4 in families, self.ifname)
        src6, host6 = _source(cfg.encap_source_v6, addrs, 6, 6 in families, self.ifname)
        mtu = cfg.mtu or link.mtu or 1500
        tx_mac, redirect, tx_port = b"\0" * 6, 0, None
        if cfg.redirect:
            out = nl.get_link(nl.ifindex_of(cfg.redirect))
            tx_mac, redirect, tx_port = bytes.fromhex(out.address.replace(":", "")), 1, out.ifindex
        gw = bytes.fromhex(cfg.gateway_mac.replace(":", "")) if cfg.gateway_mac else b"\0" * 6
        kinds = (VIPS_PORT if any(v.port for v in cfg.vips) else 0) | \
            (VIPS_ALL_PORTS if any(not v.port for v in cfg.vips) else 0)
        return (cfg.seed, src4[:4], host4, src6, host6, mtu, gw, tx_mac, redirect,
                int(bool(cfg.gateway_mac)), kinds, self._map("lb_flows").max_entries - 1), tx_port

    def forget_flows(self) -> None:
        """Empty the flow table: every flow is placed again by the Maglev tables in force."""
        zero_array(self._map("lb_flows"))

    def _clear_ring(self) -> None:
        ring = self._map("lb_ring")
        n = ring.max_entries
        ring.update_batch_buffers(struct.pack(f"<{n}I", *range(n)), _ring_lines([]) * n, n)

    # ---- editing ---------------------------------------------------------------------------
    def _edit(self, change) -> ApplyResult:
        """Apply ``change(config in force)``, reading the kernel-held state once, all in one
        transaction (no other change can come between the read and the write)."""
        with self.transaction():
            state = self._state()
            return self._apply(change(parse_dict(state["config"])), state)

    def add_vip(self, vip: VipConfig) -> ApplyResult:
        def change(cfg):
            if any(v.key == vip.key for v in cfg.vips):
                raise ConfigError(f"VIP {vip.key} exists already")
            return cfg.with_vip(vip)
        return self._edit(change)

    def delete_vip(self, key: str) -> ApplyResult:
        return self._edit(lambda cfg: cfg.without_vip(key))

    def _edit_backends(self, key: str, edit) -> ApplyResult:
        def change(cfg):
            vip = cfg.vip(key)
            return cfg.with_vip(replace(vip, backends=tuple(edit(vip))))
        return self._edit(change)

    def add_backend(self, key: str, address: str, weight: int = 1) -> ApplyResult:
        try:
            b = BackendConfig(address=str(ipaddress.ip_address(address)), weight=weight)
        except ValueError:
            raise ConfigError(f"backend {address!r} is not an IPv4 or IPv6 address") from None
        validate_weight(weight)

        def edit(vip):
            if any(x.address == b.address for x in vip.backends):
                raise ConfigError(f"VIP {vip.key} has backend {b.address} already")
            return [*vip.backends, b]
        return self._edit_backends(key, edit)

    def delete_backend(self, key: str, address: str) -> ApplyResult:
        def edit(vip):
            gone = vip.backend(address)
            return [x for x in vip.backends if x != gone]
        return self._edit_backends(key, edit)

    def set_weight(self, key: str, address: str, weight: int) -> ApplyResult:
        validate_weight(weight)

        def edit(vip):
            which = vip.backend(address)
            return [replace(x, weight=weight) if x == which else x for x in vip.backends]
        return self._edit_backends(key, edit)

    def drain(self, key: str, address: str) -> ApplyResult:
        """Weight 0: the backend gets no new flows and keeps the ones it has."""
        return self.set_weight(key, address, 0)

    def set_health(self, key: str, address: str, up: bool) -> ApplyResult:
        """The health checker's verdict: a down backend is drained until it is up again."""
        with self.transaction():
            state = self._state()  # one read of the kernel-held state for config and health
            cfg, down = parse_dict(state["config"]), set(state["down"])
            vip = cfg.vip(key)
            bid = backend_id(vip, vip.backend(address).address)
            if (bid not in down) == up:
                return ApplyResult(vips=0, backends=0, tables_built=0, seconds=0.0)
            return self._apply(cfg, state, down=down - {bid} if up else down | {bid}, health_change=bid)

    # ---- reading ----------------------------------------------------------------------------
    def backend_of(self, src: str, dst: str, proto: str, sport: int, dport: int) -> str | None:
        """The backend a flow goes to: its remembered backend, or the one Maglev picks now."""
        cfg = self.config()
        vip = None
        for v in cfg.vips:
            if v.address == str(ipaddress.ip_address(dst)) and v.protocol == proto and v.port in (dport, 0):
                if vip is None or v.port:
                    vip = v
        if vip is None:
            return None
        key = flow_key(src, dst, proto, 0 if vip.hash == "no-sport" else sport, dport)
        be_map, flows = self._map("lb_backends"), self._map("lb_flows")
        set_idx, tag = flow_slot(key, cfg.seed, flows.max_entries)
        ways = flows.lookup_raw(struct.pack("<I", set_idx))
        for off in range(0, WAYS * _WAY.size, _WAY.size):
            wtag, slot, gen, _age = _WAY.unpack_from(ways, off)
            if wtag == tag:
                addr, bgen, _vid, family = _BACKEND.unpack(be_map.lookup_raw(struct.pack("<I", slot)))
                if family and bgen & 0xFFFF == gen:
                    return str(ipaddress.ip_address(addr[:4] if family == 4 else addr))
        vid, base, size, _flags = self._placed()[_vip_key(vip)]
        line, at = divmod(base + flow_hash(key, cfg.seed) % size, LINE_SLOTS)
        slot = struct.unpack_from("<I", self._map("lb_ring").lookup_raw(struct.pack("<I", line)), 4 * at)[0]
        if slot == SLOT_NONE:
            return None
        addr, _gen, _vid, family = _BACKEND.unpack(be_map.lookup_raw(struct.pack("<I", slot)))
        return str(ipaddress.ip_address(addr[:4] if family == 4 else addr))

    def stats(self) -> dict:
        state = self._state()
        cfg = parse_dict(state["config"])
        down = set(state["down"])
        changes = state.get("health_changes", {})
        vip_stats = summed_counters(self._map("lb_vip_stats"))
        be_stats = summed_counters(self._map("lb_be_stats"))
        placed = self._placed()
        slots = {}
        for k, v in self._map("lb_backends").raw_items():
            addr, _gen, vid, family = _BACKEND.unpack(v)
            if family:
                slots[(vid, addr)] = int.from_bytes(k, "little")
        vips = []
        for v in cfg.vips:
            vid = placed[_vip_key(v)][0]
            pk, by = vip_stats.get(vid, (0, 0))
            backends = []
            for b in v.backends:
                bpk, bby = be_stats.get(slots.get((vid, _addr16(b.address)), -1), (0, 0))
                healthy = backend_id(v, b.address) not in down
                backends.append({"address": b.address, "weight": b.weight, "healthy": healthy,
                                 "health_changes": changes.get(backend_id(v, b.address), 0),
                                 "state": "down" if not healthy else "drained" if b.weight == 0 else "active",
                                 "packets": bpk, "bytes": bby})
            vips.append({"vip": v.key, "hash": v.hash, "table_size": v.table_size, "packets": pk, "bytes": by,
                         "backends": backends})
        events = {EVENTS[k]: {"packets": pk, "bytes": by}
                  for k, (pk, by) in summed_counters(self._map("lb_events")).items() if k < len(EVENTS)}
        return {"ifname": self.ifname, "program_id": self.prog_id, "vips": vips, "events": events,
                "flows": {"hits": events.get("flow_hit", {}).get("packets", 0),
                          "misses": events.get("flow_miss", {}).get("packets", 0),
                          "capacity": self._map("lb_flows").max_entries * WAYS}}


def check_config(cfg: LbConfig) -> dict:
    """Validate ``cfg`` without the kernel: build every Maglev table, report what it holds."""
    t0 = time.monotonic()
    for v in validate(cfg).vips:
        active = [maglev.Backend(b.address, b.weight) for b in v.backends]
        if any(b.weight for b in active):
            maglev.build_table(active, size=v.table_size, seed=cfg.seed)
    return {"vips": len(cfg.vips), "backends": sum(len(v.backends) for v in cfg.vips),
            "tables_seconds": round(time.monotonic() - t0, 3)}


def _region(table_size: int) -> int:
    """Maglev slots a table takes: whole lines, so that the next one starts a line."""
    return -(-table_size // LINE_SLOTS) * LINE_SLOTS


def _ring_lines(slots: list[int]) -> bytes:
    """Maglev slots as whole lb_ring lines, padded with SLOT_NONE (at least one line)."""
    n = _region(max(1, len(slots)))
    return struct.pack(f"<{n}I", *slots, *[SLOT_NONE] * (n - len(slots)))


def _first_fit(regions: list[tuple[int, int]], size: int, capacity: int) -> int | None:
    at = 0
    for lo, hi in regions:
        if lo - at >= size:
            return at
        at = max(at, hi)
    return at if capacity - at >= size else None


def _source(prefix: str, addrs: list[str], family: int, needed: bool, ifname: str) -> tuple[bytes, bytes]:
    """(network-order base address, network-order host mask) for outer source addresses."""
    width = 4 if family == 4 else 16
    if prefix:
        net = ipaddress.ip_network(prefix)
    else:
        mine = [a for a in addrs if ipaddress.ip_address(a).version == family]
        if not mine:
            if needed:
                raise ConfigError(f"IPv{family} backends need an outer IPv{family} source, and {ifname} has "
                                  f"no IPv{family} address", hint=f"set encap_source_v{family} in the config")
            return bytes(width), bytes(4)
        net = ipaddress.ip_network(mine[0])
    host_bits = min(net.max_prefixlen - net.prefixlen, 32)
    mask = ((1 << host_bits) - 1).to_bytes(4, "big")
    return net.network_address.packed, mask


# ---- backend side ------------------------------------------------------------------------------

def decap_load(iface, *, mode=XdpMode.AUTO, force: bool = False) -> int:
    """Attach the decapsulation program to a backend's interface (persistent). Returns its id."""
    ifname = nl.ifname_of(nl.ifindex_of(iface))
    with Object.from_file(builtin_object("lb_decap"), program=DECAP_PROGRAM) as obj:
        prog = obj.programs[DECAP_PROGRAM]
        prog.attach(ifname, mode=mode, netlink=True, force=force)
        return prog.id


def decap_unload(iface) -> None:
    ifname = nl.ifname_of(nl.ifindex_of(iface))
    if not any(a.name == DECAP_PROGRAM and a.ours for a in query(ifname)):
        raise NotFoundError(f"no xdpkit decapsulation program on {ifname}")
    detach(ifname)


def decap_stats(iface) -> dict:
    ifname = nl.ifname_of(nl.ifindex_of(iface))
    for att in query(ifname):
        if att.name == DECAP_PROGRAM and att.ours:
            for m in att.maps:
                if m["name"].startswith("lb_decap_event"):
                    with open_map_by_id(m["id"]) as mp:
                        counts = summed_counters(mp)
                    return {"ifname": ifname, "program_id": att.id,
                            "events": {DECAP_EVENTS[k]: {"packets": p, "bytes": b}
                                       for k, (p, b) in counts.items() if k < len(DECAP_EVENTS)}}
    raise NotFoundError(f"no xdpkit decapsulation program on {ifname}",
                        hint=f"load one: xdpkit lb decap load {ifname}")
