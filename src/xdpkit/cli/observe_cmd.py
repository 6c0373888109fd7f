"""`xdpkit stats`, `monitor` and `exporter`: observability verbs."""
from __future__ import annotations

import json
import sys
import time

from xdpkit.ui.output import emit_json, info, print_table
from xdpkit.ui.args import positive_float, positive_int

MODES = ["native", "generic", "auto"]


def register(sub) -> None:
    p = sub.add_parser("stats", help="live packets/s and bits/s per EtherType, IP protocol and verdict")
    p.add_argument("iface")
    p.add_argument("--interval", type=positive_float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--once", action="store_true", help="print one sample and exit")
    p.add_argument("--count", type=positive_int, help="stop after this many samples")
    p.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    p.add_argument("--mode", choices=MODES, default="auto",
                   help="mode for the statistics program when xdpkit attaches it")
    p.add_argument("--json", action="store_true", help="one JSON object per sample")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("monitor", help="system-wide XDP events (exceptions, redirect errors, "
                                       "devmap/cpumap transmit) from tracepoints")
    p.add_argument("--interval", type=positive_float, default=1.0, help="seconds between reports (default 1)")
    p.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    p.add_argument("--count", type=positive_int, help="stop once this many events were seen")
    p.add_argument("--events", help="comma-separated tracepoints (default: all that exist)")
    p.add_argument("--json", action="store_true", help="JSON lines: a probe line, then event lines")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("exporter", help="Prometheus endpoint for the xdpkit programs in this namespace")
    p.add_argument("--listen", default="127.0.0.1:9435", metavar="HOST:PORT",
                   help="where to serve /metrics (default 127.0.0.1:9435); PORT or :PORT alone "
                        "listens on every address of this namespace")
    p.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    p.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    p.add_argument("--bpf-stats", action="store_true",
                   help="enable kernel BPF run-time stats while running (costs ~2 clock reads per run)")
    p.add_argument("--max-series", type=positive_int, default=1000,
                   help="keys per app counter map before the rest are summed as _other")
    p.add_argument("--json", action="store_true", help="print where it listens as JSON")
    p.set_defaults(func=cmd_exporter)


# ---- stats ------------------------------------------------------------------------------------

def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _print_sample(s: dict, clear: bool) -> None:
    if clear:
        sys.stdout.write("\x1b[H\x1b[2J")
    prog = s["program"]
    print(f"{s['ifname']}: {prog['name']} (id {prog['id']}, {prog['mode']}, "
          f"{'app counters' if s['source'] == 'app' else 'attached by xdpkit stats'}), "
          f"interval {s['interval_s']:.2f} s")
    rows = []
    for group, title in (("etype", "ethertype"), ("proto", "protocol"), ("verdict", "verdict")):
        for name, r in s.get(group, {}).items():
            if r["packets"] or r["pps"]:
                rows.append([title, name, _si(r["pps"], "pps"), _si(r["bps"], "bps"), r["packets"], r["bytes"]])
    t = s["total"]
    rows.append(["total", "", _si(t["pps"], "pps"), _si(t["bps"], "bps"), t["packets"], t["bytes"]])
    print_table(rows, ["GROUP", "NAME", "RATE", "BITRATE", "PACKETS", "BYTES"])
    sys.stdout.flush()


def cmd_stats(args) -> int:
    from xdpkit.observe.stats import StatsSession

    count = 1 if args.once else args.count
    clear = sys.stdout.isatty() and not args.json and not args.once
    with StatsSession(args.iface, mode=args.mode) as session:
        if session.note:
            info(f"note: {session.note}")
        if session.source == "attached" and not args.json:
            info(f"attached the statistics program to {args.iface}; it is removed on exit")
        for s in session.samples(interval=args.interval, count=count, duration=args.duration):
            if args.json:
                print(json.dumps(s), flush=True)
            else:
                _print_sample(s, clear)
    return 0


# ---- monitor ----------------------------------------------------------------------------------

def _event_row(ts: float, r) -> list:
    detail = []
    if r.errno:
        detail.append(r.errno)
    if r.target:
        detail.append(f"target {r.target}")
    if r.map_id:
        detail.append(f"map {r.map_id}")
    prog = f"{r.prog_name}({r.prog_id})" if r.prog_id else "-"
    return [time.strftime("%H:%M:%S", time.localtime(ts)), r.event, r.ifname or "-", prog, r.action,
            " ".join(detail) or "-", r.events, r.packets, r.drops]


def cmd_monitor(args) -> int:
    from xdpkit.observe.monitor import Monitor

    events = [e.strip() for e in args.events.split(",") if e.strip()] if args.events else None
    with Monitor(events) as mon:
        if args.json:
            print(json.dumps({"type": "probe", "probes": [p.to_dict() for p in mon.probes]}), flush=True)
        else:
            info("monitoring " + ", ".join(mon.monitored))
            for p in mon.probes:
                if not p.available:
                    info(f"skipped {p.event}: {p.detail}")
        header = True
        for ts, rows in mon.watch(interval=args.interval, duration=args.duration, count=args.count):
            if args.json:
                for r in rows:
                    print(json.dumps(dict(r.to_dict(), type="event", time=round(ts, 3))), flush=True)
                continue
            if rows:
                from xdpkit.ui.output import table

                text = table([_event_row(ts, r) for r in rows],
                             ["TIME", "EVENT", "IFACE", "PROGRAM", "ACTION", "DETAIL", "EVENTS", "PACKETS",
                              "DROPS"])
                print(text if header else "\n".join(text.splitlines()[1:]), flush=True)
                header = False
        if mon.lost:
            info(f"warning: {mon.lost} events were not counted (event table full)")
    return 0


# ---- exporter ---------------------------------------------------------------------------------

def cmd_exporter(args) -> int:
    from xdpkit.apps.firewall import metrics as firewall_metrics
    from xdpkit.apps.forward import metrics as forward_metrics
    from xdpkit.apps.lb import metrics as lb_metrics
    from xdpkit.observe.exporter import Exporter, register_app_collector

    register_app_collector(firewall_metrics.collect)
    register_app_collector(lb_metrics.collect)
    register_app_collector(forward_metrics.collect)

    ex = Exporter(args.listen, max_series=args.max_series, bpf_stats=args.bpf_stats)
    if args.once:
        try:
            sys.stdout.write(ex.render())
        finally:
            ex.collector.close()
        return 0
    with ex:
        if args.json:
            emit_json({"listen": f"{ex.host}:{ex.port}", "url": ex.url})
            sys.stdout.flush()
        else:
            print(f"serving {ex.url}", flush=True)
        ex.serve(args.duration)
    return 0
