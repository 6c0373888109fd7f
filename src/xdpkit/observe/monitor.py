"""System-wide XDP events from the kernel's xdp tracepoints (``xdpkit monitor``).

observe/monitor.bpf.c has one tp_btf program per tracepoint, each counting hits per (event,
namespace, interface, program, action, errno, target) in a per-CPU hash. Every tracepoint is
probed first; the ones this kernel lacks (xdp_redirect_map_err went away in 6.16) are reported
and not loaded, never fatal. Python reads the whole hash once per interval (one batch lookup)
and reports what changed, so an error storm costs the same as a single error.

Tracepoints are global: events from every network namespace are seen. Interface names are
resolved in the namespace the device lives in when that namespace has a name (/run/netns).
"""
from __future__ import annotations

import errno as E
import os
import time
from dataclasses import asdict, dataclass

from xdpkit.errors import KernelError, NotFoundError, NotSupportedError, XdpkitError
from xdpkit.kernel import VERDICT_NAMES

#: Tracepoints in category "xdp", by the event number the BPF side uses (observe/monitor.h).
EVENTS = ("xdp_exception", "xdp_redirect_err", "xdp_redirect_map_err", "xdp_devmap_xmit",
          "xdp_cpumap_enqueue", "xdp_cpumap_kthread")
ACTIONS = VERDICT_NAMES  # the action a tracepoint reports is an XDP verdict


def program_for(event: str) -> str:
    return "xdpkit_mon_" + event.removeprefix("xdp_")


@dataclass
class Probe:
    event: str
    available: bool
    detail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def probe(events=EVENTS) -> list[Probe]:
    """Whether each tracepoint exists here (tracefs; the kernel's BTF when tracefs is unavailable)."""
    from xdpkit.features import tracepoint_exists
    from xdpkit.kernel import vmlinux_has_tracepoint

    out = []
    for ev in events:
        try:
            ok = tracepoint_exists("xdp", ev)
            detail = "" if ok else "no such tracepoint in this kernel"
        except XdpkitError as exc:  # tracefs cannot be mounted: the BTF typedef is as good here
            ok = vmlinux_has_tracepoint(ev)
            detail = f"checked in BTF ({exc})" if ok else f"not in this kernel's BTF ({exc})"
        out.append(Probe(ev, ok, detail))
    return out


@dataclass
class EventCount:
    """Hits of one (event, device, program, action, errno, target) key: totals or a delta."""

    event: str
    netns: int
    ifindex: int
    ifname: str
    prog_id: int
    prog_name: str
    action: str
    err: int
    errno: str
    target: int
    map_id: int
    events: int
    packets: int
    drops: int

    def to_dict(self) -> dict:
        return asdict(self)


class _Names:
    """ifindex -> name in the device's own namespace, program id -> name; cached per read."""

    def __init__(self):
        self._own = os.stat("/proc/thread-self/ns/net").st_ino
        self._named: dict[int, str] | None = None
        self._cache: dict = {}

    def _namespaces(self) -> dict[int, str]:
        if self._named is None:
            from xdpkit import netns as xns

            self._named = {}
            for name in xns.list_namespaces():
                try:
                    self._named[xns.id_of(name)] = name
                except OSError:
                    continue
        return self._named

    def ifname(self, netns: int, ifindex: int) -> str:
        if not ifindex:
            return ""
        key = ("if", netns, ifindex)
        if key not in self._cache:
            self._cache[key] = self._lookup_if(netns, ifindex)
        return self._cache[key]

    def _lookup_if(self, netns: int, ifindex: int) -> str:
        from xdpkit import interfaces as nl
        from xdpkit import netns as xns

        try:
            if netns in (0, self._own):
                return nl.ifname_of(ifindex)
            name = self._namespaces().get(netns)
            if name is None:
                return f"if{ifindex}@netns:{netns}"
            with xns.inside(name):
                return f"{nl.ifname_of(ifindex)}@{name}"
        except (NotFoundError, OSError, XdpkitError):
            return f"if{ifindex}"

    def program(self, prog_id: int) -> str:
        if not prog_id:
            return ""
        key = ("prog", prog_id)
        if key not in self._cache:
            from xdpkit.kernel import program_info_by_id

            try:
                self._cache[key] = program_info_by_id(prog_id).name
            except XdpkitError:
                self._cache[key] = ""  # unloaded since
        return self._cache[key]


def _errno_name(err: int) -> str:
    return E.errorcode.get(-err, str(-err)) if err < 0 else ""


def _action_name(act: int) -> str:
    return ACTIONS[act] if 0 <= act < len(ACTIONS) else str(act)


class Monitor:
    """Load and attach the monitor programs for the tracepoints that exist; read their counts.

    ``with Monitor() as mon: ... mon.poll()`` -> list of EventCount deltas since the last poll.
    ``probes`` says which tracepoints are monitored and why others are not.
    """

    def __init__(self, events=None):
        events = list(events or EVENTS)
        unknown = [e for e in events if e not in EVENTS]
        if unknown:
            from xdpkit.errors import ConfigError

            raise ConfigError(f"unknown XDP event(s) {', '.join(unknown)}; known: {', '.join(EVENTS)}")
        self.events = events
        self.probes: list[Probe] = []
        self._obj = None
        self._links: list = []  # OwnedFd of each raw tracepoint link
        self._prev: dict = {}
        self.lost = 0

    @property
    def monitored(self) -> list[str]:
        return [p.event for p in self.probes if p.available]

    def open(self) -> "Monitor":
        from xdpkit.builtin import builtin_object
        from xdpkit.kernel import raw_tracepoint_open
        from xdpkit.object import ObjectSpec

        self.probes = probe(self.events)
        if not self.monitored:
            why = "; ".join(f"{p.event}: {p.detail}" for p in self.probes)
            hint = "the kernel needs CONFIG_BPF_EVENTS and the xdp tracepoints; see `xdpkit doctor`"
            if self.events != list(EVENTS):
                hint = ("monitor without --events to use every tracepoint this kernel has (map redirect "
                        "errors come through xdp_redirect_err; xdp_redirect_map_err is gone since 6.16)")
            raise NotSupportedError(f"XDP tracepoints ({why})", hint=hint)
        spec = ObjectSpec.from_file(builtin_object("monitor"))
        wanted = {program_for(e) for e in self.monitored}
        for name, ps in spec.programs.items():
            ps.autoload = name in wanted
        self._obj = spec.load()
        try:
            for p in self.probes:
                if not p.available:
                    continue
                try:
                    link = raw_tracepoint_open(self._obj.programs[program_for(p.event)].fd)
                except KernelError as exc:  # exists but cannot be attached: report it like a missing one
                    p.available, p.detail = False, f"attach failed: {os.strerror(exc.errno)}"
                    continue
                self._links.append(link)
            if not self._links:
                raise KernelError("BPF_RAW_TRACEPOINT_OPEN", E.EOPNOTSUPP, "attaching to XDP tracepoints",
                                  hint="; ".join(f"{p.event}: {p.detail}" for p in self.probes))
        except BaseException:
            self.close()
            raise
        self._prev = self._read_raw()
        return self

    def _read_raw(self) -> dict:
        if self._obj is None:
            raise XdpkitError("the monitor is not open")
        out = {}
        for key, per_cpu in self._obj.maps["xdpkit_mon_events"].items():  # one batch lookup
            v = per_cpu.sum()
            out[tuple(key[f] for f in ("event", "netns", "ifindex", "prog_id", "action", "err",
                                       "target", "map_id"))] = (v["events"], v["packets"], v["drops"])
        self.lost = self._obj.maps["xdpkit_mon_lost"][0].sum()
        return out

    def _rows(self, counts: dict) -> list[EventCount]:
        names = _Names()
        rows = []
        for (ev, netns, ifindex, prog_id, act, err, target, map_id), (n, pk, dr) in sorted(counts.items()):
            rows.append(EventCount(
                event=EVENTS[ev] if ev < len(EVENTS) else str(ev), netns=netns, ifindex=ifindex,
                ifname=names.ifname(netns, ifindex), prog_id=prog_id, prog_name=names.program(prog_id),
                action=_action_name(act), err=err, errno=_errno_name(err), target=target, map_id=map_id,
                events=n, packets=pk, drops=dr))
        return rows

    def totals(self) -> list[EventCount]:
        """Everything counted since the monitor started."""
        return self._rows(self._read_raw())

    def poll(self) -> list[EventCount]:
        """What happened since the previous poll (or since open)."""
        cur = self._read_raw()
        delta = {}
        for key, (n, pk, dr) in cur.items():
            pn, ppk, pdr = self._prev.get(key, (0, 0, 0))
            if n != pn:
                delta[key] = (n - pn, pk - ppk, dr - pdr)
        self._prev = cur
        return self._rows(delta)

    def watch(self, *, interval: float = 1.0, duration: float | None = None, count: int | None = None):
        """Yield (timestamp, deltas) every ``interval`` s; stop after ``duration`` s or once
        ``count`` events were seen (deltas may overshoot within the last interval)."""
        start = time.monotonic()
        seen = 0
        while True:
            wait = interval
            if duration is not None:
                wait = min(wait, start + duration - time.monotonic())
            if wait > 0:
                time.sleep(wait)
            rows = self.poll()
            seen += sum(r.events for r in rows)
            yield time.time(), rows
            if count is not None and seen >= count:
                return
            if duration is not None and time.monotonic() - start >= duration:
                return

    def close(self) -> None:
        links, self._links = self._links, []
        for link in links:
            link.close()  # closing the raw tracepoint link detaches it
        obj, self._obj = self._obj, None
        if obj is not None:
            obj.close()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
