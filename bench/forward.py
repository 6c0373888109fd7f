#!/usr/bin/env python3
"""Forwarding plane benchmarks (part of `make bench`; also runnable alone, as root).

One router lab (src -> dut -> dst): 64-byte UDP from the live-frames generator in src (one
thread, 16 flows, to dut in0's MAC), counted where it arrives (a counting XDP_DROP on dst eth0:
the veth's rx_queue_N_xdp_packets, which sees the kernel's skbs and redirected frames alike).
Cases on the dut, set up and torn down in each of alternated rounds:

- kernel IP forwarding (no XDP on the dut)
- xdpkit forward as shipped (next-hop memory of 4096 slots per CPU)
- xdpkit forward without next-hop memory (a bpf_fib_lookup per packet)
- a bare redirect: fixed MACs, bpf_redirect_map to out0 (the least an XDP forwarder does)
- xdpkit forward with 10, then 1,000 extra routes in the dut (with and without the memory)

Targets: forward >= 2.5x kernel forwarding; >= 0.8x the bare redirect; 1,000 routes within 10%
of 10 routes. Ratios are medians of per-round ratios.
"""
from __future__ import annotations

import secrets
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from xdpkit import netns as xns
from xdpkit.apps.forward.control import Forwarder
from xdpkit.builtin import builtin_object
from xdpkit.compile import compile_file
from xdpkit.errors import XdpkitError
from xdpkit.interfaces import StatsReader, get_gro, ifindex_of
from xdpkit.lab import Lab, trafficgen as tg
from xdpkit.lab.bench import median_inner, standalone
from xdpkit.object import Object

A = Lab.addresses
HERE = Path(__file__).resolve().parent
FLOWS = 16
SANITY_FRAMES = 20000
ROUTE_PROTO = "250"   # the extra routes' protocol number: one flush removes them all


def _mac_c(mac: str) -> str:
    return ",".join(f"0x{b}" for b in mac.split(":"))


def compile_bare() -> Path:
    """bench/c/bare_redirect.bpf.c with the lab's MACs (dst host, dut out0)."""
    return compile_file(HERE / "c" / "bare_redirect.bpf.c",
                        cflags=[f"-DDST_MAC={_mac_c(A.dst_mac)}", f"-DSRC_MAC={_mac_c(A.dut_out_mac)}"])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def routes(n: int) -> list[str]:
    """``n`` prefixes inside 198.18.0.0/15 that the traffic (to 198.18.2.2) does not match, the
    first ones beside its own: host routes in 198.18.2.0/24, then /24s in 198.18/16 and 198.19/16,
    then /32s in 198.19/16."""
    out = [f"198.18.2.{x}/32" for x in range(3, 255)]
    out += [f"198.18.{x}.0/24" for x in range(4, 256)]
    out += [f"198.19.{x}.0/24" for x in range(256)]
    out += [f"198.19.{x}.1/32" for x in range(256)]
    return out[:n]


def _ip_batch(lab: Lab, lines: list[str]) -> None:
    subprocess.run(["ip", "-n", lab.dut, "-batch", "-"], input="".join(ln + "\n" for ln in lines),
                   capture_output=True, text=True, timeout=30, check=True)


def add_routes(lab: Lab, prefixes: list[str]) -> None:
    _ip_batch(lab, [f"route add {p} via {A.dst_ip4} dev out0 proto {ROUTE_PROTO}" for p in prefixes])


def flush_routes(lab: Lab) -> None:
    subprocess.run(["ip", "-n", lab.dut, "route", "flush", "proto", ROUTE_PROTO], capture_output=True,
                   timeout=30, check=True)


class CountingDrop:
    """The receivers' counting XDP_DROP on ``ifname`` in namespace ``ns``, read from the veth's own
    counters (``veth``) and from the program's map (``own``). bench/afxdp.py counts echoes with it."""

    def __init__(self, ns: str, ifname: str = "eth0"):
        self.ns = ns
        with xns.inside(ns):
            self.obj = Object.from_file(builtin_object("receivers"), program="xdpkit_count_drop")
            try:
                self.link = self.obj.programs["xdpkit_count_drop"].attach(ifname, mode="native")
                self.stats = StatsReader(ifname)
            except BaseException:
                self.obj.close()
                raise

    def veth(self) -> int:
        return self.stats.rx_xdp_packets()

    def own(self) -> int:
        return self.obj.maps["rx_count"][0].sum()

    def close(self) -> None:
        self.stats.close()
        with xns.inside(self.ns):
            self.link.detach()
        self.obj.close()


def measure(lab: Lab, gen: tg.TrafficGen, rcv: CountingDrop, duration: float) -> float:
    """Frames per second arriving at dst: median of half-second samples, first and last dropped."""
    result: dict = {}

    def drive():
        try:
            with xns.inside(lab.src):
                result["gen"] = gen.run(duration=duration, threads=1)
        except BaseException as exc:  # reported below, in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=drive, name="xdpkit-bench-fwd-gen")
    prev, t_prev = rcv.veth(), time.monotonic()
    worker.start()
    samples = []
    while worker.is_alive():
        worker.join(timeout=0.5)
        now, t_now = rcv.veth(), time.monotonic()
        samples.append((now - prev) / (t_now - t_prev))
        prev, t_prev = now, t_now
    if "error" in result:
        raise result["error"]
    return median_inner(samples)


def sanity(lab: Lab, gen: tg.TrafficGen, rcv: CountingDrop) -> dict:
    """Send a counted burst: how much of it both counters at dst saw."""
    v0, o0 = rcv.veth(), rcv.own()
    with xns.inside(lab.src):
        sent = gen.run(count=SANITY_FRAMES).sent
    time.sleep(0.1)
    return {"sent": sent, "veth": rcv.veth() - v0, "own": rcv.own() - o0}


# ---- the cases on the dut: setup returns what teardown needs ------------------------------

def _forward_setup(lab: Lab, **kw) -> Forwarder:
    with xns.inside(lab.dut):
        return Forwarder.load(["in0", "out0"], **kw)


def _forward_teardown(lab: Lab, fwd: Forwarder) -> dict:
    with xns.inside(lab.dut):
        try:
            s = fwd.stats()
        finally:
            fwd.close()
            Forwarder.unload()
    return {"memory_hits": s["events"]["forwarded"]["packets"], "lookups": s["events"]["looked_up"]["packets"],
            "to_stack": s["to_stack"], "dropped": s["dropped"]}


def _bare_setup(lab: Lab, obj_path: Path):
    with xns.inside(lab.dut):
        obj = Object.from_file(obj_path)
        try:
            obj.maps["bare_ports"].update_raw(struct.pack("<I", 0), struct.pack("<I", ifindex_of("out0")))
            link = obj.programs["bare_redirect"].attach("in0", mode="native")
        except BaseException:
            obj.close()
            raise
    return obj, link


def _bare_teardown(lab: Lab, held) -> None:
    obj, link = held
    with xns.inside(lab.dut):
        try:
            link.detach()
        finally:
            obj.close()


def _check_lab(lab: Lab) -> None:
    ping = lab.run("src", ["ping", "-c", "1", "-W", "2", A.dst_ip4])
    if ping.returncode != 0:
        raise XdpkitError(f"the lab does not forward a ping from src to dst: {ping.stdout.strip()}")
    # The receiver drops everything, ARP replies too: a neighbour entry that ages out would fail,
    # so the one the ping made is made permanent (the kernel's fast path, the XDP lookups' answer).
    subprocess.run(["ip", "-n", lab.dut, "neigh", "replace", A.dst_ip4, "lladdr", A.dst_mac, "dev", "out0",
                    "nud", "permanent"], capture_output=True, timeout=10, check=True)
    with xns.inside(lab.dut):
        if not get_gro("in0"):
            raise XdpkitError("GRO is off on dut in0: it would drop the generator's frames without XDP")


def run(duration: float = 3.0, rounds: int = 3) -> dict:
    lab = Lab("fb" + secrets.token_hex(2), router=True)
    samples: dict = {k: [] for k in ("kernel", "forward", "nomem", "bare", "r10", "r1000", "nomem_r10",
                                     "nomem_r1000")}
    checks: dict = {k: [] for k in samples}
    plane: dict = {}
    gen = rcv = None
    bare_obj = compile_bare()
    try:
        lab.up()
        _check_lab(lab)
        rcv = CountingDrop(lab.dst)
        with xns.inside(lab.src):
            template = tg.build_template(proto="udp", size=64, src_mac=A.src_mac, dst_mac=A.dut_in_mac,
                                         src_ip=A.src_ip4, dst_ip=A.dst_ip4)
            gen = tg.TrafficGen("eth0", template, tg.Flows(sport_base=1024, sport_count=FLOWS))

        def one(key: str, label: str) -> None:
            checks[key].append(sanity(lab, gen, rcv))
            samples[key].append(measure(lab, gen, rcv, duration) / 1e6)
            c = checks[key][-1]
            log(f"  {label}: {samples[key][-1]:.2f} Mpps (burst of {c['sent']}: {c['veth']} counted by "
                f"the veth, {c['own']} by the receiver)")

        for r in range(rounds):
            log(f"forward, round {r + 1}/{rounds}")
            one("kernel", "kernel forwarding")
            for key, label, kw in (("forward", "xdpkit forward", {}),
                                   ("nomem", "forward, no next-hop memory", {"cache_slots": 0})):
                fwd = _forward_setup(lab, **kw)
                try:
                    one(key, label)
                finally:
                    plane.setdefault(key, []).append(_forward_teardown(lab, fwd))
            held = _bare_setup(lab, bare_obj)
            try:
                one("bare", "bare redirect")
            finally:
                _bare_teardown(lab, held)
            for prefix, label, kw in (("", "forward", {}), ("nomem_", "forward, no memory", {"cache_slots": 0})):
                fwd = _forward_setup(lab, **kw)
                try:
                    add_routes(lab, routes(10))
                    one(prefix + "r10", f"{label}, 10 routes")
                    add_routes(lab, routes(1000)[10:])
                    one(prefix + "r1000", f"{label}, 1,000 routes")
                finally:
                    flush_routes(lab)
                    plane.setdefault(prefix + "routes", []).append(_forward_teardown(lab, fwd))
    finally:
        if gen is not None:
            gen.close()
        if rcv is not None:
            rcv.close()
        if lab.exists():
            lab.down()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y if y else 0.0 for x, y in zip(samples[a], samples[b]))

    return {"duration_s": duration, "rounds": rounds, "flows": FLOWS,
            "mpps": {k: statistics.median(v) for k, v in samples.items()},
            "samples": {k: [round(x, 3) for x in v] for k, v in samples.items()},
            "vs_kernel": ratio("forward", "kernel"), "vs_bare": ratio("forward", "bare"),
            "routes_ratio": ratio("r1000", "r10"), "nomem_routes_ratio": ratio("nomem_r1000", "nomem_r10"),
            "nomem_vs_kernel": ratio("nomem", "kernel"), "nomem_vs_bare": ratio("nomem", "bare"),
            # the worst burst of each case: the share of SANITY_FRAMES both counters saw
            "delivered": {k: min(min(c["veth"], c["own"]) / c["sent"] for c in v) for k, v in checks.items()},
            "plane": plane}


CASES = (("kernel", "kernel IP forwarding (no XDP on the dut)"),
         ("forward", "xdpkit forward (next-hop memory, 4096 slots)"),
         ("nomem", "xdpkit forward, no next-hop memory (a FIB lookup per packet)"),
         ("bare", "bare redirect (fixed MACs, DEVMAP)"),
         ("r10", "xdpkit forward, 10 extra routes"),
         ("r1000", "xdpkit forward, 1,000 extra routes"),
         ("nomem_r10", "no next-hop memory, 10 extra routes"),
         ("nomem_r1000", "no next-hop memory, 1,000 extra routes"))


def markdown(r: dict) -> str:
    m, s = r["mpps"], r["samples"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = ["## Forwarding plane (`xdpkit forward`)", "",
             f"Router lab, 64-byte UDP, one generator thread, {r['flows']} flows, counted at dst; medians of "
             f"{r['rounds']} alternated rounds of {r['duration_s']:.0f} s (half-second samples, first and last "
             "dropped), ratios medians of per-round ratios. Delivered: the share of a counted burst of "
             f"{SANITY_FRAMES:,} frames that arrived (worst round).", "",
             "| case | Mpps | rounds | delivered |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {m[k]:.2f} | {', '.join(f'{x:.2f}' for x in s[k])} | {100 * r['delivered'][k]:.0f}% |"
              for k, label in CASES]
    lines += ["", "| figure | value | reference | ratio | target | result |", "|---|---:|---:|---:|---|---|",
              f"| forward vs kernel forwarding | {m['forward']:.2f} Mpps | {m['kernel']:.2f} Mpps | "
              f"{r['vs_kernel']:.2f} | >= 2.5 | {verdict(r['vs_kernel'] >= 2.5)} |",
              f"| forward vs bare redirect | {m['forward']:.2f} Mpps | {m['bare']:.2f} Mpps | "
              f"{r['vs_bare']:.2f} | >= 0.8 | {verdict(r['vs_bare'] >= 0.8)} |",
              f"| 1,000 routes vs 10 | {m['r1000']:.2f} Mpps | {m['r10']:.2f} Mpps | {r['routes_ratio']:.2f} | "
              f"0.9-1.1 | {verdict(0.9 <= r['routes_ratio'] <= 1.1)} |",
              f"| no memory vs kernel forwarding | {m['nomem']:.2f} Mpps | {m['kernel']:.2f} Mpps | "
              f"{r['nomem_vs_kernel']:.2f} | | |",
              f"| no memory vs bare redirect | {m['nomem']:.2f} Mpps | {m['bare']:.2f} Mpps | "
              f"{r['nomem_vs_bare']:.2f} | | |",
              f"| no memory, 1,000 routes vs 10 | {m['nomem_r1000']:.2f} Mpps | {m['nomem_r10']:.2f} Mpps | "
              f"{r['nomem_routes_ratio']:.2f} | | |"]
    hits = []
    for key, label in (("forward", "xdpkit forward"), ("routes", "with extra routes")):
        p = r["plane"].get(key, [])
        total = sum(x["memory_hits"] + x["lookups"] for x in p)
        hits.append(f"{label} {100 * sum(x['memory_hits'] for x in p) / total if total else 0:.1f}%")
    to_stack = sum(x["to_stack"] for v in r["plane"].values() for x in v)
    lines += ["", f"Frames the next-hop memory answered (the rest were looked up): {', '.join(hits)}. "
              f"Frames the planes passed to the stack, all cases: {to_stack:,}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    standalone(run, markdown, 3.0)
