"""Traffic statistics from xdpkit's shared counters (``<xdpkit/stats.h>``).

Every xdpkit program that includes stats.h carries three per-CPU array maps: packets and bytes
per EtherType, per IP protocol and per XDP verdict. They are found by name among the maps of
the program attached to an interface, so ``xdpkit stats`` reads a running app in place instead
of replacing it; on an interface with no program it attaches the built-in statistics program
(through a bpf_link held by our fd, so it goes away with the process, even on a crash).

A sample is one batch lookup per map: no per-packet and no per-key syscalls.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from xdpkit.errors import AttachError, NotFoundError, XdpkitError
from xdpkit.kernel import BPF_STATS_SYSCTL, VERDICT_NAMES, kernel_name

ETYPE_NAMES = ("other", "IPv4", "IPv6", "ARP", "VLAN", "LLDP", "MPLS")
PROTO_NAMES = ("other", "TCP", "UDP", "ICMP", "ICMPv6", "non-IP")

#: group -> (map name in C, slot names by index). Order is the display order.
GROUPS = {
    "etype": ("xdpkit_st_etype", ETYPE_NAMES),
    "proto": ("xdpkit_st_proto", PROTO_NAMES),
    "verdict": ("xdpkit_st_verdict", VERDICT_NAMES),
}
# the kernel keeps OBJ_NAME_LEN characters: xdpkit_st_verdict is xdpkit_st_verdi
_KERNEL_NAMES = {kernel_name(name): group for group, (name, _) in GROUPS.items()}


def slot_name(group: str, index: int) -> str:
    names = GROUPS[group][1]
    return names[index] if index < len(names) else f"index{index}"


def stats_map_ids(maps) -> dict[str, int]:
    """group -> map id, from an Attachment's ``maps`` (MapRef, or dicts with id, name, type)."""
    from xdpkit.xdp import MapRef

    out = {}
    for m in map(MapRef.of, maps):
        group = _KERNEL_NAMES.get(m.name)
        if group and m.type == "percpu_array":
            out[group] = m.id
    return out


def has_stats(attachment) -> bool:
    return bool(stats_map_ids(attachment.maps))


@dataclass
class Counter:
    packets: int = 0
    bytes: int = 0

    def to_dict(self) -> dict:
        return {"packets": self.packets, "bytes": self.bytes}


@dataclass
class Sample:
    """Cumulative counters at one moment (``timestamp`` from time.monotonic())."""

    timestamp: float
    counters: dict[str, dict[str, Counter]] = field(default_factory=dict)  # group -> slot -> counter

    def total(self) -> Counter:
        """Every frame is in exactly one slot of each map: verdict is the preferred sum."""
        for group in ("verdict", "etype", "proto"):
            if group in self.counters:
                return Counter(sum(c.packets for c in self.counters[group].values()),
                               sum(c.bytes for c in self.counters[group].values()))
        return Counter()

    def to_dict(self) -> dict:
        out = {g: {k: c.to_dict() for k, c in slots.items()} for g, slots in self.counters.items()}
        out["total"] = self.total().to_dict()
        return out


def read_counters(m, group: str) -> dict[str, Counter]:
    """One map's slots, summed over CPUs. One BPF_MAP_LOOKUP_BATCH for the whole array."""
    stride, ncpus = m.stride, m.ncpus
    try:
        raw = m.lookup_batch_raw(chunk=max(m.max_entries, 1))
    except XdpkitError:
        raise
    except Exception:  # no batch support for this map: one lookup per slot (a handful)
        raw = m.raw_items()
    out = {}
    for key, value in raw:
        idx = int.from_bytes(key[:4], "little")
        packets = nbytes = 0
        for cpu in range(ncpus):  # struct xdpkit_counter { u64 packets; u64 bytes; } per CPU
            off = cpu * stride
            packets += int.from_bytes(value[off:off + 8], "little")
            nbytes += int.from_bytes(value[off + 8:off + 16], "little")
        name = slot_name(group, idx)
        if idx < len(GROUPS[group][1]) or packets:  # spare slots only when used
            out[name] = Counter(packets, nbytes)
    return out


class StatsReader:
    """Reads the stats maps of one program. ``maps``: group -> Map (per-CPU array)."""

    def __init__(self, maps: dict, *, owned: bool = True):
        if not maps:
            raise NotFoundError("no xdpkit statistics maps (xdpkit_st_*) found")
        for group, m in maps.items():
            if m.value_size != 16:
                raise XdpkitError(f"map '{m.name}' has {m.value_size}-byte values; the xdpkit counter "
                                  "convention is struct xdpkit_counter (16 bytes)")
        self.maps = maps
        self._owned = owned

    @classmethod
    def for_object(cls, obj) -> "StatsReader":
        """From a loaded :class:`xdpkit.Object` that includes stats.h (maps stay the object's)."""
        maps = {g: obj.maps[name] for g, (name, _) in GROUPS.items() if name in obj.maps}
        return cls(maps, owned=False)

    @classmethod
    def for_attachment(cls, attachment) -> "StatsReader":
        """From an attached program's map ids (any process, any program that includes stats.h)."""
        from xdpkit.maps import open_map_by_id

        ids = stats_map_ids(attachment.maps)
        if not ids:
            raise NotFoundError(f"{attachment.describe()} on {attachment.ifname} has no xdpkit "
                                "statistics maps",
                                hint="include <xdpkit/stats.h> and return xdpkit_stats_record(ctx, verdict)")
        maps = {}
        try:
            for group, mid in ids.items():
                maps[group] = open_map_by_id(mid)
        except BaseException:
            for m in maps.values():
                m.close()
            raise
        return cls(maps)

    def read(self) -> Sample:
        now = time.monotonic()
        return Sample(now, {g: read_counters(self.maps[g], g) for g in GROUPS if g in self.maps})

    def close(self) -> None:
        if self._owned:
            for m in self.maps.values():
                m.close()
        self.maps = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def rates(prev: Sample, cur: Sample) -> dict:
    """Per-slot and total packets/s and bits/s between two samples, with cumulative counts."""
    dt = max(cur.timestamp - prev.timestamp, 1e-9)

    def row(a: Counter, b: Counter) -> dict:
        return {"packets": b.packets, "bytes": b.bytes,
                "pps": round((b.packets - a.packets) / dt, 1),
                "bps": round((b.bytes - a.bytes) * 8 / dt, 1)}

    out: dict = {"interval_s": round(dt, 3)}
    for group, slots in cur.counters.items():
        before = prev.counters.get(group, {})
        out[group] = {name: row(before.get(name, Counter()), c) for name, c in slots.items()}
    out["total"] = row(prev.total(), cur.total())
    return out


class StatsSession:
    """What ``xdpkit stats IFACE`` does: read the app on IFACE, or attach the statistics program.

    Never replaces a program: an interface whose program has no xdpkit counters is an error
    with a hint. ``source`` is "app" (reading the program that was there) or "attached".
    """

    def __init__(self, iface: str, *, mode=None):
        self.iface = iface
        self.mode = mode
        self.source = ""
        self.attachment = None
        self.reader: StatsReader | None = None
        self._obj = None
        self._link = None

    def open(self) -> "StatsSession":
        from xdpkit import xdp

        atts = xdp.query(self.iface)
        if atts:
            att = atts[0]
            if not has_stats(att):
                who = "xdpkit" if att.ours else "another tool"
                raise AttachError(
                    f"{att.ifname} runs {att.describe()} without xdpkit counters; "
                    "xdpkit stats will not replace it",
                    hint=("add `#include <xdpkit/stats.h>` and `return xdpkit_stats_record(ctx, verdict);` "
                          f"to it, or unload it first (attached by {who}); "
                          "`xdpkit status --stats` shows its run count and time"))
            self.attachment, self.source = att, "app"
            self.reader = StatsReader.for_attachment(att)
            return self
        self._attach_builtin()
        return self

    def _attach_builtin(self) -> None:
        from xdpkit import xdp
        from xdpkit.builtin import builtin_object
        from xdpkit.object import Object

        self._obj = Object.from_file(builtin_object("stats"), program="xdpkit_stats")
        try:
            self._link = self._obj.program().attach(self.iface, mode=self.mode)
            self.reader = StatsReader.for_object(self._obj)
            self.attachment = xdp.query(self.iface)[0]
            self.source = "attached"
        except BaseException:
            self.close()
            raise

    @property
    def note(self) -> str:
        return getattr(self._link, "note", "") or ""

    def describe(self) -> dict:
        a = self.attachment
        return {"ifname": a.ifname, "ifindex": a.ifindex, "source": self.source,
                "program": {"id": a.id, "name": a.name, "mode": a.mode.value}}

    def read(self) -> Sample:
        if self.reader is None:
            raise XdpkitError("statistics session is not open")
        return self.reader.read()

    def samples(self, *, interval: float = 1.0, count: int | None = None,
                duration: float | None = None):
        """Yield rate dicts every ``interval`` s, ``count`` times or for ``duration`` s (or forever)."""
        prev = self.read()
        start = prev.timestamp
        n = 0
        while count is None or n < count:
            if duration is not None and time.monotonic() - start >= duration - 1e-3:
                return
            wait = prev.timestamp + interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            cur = self.read()
            yield dict(self.describe(), **rates(prev, cur))
            prev = cur
            n += 1

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        link, self._link = self._link, None
        if link is not None:
            link.detach()
        obj, self._obj = self._obj, None
        if obj is not None:
            obj.close()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()


# ---- kernel BPF run-time statistics (any program) ------------------------------------------

def bpf_stats_sysctl() -> bool:
    try:
        with open(BPF_STATS_SYSCTL) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


@contextlib.contextmanager
def bpf_stats_enabled():
    """Kernel BPF run-time stats (run_cnt, run_time_ns) on for the block; yields who enabled them.

    BPF_ENABLE_STATS returns an fd and keeps stats on while it is open, so they switch off by
    themselves when the block ends or the process dies. Off, they cost nothing; on, each
    program run pays two clock reads, which is why xdpkit enables them only when asked.
    """
    if bpf_stats_sysctl():
        yield "sysctl"
        return
    from xdpkit.kernel import enable_run_time_stats

    with enable_run_time_stats():
        yield "command"


def run_stats(prog_ids: list[int], *, interval: float = 1.0) -> dict[int, dict]:
    """Run count and run time of programs, totals plus rates over ``interval`` seconds.

    With stats already on (sysctl) the totals are since then; otherwise they cover only this
    call's interval, so the rates are the useful figures.
    """
    from xdpkit.kernel import program_info_by_id

    def sample() -> dict:
        out = {}
        for pid in prog_ids:
            try:
                info = program_info_by_id(pid)
            except XdpkitError:
                continue  # unloaded meanwhile
            out[pid] = (info.run_cnt, info.run_time_ns)
        return out

    with bpf_stats_enabled() as how:
        t0, first = time.monotonic(), sample()
        if interval > 0:
            time.sleep(interval)
        t1, second = time.monotonic(), sample()
    dt = max(t1 - t0, 1e-9)
    out = {}
    for pid, (cnt, ns) in second.items():
        c0, n0 = first.get(pid, (cnt, ns))
        runs = cnt - c0
        out[pid] = {"run_cnt": cnt, "run_time_ns": ns, "interval_s": round(dt, 3),
                    "runs_per_s": round(runs / dt, 1),
                    "ns_per_run": round((ns - n0) / runs, 1) if runs else None,
                    "enabled_by": how}
    return out
