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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import prefixsets as ps  # bench/prefixsets.py
from xdpkit.lab import bench, trafficgen as tg
from xdpkit import netns as xns
from xdpkit.apps.firewall.control import Firewall
from xdpkit.apps.firewall.rules import parse_config
from xdpkit.lab import add_veth, lo_up
from xdpkit.builtin import builtin_object
from xdpkit.object import Object, ObjectSpec

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


def _alternated(progs: dict, frame: bytes, rounds: int = 7, repeat: int = 1_000_000) -> dict:
    """Median ns per program, measured round-robin so that drift hits all of them alike."""
    samples: dict = {k: [] for k in progs}
    for _ in range(rounds):
        for k, prog in progs.items():
            samples[k].append(bench.measure_cost(prog, [frame], repeat)[0])
    return {k: statistics.median(v) for k, v in samples.items()}, samples


def _load_unpinned(path: str) -> Object:
    """Load an object with its map pinning switched off: xdp-filter's maps say
    LIBBPF_PIN_BY_NAME, which would leave (and later reuse) pins in /sys/fs/bpf."""
    spec = ObjectSpec.from_file(path)
    for m in spec.maps.values():
        m.pin_path = None
    return spec.load()


def prog_costs(tmp: Path) -> dict:
    small, big = tmp / "block10.netset", tmp / "block1m.netset"
    ps.write_legacy_v4(small, 10)
    ps.write_legacy_v4(big, 1_000_000)
    # An allowed UDP frame from an unlisted source walks every lookup (it matches no rule);
    # a TCP SYN also goes through the per-source rate limiter (a feature xdp-filter lacks).
    frames = {"udp": tg.build_template(proto="udp", size=64, src_ip="198.19.7.7", dport=4000).frame,
              "syn": tg.build_template(proto="tcp", size=64, src_ip="198.19.7.7").frame}
    ns = "xbench-fw-" + os.urandom(3).hex()
    xns.create(ns)
    out: dict = {}
    filt = sorted(glob.glob("/usr/lib/*/bpf/xdpfilt_dny_all.o"))
    try:
        with xns.inside(ns):
            lo_up()
            add_veth("fa", "fb")
            add_veth("fc", "fd")
            log("firewall: loading with 10 prefixes")
            # The per-CPU memo of source lookups would answer every repeat of the same frame:
            # the table figures are measured without it, and the memo's own cost beside them.
            fw10 = Firewall.load("fa", parse_config(FEATURES.format(blocklist=small)), src_memo=False)
            add_veth("fe", "ff")
            fwm = Firewall.load("fe", parse_config(FEATURES.format(blocklist=small)))
            log("firewall: loading with 1,000,000 prefixes")
            t0 = time.monotonic()
            rs = parse_config(FEATURES.format(blocklist=big))
            out["load_1m_parse_s"] = time.monotonic() - t0
            fw1m = Firewall.load("fc", parse_config("policy allow"), src_memo=False)
            t0 = time.monotonic()
            res = fw1m.apply(rs)  # compile and apply
            out["load_1m_s"] = out["load_1m_parse_s"] + time.monotonic() - t0
            out["load_1m_entries"] = res.entries
            out["memory_1m_mib"] = fw1m.stats()["memory_bytes"] / 2**20
            others = [Object.from_file(builtin_object("receivers"), program="xdpkit_drop")]
            if filt:
                others.append(_load_unpinned(filt[0]))
            try:
                progs = {"fw10": fw10._obj.programs["xdpkit_firewall"], "fw1m": fw1m._obj.programs["xdpkit_firewall"],
                         "memo": fwm._obj.programs["xdpkit_firewall"], "bare_drop": others[0].program()}
                if filt:
                    progs["xdp_filter"] = next(iter(others[1].programs.values()))
                for fname, frame in frames.items():
                    log(f"firewall: per-packet cost, {fname} frame")
                    med, samples = _alternated(progs, frame)
                    out[f"{fname}_ns"] = med
                    out[f"{fname}_flatness"] = statistics.median(
                        a / b for a, b in zip(samples["fw1m"], samples["fw10"]))
                    if filt:
                        out[f"{fname}_vs_xdp_filter"] = statistics.median(
                            a / b for a, b in zip(samples["fw1m"], samples["xdp_filter"]))
            finally:
                for o in others:
                    o.close()
                Firewall.unload("fa")
                Firewall.unload("fc")
                Firewall.unload("fe")
                fw10.close()
                fw1m.close()
                fwm.close()
    finally:
        xns.remove(ns)
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


def live_mpps(pair, duration: float) -> float:
    """Mpps received on r0 from the generator's 64 sources (198.18.1.2 on), 64-byte UDP."""
    m = bench.measure_live(pair, duration=duration, threads=1, size=64, src_ips=64)
    return bench.median_inner(m.samples) / 1e6


def alternated_live(bare_pair, fw_pair, duration: float, rounds: int, label: str) -> tuple[list, list]:
    """live_mpps of native XDP_DROP on one pair and the firewall on the other, in turn (drift
    hits both alike)."""
    b, f = [], []
    for i in range(rounds):
        b.append(live_mpps(bare_pair, duration))
        f.append(live_mpps(fw_pair, duration))
        log(f"  round {i + 1}: native XDP_DROP {b[-1]:.2f} Mpps, {label} {f[-1]:.2f} Mpps")
    return b, f


def live(tmp: Path, duration: float, rounds: int = 3) -> dict:
    """Two veth pairs, one with a bare native XDP_DROP and one with the firewall (1M prefixes),
    measured alternately; then nftables with the same set on the bare pair."""
    big = tmp / "block1m.netset"
    if not big.exists():
        ps.write_legacy_v4(big, 1_000_000)
    bare_pair, fw_pair = bench.LivePair(queues=1), bench.LivePair(queues=1)
    out: dict = {}
    bare = bench.XdpReceiver("native XDP_DROP", "native")
    fw = None
    try:
        bare.setup(bare_pair)
        with xns.inside(fw_pair.rx):
            fw = Firewall.load("r0", parse_config(FEATURES.format(blocklist=big)), mode="native")

        # the generator's 64 sources (198.18.1.2 on) are all in the list: every frame is dropped
        b, f = alternated_live(bare_pair, fw_pair, duration, rounds, "firewall")
        out.update(bare_drop_mpps=statistics.median(b), firewall_mpps=statistics.median(f),
                   vs_bare_drop=statistics.median(x / y for x, y in zip(f, b)),
                   rounds={"bare": [round(x, 3) for x in b], "firewall": [round(x, 3) for x in f]})
        # The same without the source memo: what a flood from ever-new (spoofed) sources costs.
        with xns.inside(fw_pair.rx):
            Firewall.unload("r0")
            fw.close()
            fw = None
            fw = Firewall.load("r0", parse_config(FEATURES.format(blocklist=big)), mode="native", src_memo=False)
        b2, f2 = alternated_live(bare_pair, fw_pair, duration, rounds, "firewall without memo")
        out.update(nomemo_mpps=statistics.median(f2), nomemo_vs_bare_drop=statistics.median(
            x / y for x, y in zip(f2, b2)), nomemo_bare_drop_mpps=statistics.median(b2))
        bare.teardown(bare_pair)
        bare = None
        log("firewall: loading the same prefixes into an nftables interval set")
        t0 = time.monotonic()
        bare_pair.run_rx(["nft", "-f", "-"], stdin=_nft_rules(big))
        out["nft_load_s"] = time.monotonic() - t0
        try:
            n = []
            for i in range(rounds):
                n.append(live_mpps(bare_pair, duration))
                log(f"  round {i + 1}: nftables {n[-1]:.2f} Mpps")
            out["nft_mpps"] = statistics.median(n)
        finally:
            bare_pair.run_rx(["nft", "delete", "table", "netdev", "xdpkit_fw_bench"])
    finally:
        if bare is not None:
            bare.teardown(bare_pair)
        if fw is not None:
            with xns.inside(fw_pair.rx):
                Firewall.unload("r0")
            fw.close()
        bare_pair.close()
        fw_pair.close()
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
             "All features in use (CIDR set, ports, port range, TCP flags with a per-source rate, ICMP type,",
             "length); per-packet figures are medians of 7 alternated rounds, ratios medians of per-round ratios.",
             "Per-packet costs walk the prefix tables (source memo off); the memo's hit cost is given beside.",
             "The live flood runs as shipped (memo on); the flood's 64 sources are answered by the memo.", "",
             "| figure | value | reference | ratio | target |", "|---|---:|---:|---:|---|"]
    for fname, label in (("udp", "allowed UDP, every lookup"), ("syn", "TCP SYN, + rate limiter")):
        ns = r[f"{fname}_ns"]
        lines.append(f"| cost, {label}, 1M prefixes | {ns['fw1m']:.0f} ns | 10 prefixes {ns['fw10']:.0f} ns "
                     f"| {r[f'{fname}_flatness']:.2f} | <= 1.5 |")
        if "xdp_filter" in ns:
            lines.append(f"| cost, {label}, 1M prefixes | {ns['fw1m']:.0f} ns | xdp-filter all features "
                         f"{ns['xdp_filter']:.0f} ns | {r[f'{fname}_vs_xdp_filter']:.2f} | <= 1.5 |")
        lines.append(f"| cost, {label}, source memo hit | {ns['memo']:.0f} ns | | | |")
    lines += [f"| load 1M prefixes (parse+compile+apply) | {r['load_1m_s']:.1f} s | | | < 10 s |",
              f"| live drop of a flood from listed sources | {r['firewall_mpps']:.2f} Mpps | native XDP_DROP "
              f"{r['bare_drop_mpps']:.2f} Mpps | {r['vs_bare_drop']:.2f} | >= 0.8 |",
              f"| live drop, source memo off | {r['nomemo_mpps']:.2f} Mpps | native XDP_DROP "
              f"{r['nomemo_bare_drop_mpps']:.2f} Mpps | {r['nomemo_vs_bare_drop']:.2f} | |",
              f"| live drop, same prefixes | {r['firewall_mpps']:.2f} Mpps | nftables interval set "
              f"{r['nft_mpps']:.2f} Mpps | {r['vs_nft']:.2f} | >= 2.5 |",
              "", f"Maps with 1M prefixes: {r['memory_1m_mib']:.0f} MiB of kernel memory. Bare XDP_DROP "
              f"costs {r['udp_ns']['bare_drop']:.0f} ns per test run here; nftables took {r['nft_load_s']:.0f} s to load "
              "the same set."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    res = run(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
    print(json.dumps(res, indent=2))
    print(markdown(res))
