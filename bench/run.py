#!/usr/bin/env python3
"""The standard benchmark suite (`make bench`): writes bench/results/latest.md and latest.json.

Every figure stands beside a reference measured in the same run. Needs root.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from xdpkit.lab import bench, trafficgen as tg
import xdpkit
from xdpkit import netns as xns
from xdpkit.bpffs import pin_root

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import afxdp  # noqa: E402  (bench/afxdp.py)
import agent  # noqa: E402  (bench/agent.py)
import firewall  # noqa: E402  (bench/firewall.py)
import firewall_scale  # noqa: E402  (bench/firewall_scale.py)
import forward  # noqa: E402  (bench/forward.py)
import lb  # noqa: E402  (bench/lb.py)
import observe  # noqa: E402  (bench/observe.py)
EXAMPLES = Path(xdpkit.__file__).parent / "examples"
RESULTS = HERE / "results"
ROUNDS = 5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def prog_costs(repeat: int) -> list[dict]:
    frame = tg.build_template(proto="udp", size=64).frame
    rows = []
    for name, kw in (("xdp_pass.bpf.c", {}), ("xdp_drop_udp.bpf.c", {"section": "xdp_drop_udp"}),
                     ("xdp_ethertype_count.bpf.c", {}), ("xdp_redirect.bpf.c", {})):
        log(f"prog cost: {name}")
        res = bench.bench_prog(EXAMPLES / name, [frame], repeat=repeat, **kw)
        ref, me = res["rows"]
        rows.append({"program": me["name"], "ns": me["ns_per_packet"], "ref_ns": ref["ns_per_packet"],
                     "ratio": me["ratio"]})
    return rows


def build_c_generator(tmp: Path) -> Path:
    exe = tmp / "livegen"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "c" / "livegen.c"), "-lbpf"], check=True)
    return exe


def generator_vs_c(duration: float, exe: Path) -> dict:
    """Python-driven generator vs the same program and pacing driven from C, one thread each."""
    pair = bench.LivePair(queues=1)
    rcv = bench.XdpReceiver("native XDP_DROP", "native")
    py, c = [], []
    try:
        rcv.setup(pair)
        with xns.inside(pair.gen):
            template = tg.build_template(size=64, dst_mac=pair.r0_mac, dst_ip=pair.R0_IP)
            gen = tg.TrafficGen("g0", template)
        pin = f"{pin_root(shared=True)}/bench-gen-{os.getpid()}"
        gen.program.pin(pin)
        try:
            for round_ in range(ROUNDS):
                log(f"generator vs C, round {round_ + 1}: python")
                with xns.inside(pair.gen):
                    py.append(gen.run(duration=duration, threads=1).pps)
                log(f"generator vs C, round {round_ + 1}: C")
                out = subprocess.run(["ip", "netns", "exec", pair.gen, str(exe), pin, str(gen.ifindex),
                                      template.frame.hex(), str(duration), str(sorted(os.sched_getaffinity(0))[0])],
                                     capture_output=True, text=True, timeout=duration + 30, check=True).stdout
                frames, secs = out.split()
                c.append(int(frames) / float(secs))
        finally:
            os.unlink(pin)
            gen.close()
    finally:
        rcv.teardown(pair)
        pair.close()
    med_py, med_c = statistics.median(py), statistics.median(c)
    # rounds alternate, so the median of per-round ratios cancels drift that hits both sides
    return {"python_mpps": med_py / 1e6, "c_mpps": med_c / 1e6,
            "ratio": statistics.median(a / b for a, b in zip(py, c)),
            "python_rounds": [round(x / 1e6, 3) for x in py], "c_rounds": [round(x / 1e6, 3) for x in c]}


def _sample_cost_us(pair) -> float:
    """What one sample costs: the ioctl that reads the receiving veth's counters, timed
    directly (the A/B rate comparison below is within this VM's run-to-run noise)."""
    import time

    from xdpkit.interfaces import StatsReader

    with xns.inside(pair.rx):
        stats = StatsReader("r0")
    try:
        t0 = time.perf_counter()
        for _ in range(1000):
            stats.rx_xdp_packets()
        return (time.perf_counter() - t0) * 1000.0  # us per read (1000 reads)
    finally:
        stats.close()


def scaling_and_sampling(duration: float) -> dict:
    """1 vs 2 generator threads on a 2-queue veth; sampling once a second vs not at all."""
    out = {}
    pair = bench.LivePair(queues=2)
    rcv = bench.XdpReceiver("native XDP_DROP", "native")
    try:
        rcv.setup(pair)
        runs: dict = {1: [], 2: [], "sampled": [], "unsampled": []}
        for round_ in range(ROUNDS):  # alternate, so drift hits both sides alike
            for threads in (1, 2):
                log(f"scaling, round {round_ + 1}: {threads} thread(s)")
                m = bench.measure_live(pair, duration=duration, threads=threads, size=64)
                runs[threads].append(bench.median_inner(m.samples))
            for sample in (False, True):
                log(f"sampling cost, round {round_ + 1}: sampling {'on' if sample else 'off'}")
                m = bench.measure_live(pair, duration=duration, threads=1, size=64, sample=sample)
                runs["sampled" if sample else "unsampled"].append(m.rx_pps)
        med = {k: statistics.median(v) / 1e6 for k, v in runs.items()}
        out.update(threads_1_mpps=med[1], threads_2_mpps=med[2], scaling=med[2] / med[1],
                   rx_sampled_mpps=med["sampled"], rx_unsampled_mpps=med["unsampled"],
                   sampling_cost=1 - med["sampled"] / med["unsampled"],
                   sample_us=_sample_cost_us(pair),
                   rounds={str(k): [round(x / 1e6, 3) for x in v] for k, v in runs.items()})
    finally:
        rcv.teardown(pair)
        pair.close()
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = ["# xdpkit benchmark results", "",
             f"Machine: {m['cpu']}, {m['cpus']} CPUs, kernel {m['kernel']}; {m['date']}.", "",
             "## Per-program cost (BPF_PROG_TEST_RUN, 64-byte UDP, repeat "
             f"{res['repeat']:,}, median of 5 rounds)", "",
             "| program | ns/packet | bare XDP_DROP ns | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {r['program']} | {r['ns']:.1f} | {r['ref_ns']:.1f} | {r['ratio']:.2f} |" for r in res["prog"]]
    g = res["generator"]
    s = res["scaling"]
    lines += ["", "## Generator (64-byte UDP into a native XDP_DROP receiver)", "",
              "Medians of 5 alternated rounds; ratios are medians of per-round ratios.", "", "| figure | value | reference | ratio | target |", "|---|---:|---:|---:|---|",
              f"| xdpkit trafficgen, 1 thread | {g['python_mpps']:.2f} Mpps | C loop {g['c_mpps']:.2f} Mpps "
              f"| {g['ratio']:.3f} | >= 0.95 |",
              f"| 2 threads, 2-queue veth | {s['threads_2_mpps']:.2f} Mpps | 1 thread {s['threads_1_mpps']:.2f} Mpps "
              f"| {s['scaling']:.2f} | >= 1.6 |",
              f"| cost of sampling once a second | {s['sample_us']:.0f} us per sample | 1 s of CPU | "
              f"{s['sample_us'] / 1e4:.4f}% | <= 2% |",
              f"| received, sampled each second (A/B, noisy) | {s['rx_sampled_mpps']:.2f} Mpps | unsampled "
              f"{s['rx_unsampled_mpps']:.2f} Mpps | {100 * s['sampling_cost']:+.1f}% | |",
              "", f"## Receivers on a veth, {res['live']['duration_s']:.0f} s each, 1 generator thread "
              "(median of per-second samples, first and last dropped)", "",
              "| receiver | Mpps | ratio to native XDP_DROP | CPU (all CPUs) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['receiver']} | {r['mpps']:.2f} | {r['ratio']:.2f} | {r['cpu_percent']:.0f}% |"
              for r in res["live"]["rows"]]
    rows = {r["receiver"]: r for r in res["live"]["rows"]}
    nft = rows.get("nftables netdev ingress drop")
    if nft and nft["mpps"]:
        lines += ["", f"Native XDP_DROP / nftables netdev ingress drop: "
                      f"{res['live']['rows'][0]['mpps'] / nft['mpps']:.2f}x (target >= 2.5x)."]
    lines += ["", "CPU is the busy share of all CPUs during the run: generator and receiver share the",
              "sending CPU (veth runs the peer's NAPI where the frame was sent)."]
    return "\n".join(lines) + "\n"


def stats_markdown(s: dict) -> str:
    lines = ["## Statistics program (`xdpkit stats`), BPF_PROG_TEST_RUN", "",
             "| frame | ns/packet | bare XDP_PASS ns | ratio | target |", "|---|---:|---:|---:|---|"]
    lines += [f"| {k} | {v['stats_ns']:.1f} | {v['ref_ns']:.1f} | {v['ratio']:.2f} | <= 1.5 |"
              for k, v in s["frames"].items()]
    lines.append(f"| all (median of per-round ratios) | {s['stats_ns']:.1f} | {s['ref_ns']:.1f} | "
                 f"{s['ratio']:.2f} | <= 1.5 |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per live measurement")
    p.add_argument("--repeat", type=int, default=1_000_000)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("error: the benchmarks need root (BPF and network namespaces)", file=sys.stderr)
        return 1
    res = {"machine": machine(), "repeat": args.repeat}
    res["prog"] = prog_costs(args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        res["generator"] = generator_vs_c(args.duration, build_c_generator(Path(tmp)))
    res["scaling"] = scaling_and_sampling(args.duration)
    log("receivers")
    res["live"] = bench.bench_live(duration=args.duration, log=log)
    log("statistics program")
    res["stats"] = observe.stats_cost()
    log("firewall")
    res["firewall"] = firewall.run(args.duration)
    log("firewall prefix tables at scale")
    res["firewall_scale"] = firewall_scale.run(args.duration)
    log("load balancer")
    res["lb"] = lb.run(args.duration)
    log("forwarding plane")
    res["forward"] = forward.run(args.duration, rounds=5)
    log("AF_XDP")
    res["afxdp"] = afxdp.run(args.duration)
    log("node agent")
    res["agent"] = agent.run()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(res, indent=2) + "\n")
    md = (markdown(res) + "\n" + stats_markdown(res["stats"]) + "\n" + firewall.markdown(res["firewall"]) + "\n"
          + firewall_scale.markdown(res["firewall_scale"]) + "\n" + lb.markdown(res["lb"]) + "\n"
          + forward.markdown(res["forward"]) + "\n" + afxdp.markdown(res["afxdp"]) + "\n"
          + agent.markdown(res["agent"]))
    (RESULTS / "latest.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
