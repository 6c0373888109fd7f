"""Core verbs: compile, load, unload, status, run."""
from __future__ import annotations

from collections import Counter

from xdpkit import pcap, xdp
from xdpkit.ui.output import emit_json, info, print_table
from xdpkit.compile import compile_file
from xdpkit.errors import ConfigError
from xdpkit.object import ObjectSpec
from xdpkit.program import Verdict
from xdpkit.ui.args import positive_float, repeat_count

MODES = ["native", "generic", "offload", "auto"]


def register(sub) -> None:
    p = sub.add_parser("compile", help="compile BPF C to an object with clang")
    p.add_argument("source")
    p.add_argument("-o", "--output", help="object path (default: the content-addressed cache)")
    p.add_argument("-I", dest="include", action="append", default=[], help="extra include dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("load", help="attach an XDP program to an interface (persistent)")
    p.add_argument("iface")
    p.add_argument("object", metavar="OBJ|SRC")
    _add_select(p)
    p.add_argument("--mode", choices=MODES, default="auto")
    p.add_argument("--force", action="store_true", help="replace a program xdpkit did not attach")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("unload", help="detach the XDP program from an interface")
    p.add_argument("iface")
    p.add_argument("--mode", choices=MODES, default=None, help="only the program in this mode")
    p.add_argument("--force", action="store_true", help="detach a program xdpkit did not attach")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_unload)

    p = sub.add_parser("status", help="XDP programs attached in this network namespace")
    p.add_argument("iface", nargs="?")
    p.add_argument("--stats", action="store_true",
                   help="run count and run time per program (kernel BPF stats, enabled while measuring)")
    p.add_argument("--interval", type=positive_float, default=1.0, help="measuring time for --stats (default 1 s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("run", help="run packets through a program (BPF_PROG_TEST_RUN)")
    p.add_argument("object", metavar="OBJ|SRC")
    _add_select(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--packet", metavar="HEX", help="one frame as hex")
    src.add_argument("--pcap", metavar="FILE", help="run every frame of a capture")
    p.add_argument("--repeat", type=repeat_count, default=1, help="runs per frame (mean time reported)")
    p.add_argument("--ingress-iface", metavar="IFACE", help="set ctx ingress_ifindex from an interface")
    p.add_argument("-w", "--write", metavar="OUT.pcap", help="write the output frames")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)


def _add_select(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--section", "--sec", help="program by ELF section (e.g. xdp_drop_udp)")
    g.add_argument("--program", help="program by function name")
    p.add_argument("--const", action="append", default=[], metavar="NAME=VALUE",
                   help="set a const volatile global before load (repeatable)")


def parse_consts(items: list[str]) -> list[tuple[str, str]]:
    """--const NAME=VALUE arguments as pairs (the values are parsed by the global's BTF type)."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--const needs NAME=VALUE, got {item!r}")
        out.append((name, value))
    return out


def _open_spec(args) -> ObjectSpec:
    spec = ObjectSpec.from_file(args.object)
    try:
        spec.select(section=args.section, program=args.program)
        for name, value in parse_consts(args.const):
            spec.rodata[name] = value
    except BaseException:
        spec.close()
        raise
    return spec


def cmd_compile(args) -> int:
    out = compile_file(args.source, args.output, include_dirs=args.include)
    if args.json:
        emit_json({"source": args.source, "object": str(out)})
    else:
        print(out)
    return 0


def cmd_load(args) -> int:
    from xdpkit.interfaces import ifindex_of, ifname_of

    ifname_of(ifindex_of(args.iface))  # a missing interface is the one error, before compiling
    spec = _open_spec(args)
    with spec.load() as obj:
        prog = next(iter(obj.programs.values()))
        link = prog.attach(args.iface, mode=args.mode, netlink=True, force=args.force)
        if link.note:
            info(f"note: {link.note}")
        result = {"ifname": link.ifname, "ifindex": link.ifindex, "mode": link.mode.value,
                  "id": prog.id, "name": prog.info().name, "tag": prog.tag}
    if args.json:
        emit_json(result)
    else:
        print(f"attached {result['name']} (id {result['id']}) to {result['ifname']} in {result['mode']} mode")
    return 0


def cmd_unload(args) -> int:
    att = xdp.detach(args.iface, force=args.force, mode=args.mode)
    if args.json:
        emit_json(att.to_dict())
    else:
        print(f"detached {att.name} (id {att.id}) from {att.ifname} ({att.mode.value} mode)")
    return 0


def cmd_status(args) -> int:
    atts = xdp.query(args.iface)
    if args.stats:
        return _status_stats(args, atts)
    if args.json:
        emit_json([a.to_dict() for a in atts])
        return 0
    rows = [[a.ifname, a.ifindex, a.mode.value, a.id, a.name, a.tag,
             ",".join(f"{m.name}({m.id})" for m in a.maps) or "-",
             "xdpkit" if a.ours else "other", f"link {a.link_id}" if a.link_id else "netlink"]
            for a in atts]
    print_table(rows, ["IFACE", "IFINDEX", "MODE", "ID", "NAME", "TAG", "MAPS", "OWNER", "VIA"],
                empty="no XDP programs attached" + (f" to {args.iface}" if args.iface else ""))
    return 0


def _status_stats(args, atts) -> int:
    from xdpkit.observe.stats import run_stats

    stats = run_stats(sorted({a.id for a in atts}), interval=args.interval) if atts else {}
    if args.json:
        emit_json([dict(a.to_dict(), stats=stats.get(a.id)) for a in atts])
        return 0
    rows = []
    for a in atts:
        st = stats.get(a.id)
        if st is None:
            continue  # unloaded while we measured
        total = f"{st['run_cnt']} runs, {st['run_time_ns'] / 1e6:.3f} ms"
        per = "-" if st["ns_per_run"] is None else f"{st['ns_per_run']:.1f}"
        rows.append([a.ifname, a.mode.value, a.id, a.name, f"{st['runs_per_s']:.1f}", per, total])
    print_table(rows, ["IFACE", "MODE", "ID", "NAME", "RUNS/S", "NS/RUN", "TOTAL"],
                empty="no XDP programs attached" + (f" to {args.iface}" if args.iface else ""))
    if rows and stats and next(iter(stats.values()))["enabled_by"] == "command":
        info(f"kernel BPF stats were enabled for {args.interval:g} s only; totals cover that time "
             "(sysctl -w kernel.bpf_stats_enabled=1 keeps them counting)")
    return 0


def _parse_hex_packet(text: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "").removeprefix("0x")
    try:
        frame = bytes.fromhex(cleaned)
    except ValueError:
        raise ConfigError(f"--packet must be hex bytes, got {text[:40]!r}") from None
    if not frame:
        raise ConfigError("--packet is empty; give a frame as hex bytes (at least an Ethernet header)")
    return frame


def frames_from_args(args) -> list[bytes]:
    """The frames of --packet HEX or --pcap FILE (run and bench prog share these options)."""
    if args.packet is not None:
        return [_parse_hex_packet(args.packet)]
    frames = list(pcap.read_frames(args.pcap))
    if not frames:
        raise ConfigError(f"{args.pcap} holds no frames")
    return frames


def cmd_run(args) -> int:
    from xdpkit.interfaces import ifindex_of

    ingress = ifindex_of(args.ingress_iface) if args.ingress_iface else None
    frames = frames_from_args(args)
    spec = _open_spec(args)
    with spec.load() as obj:
        prog = next(iter(obj.programs.values()))
        results = []
        for i, frame in enumerate(frames):
            try:
                results.append(prog.run(frame, repeat=args.repeat, ingress_ifindex=ingress))
            except ConfigError as exc:
                raise ConfigError(f"frame {i + 1}: {exc}") from None
    if args.write:
        kept = [r.data for r in results if r.verdict not in (Verdict.XDP_DROP, Verdict.XDP_ABORTED)]
        n = pcap.write_frames(args.write, kept)
        info(f"wrote {n} output frames to {args.write}")
    if args.packet is not None:
        r = results[0]
        if args.json:
            emit_json(r.to_dict())
        else:
            name = r.verdict.name if isinstance(r.verdict, Verdict) else r.verdict
            print(f"verdict: {name}\nduration: {r.duration_ns} ns\ndata: {r.data.hex()}")
        return 0
    counts = Counter(r.verdict.name if isinstance(r.verdict, Verdict) else str(r.verdict) for r in results)
    mean = sum(r.duration_ns for r in results) / len(results)
    if args.json:
        emit_json({"packets": len(results), "verdicts": dict(counts), "mean_duration_ns": round(mean, 1),
                   "results": [r.to_dict() for r in results]})
    else:
        print_table([[v, n, f"{100 * n / len(results):.1f}%"] for v, n in counts.most_common()],
                    ["VERDICT", "PACKETS", "SHARE"])
        print(f"{len(results)} packets, mean {mean:.1f} ns per run")
    return 0
