"""`xdpkit doctor`, `trace`, `lab` and `demo`."""
from __future__ import annotations



from xdpkit.ui.output import emit_json, print_table
from xdpkit.ui.args import positive_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check this machine (kernel, BPF, bpffs, tracefs, clang, NICs)")
    p.add_argument("ifaces", nargs="*", metavar="IFACE")
    p.add_argument("--probe", action="store_true",
                   help="really attach a pass-all program in native mode to test support "
                        "(may reset the link on physical NICs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("trace", help="stream bpf_printk output")
    p.add_argument("--duration", type=positive_float, help="stop after this many seconds")
    p.add_argument("--count", type=positive_int, help="stop after this many lines")
    p.add_argument("--match", help="only lines containing this text")
    p.add_argument("--program", metavar="NAME|ID",
                   help="only what this program printed (by its kernel stack; does not consume trace_pipe)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("lab", help="the virtual lab of network namespaces")
    lsub = p.add_subparsers(dest="lab_command", metavar="VERB")
    lsub.required = True
    for verb, helptext in (("up", "build the lab (idempotent)"), ("down", "remove everything it made"),
                           ("status", "show the lab")):
        q = lsub.add_parser(verb, help=helptext)
        q.add_argument("--name", default="xdpkit")
        if verb == "up":
            q.add_argument("--router", action="store_true",
                           help="the router lab: a third network behind the dut, end hosts' checksum offload off")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_lab)

    p = sub.add_parser("demo", help="the tutorial flow on the lab: count packets per EtherType")
    p.add_argument("--name", default="xdpdemo", help="lab name to use")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_doctor(args) -> int:
    from xdpkit.features import run_checks

    checks = run_checks(args.ifaces or None, probe=args.probe)
    if args.json:
        emit_json([c.to_dict() for c in checks])
    else:
        print_table([[c.status.upper(), c.name, c.detail] for c in checks], ["STATUS", "CHECK", "DETAIL"])
        fixes = [c for c in checks if c.status != "ok" and c.fix]
        for c in fixes:
            print(f"fix {c.name}: {c.fix}")
    return 1 if any(c.status == "fail" for c in checks) else 0


def cmd_trace(args) -> int:
    import json

    from xdpkit.observe.trace import stream

    for line in stream(duration=args.duration, count=args.count, match=args.match, program=args.program):
        if args.json:
            print(json.dumps(line.to_dict()), flush=True)
        else:
            print(line.raw, flush=True)
    return 0


def cmd_lab(args) -> int:
    from xdpkit.lab import Lab

    lab = Lab(args.name, router=getattr(args, "router", False))
    if args.lab_command != "up":  # down and status follow what exists
        lab = Lab.existing(args.name)
    if args.lab_command == "up":
        result = lab.up()
        if args.json:
            emit_json(result)
        else:
            _print_lab(lab.status())
    elif args.lab_command == "down":
        removed = lab.down()
        if args.json:
            emit_json({"removed": removed})
        else:
            print("removed " + (", ".join(removed) if removed else "nothing (no such lab)"))
    else:
        status = lab.status()
        if args.json:
            emit_json(status)
        else:
            _print_lab(status)
    return 0


def _print_lab(status: dict) -> None:
    if not status.get("exists"):
        print(f"lab {status.get('name')} is down")
        return
    rows = []
    for ns in status["namespaces"]:
        for itf in ns["interfaces"]:
            xdp = ",".join(f"{a['name']}({a['mode']})" for a in itf.get("xdp", [])) or "-"
            rows.append([ns["name"], itf["ifname"], itf["ifindex"], itf.get("mac", ""),
                         " ".join(itf.get("addresses", [])), xdp])
    print_table(rows, ["NAMESPACE", "IFACE", "IFINDEX", "MAC", "ADDRESSES", "XDP"])


def cmd_demo(args) -> int:
    from xdpkit.lab.demo import run_demo

    result = run_demo(lab_name=args.name, log=None if args.json else (lambda m: print(m, flush=True)))
    if args.json:
        emit_json(result)
    return 0 if result.get("ok") else 1
