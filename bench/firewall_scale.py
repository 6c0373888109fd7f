#!/usr/bin/env python3
"""Firewall prefix tables at real-world scale (part of `make bench`; also runnable alone, as root).

- kernel memory of an empty firewall (<= 16 MiB) and of one with 1,000 prefixes (<= 24 MiB)
- 1,000,000 IPv4 prefixes, lengths uniform over /8-/32, and 1,000,000 IPv6 prefixes (/16-/128,
  mostly /32-/64): load < 10 s, kernel memory <= 2x a kernel LPM trie of the same prefixes
  (both measured as the rise of SUnreclaim + VmallocUsed + Percpu), cost per packet <= 1.5x
  the 10-prefix cost (BPF_PROG_TEST_RUN, source memo off)
- live: a flood dropped by a port rule from a source no prefix lists (the memo cannot answer
  a blocklist decision) vs bare native XDP_DROP, >= 0.8
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import firewall as fwbench    # bench/firewall.py
import memory as mem          # bench/memory.py
import prefixsets as ps       # bench/prefixsets.py
from xdpkit import netns as xns
from xdpkit.apps.firewall.control import Firewall
from xdpkit.apps.firewall.rules import parse_config
from xdpkit.builtin import builtin_object
from xdpkit.lab import add_veth, bench, lo_up, trafficgen as tg
from xdpkit.object import Object

MiB = 2**20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _memory_of(fn) -> int:
    """Kernel memory that ``fn`` leaves allocated (settled readings before and after)."""
    before = mem.settled_memory_bytes()
    fn()
    return mem.settled_memory_bytes() - before


def _alternated_ratio(progs: dict, frame: bytes, rounds: int = 7, repeat: int = 1_000_000) -> dict:
    samples: dict = {k: [] for k in progs}
    for _ in range(rounds):
        for k, prog in progs.items():
            samples[k].append(bench.measure_cost(prog, [frame], repeat)[0])
    return {"ns": {k: statistics.median(v) for k, v in samples.items()},
            "flatness": statistics.median(a / b for a, b in zip(samples["big"], samples["small"]))}


def family_case(tmp: Path, family: int) -> dict:
    write = ps.write_mixed_v4 if family == 4 else ps.write_mixed_v6
    read = ps.prefixes_v4 if family == 4 else ps.prefixes_v6
    small, big = tmp / f"mixed{family}_10.netset", tmp / f"mixed{family}_1m.netset"
    write(small, 10)
    write(big, 1_000_000)
    conf = "deny src file:{}\npolicy allow\n"
    # a source no prefix of the 10 lists, whose lookup walks the table (it is allowed)
    src = "198.19.7.7" if family == 4 else "2001:db8:7::7"
    frame = tg.build_template(proto="udp", ipv6=family == 6, size=64 if family == 4 else 78,
                              src_ip=src, dport=4000).frame
    out: dict = {}
    ns = "xbench-fws-" + str(time.monotonic_ns())[-6:]
    xns.create(ns)
    try:
        with xns.inside(ns):
            lo_up()
            add_veth("fa", "fb")
            add_veth("fc", "fd")
            fw10 = Firewall.load("fa", parse_config(conf.format(small)), src_memo=False)
            fw1m = Firewall.load("fc", parse_config(conf.format(small)), src_memo=False)
            try:
                log(f"firewall scale: IPv{family}, 1,000,000 prefixes")
                t0 = time.monotonic()
                rs = parse_config(conf.format(big))
                parse_s = time.monotonic() - t0
                res = {}
                out["tables_bytes"] = _memory_of(lambda: res.update(r=fw1m.apply(rs)))
                out["load_s"] = parse_s + res["r"].seconds
                prefixes = read(big)
                log(f"firewall scale: IPv{family}, the same prefixes in a kernel LPM trie")
                trie = mem.measure_trie(prefixes, family)
                out.update(trie_bytes=trie.kernel_bytes, trie_memlock=trie.memlock_bytes, distinct=trie.distinct,
                           vs_trie=out["tables_bytes"] / trie.kernel_bytes)
                bare = Object.from_file(builtin_object("receivers"), program="xdpkit_drop")
                try:
                    log(f"firewall scale: IPv{family}, per-packet cost")
                    out.update(_alternated_ratio({"small": fw10._obj.programs["xdpkit_firewall"],
                                                  "big": fw1m._obj.programs["xdpkit_firewall"],
                                                  "bare": bare.program()}, frame))
                finally:
                    bare.close()
            finally:
                for name, fw in (("fa", fw10), ("fc", fw1m)):
                    Firewall.unload(name)
                    fw.close()
    finally:
        xns.remove(ns)
    return out


def small_memory(tmp: Path) -> dict:
    path = tmp / "mixed4_1k.netset"
    ps.write_mixed_v4(path, 1000)
    ns = "xbench-fwm-" + str(time.monotonic_ns())[-6:]
    xns.create(ns)
    out = {}
    try:
        with xns.inside(ns):
            lo_up()
            add_veth("fa", "fb")
            held = {}
            out["empty_bytes"] = _memory_of(lambda: held.update(fw=Firewall.load("fa", parse_config("policy allow"))))
            fw = held["fw"]
            try:
                out["empty_reported"] = fw.stats()["memory_bytes"]
                out["k1_bytes"] = out["empty_bytes"] + _memory_of(
                    lambda: fw.apply(parse_config(f"deny src file:{path}\npolicy allow\n")))
                out["k1_reported"] = fw.stats()["memory_bytes"]
            finally:
                Firewall.unload("fa")
                fw.close()
    finally:
        xns.remove(ns)
    return out


def port_rule_flood(tmp: Path, duration: float, rounds: int = 3) -> dict:
    """The generator's sources (198.18.1.2 on) are not listed: each frame is dropped by the
    port rule after the blocklist lookup said "not listed"."""
    listed = tmp / "legacy_1m_unlisted.netset"
    ps.write_legacy_v4(listed, 1_000_000)
    lines = [x for x in listed.read_text().splitlines() if x.strip() and not x.startswith(("#", "198.18."))]
    listed.write_text("\n".join(lines) + "\n")
    bare_pair, fw_pair = bench.LivePair(queues=1), bench.LivePair(queues=1)
    bare = bench.XdpReceiver("native XDP_DROP", "native")
    fw = None
    try:
        bare.setup(bare_pair)
        with xns.inside(fw_pair.rx):
            fw = Firewall.load("r0", parse_config(f"deny src file:{listed}\ndeny udp dport 9\npolicy allow\n"),
                               mode="native")
        b, f = fwbench.alternated_live(bare_pair, fw_pair, duration, rounds, "firewall port rule")
        with xns.inside(fw_pair.rx):
            reasons = fw.stats()["rules"]
        assert reasons[1]["packets"] > 0 and reasons[0]["packets"] == 0, reasons
    finally:
        bare.teardown(bare_pair)
        if fw is not None:
            with xns.inside(fw_pair.rx):
                Firewall.unload("r0")
            fw.close()
        bare_pair.close()
        fw_pair.close()
    return {"bare_mpps": statistics.median(b), "fw_mpps": statistics.median(f),
            "ratio": statistics.median(x / y for x, y in zip(f, b))}


def run(duration: float = 5.0) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = {"small": small_memory(tmp)}
        for family in (4, 6):
            out[f"v{family}"] = family_case(tmp, family)
        out["port_rule"] = port_rule_flood(tmp, duration)
    return out


def markdown(r: dict) -> str:
    s = r["small"]
    lines = ["## Firewall prefix tables at scale (range tables: direct index + B+-trees per chunk)", "",
             "Kernel memory is the rise of SUnreclaim + VmallocUsed + Percpu in /proc/meminfo (what the",
             "kernel really spends; an LPM trie's memlock figure is about 3.4x lower than that).", "",
             "| figure | value | reference | ratio | target |", "|---|---:|---:|---:|---|",
             f"| empty firewall, kernel memory | {s['empty_bytes'] / MiB:.1f} MiB | reported by stats "
             f"{s['empty_reported'] / MiB:.1f} MiB | | <= 16 MiB |",
             f"| 1,000 prefixes (/8-/32), kernel memory | {s['k1_bytes'] / MiB:.1f} MiB | reported by stats "
             f"{s['k1_reported'] / MiB:.1f} MiB | | <= 24 MiB |"]
    for fam, label in ((4, "1M IPv4 prefixes, /8-/32 uniform"), (6, "1M IPv6 prefixes, /16-/128, mostly /32-/64")):
        v = r[f"v{fam}"]
        lines += [
            f"| {label}: load (parse+compile+apply) | {v['load_s']:.1f} s | | | < 10 s |",
            f"| {label}: kernel memory of the tables | {v['tables_bytes'] / MiB:.1f} MiB | LPM trie "
            f"{v['trie_bytes'] / MiB:.1f} MiB ({v['distinct']:,} distinct) | {v['vs_trie']:.2f} | <= 2 |",
            f"| {label}: cost per packet | {v['ns']['big']:.0f} ns | 10 prefixes {v['ns']['small']:.0f} ns "
            f"| {v['flatness']:.2f} | <= 1.5 |"]
    p = r["port_rule"]
    lines += [f"| live flood dropped by a port rule, unlisted source, 1M prefixes | {p['fw_mpps']:.2f} Mpps "
              f"| native XDP_DROP {p['bare_mpps']:.2f} Mpps | {p['ratio']:.2f} | >= 0.8 |",
              "", f"Bare XDP_DROP costs {r['v4']['ns']['bare']:.0f} ns per test run here."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    res = run(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
    print(json.dumps(res, indent=2))
    print(markdown(res))
