#!/usr/bin/env python3
"""Observability benchmarks: what the statistics program costs per packet.

`stats_cost()` runs the built-in statistics program (observe/stats.bpf.c: parse + three per-CPU
counter updates, then XDP_PASS) and a bare XDP_PASS through BPF_PROG_TEST_RUN, alternating
them over several rounds on the same frames, and reports the median ns/packet of each and
their ratio. The target is a ratio of at most 1.5. Needs root.
"""
from __future__ import annotations

import json
import statistics
import sys

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from xdpkit.lab.bench import measure_cost
from xdpkit.builtin import builtin_object
from xdpkit.object import Object

TARGET_RATIO = 1.5


def frames() -> dict[str, bytes]:
    """One frame per parsing path the statistics program takes (64-byte minimum frames)."""
    e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    pad = lambda f: bytes(f).ljust(60, b"\0")  # noqa: E731 - minimum Ethernet frame without FCS
    return {
        "udp4": pad(e / IP(src="198.18.1.2", dst="198.18.2.2") / UDP(dport=53)),
        "tcp6": pad(e / IPv6(src="2001:db8:1::2", dst="2001:db8:2::2") / TCP(dport=80)),
        "vlan_udp4": pad(e / Dot1Q(vlan=10) / IP(src="198.18.1.2", dst="198.18.2.2") / UDP(dport=53)),
        "arp": pad(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP()),
    }


def stats_cost(repeat: int = 1_000_000, rounds: int = 7) -> dict:
    """ns/packet of the statistics program beside a bare XDP_PASS, per frame kind and overall.

    Each round measures the reference and the statistics program back to back and the ratio
    is taken per round; the median of those ratios is reported, so load from other processes
    (which moves both figures of a round together) cancels out instead of skewing one side.
    """
    fr = frames()
    with Object.from_file(builtin_object("receivers"), program="xdpkit_pass") as ref_obj, \
            Object.from_file(builtin_object("stats"), program="xdpkit_stats") as st_obj:
        ref, prog = ref_obj.program(), st_obj.program()
        per_kind, all_ratios = {}, []
        for kind, frame in fr.items():
            ref_ns, st_ns, ratios = [], [], []
            for _ in range(rounds):
                r = measure_cost(ref, [frame], repeat)[0]
                s = measure_cost(prog, [frame], repeat)[0]
                ref_ns.append(r)
                st_ns.append(s)
                ratios.append(s / r if r else float("inf"))
            all_ratios += ratios
            per_kind[kind] = {"ref_ns": statistics.median(ref_ns), "stats_ns": statistics.median(st_ns),
                              "ratio": round(statistics.median(ratios), 3)}
    ratio = statistics.median(all_ratios)
    ref_ns = statistics.fmean(v["ref_ns"] for v in per_kind.values())
    st_ns = statistics.fmean(v["stats_ns"] for v in per_kind.values())
    return {"kind": "stats_cost", "reference": "bare XDP_PASS", "repeat": repeat, "rounds": rounds,
            "ref_ns": round(ref_ns, 2), "stats_ns": round(st_ns, 2), "overhead_ns": round(st_ns - ref_ns, 2),
            "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO, "ok": ratio <= TARGET_RATIO,
            "frames": per_kind}


if __name__ == "__main__":
    result = stats_cost(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
    json.dump(result, sys.stdout, indent=2)
    print()
    sys.exit(0 if result["ok"] else 1)
