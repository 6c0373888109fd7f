"""`xdpkit bench prog|live`: per-program cost and end-to-end rate, always beside a reference."""
from __future__ import annotations

import json

from xdpkit.lab import bench
from xdpkit.cli.commands import frames_from_args, parse_consts
from xdpkit.ui.output import emit_json, info, print_table
from xdpkit.ui.args import positive_float, positive_int, repeat_count


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark programs (test-run cost, live rate on a veth pair)")
    bsub = p.add_subparsers(dest="bench_command", metavar="MODE")
    bsub.required = True

    q = bsub.add_parser("prog", help="ns/packet through BPF_PROG_TEST_RUN beside a bare XDP_DROP")
    q.add_argument("object", metavar="OBJ|SRC")
    g = q.add_mutually_exclusive_group()
    g.add_argument("--section", "--sec")
    g.add_argument("--program")
    q.add_argument("--const", action="append", default=[], metavar="NAME=VALUE")
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--packet", metavar="HEX")
    src.add_argument("--pcap", metavar="FILE")
    q.add_argument("--repeat", type=repeat_count, default=1_000_000, help="runs per packet (default 1e6)")
    q.add_argument("--rounds", type=positive_int, default=5, help="alternated rounds; the median is kept")
    q.add_argument("-o", "--output", metavar="FILE.json", help="also write the JSON here")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_prog)

    q = bsub.add_parser("live", help="Mpps on a veth pair driven by the generator, per receiver")
    q.add_argument("--prog", metavar="OBJ|SRC", help="also measure this program as the receiver")
    q.add_argument("--section", "--sec")
    q.add_argument("--receivers", default=",".join(bench.DEFAULT_RECEIVERS),
                   help=f"comma-separated, from: {', '.join(bench.RECEIVERS)} (first is the reference)")
    q.add_argument("--duration", type=positive_float, default=5.0, help="seconds per receiver (>= 3)")
    q.add_argument("--threads", type=positive_int, default=1)
    q.add_argument("--size", type=positive_int, default=64)
    q.add_argument("-o", "--output", metavar="FILE.json")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_live)


def _finish(result: dict, args) -> None:
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


def cmd_prog(args) -> int:
    frames = frames_from_args(args)
    log = None if args.json else info
    result = bench.bench_prog(args.object, frames, section=args.section, program=args.program,
                              consts=parse_consts(args.const), repeat=args.repeat, rounds=args.rounds, log=log)
    _finish(result, args)
    if args.json:
        emit_json(result)
    else:
        print_table([[r["name"], f"{r['ns_per_packet']:.1f}", f"{r['ratio']:.2f}",
                      ",".join(f"{k}:{v}" for k, v in r["verdicts"].items())] for r in result["rows"]],
                    ["PROGRAM", "NS/PACKET", "RATIO", "VERDICTS"])
    return 0


def cmd_live(args) -> int:
    receivers = [r.strip() for r in args.receivers.split(",") if r.strip()]
    log = None if args.json else info
    result = bench.bench_live(receivers=receivers, program=args.prog, section=args.section,
                              duration=args.duration, threads=args.threads, size=args.size, log=log)
    _finish(result, args)
    if args.json:
        emit_json(result)
    else:
        print_table([[r["receiver"], f"{r['mpps']:.2f}", f"{r['ratio']:.2f}", f"{r['sent_mpps']:.2f}",
                      f"{r['cpu_percent']:.0f}%"] for r in result["rows"]],
                    ["RECEIVER", "MPPS", "RATIO", "SENT MPPS", "CPU"])
    return 0
