"""`xdpkit lb ...`: thin commands over xdpkit.apps.lb.control (and health for `lb health`)."""
from __future__ import annotations


from xdpkit.apps.lb.config import (MAX_WEIGHT, BackendConfig, VipConfig, load_config_file, parse_backend,
                                   parse_vip_key)
from xdpkit.apps.lb.control import Limits, LoadBalancer, check_config, decap_load, decap_stats, decap_unload
from xdpkit.ui.output import emit_json, info, print_table, show_repeatedly
from xdpkit.errors import ConfigError
from xdpkit.ui.args import int_range, positive_float, positive_int

MODES = ["native", "generic", "auto"]


def _iface(p, *more):
    p.add_argument("iface", help="interface the load balancer runs on")
    for name, help_ in more:
        p.add_argument(name, help=help_)


weight = int_range(0, MAX_WEIGHT)


def register(sub) -> None:
    p = sub.add_parser("lb", help="L4 load balancer (Maglev, IPIP/IP6IP6 direct server return)")
    lsub = p.add_subparsers(dest="lb_command", metavar="VERB")
    lsub.required = True

    q = lsub.add_parser("load", help="load and attach the load balancer (persistent)")
    _iface(q)
    q.add_argument("--config", metavar="FILE", help="TOML config (see docs/lb.md)")
    q.add_argument("--mode", choices=MODES, default="auto")
    q.add_argument("--force", action="store_true", help="replace a program xdpkit did not attach")
    lim = Limits()
    q.add_argument("--max-vips", type=positive_int, default=lim.vips)
    q.add_argument("--max-backends", type=positive_int, default=lim.backends, help="backend slots over all VIPs")
    q.add_argument("--ring", type=positive_int, default=lim.ring, help="Maglev table slots over all VIPs")
    q.add_argument("--flows", type=positive_int, default=lim.flows, help="connection-tracking entries (4-way sets, least recently used out)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_load)

    q = lsub.add_parser("unload", help="detach the load balancer")
    _iface(q)
    q.set_defaults(func=cmd_unload)

    q = lsub.add_parser("apply", help="make a config file the configuration in force")
    _iface(q, ("config", "TOML config file"))
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_apply)

    q = lsub.add_parser("check", help="validate a config and build its tables, without the kernel")
    q.add_argument("config")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_check)

    q = lsub.add_parser("vip", help="add, delete or list VIPs")
    vsub = q.add_subparsers(dest="vip_command", metavar="VERB")
    vsub.required = True
    r = vsub.add_parser("add", help="add a VIP, e.g. tcp/198.18.200.1:80")
    _iface(r, ("vip", "PROTO/ADDRESS[:PORT]"))
    r.add_argument("--hash", choices=["5-tuple", "no-sport"], default="5-tuple")
    r.add_argument("--table-size", type=positive_int, default=65537, help="prime")
    r.add_argument("--backend", action="append", default=[], metavar="ADDRESS[=WEIGHT]")
    r.set_defaults(func=cmd_vip_add)
    r = vsub.add_parser("del", help="delete a VIP (its flows go with it)")
    _iface(r, ("vip", "PROTO/ADDRESS[:PORT]"))
    r.set_defaults(func=cmd_vip_del)
    r = vsub.add_parser("list", help="VIPs and their backends")
    _iface(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_vip_list)

    q = lsub.add_parser("backend", help="add, delete, re-weight or drain backends")
    bsub = q.add_subparsers(dest="backend_command", metavar="VERB")
    bsub.required = True
    r = bsub.add_parser("add", help="add a backend to a VIP")
    _iface(r, ("vip", "PROTO/ADDRESS[:PORT]"), ("address", "backend address"))
    r.add_argument("--weight", type=weight, default=1)
    r.set_defaults(func=cmd_backend_add)
    r = bsub.add_parser("del", help="remove a backend: its flows move to others")
    _iface(r, ("vip", "PROTO/ADDRESS[:PORT]"), ("address", "backend address"))
    r.set_defaults(func=cmd_backend_del)
    r = bsub.add_parser("set-weight", help="change a backend's weight (0 = drain)")
    _iface(r, ("vip", "PROTO/ADDRESS[:PORT]"), ("address", "backend address"))
    r.add_argument("weight", type=weight)
    r.set_defaults(func=cmd_backend_weight)
    r = bsub.add_parser("drain", help="no new flows for a backend; its open flows stay")
    _iface(r, ("vip", "PROTO/ADDRESS[:PORT]"), ("address", "backend address"))
    r.set_defaults(func=cmd_backend_drain)

    q = lsub.add_parser("stats", help="packets per VIP and backend, flow-table hits, errors")
    _iface(q)
    q.add_argument("--json", action="store_true")
    q.add_argument("--watch", action="store_true", help="refresh every second (Ctrl-C stops)")
    q.add_argument("--count", type=positive_int, help="with --watch: stop after this many refreshes")
    q.set_defaults(func=cmd_stats)

    q = lsub.add_parser("lookup", help="which backend a flow goes to")
    _iface(q, ("vip", "PROTO/ADDRESS:PORT the client connects to"), ("client", "client ADDRESS:PORT"))
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_lookup)

    q = lsub.add_parser("health", help="probe backends; drain the failing ones, restore the recovered")
    _iface(q)
    q.add_argument("--once", action="store_true", help="probe once, apply, print, exit")
    q.add_argument("--duration", type=positive_float, help="stop after this many seconds (default: until Ctrl-C)")
    q.add_argument("--json", action="store_true", help="one JSON line per state change")
    q.set_defaults(func=cmd_health)

    q = lsub.add_parser("demo", help="the load balancer on its own lab: spread by weight, drain, counters")
    q.add_argument("--name", default="xlbdemo", help="lab name to use")
    q.add_argument("--connections", type=positive_int, default=200, help="connections to open (10..10000)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_demo)

    q = lsub.add_parser("decap", help="backend side: strip the load balancer's outer header")
    dsub = q.add_subparsers(dest="decap_command", metavar="VERB")
    dsub.required = True
    r = dsub.add_parser("load", help="attach the decapsulation program (persistent)")
    _iface(r)
    r.add_argument("--mode", choices=MODES, default="auto")
    r.add_argument("--force", action="store_true")
    r.set_defaults(func=cmd_decap_load)
    r = dsub.add_parser("unload", help="detach it")
    _iface(r)
    r.set_defaults(func=cmd_decap_unload)
    r = dsub.add_parser("stats", help="packets decapsulated, passed, dropped")
    _iface(r)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_decap_stats)


def cmd_load(args) -> int:
    cfg = load_config_file(args.config) if args.config else None
    limits = Limits(vips=args.max_vips, backends=args.max_backends, ring=args.ring, flows=args.flows)
    with LoadBalancer.load(args.iface, cfg, mode=args.mode, force=args.force, limits=limits) as lb:
        n = len(lb.config().vips)
        out = {"ifname": lb.ifname, "program_id": lb.prog_id, "vips": n}
    if args.json:
        emit_json(out)
    else:
        print(f"load balancer loaded on {out['ifname']} (program {out['program_id']}) with {n} VIPs")
    return 0


def cmd_unload(args) -> int:
    LoadBalancer.unload(args.iface)
    print(f"load balancer unloaded from {args.iface}")
    return 0


def _report(res, args) -> int:
    if getattr(args, "json", False):
        emit_json(res.__dict__)
    else:
        print(f"{res.vips} VIPs, {res.backends} backends; {res.tables_built} Maglev tables rebuilt "
              f"in {res.seconds:.2f} s")
    return 0


def cmd_apply(args) -> int:
    cfg = load_config_file(args.config)  # errors here: nothing applied
    with LoadBalancer.open(args.iface, on_wait=info) as lb:
        return _report(lb.apply(cfg), args)


def cmd_check(args) -> int:
    out = check_config(load_config_file(args.config))
    if args.json:
        emit_json({"config": args.config, **out})
    else:
        print(f"{args.config}: {out['vips']} VIPs, {out['backends']} backends, tables built in "
              f"{out['tables_seconds']:.2f} s: OK")
    return 0


def _backend_arg(text: str) -> BackendConfig:
    address, sep, weight = text.partition("=")
    d: dict = {"address": address}
    if sep:
        if not weight.isdigit():
            raise ConfigError(f"--backend {text!r}: the weight after '=' must be a whole number")
        d["weight"] = int(weight)
    return parse_backend(d, "--backend")


def cmd_vip_add(args) -> int:
    proto, address, port = parse_vip_key(args.vip)
    vip = VipConfig(address=address, protocol=proto, port=port, hash=args.hash, table_size=args.table_size,
                    backends=tuple(_backend_arg(b) for b in args.backend))
    with LoadBalancer.open(args.iface, on_wait=info) as lb:
        return _report(lb.add_vip(vip), args)


def cmd_vip_del(args) -> int:
    with LoadBalancer.open(args.iface, on_wait=info) as lb:
        return _report(lb.delete_vip(args.vip), args)


def cmd_vip_list(args) -> int:
    with LoadBalancer.open(args.iface) as lb:
        s = lb.stats()
    if args.json:
        emit_json(s["vips"])
        return 0
    rows = []
    for v in s["vips"]:
        rows.append([v["vip"], v["hash"], v["table_size"], "", "", ""])
        rows += [["", "", "", b["address"], b["weight"], b["state"]] for b in v["backends"]]
    print_table(rows, ["VIP", "HASH", "TABLE", "BACKEND", "WEIGHT", "STATE"], empty="no VIPs")
    return 0


def cmd_backend_add(args) -> int:
    parse_vip_key(args.vip)  # clear errors before touching the kernel
    parse_backend({"address": args.address, "weight": args.weight}, "backend")
    with LoadBalancer.open(args.iface, on_wait=info) as lb:
        return _report(lb.add_backend(args.vip, args.address, args.weight), args)


def cmd_backend_del(args) -> int:
    with LoadBalancer.open(args.iface, on_wait=info) as lb:
        return _report(lb.delete_backend(args.vip, args.address), args)


def cmd_backend_weight(args) -> int:
    with LoadBalancer.open(args.iface, on_wait=info) as lb:
        return _report(lb.set_weight(args.vip, args.address, args.weight), args)


def cmd_backend_drain(args) -> int:
    with LoadBalancer.open(args.iface, on_wait=info) as lb:
        return _report(lb.drain(args.vip, args.address), args)


def _print_stats(s: dict) -> None:
    rows = []
    for v in s["vips"]:
        rows.append([v["vip"], "", "", v["packets"], v["bytes"]])
        rows += [["", b["address"], b["state"], b["packets"], b["bytes"]] for b in v["backends"]]
    print_table(rows, ["VIP", "BACKEND", "STATE", "PACKETS", "BYTES"], empty="no VIPs")
    print()
    print_table([[k, v["packets"], v["bytes"]] for k, v in s["events"].items()], ["EVENT", "PACKETS", "BYTES"])
    f = s["flows"]
    print(f"\nflow table: {f['hits']} hits, {f['misses']} misses, capacity {f['capacity']}")


def cmd_stats(args) -> int:
    with LoadBalancer.open(args.iface) as lb:
        return show_repeatedly(lb.stats, _print_stats, as_json=args.json, watch=args.watch, count=args.count)


def cmd_lookup(args) -> int:
    proto, vip, dport = parse_vip_key(args.vip)
    host, sep, sport = args.client.rpartition(":")
    if not sep or not sport.isdigit() or not 0 <= int(sport) <= 65535:
        raise ConfigError(f"client {args.client!r} is not ADDRESS:PORT (port 0..65535)",
                          hint="e.g. 198.18.10.2:40000")
    with LoadBalancer.open(args.iface) as lb:
        backend = lb.backend_of(host.strip("[]"), vip, proto, int(sport), dport)
    if args.json:
        emit_json({"backend": backend})
    else:
        print(backend or "no backend (not a VIP, or no active backend)")
    return 0 if backend else 1


def cmd_health(args) -> int:
    from xdpkit.apps.lb.healthloop import run_health

    return run_health(args.iface, once=args.once, duration=args.duration, as_json=args.json)


def cmd_decap_load(args) -> int:
    prog_id = decap_load(args.iface, mode=args.mode, force=args.force)
    print(f"decapsulation loaded on {args.iface} (program {prog_id})")
    return 0


def cmd_decap_unload(args) -> int:
    decap_unload(args.iface)
    print(f"decapsulation unloaded from {args.iface}")
    return 0


def cmd_decap_stats(args) -> int:
    s = decap_stats(args.iface)
    if args.json:
        emit_json(s)
    else:
        print_table([[k, v["packets"], v["bytes"]] for k, v in s["events"].items()], ["EVENT", "PACKETS", "BYTES"])
    return 0


def cmd_demo(args) -> int:
    from xdpkit.apps.lb.demo import run_demo

    result = run_demo(args.name, args.connections, log=None if args.json else (lambda m: print(m, flush=True)))
    if args.json:
        emit_json(result)
    return 0 if result["ok"] else 1
