#!/usr/bin/env python3
"""AF_XDP benchmarks (part of `make bench`; also runnable alone, as root).

One lab (src -> dut), 64-byte UDP from the live-frames generator in src (one thread, pinned to
the first CPU) to dut in0's MAC. The receivers run on dut in0 queue 0 in copy mode (veth has no
zero-copy), on the last CPU, behind xdpkit's steering program (every frame to the socket):

- rxdrop: xdpkit's `afxdp rxdrop` (Python, run_tool in a thread) vs bench/c/xsk_ref.c rxdrop
- echo:   xdpkit's `afxdp echo` vs xsk_ref echo (addresses and ports swapped in place, sent back on TX); the
          echoed frames are counted where they arrive, by a counting XDP_DROP on src eth0 (which
          also keeps them away from the generator's stack)
- dump:   xdpkit's `afxdp dump` to a pcap file: frames written per second, and whether the loss
          it reports accounts for what the generator sent and the file lacks

Each receiver starts first; the generator starts once the steering program is attached (and, for
the C reference, once its socket is in the XSKMAP) and runs ``duration`` seconds; the receiver
runs on a little longer, idle, so every frame of the window is counted. Rates are frames over the
generator's own run time, the same window for C and Python. Rounds alternate the order of C and
Python; medians of rounds, ratios medians of per-round ratios.

Targets: Python rxdrop >= 0.8x C; Python echo >= 0.5x C; dump >= 1 Mpps written, or its reported
loss equal to sent - written.
"""
from __future__ import annotations

import json
import os
import resource
import secrets
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from xdpkit import netns as xns
from xdpkit.afxdp import Steer
from xdpkit.afxdp.xsk import queues_of
from xdpkit.apps.afxdp.tools import run_tool
from xdpkit.bpffs import pin_root
from xdpkit.builtin import builtin_object
from xdpkit.errors import XdpkitError
from xdpkit.interfaces import StatsReader
from xdpkit.lab import Lab, trafficgen as tg
from xdpkit.lab.bench import standalone
from xdpkit.object import ObjectSpec
from xdpkit.xdp import query

sys.path.insert(0, str(Path(__file__).resolve().parent))
from forward import CountingDrop  # noqa: E402  (bench/forward.py)

A = Lab.addresses
HERE = Path(__file__).resolve().parent
IFACE, QUEUE = "in0", 0
TAIL = 2.0             # seconds a receiver runs past the generator's window (start-up included)
READY_TIMEOUT = 10.0   # seconds to wait for a receiver to be in place
CPUS = sorted(os.sched_getaffinity(0))
RX_CPU = CPUS[-1]      # the generator (and the veth's NAPI, which runs where it sends) take CPUS[0]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_reference(tmp: Path) -> Path:
    exe = tmp / "xsk_ref"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(HERE / "c" / "xsk_ref.c"), "-lbpf"], check=True)
    return exe


def _veth_counters(lab: Lab) -> dict:
    """ethtool -S of dut in0 and src eth0 (the veth's own drop counters)."""
    out = {}
    for ns, ifname in ((lab.dut, IFACE), (lab.src, "eth0")):
        with xns.inside(ns):
            s = StatsReader(ifname)
            try:
                out[f"{'dut' if ns == lab.dut else 'src'} {ifname}"] = s.read()
            finally:
                s.close()
    return out


def _counter_delta(before: dict, after: dict) -> dict:
    return {dev: {k: v - before[dev].get(k, 0) for k, v in c.items()
                  if isinstance(v, int) and v - before[dev].get(k, 0)} for dev, c in after.items()}


def _generate(lab: Lab, gen: tg.TrafficGen, duration: float) -> tg.GenResult:
    with xns.inside(lab.src):
        return gen.run(duration=duration, threads=1)


def _wait(cond, alive, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not cond():
        if not alive():
            raise XdpkitError(f"{what}: the receiver ended before it was ready")
        if time.monotonic() > deadline:
            raise XdpkitError(f"{what}: the receiver was not ready after {READY_TIMEOUT:.0f} s")
        time.sleep(0.02)


def python_round(lab: Lab, gen: tg.TrafficGen, src: CountingDrop, tool: str, duration: float,
                 pcap_path: str | None = None) -> dict:
    """xdpkit's tool on dut in0 (a thread of this process, on RX_CPU) while the generator runs."""
    result: dict = {}

    def receive():
        try:
            os.sched_setaffinity(0, {RX_CPU})   # this thread only
            cpu0 = time.thread_time()
            with xns.inside(lab.dut):
                result["tool"] = run_tool(tool, IFACE, queue=QUEUE, steer=Steer(), duration=duration + TAIL,
                                          pcap_path=pcap_path)
            result["cpu_s"] = time.thread_time() - cpu0
        except BaseException as exc:  # reported in the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=receive, name=f"xdpkit-bench-afxdp-{tool}")
    before = _veth_counters(lab)
    worker.start()
    try:
        def attached() -> bool:
            with xns.inside(lab.dut):
                return bool(query(IFACE))

        _wait(attached, worker.is_alive, f"python {tool}")
        src0 = src.own()
        g = _generate(lab, gen, duration)
    finally:
        worker.join(timeout=duration + TAIL + 60)   # the tool is bounded by its own duration
    if worker.is_alive():
        raise XdpkitError(f"python {tool} did not stop")
    if "error" in result:
        raise result["error"]
    time.sleep(0.05)
    r = result["tool"]
    return {"sent": g.sent, "gen_s": g.seconds, "frames": r.frames, "rx_pps": r.frames / g.seconds,
            "echoed": src.own() - src0, "tool_sent": r.sent, "written": r.written, "lost": r.lost,
            "statistics": r.statistics, "steering": r.steering, "tool_s": r.seconds, "cpu_s": result["cpu_s"],
            "veth": _counter_delta(before, _veth_counters(lab))}


def c_round(lab: Lab, gen: tg.TrafficGen, src: CountingDrop, exe: Path, tool: str, duration: float) -> dict:
    """bench/c/xsk_ref.c on dut in0 (on RX_CPU) behind xdpkit's steering program, attached here,
    with its XSKMAP pinned for the C program to put its socket in."""
    spec = ObjectSpec.from_file(builtin_object("afxdp_steer"))
    try:
        for name, value in Steer().consts().items():
            spec.rodata[name] = value
        with xns.inside(lab.dut):
            spec.maps["xsk_sockets"].max_entries = max(queues_of(IFACE), QUEUE + 1)
        obj = spec.load()
    finally:
        spec.close()
    pin = f"{pin_root(shared=True)}/bench-afxdp-{os.getpid()}-{secrets.token_hex(4)}"
    link = proc = None
    pinned = False
    before = _veth_counters(lab)
    try:
        obj.maps["xsk_sockets"].pin(pin)
        pinned = True
        with xns.inside(lab.dut):
            link = obj.programs["xdpkit_xsk_steer"].attach(IFACE, mode="auto")
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(["ip", "netns", "exec", lab.dut, "taskset", "-c", str(RX_CPU), str(exe), IFACE,
                                 str(QUEUE), tool, str(duration + TAIL), pin],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # "ready" on stderr: its socket is bound and in the XSKMAP
        deadline = time.monotonic() + READY_TIMEOUT
        line = ""
        while line.strip() != "ready":
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stderr], [], [], left)[0]:
                raise XdpkitError(f"C {tool}: not ready after {READY_TIMEOUT:.0f} s")
            line = proc.stderr.readline()
            if not line:
                raise XdpkitError(f"C {tool} ended before it was ready (exit {proc.wait(timeout=5)})")
        src0 = src.own()
        g = _generate(lab, gen, duration)
        out, err = proc.communicate(timeout=duration + TAIL + 30)
        if proc.returncode != 0:
            raise XdpkitError(f"C {tool} failed (exit {proc.returncode}): {err.strip()}")
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = json.loads(out)
        time.sleep(0.05)
        return {"sent": g.sent, "gen_s": g.seconds, "frames": r["frames"], "rx_pps": r["frames"] / g.seconds,
                "echoed": src.own() - src0, "tool_sent": r["sent"], "kicks": r["kicks"],
                "statistics": r["statistics"], "tool_s": r["seconds"],
                "cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
                "veth": _counter_delta(before, _veth_counters(lab))}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if link is not None:
            with xns.inside(lab.dut):
                link.detach()
        if pinned:
            os.unlink(pin)
        obj.close()


def _summary(x: dict) -> str:
    st = x["statistics"]
    return (f"{x['frames']:,} frames of {x['sent']:,} sent ({x['rx_pps'] / 1e6:.2f} Mpps over {x['gen_s']:.2f} s), "
            f"echoed {x['echoed']:,}, rx_dropped {st['rx_dropped']:,}, ring_full {st['rx_ring_full']:,}, "
            f"fill_empty {st['rx_fill_ring_empty_descs']:,}, receiver CPU {x['cpu_s']:.2f} s")


def run(duration: float = 3.0, rounds: int = 3) -> dict:
    lab = Lab("xa" + secrets.token_hex(2))
    runs: dict = {k: [] for k in ("c_rxdrop", "py_rxdrop", "c_echo", "py_echo", "dump")}
    gen = src = None
    try:
        with tempfile.TemporaryDirectory(prefix="xdpkit-bench-afxdp-") as tmp:
            exe = build_reference(Path(tmp))
            lab.up()
            with xns.inside(lab.src):
                template = tg.build_template(proto="udp", size=64, src_mac=A.src_mac, dst_mac=A.dut_in_mac,
                                             src_ip=A.src_ip4, dst_ip=A.dut_in_ip4, dport=9000)
                gen = tg.TrafficGen("eth0", template)
            src = CountingDrop(lab.src)   # where echoed frames arrive (and end)
            for r in range(rounds):
                order = ("c", "py") if r % 2 == 0 else ("py", "c")
                for tool in ("rxdrop", "echo"):
                    for who in order:
                        log(f"afxdp, round {r + 1}/{rounds}: {who} {tool}")
                        if who == "c":
                            x = c_round(lab, gen, src, exe, tool, duration)
                        else:
                            x = python_round(lab, gen, src, tool, duration)
                        runs[f"{who}_{tool}"].append(x)
                        log("  " + _summary(x))
                log(f"afxdp, round {r + 1}/{rounds}: python dump")
                pcap = os.path.join(tmp, "dump.pcap")
                x = python_round(lab, gen, src, "dump", duration, pcap_path=pcap)
                x["pcap_bytes"] = os.path.getsize(pcap)
                os.unlink(pcap)
                runs["dump"].append(x)
                log(f"  {_summary(x)}; written {x['written']:,}, lost {x['lost']:,}, "
                    f"sent - written {x['sent'] - x['written']:,}")
    finally:
        if src is not None:
            src.close()
        if gen is not None:
            gen.close()
        if lab.exists():
            lab.down()
    return summarize(runs, duration, rounds)


def summarize(runs: dict, duration: float, rounds: int) -> dict:
    def med(key: str, field: str) -> float:
        return statistics.median(x[field] for x in runs[key])

    def ratio(a: str, b: str, field: str) -> float:
        return statistics.median(x[field] / y[field] if y[field] else 0.0 for x, y in zip(runs[a], runs[b]))

    for v in runs.values():
        for x in v:
            x["echo_pps"] = x["echoed"] / x["gen_s"]
            x["gen_pps"] = x["sent"] / x["gen_s"]
    dumps = []
    for x in runs["dump"]:
        st = x["statistics"]
        dumps.append({
            "sent": x["sent"], "written": x["written"], "frames": x["frames"], "lost": x["lost"],
            "written_pps": x["written"] / x["gen_s"], "gap": x["sent"] - x["written"],
            "to_socket": x["steering"].get("to_socket", 0), "no_socket": x["steering"].get("no_socket", 0),
            "rx_dropped": st["rx_dropped"], "rx_ring_full": st["rx_ring_full"],
            "fill_empty": st["rx_fill_ring_empty_descs"],
            "kernel_lost": st["rx_dropped"] + st["rx_ring_full"],
            "cpu_s": x["cpu_s"], "gen_s": x["gen_s"], "pcap_bytes": x["pcap_bytes"], "veth": x["veth"]})
    return {
        "duration_s": duration, "rounds": rounds, "rx_cpu": RX_CPU,
        "mpps": {
            "c_rxdrop": med("c_rxdrop", "rx_pps") / 1e6, "py_rxdrop": med("py_rxdrop", "rx_pps") / 1e6,
            "c_echo": med("c_echo", "echo_pps") / 1e6, "py_echo": med("py_echo", "echo_pps") / 1e6,
            "dump_written": statistics.median(d["written_pps"] for d in dumps) / 1e6,
            "gen": statistics.median(x["gen_pps"] for v in runs.values() for x in v) / 1e6},
        "rxdrop_ratio": ratio("py_rxdrop", "c_rxdrop", "rx_pps"),
        "echo_ratio": ratio("py_echo", "c_echo", "echo_pps"),
        "dump": dumps,
        "runs": runs,
    }


def markdown(r: dict) -> str:
    m, runs = r["mpps"], r["runs"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def rounds(key: str, field: str) -> str:
        return ", ".join(f"{x[field] / 1e6:.2f}" for x in runs[key])

    def cpu(key: str) -> str:
        return f"{100 * statistics.median(x['cpu_s'] / x['gen_s'] for x in runs[key]):.0f}%"

    def share(key: str, field: str) -> str:
        return f"{100 * min(x[field] / x['sent'] for x in runs[key]):.1f}%"

    def ns_frame(key: str) -> str:
        return f"{statistics.median(1e9 * x['cpu_s'] / x['frames'] for x in runs[key] if x['frames']):.0f}"

    d = r["dump"]
    exact = all(x["lost"] == x["gap"] for x in d)
    dump_ok = m["dump_written"] >= 1.0 or exact
    dump_rounds = ", ".join(f"{x['written_pps'] / 1e6:.2f}" for x in d)
    stray = max(abs(x["kernel_lost"] - x["gap"]) for x in d)
    lines = ["## AF_XDP (`xdpkit afxdp`, copy mode on a veth)", "",
             f"64-byte UDP from the live-frames generator (one thread, median {m['gen']:.2f} Mpps) to dut in0 "
             f"queue 0; receivers on CPU {r['rx_cpu']}, the generator on the other. Rates are frames over the "
             f"generator's run; medians of {r['rounds']} alternated rounds of {r['duration_s']:.0f} s, ratios "
             "medians of per-round ratios. Receiver CPU: its own CPU time over the generator's run (the "
             "kernel's copy into the UMEM runs on the generator's CPU; copy-mode transmission runs in the "
             "receiver's sendto), and per frame it handled. Delivered: the worst round's share of the "
             "generator's frames.", "",
             "| case | Mpps | rounds | delivered | receiver CPU | CPU ns/frame |", "|---|---:|---:|---:|---:|---:|",
             f"| C rxdrop (bench/c/xsk_ref.c) | {m['c_rxdrop']:.2f} | {rounds('c_rxdrop', 'rx_pps')} | "
             f"{share('c_rxdrop', 'frames')} | {cpu('c_rxdrop')} | {ns_frame('c_rxdrop')} |",
             f"| xdpkit afxdp rxdrop | {m['py_rxdrop']:.2f} | {rounds('py_rxdrop', 'rx_pps')} | "
             f"{share('py_rxdrop', 'frames')} | {cpu('py_rxdrop')} | {ns_frame('py_rxdrop')} |",
             f"| C echo (addresses and ports swapped), arrived back at src | {m['c_echo']:.2f} | {rounds('c_echo', 'echo_pps')} | "
             f"{share('c_echo', 'echoed')} | {cpu('c_echo')} | {ns_frame('c_echo')} |",
             f"| xdpkit afxdp echo (MACs, IPs, ports swapped), arrived back at src | {m['py_echo']:.2f} | "
             f"{rounds('py_echo', 'echo_pps')} | {share('py_echo', 'echoed')} | {cpu('py_echo')} | "
             f"{ns_frame('py_echo')} |",
             f"| xdpkit afxdp dump, written to pcap | {m['dump_written']:.2f} | {dump_rounds} | "
             f"{100 * min(x['written'] / x['sent'] for x in d):.1f}% | "
             f"{100 * statistics.median(x['cpu_s'] / x['gen_s'] for x in d):.0f}% | {ns_frame('dump')} |",
             "", "| figure | value | reference | ratio | target | result |", "|---|---:|---:|---:|---|---|",
             f"| Python rxdrop vs C rxdrop | {m['py_rxdrop']:.2f} Mpps | {m['c_rxdrop']:.2f} Mpps | "
             f"{r['rxdrop_ratio']:.2f} | >= 0.8 | {verdict(r['rxdrop_ratio'] >= 0.8)} |",
             f"| Python echo vs C echo | {m['py_echo']:.2f} Mpps | {m['c_echo']:.2f} Mpps | "
             f"{r['echo_ratio']:.2f} | >= 0.5 | {verdict(r['echo_ratio'] >= 0.5)} |",
             f"| dump written | {m['dump_written']:.2f} Mpps | | | >= 1 Mpps, or loss = sent - written | "
             f"{verdict(dump_ok)}{'' if m['dump_written'] >= 1.0 else ' (by the loss identity)' if exact else ''} |",
             "", "Dump accounting per round. `lost` is what the tool reports: the sum of XDP_STATISTICS "
             "rx_dropped and rx_ring_full (a frame dropped for an empty fill ring also counts in "
             "rx_fill_ring_empty_descs, so that is not added). Other: frames the "
             "steering program sent to the socket that the generator did not send (the lab's own traffic).", "",
             "| sent | written | sent - written | lost (reported) | rx_dropped | rx_ring_full | fill_ring_empty | "
             "rx_dropped + rx_ring_full | other |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {x['sent']:,} | {x['written']:,} | {x['gap']:,} | {x['lost']:,} | {x['rx_dropped']:,} | "
              f"{x['rx_ring_full']:,} | {x['fill_empty']:,} | {x['kernel_lost']:,} | {x['to_socket'] - x['sent']:,} |"
              for x in d]
    lines += ["", f"Reported loss equals sent - written in {sum(x['lost'] == x['gap'] for x in d)} of {len(d)} "
              f"rounds; rx_dropped + rx_ring_full equals it within {stray} frame(s) in every round."]
    if all(x["rx_dropped"] == x["fill_empty"] for x in d):
        lines[-1] += (" rx_dropped equals rx_fill_ring_empty_descs in every round: the kernel counts a frame "
                      "dropped for an empty fill ring in both, so a sum of the two counts it twice.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    standalone(run, markdown, 3.0)
