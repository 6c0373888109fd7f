"""`xdpkit firewall ...`: thin commands over xdpkit.apps.firewall.control."""
from __future__ import annotations


from xdpkit.apps.firewall.control import Firewall, load_config_file, plan
from xdpkit.apps.firewall.rules import RuleSet, parse_rule
from xdpkit.ui.output import emit_json, info, print_table, show_repeatedly
from xdpkit.ui.args import positive_int

MODES = ["native", "generic", "auto"]


def register(sub) -> None:
    p = sub.add_parser("firewall", help="DDoS-mitigation firewall at XDP")
    fsub = p.add_subparsers(dest="fw_command", metavar="VERB")
    fsub.required = True

    q = fsub.add_parser("load", help="load and attach the firewall (persistent)")
    q.add_argument("iface")
    q.add_argument("--config", metavar="FILE")
    q.add_argument("--mode", choices=MODES, default="auto")
    q.add_argument("--force", action="store_true", help="replace a program xdpkit did not attach")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_load)

    q = fsub.add_parser("unload", help="detach the firewall")
    q.add_argument("iface")
    q.set_defaults(func=cmd_unload)

    q = fsub.add_parser("apply", help="replace the whole rule set atomically")
    q.add_argument("iface")
    q.add_argument("config", metavar="CONFIG")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_apply)

    q = fsub.add_parser("check", help="validate a config and predict its kernel memory, without the kernel")
    q.add_argument("config", metavar="CONFIG")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_check)

    q = fsub.add_parser("rule", help="add, delete or list rules")
    rsub = q.add_subparsers(dest="rule_command", metavar="VERB")
    rsub.required = True
    r = rsub.add_parser("add", help="add one rule (at the end, or --at N)")
    r.add_argument("iface")
    r.add_argument("rule", nargs="+")
    r.add_argument("--at", type=positive_int, metavar="N", help="position (1 = first)")
    r.set_defaults(func=cmd_rule_add)
    r = rsub.add_parser("del", help="delete a rule by number or text")
    r.add_argument("iface")
    r.add_argument("rule", nargs="+", metavar="N|RULE")
    r.set_defaults(func=cmd_rule_del)
    r = rsub.add_parser("list", help="the rules in force, in priority order")
    r.add_argument("iface")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_rule_list)

    q = fsub.add_parser("stats", help="counters per rule, per reason and per verdict")
    q.add_argument("iface")
    q.add_argument("--json", action="store_true")
    q.add_argument("--watch", action="store_true", help="refresh every second (Ctrl-C stops)")
    q.add_argument("--count", type=positive_int, help="with --watch: stop after this many refreshes")
    q.set_defaults(func=cmd_stats)


def _progress(done: int, total: int) -> None:
    if total >= 100_000:
        info(f"  {done:,}/{total:,} table entries ({100 * done // max(total, 1)}%)")


def cmd_load(args) -> int:
    rs = load_config_file(args.config) if args.config else RuleSet()
    fw = Firewall.load(args.iface, rs, mode=args.mode, force=args.force, progress=_progress)
    try:
        result = {"ifname": fw.ifname, "program_id": fw.prog_id, "rules": len(rs.rules)}
    finally:
        fw.close()
    if args.json:
        emit_json(result)
    else:
        print(f"firewall loaded on {result['ifname']} (program {result['program_id']}) with {result['rules']} rules")
    return 0


def cmd_unload(args) -> int:
    Firewall.unload(args.iface)
    print(f"firewall unloaded from {args.iface}")
    return 0


def cmd_check(args) -> int:
    rs = load_config_file(args.config)
    p = plan(rs)  # exactly what apply checks before its first write
    memory = p.memory()
    tables = {k: {"prefix_intervals": t.intervals, "nodes": t.nodes, "bytes": t.nbytes, "depth": t.depth}
              for k, t in p.compiled.prefix_tables.items()}
    if args.json:
        emit_json({"config": args.config, "rules": len(rs.rules), "classes": len(p.compiled.classes),
                   "prefix_tables": tables, "memory_bytes": sum(memory.values()), "memory_by_map": memory})
        return 0
    print(f"{args.config}: {len(rs.rules)} rules, {len(p.compiled.classes)} classes: OK")
    for k, t in tables.items():
        print(f"  {k} prefix table: {t['prefix_intervals']:,} intervals, {t['nodes']:,} nodes, "
              f"{t['bytes'] / 2**20:.1f} MiB, depth {t['depth']}")
    print(f"  kernel memory when loaded: {sum(memory.values()) / 2**20:.1f} MiB "
          f"(fixed maps {sum(memory[k] for k in memory if k not in p.sizes.memory()) / 2**20:.1f} MiB)")
    return 0


def cmd_apply(args) -> int:
    rs = load_config_file(args.config)  # a bad line fails here: nothing is applied
    with Firewall.open(args.iface, on_wait=info) as fw:
        res = fw.apply(rs, progress=_progress)
    if args.json:
        emit_json(res.__dict__)
    else:
        print(f"applied {res.rules} rules ({res.entries:,} table entries, {res.classes} classes) "
              f"in {res.seconds:.2f} s")
    return 0


def cmd_rule_add(args) -> int:
    text = " ".join(args.rule)
    parse_rule(text)  # clear error before touching the kernel
    with Firewall.open(args.iface, on_wait=info) as fw:
        fw.add_rule(text, position=args.at)
    return 0


def cmd_rule_del(args) -> int:
    with Firewall.open(args.iface, on_wait=info) as fw:
        fw.delete_rule(" ".join(args.rule))
    return 0


def cmd_rule_list(args) -> int:
    with Firewall.open(args.iface) as fw:
        rs = fw.ruleset()
    if args.json:
        emit_json({"policy": rs.policy, "malformed": rs.malformed, "non_ip": rs.non_ip,
                   "rules": [{"index": i + 1, "rule": r.text} for i, r in enumerate(rs.rules)]})
        return 0
    print(" ".join(rs.settings_text()))
    print_table([[i + 1, r.text] for i, r in enumerate(rs.rules)], ["#", "RULE"], empty="no rules")
    return 0


def _print_stats(s: dict) -> None:
    print_table([[r["index"], r["packets"], r["bytes"], r["rule"]] for r in s["rules"]],
                ["#", "PACKETS", "BYTES", "RULE"], empty="no rules")
    print()
    print_table([[k, v["packets"], v["bytes"]] for k, v in s["reasons"].items()], ["REASON", "PACKETS", "BYTES"])
    print()
    print_table([[k, v["packets"], v["bytes"]] for k, v in s["verdicts"].items()], ["VERDICT", "PACKETS", "BYTES"])
    print(f"\nmaps use {s['memory_bytes'] / 2**20:.1f} MiB of kernel memory")


def cmd_stats(args) -> int:
    with Firewall.open(args.iface) as fw:
        return show_repeatedly(fw.stats, _print_stats, as_json=args.json, watch=args.watch, count=args.count)
