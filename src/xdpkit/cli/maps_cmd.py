"""`xdpkit maps list|dump|get|set|delete`."""
from __future__ import annotations

import contextlib
import warnings

from xdpkit import maps as xmaps
from xdpkit.btf import BtfLayoutWarning
from xdpkit.ui.output import emit_json, info, print_table
from xdpkit.errors import ConfigError, NotFoundError

FLAGS = {"any": xmaps.BPF_ANY, "noexist": xmaps.BPF_NOEXIST, "exist": xmaps.BPF_EXIST}


def register(sub) -> None:
    p = sub.add_parser("maps", help="list, dump and edit BPF maps")
    msub = p.add_subparsers(dest="maps_command", metavar="VERB")
    msub.required = True

    q = msub.add_parser("list", help="list maps (all, or those of an interface's program)")
    q.add_argument("--iface", help="only maps used by the XDP program on this interface")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    q = msub.add_parser("dump", help="print every entry of a map")
    q.add_argument("map", metavar="NAME|ID|PATH")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_dump)

    q = msub.add_parser("get", help="print one entry")
    q.add_argument("map", metavar="NAME|ID|PATH")
    q.add_argument("key")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_get)

    q = msub.add_parser("set", help="create or update one entry")
    q.add_argument("map", metavar="NAME|ID|PATH")
    q.add_argument("key")
    q.add_argument("value")
    q.add_argument("--flags", choices=sorted(FLAGS), default="any")
    q.set_defaults(func=cmd_set)

    q = msub.add_parser("delete", help="delete one entry")
    q.add_argument("map", metavar="NAME|ID|PATH")
    q.add_argument("key")
    q.set_defaults(func=cmd_delete)


@contextlib.contextmanager
def _open(ref):
    """open_map, with a BTF layout mismatch said as one note line instead of a Python warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BtfLayoutWarning)
        m = xmaps.open_map(ref)
    with m:
        for reason in m.raw_reasons.values():
            info(f"note: {reason}")
        yield m


def _summed(value):
    return value.sum() if isinstance(value, xmaps.PerCpuValues) else value


def cmd_list(args) -> int:
    if args.iface:
        from xdpkit.xdp import query

        ids = [m.id for a in query(args.iface) for m in a.maps]
        infos = xmaps.list_maps(ids)
    else:
        infos = xmaps.list_maps()
    rows = [{"id": i.id, "name": i.name, "type": i.type_name, "key_size": i.key_size,
             "value_size": i.value_size, "max_entries": i.max_entries, "flags": i.flags} for i in infos]
    if args.json:
        emit_json(rows)
    else:
        print_table([[r["id"], r["name"], r["type"], r["key_size"], r["value_size"], r["max_entries"]]
                     for r in rows], ["ID", "NAME", "TYPE", "KEY", "VALUE", "MAX_ENTRIES"], empty="no maps")
    return 0


def cmd_dump(args) -> int:
    with _open(args.map) as m:
        items = m.items()
    if args.json:
        emit_json([{"key": k, "value": v} for k, v in items])
        return 0
    rows = []
    for k, v in items:
        if isinstance(v, xmaps.PerCpuValues):
            rows.append([k, v.sum(), " ".join(map(str, v))])
        else:
            rows.append([k, v])
    percpu = bool(items) and isinstance(items[0][1], xmaps.PerCpuValues)
    print_table(rows, ["KEY", "SUM", "PER-CPU"] if percpu else ["KEY", "VALUE"],
                empty=f"map {m.name} is empty")
    return 0


def cmd_get(args) -> int:
    with _open(args.map) as m:
        key = m.parse_key(args.key)
        try:
            value = m[key]
        except KeyError:
            raise NotFoundError(f"key {args.key} not in map {m.name}") from None
    if args.json:
        emit_json({"key": key, "value": value})
    else:
        print(_summed(value) if not isinstance(value, xmaps.PerCpuValues) else
              f"{value.sum()} (per CPU: {' '.join(map(str, value))})")
    return 0


def cmd_set(args) -> int:
    with _open(args.map) as m:
        key = m.parse_key(args.key)
        value = m.parse_value(args.value)
        m.set(key, value, flags=FLAGS[args.flags])
    return 0


def cmd_delete(args) -> int:
    with _open(args.map) as m:
        key = m.parse_key(args.key)
        try:
            del m[key]
        except KeyError:
            raise NotFoundError(f"key {args.key} not in map {m.name}") from None
        except ConfigError:
            raise
    return 0
