#!/usr/bin/env python3
"""Firewall benchmarks (part of `make bench`; also runnable alone, as root).

- CIDR matching cost with 10 vs 1,000,000 prefixes (BPF_PROG_TEST_RUN), target ratio <= 1.5
- all features + 1M prefixes vs xdp-filter's all-features program (xdpfilt_dny_all.o), <= 1.5
- loading 1M prefixes (parse + compile + atomic apply), target < 10 s
- live: a flood from listed sources dropped with 1M prefixes loaded, vs bare native XDP_DROP
  (>= 0.8) and vs nftables netdev ingress with the same prefixes in an interval set (>= 2.5x)
"""
from __future__ import annotations

import glob
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from xdpkit import bench, trafficgen as tg
from xdpkit._sys import netns as xns
from xdpkit.apps.firewall.control import Firewall
from xdpkit.apps.firewall.rules import parse_config
from xdpkit.lab import add_veth, lo_up
from xdpkit.object import Object

FEATURES = """deny src file:{blocklist}
deny udp dport 53
deny udp dport 1000-1999
allow tcp dport 22
deny tcp flags syn/syn,ack rate 100000/s per-source
deny icmp icmp-type 8
deny len 1400-1518
policy allow
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_blocklist(path: Path, n: int, seed: int = 1) -> None:
    """n prefixes: 90% /32, 10% /24, spread over the IPv4 space, plus the lab's 198.18.1.0/24."""
    rnd = random.Random(seed)
    with open(path, "w") as f:
        f.write("# xdpkit benchmark blocklist\n198.18.1.0/24\n")
        for i in range(n - 1):
            a = rnd.getrandbits(32)
            if i % 10 == 0:
                f.write(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.0/24\n")
            else:
                f.write(f"{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}\n")


def _median_cost(prog, frame, rounds=5, repeat=1_000_000) -> float:
    return statistics.median(bench.measure_cost(prog, [frame], repeat)[0] for _ in range(rounds))


def prog_costs(tmp: Path) -> dict:
    small, big = tmp / "block10.netset", tmp / "block1m.netset"
    write_blocklist(small, 10)
    write_blocklist(big, 1_000_000)
    # A TCP SYN from an unlisted source: every field is looked up, the rated rule is consulted.
    frame = tg.build_template(proto="tcp", size=64, src_ip="198.19.7.7").frame
    ns = "xbench-fw-" + os.urandom(3).hex()
    xns.create(ns)
    out: dict = {}
    try:
        with xns.inside(ns):
            lo_up()
            add_veth("fa", "fb")
            log("firewall: loading with 10 prefixes")
            fw = Firewall.load("fa", parse_config(FEATURES.format(blocklist=small)))
            try:
                prog = fw._obj.programs["xdpkit_firewall"]
                out["cost_10_ns"] = _median_cost(prog, frame)
                log("firewall: applying 1,000,000 prefixes")
                t0 = time.monotonic()
                rs = parse_config(FEATURES.format(blocklist=big))
                t_parse = time.monotonic() - t0
                res = fw.apply(rs)
                out["load_1m_s"] = time.monotonic() - t0
                out["load_1m_parse_s"] = t_parse
                out["load_1m_entries"] = res.entries
                out["cost_1m_ns"] = _median_cost(prog, frame)
                out["memory_1m_mib"] = fw.stats()["memory_bytes"] / 2**20
            finally:
                Firewall.unload("fa")
                fw.close()
    finally:
        xns.remove(ns)
    out["flatness"] = out["cost_1m_ns"] / out["cost_10_ns"]
    filt = sorted(glob.glob("/usr/lib/*/bpf/xdpfilt_dny_all.o"))
    if filt:
        with Object.from_file(filt[0]) as obj:
            out["xdp_filter_ns"] = _median_cost(next(iter(obj.programs.values())), frame)
        out["vs_xdp_filter"] = out["cost_1m_ns"] / out["xdp_filter_ns"]
    with Object.from_file(bench.builtin_object("receivers"), program="xdpkit_drop") as obj:
        out["bare_drop_ns"] = _median_cost(obj.program(), frame)
    return out


def _nft_rules(blocklist: Path) -> str:
    elems = []
    for line in blocklist.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            elems.append(line)
    return ("table netdev xdpkit_fw_bench {\n  set block { type ipv4_addr; flags interval; auto-merge; elements = { "
            + ", ".join(elems) + " } }\n"
            "  chain ingress { type filter hook ingress device \"r0\" priority 0; policy accept;\n"
            "    ip saddr @block counter drop\n  }\n}\n")


def live(tmp: Path, duration: float) -> dict:
    big = tmp / "block1m.netset"
    if not big.exists():
        write_blocklist(big, 1_000_000)
    pair = bench.LivePair(queues=1)
    out: dict = {}
    try:
        # the generator's sources (198.18.1.2 + 64) are all in the list: every frame is dropped
        def measure(label):
            m = bench.measure_live(pair, duration=duration, threads=1, size=64, src_ips=64)
            out[label] = bench.median_inner(m.samples) / 1e6
            log(f"  {label}: {out[label]:.2f} Mpps")

        rcv = bench.XdpReceiver("native XDP_DROP", "native")
        rcv.setup(pair)
        try:
            measure("bare_drop_mpps")
        finally:
            rcv.teardown(pair)
        with xns.inside(pair.rx):
            fw = Firewall.load("r0", parse_config(FEATURES.format(blocklist=big)), mode="native")
        try:
            measure("firewall_mpps")
        finally:
            with xns.inside(pair.rx):
                Firewall.unload("r0")
            fw.close()
        log("firewall: loading the same prefixes into an nftables interval set")
        t0 = time.monotonic()
        pair.run_rx(["nft", "-f", "-"], stdin=_nft_rules(big))
        out["nft_load_s"] = time.monotonic() - t0
        try:
            measure("nft_mpps")
        finally:
            pair.run_rx(["nft", "delete", "table", "netdev", "xdpkit_fw_bench"])
    finally:
        pair.close()
    out["vs_bare_drop"] = out["firewall_mpps"] / out["bare_drop_mpps"]
    out["vs_nft"] = out["firewall_mpps"] / out["nft_mpps"]
    return out


def run(duration: float = 5.0) -> dict:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = prog_costs(tmp)
        res.update(live(tmp, duration))
    return res


def markdown(r: dict) -> str:
    lines = ["## Firewall (64-byte frames; blocklist of 1,000,000 prefixes, 90% /32, 10% /24)", "",
             "| figure | value | reference | ratio | target |", "|---|---:|---:|---:|---|",
             f"| cost, all features, 1M prefixes | {r['cost_1m_ns']:.0f} ns | 10 prefixes {r['cost_10_ns']:.0f} ns "
             f"| {r['flatness']:.2f} | <= 1.5 |"]
    if "xdp_filter_ns" in r:
        lines.append(f"| cost, all features, 1M prefixes | {r['cost_1m_ns']:.0f} ns | xdp-filter all features "
                     f"{r['xdp_filter_ns']:.0f} ns | {r['vs_xdp_filter']:.2f} | <= 1.5 |")
    lines += [f"| load 1M prefixes (parse+compile+apply) | {r['load_1m_s']:.1f} s | | | < 10 s |",
              f"| live drop of a flood from listed sources | {r['firewall_mpps']:.2f} Mpps | native XDP_DROP "
              f"{r['bare_drop_mpps']:.2f} Mpps | {r['vs_bare_drop']:.2f} | >= 0.8 |",
              f"| live drop, same prefixes | {r['firewall_mpps']:.2f} Mpps | nftables interval set "
              f"{r['nft_mpps']:.2f} Mpps | {r['vs_nft']:.2f} | >= 2.5 |",
              "", f"Maps with 1M prefixes: {r['memory_1m_mib']:.0f} MiB of kernel memory. Bare XDP_DROP "
              f"costs {r['bare_drop_ns']:.0f} ns per test run here; nftables took {r['nft_load_s']:.0f} s to load "
              "the same set."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    res = run(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
    print(json.dumps(res, indent=2))
    print(markdown(res))
