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

import ipaddress
import json
import struct
import time
from dataclasses import dataclass, replace

from xdpkit import interfaces as nl
from xdpkit.apps.lb import maglev, viptable
from xdpkit.apps.lb.config import (BackendConfig, LbConfig, VipConfig, parse_dict, validate,
                                   validate_weight)
from xdpkit.apps.lb.flowhash import flow_hash, flow_key, flow_slot
from xdpkit.apps.handle import AppHandle, zero_array
from xdpkit.apps.lb.plan import (BACKEND, LINE_SLOTS, SLOT_NONE, VIP,
                                 KernelView, LbPlan, addr16, backend_id, plan_apply, region, ring_lines, vip_key)
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
VIPS_PORT, VIPS_ALL_PORTS = 1, 2
WAYS = 4
_WAY = struct.Struct("<QIHH")              # struct lb_flow_way
_CFG = struct.Struct("<I4s4s16s4sH6s6sBBB3xIIII")  # struct lb_cfg
_ZERO = struct.pack("<I", 0)


@dataclass
class Limits:
    """Map sizes, fixed at load time (``xdpkit lb load --max-vips ...``)."""

    vips: int = 64
    backends: int = 4096
    ring: int = 16 * region(maglev.DEFAULT_SIZE)   # room for 16 default-size tables (each starts a line)
    flows: int = 262144                     # connection-tracking entries (rounded up to 4 x 2^n)

    def map_sizes(self) -> dict[str, int]:
        """max_entries of each map these limits size (load sets them; check plans with them)."""
        sets = 1 << max(0, (self.flows + WAYS - 1) // WAYS - 1).bit_length()
        return {"lb_vip_table": 2 * viptable.slots_per_half(self.vips), "lb_vip_stats": self.vips,
                "lb_ring": -(-self.ring // LINE_SLOTS), "lb_backends": self.backends,
                "lb_be_stats": self.backends, "lb_flows": sets}


@dataclass
class ApplyResult:
    vips: int
    backends: int
    tables_built: int
    seconds: float


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
            for name, n in limits.map_sizes().items():
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
        started from it): read the tables, plan (pure: plan.py), write."""
        t0 = time.monotonic()
        cfg = validate(cfg)
        down = set(state["down"] if down is None else down)
        cfg_fields, tx_port = self._cfg_fields(cfg, nl.ifindex_of(self.ifname))
        p = plan_apply(cfg, state, self._view(), down=down, health_change=health_change)
        self._write(p, cfg_fields, tx_port)
        return ApplyResult(vips=p.vips, backends=p.backends, tables_built=len(p.tables),
                           seconds=time.monotonic() - t0)

    def _view(self) -> KernelView:
        """What plan_apply needs to know of the tables in force."""
        vip_half = half, base, _mask, seed = self._vip_half()
        backends = {int.from_bytes(k, "little"): BACKEND.unpack(v) for k, v in self._map("lb_backends").raw_items()}
        return KernelView(vip_half=half, vip_base=base, vip_seed=seed, vips=self._placed(vip_half),
                          backends=backends, max_vips=self._map("lb_vip_stats").max_entries,
                          max_backends=self._map("lb_backends").max_entries,
                          ring_slots=self._map("lb_ring").max_entries * LINE_SLOTS,
                          state_entries=self._map("lb_state").max_entries)

    def _write(self, p: LbPlan, cfg_fields: tuple, tx_port: int | None) -> None:
        """The plan's writes: first only what packets do not read yet (undone on failure or a
        signal), then the switch, then what the switch freed."""
        be_map = self._map("lb_backends")
        half = self._map("lb_vip_table").max_entries // 2
        try:
            _zero(self._map("lb_be_stats"), p.zero_backend_stats)
            _zero(self._map("lb_vip_stats"), p.zero_vip_stats)
            if p.backend_rows:
                be_map.update_batch_raw([(struct.pack("<I", s), row) for s, row in p.backend_rows])
            checkpoint()
            ring = self._map("lb_ring")
            for base, table in p.tables.values():
                lines = ring_lines(table)
                first, n = base // LINE_SLOTS, len(lines) // ring.value_size
                ring.update_batch_buffers(struct.pack(f"<{n}I", *range(first, first + n)), lines, n)
                checkpoint()
            self._map("lb_vip_table").update_batch_buffers(
                struct.pack(f"<{half}I", *range(p.vip_base, p.vip_base + half)), p.vip_entries, half)
            checkpoint()  # the last point where a signal stops this change
        except BaseException:
            if p.rollback_rows:  # the new slots were never reachable: give them back
                be_map.update_batch_raw([(struct.pack("<I", s), row) for s, row in p.rollback_rows])
            raise
        # the switch: lb_cfg points packets at the new VIP table half, all VIPs at once
        if tx_port is not None:
            self._map("lb_tx_port").update_raw(struct.pack("<I", 0), struct.pack("<I", tx_port))
        self._map("lb_cfg").update_raw(_ZERO, _CFG.pack(*cfg_fields, p.vip_base, half - 1, p.vip_seed))
        self._save_state(p.state_chunks)
        if p.freed_rows:
            be_map.update_batch_raw([(struct.pack("<I", s), row) for s, row in p.freed_rows])

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
                    out[key] = VIP.unpack(vip)
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
        ring.update_batch_buffers(struct.pack(f"<{n}I", *range(n)), ring_lines([]) * n, n)

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
                addr, bgen, _vid, family = BACKEND.unpack(be_map.lookup_raw(struct.pack("<I", slot)))
                if family and bgen & 0xFFFF == gen:
                    return str(ipaddress.ip_address(addr[:4] if family == 4 else addr))
        vid, base, size, _flags = self._placed()[vip_key(vip)]
        line, at = divmod(base + flow_hash(key, cfg.seed) % size, LINE_SLOTS)
        slot = struct.unpack_from("<I", self._map("lb_ring").lookup_raw(struct.pack("<I", line)), 4 * at)[0]
        if slot == SLOT_NONE:
            return None
        addr, _gen, _vid, family = BACKEND.unpack(be_map.lookup_raw(struct.pack("<I", slot)))
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
            addr, _gen, vid, family = BACKEND.unpack(v)
            if family:
                slots[(vid, addr)] = int.from_bytes(k, "little")
        vips = []
        for v in cfg.vips:
            vid = placed[vip_key(v)][0]
            pk, by = vip_stats.get(vid, (0, 0))
            backends = []
            for b in v.backends:
                bpk, bby = be_stats.get(slots.get((vid, addr16(b.address)), -1), (0, 0))
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


def empty_view(limits: Limits) -> KernelView:
    """The tables of a load balancer just loaded with ``limits`` (nothing in force yet)."""
    spec = ObjectSpec.from_file(builtin_object("lb"))   # the ELF only: no kernel, no root
    try:
        state_entries = spec.maps["lb_state"].max_entries
    finally:
        spec.close()
    sizes = limits.map_sizes()  # what _view() would read from the maps of such a load balancer
    return KernelView(vip_half=sizes["lb_vip_table"] // 2, vip_base=0, vip_seed=0, vips={}, backends={},
                      max_vips=sizes["lb_vip_stats"], max_backends=sizes["lb_backends"],
                      ring_slots=sizes["lb_ring"] * LINE_SLOTS, state_entries=state_entries)


def check_config(cfg: LbConfig, limits: Limits | None = None) -> dict:
    """Validate ``cfg`` without the kernel: plan it as an apply onto a load balancer loaded with
    ``limits`` would (every Maglev table, VIP placement, the kept state and its size), so
    `lb check` refuses what `lb apply` would."""
    t0 = time.monotonic()
    p = plan_apply(validate(cfg), {}, empty_view(limits or Limits()), down=set())
    return {"vips": p.vips, "backends": p.backends, "tables_seconds": round(time.monotonic() - t0, 3)}


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
