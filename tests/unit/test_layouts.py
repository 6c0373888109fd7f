"""One source per kernel layout: every struct format and constant the firewall's and the load
balancer's control planes mirror from firewall.h / lb.h agrees with the shipped objects.

The objects are opened, never loaded (libbpf parses the ELF and its BTF; no kernel, no root). Each
Python format is compared field by field with the C struct in the BTF (size, each field's offset
and size, the field names in order); constants are compared with what the object shows (map
sizes, array dimensions, value sizes) and, for #defines and enums that leave no trace in BTF,
with the header itself. A header change that the Python side does not mirror fails here.
"""
from __future__ import annotations

import ast
import re
import struct
from pathlib import Path

import pytest

import xdpkit
from xdpkit._sys.libbpf import ffi, require
from xdpkit.apps.firewall import compiler as C
from xdpkit.apps.firewall import control as fwc
from xdpkit.apps.firewall import rangetable as R
from xdpkit.apps.firewall import sized
from xdpkit.apps.firewall.rules import DEFAULT_RATE_SOURCES, parse_rule
from xdpkit.apps.forward import control as fwdc
from xdpkit.apps.lb import control as lbc
from xdpkit.apps.lb import flowhash, plan, viptable
from xdpkit.apps.lb.config import PROTOCOLS, VipConfig
from xdpkit.btf import KIND_STRUCT, KIND_TYPEDEF, ArrayCodec, BtfReader, StructCodec
from xdpkit.builtin import builtin_object
from xdpkit.compile import compile_with_deps

PACKAGE = Path(xdpkit.__file__).parent
FW_DIR = PACKAGE / "apps" / "firewall"
LB_DIR = PACKAGE / "apps" / "lb"
FWD_DIR = PACKAGE / "apps" / "forward"
MIRROR_MODULES = (fwc, C, R, lbc, plan, viptable, flowhash, fwdc)   # every struct.Struct in them is a kernel layout

# ---- the table: Python format -> C type -> the C struct's fields in order --------------------------
# fields None: the format reads the whole struct as words (only the size must agree).

FIREWALL_LAYOUTS = [
    ("firewall control._U32", fwc._U32, "__u32", None),
    ("firewall control._ACTIVE", fwc._ACTIVE, "fw_active", ["gen"]),
    ("firewall control._GEN", fwc._GEN, "fw_gen",
     ["nrules", "nwords", "fields", "src_default4", "src_default6", "dst_default4", "dst_default6",
      "policy_drop", "malformed_drop", "non_ip_drop", "rl4_bits", "prefix_bits", "rate_sources",
      "memo_addrs_mask", "memo_l4_mask", "memo_len_mask", "pad"]),
    ("firewall control._RULE", fwc._RULE, "fw_rule",
     ["slot", "drop", "per_source", "rated", "pad", "pps_interval", "pps_tau", "byte_ns_x1k", "bps_tau"]),
    ("firewall control._TEXT", fwc._TEXT, "fw_text", ["len", "text"]),
    ("firewall control._BITMAP", fwc._BITMAP, "fw_bitmap", ["w", "decide_dst", "pad"]),
    ("firewall rangetable.NODE4", R.NODE4, "fw_node4", None),
    ("firewall rangetable.NODE6", R.NODE6, "fw_node6", None),
    ("firewall control._TAT", fwc._TAT, "fw_tat", ["pps", "bps"]),
    ("firewall control._RL_WAY4", fwc._RL_WAY4, "fw_rl_way4", ["addr", "tag", "seen", "tat"]),
    ("firewall control._RL_KEY6", fwc._RL_KEY6, "fw_rl_key6", ["slot", "addr"]),
]

FORWARD_LAYOUTS = [
    ("forward control._KGENS", fwdc._KGENS, "fwd_kernel_gens", ["net", "neigh", "netns", "pad"]),
    ("forward control._MEMBER", fwdc._MEMBER, "fwd_member", ["mac", "pad"]),
    ("forward control._U32", fwdc._U32, "__u32", None),
]

LB_LAYOUTS = [
    ("lb control._WAY", lbc._WAY, "lb_flow_way", ["tag", "backend", "gen", "age"]),
    ("lb control._CFG", lbc._CFG, "lb_cfg",
     ["seed", "src4", "src4_hostmask", "src6", "src6_hostmask", "mtu", "gw_mac", "tx_mac", "redirect",
      "has_gw", "vip_kinds", "pad", "flow_mask", "vip_base", "vip_mask", "vip_seed"]),
    ("lb plan.VIP", plan.VIP, "lb_vip", ["id", "ring_base", "table_size", "flags"]),
    ("lb plan.BACKEND", plan.BACKEND, "lb_backend", ["addr", "gen", "vip_id", "family", "pad"]),
    ("lb viptable.ENTRY", viptable.ENTRY, "lb_vip_entry", ["key", "vip", "pad"]),
    ("lb flowhash.FLOW_KEY", flowhash.FLOW_KEY, "lb_flow_key",
     ["src", "dst", "sport", "dport", "proto", "family", "pad"]),
    ("lb flowhash._FLOW_WORDS", flowhash._FLOW_WORDS, "lb_flow_key", None),
    ("lb flowhash._VIP_KEY_WORDS", flowhash._VIP_KEY_WORDS, "lb_vip_key", None),
]

# map -> (key, value) as the control plane packs them
FIREWALL_MAPS = {
    "fw_active": (fwc._U32, fwc._ACTIVE),
    "fw_gen": (fwc._U32, fwc._GEN),
    "fw_rule": (fwc._U32, fwc._RULE),
    "fw_text": (fwc._U32, fwc._TEXT),
    "fw_bitmap": (fwc._U32, fwc._BITMAP),
    **{name: (fwc._U32, fwc._U32) for name, _attr, _size in fwc._TABLES},
    "fw_rl_rule": (fwc._U32, fwc._TAT),
}
LB_MAPS = {
    "lb_cfg": (None, lbc._CFG),
    "lb_backends": (None, plan.BACKEND),
    "lb_vip_table": (None, viptable.ENTRY),
}


# ---- reading an object without loading it --------------------------------------------------------

class Btf:
    """An object file opened with libbpf (ELF and BTF parsed, nothing in the kernel).

    ``header``: the probe object of the header the program was built from (see header_probe),
    asked for the structs the program's own BTF lacks."""

    def __init__(self, path, header: "Btf | None" = None):
        self.spec = xdpkit.ObjectSpec.from_file(path)
        self.header = header
        self._lib = require()
        self._btf = self._lib.bpf_object__btf(self.spec._obj)   # parsed by bpf_object__open
        assert self._btf != ffi.NULL, f"{path} has no BTF"
        self._reader = BtfReader(self._btf)

    def close(self):
        self.spec.close()
        if self.header:
            self.header.close()

    def type(self, name: str):
        """The codec of ``struct name`` (or of the typedef ``name``); None if the BTF has neither."""
        for kind in (KIND_STRUCT, KIND_TYPEDEF):
            tid = self._lib.btf__find_by_name_kind(self._btf, name.encode(), kind)
            if tid > 0:
                return self._reader.codec(tid)
        return self.header.type(name) if self.header else None

    def _map_ptr(self, name: str):
        return self.spec.maps[name]._ptr

    def map_value(self, name: str):
        return self._reader.codec(self._lib.bpf_map__btf_value_type_id(self._map_ptr(name)))

    def map_key(self, name: str):
        return self._reader.codec(self._lib.bpf_map__btf_key_type_id(self._map_ptr(name)))

    def max_entries(self, name: str) -> int | None:
        m = self.spec.maps.get(name)
        return m.max_entries if m else None

    def member(self, struct_name: str, field: str):
        codec = self.type(struct_name)
        for m in getattr(codec, "members", []):
            if m.name == field:
                return m
        return None

    def offset(self, struct_name: str, field: str) -> int | None:
        m = self.member(struct_name, field)
        return m.bit_offset // 8 if m else None

    def dim(self, struct_name: str, field: str) -> tuple[int, int] | None:
        """(elements, element size) of an array field."""
        m = self.member(struct_name, field)
        return (m.codec.count, m.codec.elem.size) if m and isinstance(m.codec, ArrayCodec) else None


def header_probe(header: Path, dest: Path) -> Btf:
    """A probe object holding one global of every struct ``header`` defines, so that its BTF has
    them all. A program's BTF describes only the types its maps, globals and non-inlined functions
    use: lb.bpf.c keeps struct lb_flow_key in inlined code only, so its BTF has no lb_flow_key."""
    names = re.findall(r"^struct\s+(\w+)\s*\{", header.read_text(), flags=re.M)
    src = dest / f"{header.stem}_probe.bpf.c"
    src.write_text("#include <linux/types.h>\n#include <bpf/bpf_helpers.h>\n"
                   f'#include "{header.name}"\n'
                   + "".join(f"struct {n} probe_{n};\n" for n in names)
                   + 'char _license[] SEC("license") = "GPL";\n')
    compile_with_deps(src, dest / f"{header.stem}_probe.o", include_dirs=[str(header.parent)])
    return Btf(dest / f"{header.stem}_probe.o")


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probes")
    objs = {"firewall": Btf(builtin_object("firewall"), header_probe(FW_DIR / "firewall.h", tmp)),
            "lb": Btf(builtin_object("lb"), header_probe(LB_DIR / "lb.h", tmp)),
            "lb_decap": Btf(builtin_object("lb_decap")),
            "forward": Btf(builtin_object("forward"))}
    yield objs
    for o in objs.values():
        o.close()


def c_constants(*paths: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    """(#define NAME <integer expression> -> value, enum name -> member names in order) of C files."""
    values: dict[str, int] = {}
    enums: dict[str, list[str]] = {}
    for path in paths:
        text = re.sub(r"/\*.*?\*/", " ", path.read_text(), flags=re.S)
        text = re.sub(r"//[^\n]*", "", text).replace("\\\n", " ")
        for name, expr in re.findall(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+([^\n]+)$", text, flags=re.M):
            value = _c_eval(expr, values)
            if value is not None:
                values[name] = value
        for ename, body in re.findall(r"\benum\s+(\w+)\s*\{(.*?)\}", text, flags=re.S):
            nxt, names = 0, []
            for item in filter(None, (x.strip() for x in body.split(","))):
                name, _, expr = (p.strip() for p in item.partition("="))
                value = _c_eval(expr, values) if expr else nxt
                if value is None:   # not a plain constant: the members from here on are unknown
                    break
                values[name], nxt = value, value + 1
                names.append(name)
            enums[ename] = names
    return values, enums


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a // b, ast.FloorDiv: lambda a, b: a // b, ast.LShift: lambda a, b: a << b,
        ast.RShift: lambda a, b: a >> b, ast.BitOr: lambda a, b: a | b, ast.BitAnd: lambda a, b: a & b,
        ast.BitXor: lambda a, b: a ^ b}


def _c_eval(expr: str, known: dict[str, int]) -> int | None:
    """An integer C constant expression (literals with u/l suffixes, + - * / << >> | & ^, earlier
    names); None for anything else (strings, macros with arguments, ...)."""
    expr = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", expr.strip())

    def ev(n):
        if isinstance(n, ast.Constant) and isinstance(n.value, int):
            return n.value
        if isinstance(n, ast.Name) and n.id in known:
            return known[n.id]
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.Invert)):
            return -ev(n.operand) if isinstance(n.op, ast.USub) else ~ev(n.operand)
        raise ValueError(expr)

    try:
        return ev(ast.parse(expr, mode="eval").body)
    except (SyntaxError, ValueError, TypeError):
        return None


# ---- the checker -------------------------------------------------------------------------------------

def spans(fmt: struct.Struct) -> list[tuple[int, int, bool]]:
    """(offset, size, padding) of every value a struct format packs, in order ('s' is one value,
    a run of 'x' one padding span). Only explicit byte orders: native alignment is refused."""
    f = fmt.format
    order, body = (f[0], f[1:]) if f[:1] in "@=<>!" else ("@", f)
    if order == "@" or not re.fullmatch(r"(\s*\d*[xcbB?hHiIlLqQefdsp])*\s*", body):
        raise ValueError(f"format {f!r}: use <, > or ! and plain codes")
    out, off = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z?])", body):
        n = int(count) if count else 1
        if code in "sp" or code == "x":
            out.append((off, n, code == "x"))
            off += n
        else:
            size = struct.calcsize(order + code)
            for _ in range(n):
                out.append((off, size, False))
                off += size
    assert off == fmt.size
    return out


def layout_problems(label: str, fmt: struct.Struct, codec, fields) -> list[str]:
    """How ``fmt`` disagrees with the C type ``codec`` (from BTF), whose fields should be ``fields``."""
    if codec is None:
        return [f"{label}: its C type is not in the object's BTF (renamed or removed?)"]
    out = []
    if fmt.size != codec.size:
        out.append(f"{label}: {fmt.format!r} is {fmt.size} bytes, {codec.type_name} is {codec.size}")
    if fields is None:
        return out
    if not isinstance(codec, StructCodec):
        return out + [f"{label}: {codec.type_name} is not a struct"]
    names = [m.name for m in codec.members]
    if names != list(fields):
        out.append(f"{label}: {codec.type_name} has fields {names}, the table says {list(fields)}")
    sp = spans(fmt)
    in_c = set()
    for m in codec.members:
        lo, hi = m.bit_offset // 8, m.bit_offset // 8 + m.codec.size
        if m.bit_size and m.bit_size != 8 * m.codec.size:
            out.append(f"{label}: {codec.type_name}.{m.name} is a bit-field; struct formats cannot mirror it")
            continue
        in_c.update(range(lo, hi))
        inside = [s for s in sp if s[0] < hi and s[0] + s[1] > lo]
        packed = [f"{o}..{o + n}" + (" (pad)" if pad else "") for o, n, pad in inside]
        if not inside or inside[0][0] != lo or inside[-1][0] + inside[-1][1] != hi:
            out.append(f"{label}: {codec.type_name}.{m.name} is bytes {lo}..{hi}, "
                       f"{fmt.format!r} packs {packed or 'nothing'} there")
        elif all(pad for _o, _n, pad in inside) and not m.name.startswith("pad"):
            out.append(f"{label}: {codec.type_name}.{m.name} (bytes {lo}..{hi}) is skipped as padding")
    for o, n, pad in sp:
        if not pad and not set(range(o, o + n)) <= in_c:
            out.append(f"{label}: {fmt.format!r} packs a value at bytes {o}..{o + n}, "
                       f"which {codec.type_name} leaves as padding")
    return out


def _ctype(layouts, fmt):
    return next((c for _label, f, c, _fields in layouts if f is fmt), None)


def map_problems(obj: Btf, maps: dict, layouts) -> list[str]:
    """Each map's key/value sizes and BTF types are those of the formats packed into it."""
    out = []
    for name, (key, value) in maps.items():
        if name not in obj.spec.maps:
            out.append(f"map {name}: not in the object")
            continue
        ms = obj.spec.maps[name]
        for what, fmt, size, codec in (("key", key, ms.key_size, obj.map_key(name)),
                                       ("value", value, ms.value_size, obj.map_value(name))):
            if fmt is None:
                continue
            if fmt.size != size:
                out.append(f"map {name}: {what} is {size} bytes, the control plane packs {fmt.size}")
            ctype = _ctype(layouts, fmt)
            if isinstance(codec, StructCodec) and codec.type_name != f"struct {ctype}":
                out.append(f"map {name}: {what} is {codec.type_name}, the control plane packs struct {ctype}")
    return out


def differences(pairs) -> list[str]:
    """``pairs``: (what, Python value, C value)."""
    return [f"{what}: Python {py!r}, C {c!r}" for what, py, c in pairs if py != c]


def enum_problems(label: str, py_names, enums: dict, consts: dict, enum: str, prefix: str, count: str):
    members = sorted((n for n in enums.get(enum, []) if n.startswith(prefix) and n != count),
                     key=lambda n: consts.get(n, -1))   # by value: REASONS[i] names the member = i
    out = differences([(f"{label} vs enum {enum}: number of members", len(py_names), len(members)),
                       (f"{label} vs {count}", len(py_names), consts.get(count))])
    for i, (py, c) in enumerate(zip(py_names, members)):
        if not c.lower().endswith(py) or consts.get(c) != i:
            out.append(f"{label}[{i}] is {py!r}, enum {enum} has {c} = {consts.get(c)} there")
    return out


# ---- everything one app mirrors ------------------------------------------------------------------

def firewall_problems(fw: Btf, header: Path) -> list[str]:
    consts, enums = c_constants(header)
    out = []
    for label, fmt, ctype, fields in FIREWALL_LAYOUTS:
        out += layout_problems(label, fmt, fw.type(ctype), fields)
    out += map_problems(fw, FIREWALL_MAPS, FIREWALL_LAYOUTS)
    set4 = fw.dim("fw_rl_set4", "way")
    flags = (C.F_SRC, C.F_DST, C.F_PROTO, C.F_SPORT, C.F_DPORT, C.F_FLAGS, C.F_ICMP, C.F_LEN)
    out += differences([
        ("compiler.MAX_RULES vs FW_MAX_RULES", C.MAX_RULES, consts.get("FW_MAX_RULES")),
        ("compiler.WORDS vs FW_WORDS", C.WORDS, consts.get("FW_WORDS")),
        ("compiler.MAX_CLASSES vs FW_MAX_CLASSES", C.MAX_CLASSES, consts.get("FW_MAX_CLASSES")),
        ("compiler.DECIDE_SHIFT vs FW_DECIDE_SHIFT", C.DECIDE_SHIFT, consts.get("FW_DECIDE_SHIFT")),
        ("compiler.PORT_NONE vs FW_PORT_NONE", C.PORT_NONE, consts.get("FW_PORT_NONE")),
        ("compiler.BYTE_NONE vs FW_BYTE_NONE", C.BYTE_NONE, consts.get("FW_BYTE_NONE")),
        ("rangetable.REF_CLASS vs FW_REF_CLASS", R.REF_CLASS, consts.get("FW_REF_CLASS")),
        ("rangetable.REF_LEAF vs FW_REF_LEAF", R.REF_LEAF, consts.get("FW_REF_LEAF")),
        ("rangetable.Format.words vs FW_NODE_WORDS", R.Format.words, consts.get("FW_NODE_WORDS")),
        ("rangetable.V4.direct_bits vs FW_DIR4_BITS", R.V4.direct_bits, consts.get("FW_DIR4_BITS")),
        ("rangetable.V6 has its direct index in its trees' map", 0, R.V6.direct_bits),
        ("sized.DIRECT_MAPS are the tables whose format has a direct map",
         sorted(sized.DIRECT_MAPS), sorted(k for k in sized.PREFIX_MAPS if R.FORMATS[int(k[-1])].direct_bits)),
        *((f"rangetable.V{f.family}.{attr} vs FW_{name}{f.family}", getattr(f, attr), consts.get(f"FW_{name}{f.family}"))
          for f in (R.V4, R.V6) for attr, name in (("leaf_keys", "LEAF"), ("fanout", "FANOUT"), ("max_depth", "DEPTH"))),
        *((f"sized.PREFIX_MAPS {key} vs enum fw_prefix_table", i, consts.get(f"FW_T_{key.upper()}"))
          for i, key in enumerate(sized.PREFIX_MAPS)),
        # the inner maps' shapes are sizeof() of these structs (firewall.bpf.c)
        ("rangetable.V4.node_bytes vs sizeof(struct fw_node4)", R.V4.node_bytes, fw.type("fw_node4").size),
        ("rangetable.V6.node_bytes vs sizeof(struct fw_node6)", R.V6.node_bytes, fw.type("fw_node6").size),
        ("sized.RL_SET_BYTES vs sizeof(struct fw_rl_set4)", sized.RL_SET_BYTES, fw.type("fw_rl_set4").size),
        ("sized.RL4_DEFAULT_BITS vs FW_RL4_DEFAULT_BITS", sized.RL4_DEFAULT_BITS, consts.get("FW_RL4_DEFAULT_BITS")),
        ("the default rate-sources fills the default rate map", sized.RL4_DEFAULT_BITS,
         sized.rate_sizes([parse_rule("deny udp rate 1/s per-source")], DEFAULT_RATE_SOURCES)[0]),
        ("sized.RL_KEY6_BYTES vs sizeof(struct fw_rl_key6)", sized.RL_KEY6_BYTES, fw.type("fw_rl_key6").size),
        ("sized.TAT_BYTES vs sizeof(struct fw_tat)", sized.TAT_BYTES, fw.type("fw_tat").size),
        ("sized.RL_KEY6_BYTES vs control._RL_KEY6", sized.RL_KEY6_BYTES, fwc._RL_KEY6.size),
        ("sized.TAT_BYTES vs control._TAT", sized.TAT_BYTES, fwc._TAT.size),
        *((f"sized slot map {name} is a two-generation array of maps", 2, fw.max_entries(name)) for name in sized.SLOTTED),
        *((f"compiler.F_{n} vs FW_F_{n}", f, consts.get(f"FW_F_{n}"))
          for f, n in zip(flags, ("SRC", "DST", "PROTO", "SPORT", "DPORT", "FLAGS", "ICMP", "LEN"))),
        ("2 * compiler.MAX_RULES vs fw_rule max_entries", 2 * C.MAX_RULES, fw.max_entries("fw_rule")),
        ("2 * compiler.MAX_RULES vs fw_text max_entries", 2 * C.MAX_RULES, fw.max_entries("fw_text")),
        ("compiler.MAX_RULES vs fw_counters max_entries (slots)", C.MAX_RULES, fw.max_entries("fw_counters")),
        ("compiler.MAX_RULES vs fw_rl_rule max_entries (slots)", C.MAX_RULES, fw.max_entries("fw_rl_rule")),
        ("2 * compiler.MAX_CLASSES vs fw_bitmap max_entries", 2 * C.MAX_CLASSES, fw.max_entries("fw_bitmap")),
        ("(compiler.WORDS, 8) vs fw_bitmap.w", (C.WORDS, 8), fw.dim("fw_bitmap", "w")),
        ("two generations vs fw_gen max_entries", 2, fw.max_entries("fw_gen")),
        ("one fw_active vs its max_entries", 1, fw.max_entries("fw_active")),
        *((f"2 * control._TABLES {name} size vs {name} max_entries", 2 * size, fw.max_entries(name))
          for name, _attr, size in fwc._TABLES),
        ("control.TEXT_MAX + 1 vs fw_text.text", (fwc.TEXT_MAX + 1, 1), fw.dim("fw_text", "text")),
        ("control._RL_TAG vs offsetof(fw_rl_way4, tag)", fwc._RL_TAG, fw.offset("fw_rl_way4", "tag")),
        ("(control._RL_WAYS, _RL_WAY4.size) vs fw_rl_set4.way", (fwc._RL_WAYS, fwc._RL_WAY4.size), set4),
        ("control._RL_WAYS * _RL_WAY4.size vs sized.RL_SET_BYTES", fwc._RL_WAYS * fwc._RL_WAY4.size,
         sized.RL_SET_BYTES),
        ("control.REASONS vs fw_reasons max_entries", len(fwc.REASONS), fw.max_entries("fw_reasons")),
        ("control.VERDICTS vs xdpkit_st_verdict max_entries", len(fwc.VERDICTS),
         fw.max_entries("xdpkit_st_verdict")),
        ("rodata cfg_src_memo (set by Firewall.load) exists", True, "cfg_src_memo" in fw.spec.rodata),
    ])
    out += enum_problems("control.REASONS", fwc.REASONS, enums, consts, "fw_reason", "FW_R_", "FW_NREASONS")
    return out


def lb_problems(lb: Btf, decap: Btf, header: Path, source: Path) -> list[str]:
    consts, enums = c_constants(header, source)
    out = []
    for label, fmt, ctype, fields in LB_LAYOUTS:
        out += layout_problems(label, fmt, lb.type(ctype), fields)
    out += map_problems(lb, LB_MAPS, LB_LAYOUTS)
    v = VipConfig(address="198.18.200.1", protocol="udp", port=0x1234)
    key = lb.type("lb_vip_key").decode(plan.vip_key(v)) if lb.type("lb_vip_key") else {}
    out += differences([
        ("plan.vip_key size vs struct lb_vip_key", len(plan.vip_key(v)), getattr(lb.type("lb_vip_key"), "size", None)),
        ("plan.vip_key: addr (big-endian words)", [0xC612C801, 0, 0, 0],
         [int.from_bytes(w.to_bytes(4, "little"), "big") for w in key.get("addr", [])]),
        ("plan.vip_key: port (network order)", 0x3412, key.get("port")),
        ("plan.vip_key: proto", PROTOCOLS["udp"], key.get("proto")),
        ("plan.vip_key: family", 4, key.get("family")),
        ("control._placed's key[19] vs offsetof(lb_vip_key, family)", 19, lb.offset("lb_vip_key", "family")),
        ("flowhash._FLOW_FAMILY vs offsetof(lb_flow_key, family)", flowhash._FLOW_FAMILY,
         lb.offset("lb_flow_key", "family")),
        ("(control.WAYS, _WAY.size) vs lb_flow_set.way", (lbc.WAYS, lbc._WAY.size), lb.dim("lb_flow_set", "way")),
        ("control.WAYS vs LB_WAYS", lbc.WAYS, consts.get("LB_WAYS")),
        ("control.WAYS * _WAY.size vs lb_flows value size", lbc.WAYS * lbc._WAY.size,
         lb.spec.maps["lb_flows"].value_size if "lb_flows" in lb.spec.maps else None),
        ("(plan.LINE_SLOTS, u32) vs lb_ring_line.slot", (plan.LINE_SLOTS, 4), lb.dim("lb_ring_line", "slot")),
        ("plan.LINE_SLOTS vs LB_RING_LINE_SLOTS", plan.LINE_SLOTS, consts.get("LB_RING_LINE_SLOTS")),
        ("plan.LINE_SLOTS * 4 vs lb_ring value size", plan.LINE_SLOTS * 4,
         lb.spec.maps["lb_ring"].value_size if "lb_ring" in lb.spec.maps else None),
        ("plan.STATE_CHUNK vs lb_state value size", plan.STATE_CHUNK,
         lb.spec.maps["lb_state"].value_size if "lb_state" in lb.spec.maps else None),
        ("plan.SLOT_NONE vs LB_SLOT_NONE", plan.SLOT_NONE, consts.get("LB_SLOT_NONE")),
        ("plan.VIP_NO_SPORT vs LB_VIP_NO_SPORT", plan.VIP_NO_SPORT, consts.get("LB_VIP_NO_SPORT")),
        ("control.VIPS_PORT vs LB_VIPS_PORT", lbc.VIPS_PORT, consts.get("LB_VIPS_PORT")),
        ("control.VIPS_ALL_PORTS vs LB_VIPS_ALL_PORTS", lbc.VIPS_ALL_PORTS, consts.get("LB_VIPS_ALL_PORTS")),
        ("viptable.PROBES vs LB_VIP_PROBES", viptable.PROBES, consts.get("LB_VIP_PROBES")),
        ("flowhash._HASH_MUL vs LB_HASH_MUL (lb.bpf.c)", flowhash._HASH_MUL, consts.get("LB_HASH_MUL")),
        ("IP version 4 (flow keys, VIP keys, backends) vs LB_FAMILY_V4", 4, consts.get("LB_FAMILY_V4")),
        ("IP version 6 vs LB_FAMILY_V6", 6, consts.get("LB_FAMILY_V6")),
        ("control.EVENTS vs lb_events max_entries", len(lbc.EVENTS), lb.max_entries("lb_events")),
        ("control.DECAP_EVENTS vs lb_decap_events max_entries", len(lbc.DECAP_EVENTS),
         decap.max_entries("lb_decap_events")),
    ])
    out += enum_problems("control.EVENTS", lbc.EVENTS, enums, consts, "lb_event", "LB_EV_", "LB_EV_MAX")
    out += enum_problems("control.DECAP_EVENTS", lbc.DECAP_EVENTS, enums, consts, "lb_decap_event",
                         "LB_DECAP_", "LB_DECAP_MAX")
    return out


def forward_problems(fwd: Btf, header: Path) -> list[str]:
    consts, enums = c_constants(header)
    out = []
    for label, fmt, ctype, fields in FORWARD_LAYOUTS:
        out += layout_problems(label, fmt, fwd.type(ctype), fields)
    out += differences([
        ("control.STATE_SIZE vs fwd_state value size", fwdc.STATE_SIZE,
         fwd.spec.maps["fwd_state"].value_size if "fwd_state" in fwd.spec.maps else None),
        ("control.STATE_SIZE vs FWD_STATE_SIZE", fwdc.STATE_SIZE, consts.get("FWD_STATE_SIZE")),
        ("control.MAX_MEMBERS vs fwd_members max_entries", fwdc.MAX_MEMBERS, fwd.max_entries("fwd_members")),
        ("control.MAX_CPUS vs fwd_cpu_list max_entries", fwdc.MAX_CPUS, fwd.max_entries("fwd_cpu_list")),
        ("control.EVENTS vs fwd_events max_entries", len(fwdc.EVENTS), fwd.max_entries("fwd_events")),
        *((f"rodata {name} (set by Forwarder.load) exists", True, name in fwd.spec.rodata)
          for name in ("fib_flags", "cache_mask", "ncpus", "flood", "locate_tid")),
    ])
    out += enum_problems("control.EVENTS", fwdc.EVENTS, enums, consts, "fwd_event", "FWD_EV_", "FWD_EV_MAX")
    return out


# ---- the tests ------------------------------------------------------------------------------------

def test_firewall_mirrors_agree_with_the_object(objects):
    problems = firewall_problems(objects["firewall"], FW_DIR / "firewall.h")
    assert not problems, "\n".join(problems)


def test_lb_mirrors_agree_with_the_object(objects):
    problems = lb_problems(objects["lb"], objects["lb_decap"], LB_DIR / "lb.h", LB_DIR / "lb.bpf.c")
    assert not problems, "\n".join(problems)


def test_forward_mirrors_agree_with_the_object(objects):
    problems = forward_problems(objects["forward"], FWD_DIR / "forward.h")
    assert not problems, "\n".join(problems)


def test_every_struct_format_of_the_control_planes_is_in_the_table():
    table = {id(fmt) for _label, fmt, _c, _fields in FIREWALL_LAYOUTS + LB_LAYOUTS + FORWARD_LAYOUTS}
    missing = [f"{mod.__name__}.{name}" for mod in MIRROR_MODULES for name, value in vars(mod).items()
               if isinstance(value, struct.Struct) and id(value) not in table]
    assert not missing, f"struct formats not checked against BTF: {missing}"


def test_the_header_parser_reads_defines_and_enums():
    consts, enums = c_constants(FW_DIR / "firewall.h")
    assert consts["FW_WORDS"] == 16 and consts["FW_REF_CLASS"] == 1 << 31 and consts["FW_F_LEN"] == 128
    assert enums["fw_reason"][0] == "FW_R_RULE" and consts["FW_NREASONS"] == 7


def test_the_checker_finds_wrong_formats(objects):
    fw, lb = objects["firewall"], objects["lb"]
    rule_fields = FIREWALL_LAYOUTS[3][3]
    gen_fields = FIREWALL_LAYOUTS[2][3]
    assert not layout_problems("ok", fwc._RULE, fw.type("fw_rule"), rule_fields)
    # a field missing: sizes differ
    assert "short: '<7IBBB' is 31 bytes, struct fw_gen is 64" in \
        layout_problems("short", struct.Struct("<7IBBB"), fw.type("fw_gen"), gen_fields)
    # same size, fields shifted: a u16 where drop and per_source are
    assert any("fw_rule.drop is bytes 4..5" in p for p in
               layout_problems("shifted", struct.Struct("<IHBBQQQQ"), fw.type("fw_rule"), rule_fields))
    # same offsets, fields in another order (only the names can tell)
    swapped = [*gen_fields[:3], "dst_default4", "src_default6", "src_default4", *gen_fields[6:]]
    assert any("has fields" in p for p in layout_problems("order", fwc._GEN, fw.type("fw_gen"), swapped))
    # a real field skipped as padding (no shipped struct has C padding left to pack into since
    # struct fw_key6 went)
    assert any("skipped as padding" in p for p in
               layout_problems("pad", struct.Struct("<Q4xHH"), lb.type("lb_flow_way"), LB_LAYOUTS[0][3]))
    assert layout_problems("gone", fwc._GEN, fw.type("fw_no_such_struct"), gen_fields)


def _copy(src_dir: Path, dest: Path, source: str, header: str, edits: list[tuple[str, str]]) -> Path:
    text = (src_dir / header).read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    (dest / header).write_text(text)
    (dest / source).write_text((src_dir / source).read_text())
    return dest / header


def test_a_header_change_not_mirrored_in_python_fails(tmp_path):
    """Build the programs from edited headers: every kind of edit is reported."""
    header = _copy(FW_DIR, tmp_path, "firewall.bpf.c", "firewall.h", [
        ("#define FW_MAX_CLASSES 16384", "#define FW_MAX_CLASSES 32768"),
        ("\t__u32 decide_dst;\n", "\t__u32 decide_dst;\n\t__u32 decide_len;\n"),
        ("#define FW_F_LEN   (1 << 7)", "#define FW_F_LEN   (1 << 8)"),
        ("FW_R_MALFORMED = 2,", "FW_R_MALFORMED = 3,"), ("FW_R_NON_IP = 3,", "FW_R_NON_IP = 2,"),
    ])
    compile_with_deps(tmp_path / "firewall.bpf.c", tmp_path / "firewall.bpf.o")
    fw = Btf(tmp_path / "firewall.bpf.o", header_probe(header, tmp_path))
    try:
        problems = "\n".join(firewall_problems(fw, header))
    finally:
        fw.close()
    assert "2 * compiler.MAX_CLASSES vs fw_bitmap max_entries" in problems
    assert "compiler.MAX_CLASSES vs FW_MAX_CLASSES" in problems
    assert "_BITMAP: '<16QII' is 136 bytes, struct fw_bitmap is 144" in problems
    assert "fw_bitmap has fields ['w', 'decide_dst', 'decide_len', 'pad']" in problems
    assert "map fw_bitmap: value is 144 bytes" in problems
    assert "compiler.F_LEN vs FW_F_LEN: Python 128, C 256" in problems
    assert "control.REASONS[2] is 'malformed', enum fw_reason has FW_R_NON_IP = 2 there" in problems

    lb_dir = tmp_path / "lb"
    lb_dir.mkdir()
    header = _copy(LB_DIR, lb_dir, "lb.bpf.c", "lb.h", [
        ("\t__u32 id;         /* index of its counters */\n\t__u32 ring_base;",
         "\t__u32 ring_base;\n\t__u32 id;         /* index of its counters */"),   # same size, swapped
        ("#define LB_WAYS 4", "#define LB_WAYS 8"),
        ("\t__u16 dport;\n\t__u8 proto;", "\t__u16 dport;\n\t__u8 proto;\n\t__u8 ttl;"),  # only in inlined code
    ])
    compile_with_deps(lb_dir / "lb.bpf.c", lb_dir / "lb.bpf.o")
    lb, decap = Btf(lb_dir / "lb.bpf.o", header_probe(header, lb_dir)), Btf(builtin_object("lb_decap"))
    try:
        problems = "\n".join(lb_problems(lb, decap, header, lb_dir / "lb.bpf.c"))
    finally:
        lb.close()
        decap.close()
    assert "struct lb_vip has fields ['ring_base', 'id'" in problems
    assert "control.WAYS vs LB_WAYS" in problems and "lb_flow_set.way" in problems
    assert "struct lb_flow_key has fields ['src', 'dst', 'sport', 'dport', 'proto', 'ttl'" in problems
    assert "flowhash._FLOW_FAMILY vs offsetof(lb_flow_key, family): Python 37, C 38" in problems
