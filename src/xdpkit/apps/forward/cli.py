"""`xdpkit forward ...`: thin commands over xdpkit.apps.forward.control."""
from __future__ import annotations

import argparse

from xdpkit.apps.forward.control import (DEFAULT_CACHE_SLOTS, DEFAULT_CPU_QUEUE, FIB_FLAGS, MAX_CPU_QUEUE,
                                         Forwarder, StatsRates, cpu_list)
from xdpkit.ui.args import int_range, positive_int
from xdpkit.ui.output import emit_json, info, print_table, show_repeatedly

MODES = ["native", "generic", "auto"]


def cpu_list_arg(text: str) -> list[int]:
    """'0,2-3' -> [0, 2, 3] (an argparse type)."""
    try:
        return cpu_list(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: use CPU numbers and ranges, e.g. 0,2-3") from None


def register(sub) -> None:
    p = sub.add_parser("forward", help="route (and flood) between interfaces at XDP on the kernel's tables")
    fsub = p.add_subparsers(dest="forward_command", metavar="VERB")
    fsub.required = True

    q = fsub.add_parser("load", help="load the forwarding plane on these interfaces (persistent)")
    q.add_argument("ifaces", nargs="+", metavar="IFACE")
    q.add_argument("--mode", choices=MODES, default="auto")
    q.add_argument("--fib", choices=sorted(FIB_FLAGS), default="full",
                   help="full: policy routing rules apply; direct: the main table only (faster)")
    q.add_argument("--cpus", type=cpu_list_arg, default=[], metavar="LIST",
                   help="send what goes to the stack to these CPUs by flow hash (CPUMAP), e.g. 0-1")
    q.add_argument("--cpu-queue", type=int_range(1, MAX_CPU_QUEUE), default=DEFAULT_CPU_QUEUE,
                   help="frames each CPU's CPUMAP queue holds")
    q.add_argument("--flood", action="store_true",
                   help="send broadcast and multicast frames out of every other member")
    q.add_argument("--cache-slots", type=int_range(0, 1 << 20), default=DEFAULT_CACHE_SLOTS,
                   help="next hops each CPU remembers (a power of two; 0: look up every packet)")
    q.add_argument("--force", action="store_true", help="replace a program xdpkit did not attach")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_load)

    q = fsub.add_parser("unload", help="detach the plane on IFACE, or every plane here")
    q.add_argument("iface", nargs="?", metavar="IFACE")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_unload)

    q = fsub.add_parser("status", help="the planes loaded in this namespace")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_status)

    q = fsub.add_parser("demo", help="the plane at work on its own router lab (part of `make demo`)")
    q.add_argument("--name", default="xfwdemo", help="lab name to use")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_demo)

    q = fsub.add_parser("stats", help="what happened to the frames, per reason")
    q.add_argument("iface", nargs="?", metavar="IFACE", help="a member (default: the only plane here)")
    q.add_argument("--json", action="store_true")
    q.add_argument("--watch", action="store_true", help="refresh every second with rates (Ctrl-C stops)")
    q.add_argument("--count", type=positive_int, help="with --watch: stop after this many refreshes")
    q.set_defaults(func=cmd_stats)


def cmd_load(args) -> int:
    with Forwarder.load(args.ifaces, mode=args.mode, fib=args.fib, cpus=args.cpus, cpu_queue=args.cpu_queue,
                        flood=args.flood, cache_slots=args.cache_slots, force=args.force) as fwd:
        plane = fwd.plane()
    if args.json:
        emit_json(plane)
    else:
        print(f"forwarding plane (program {plane['program']}) on {', '.join(plane['members'])}")
        if not plane["cache_slots"]:
            info("note: no next-hop memory (--cache-slots 0): every packet is looked up")
    return 0


def cmd_unload(args) -> int:
    removed = Forwarder.unload(args.iface)
    if args.json:
        emit_json(removed)
    elif not removed:
        print("no forwarding plane here")
    for plane in ([] if args.json else removed):
        print(f"unloaded forwarding plane (program {plane['program']}) from {', '.join(plane['members'])}")
    return 0


def cmd_status(args) -> int:
    planes = Forwarder.planes()
    if args.json:
        emit_json(planes)
        return 0
    rows = [[p["program"], ",".join(f"{a['ifname']}({a['mode']})" for a in p["attached"]), p["fib"],
             p["cache_slots"] or "off", ",".join(map(str, p["cpus"])) or "-", "yes" if p["flood"] else "no"]
            for p in planes]
    print_table(rows, ["PROGRAM", "MEMBERS", "FIB", "NEXT HOPS", "CPUS", "FLOOD"],
                empty="no forwarding plane here (load one: xdpkit forward load IFACE...)")
    return 0


def _show(data: dict) -> None:
    rows = [[name, e["packets"], e["bytes"], f"{e['pps']:.0f}" if "pps" in e else ""]
            for name, e in data["events"].items() if e["packets"] or name in ("forwarded", "looked_up")]
    print_table(rows, ["EVENT", "PACKETS", "BYTES", "PPS"])
    print(f"forwarded {data['forwarded']}, to the stack {data['to_stack']}, dropped {data['dropped']}")


def cmd_stats(args) -> int:
    with Forwarder.open_plane(args.iface) as fwd:
        rates = StatsRates(fwd.stats)
        return show_repeatedly(rates.read, _show, as_json=args.json, watch=args.watch, count=args.count)



def cmd_demo(args) -> int:
    from xdpkit.apps.forward.demo import run_demo

    result = run_demo(lab_name=args.name, log=None if args.json else (lambda m: print(m, flush=True)))
    if args.json:
        emit_json(result)
    return 0 if result["ok"] else 1
