"""Benchmarks: per-program cost (BPF_PROG_TEST_RUN) and end-to-end rate on a veth pair.

Absolute numbers drift between runs and machines, so every figure is reported beside a
reference measured in the same run, with the ratio.
"""
from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

from xdpkit import netns as xns
from xdpkit.interfaces import StatsReader
from xdpkit.builtin import builtin_object
from xdpkit.errors import ConfigError, XdpkitError
from xdpkit.kernel import Verdict
from xdpkit.lab import add_veth, disable_ipv6, lo_up
from xdpkit.object import ObjectSpec
from xdpkit.lab import trafficgen as tg

REFERENCE = "bare XDP_DROP"


def standalone(run, markdown, default_duration: float | None = None) -> None:
    """What a bench/ script does when run alone: refuse without root, ``run`` (given the seconds
    in argv[1], else ``default_duration``; no argument when that is None), then print the result
    as JSON and as ``markdown`` tables."""
    if os.geteuid() != 0:
        sys.exit("error: the benchmarks need root (BPF and network namespaces)")
    if default_duration is None:
        res = run()
    else:
        res = run(float(sys.argv[1]) if len(sys.argv) > 1 else default_duration)
    print(json.dumps(res, indent=2))
    print(markdown(res))


# ---- per-program cost ---------------------------------------------------------------------------

@dataclass
class ProgCost:
    name: str
    ns_per_packet: float
    ratio: float          # to the reference measured in the same run
    verdicts: dict = field(default_factory=dict)


def _open(path, section=None, program=None, consts=()):
    spec = ObjectSpec.from_file(path)
    try:
        spec.select(section=section, program=program)
        for name, value in consts:
            spec.rodata[name] = value
        return spec.load()
    except BaseException:
        spec.close()
        raise


def measure_cost(prog, frames: list[bytes], repeat: int) -> tuple[float, dict]:
    """Mean ns per packet over ``frames`` (each run ``repeat`` times in the kernel)."""
    total, verdicts = 0.0, {}
    for frame in frames:
        r = prog.run(frame, repeat=repeat)
        total += r.duration_ns
        name = getattr(r.verdict, "name", str(r.verdict))
        verdicts[name] = verdicts.get(name, 0) + 1
    return total / len(frames), verdicts


def bench_prog(path, frames: list[bytes], *, section=None, program=None, consts=(),
               repeat: int = 1_000_000, rounds: int = 5, log=None) -> dict:
    """Cost of a program next to a bare XDP_DROP, alternated over ``rounds`` (median kept)."""
    if not frames:
        raise ConfigError("no packets to run")
    if repeat < 1000:
        raise ConfigError(f"repeat {repeat} is too small to time; use at least 1000 (1e6 recommended)")
    ref_obj = _open(builtin_object("receivers"), program="xdpkit_drop")
    try:
        with _open(path, section, program, consts) as obj:
            prog = next(iter(obj.programs.values()))
            ref = ref_obj.program()
            ref_ns, prog_ns, verdicts = [], [], {}
            for i in range(rounds):
                ref_ns.append(measure_cost(ref, frames, repeat)[0])
                ns, verdicts = measure_cost(prog, frames, repeat)
                prog_ns.append(ns)
                if log:
                    log(f"  round {i + 1}/{rounds}: {prog.name} {ns:.1f} ns, reference {ref_ns[-1]:.1f} ns")
            name = prog.info().name
    finally:
        ref_obj.close()
    ref_med, prog_med = statistics.median(ref_ns), statistics.median(prog_ns)
    rows = [ProgCost(REFERENCE, ref_med, 1.0, {Verdict.XDP_DROP.name: len(frames)}),
            ProgCost(name, prog_med, prog_med / ref_med if ref_med else float("inf"), verdicts)]
    return {"kind": "prog", "repeat": repeat, "rounds": rounds, "packets": len(frames),
            "rows": [asdict(r) for r in rows]}


# ---- end-to-end rate ------------------------------------------------------------------------------

@dataclass
class LiveRow:
    receiver: str
    mpps: float           # median of per-second samples, first and last dropped
    ratio: float          # to the first receiver (native XDP_DROP by default)
    samples: list = field(default_factory=list)
    sent_mpps: float = 0.0
    cpu_percent: float = 0.0   # busy share of all CPUs during the run


class LivePair:
    """Two namespaces joined by a veth pair with one queue per generator thread."""

    R0_IP, R0_IP6 = "198.18.2.2", "2001:db8:2::2"

    def __init__(self, queues: int):
        tag = secrets.token_hex(3)
        self.gen, self.rx = f"xbench-{tag}-gen", f"xbench-{tag}-rx"
        xns.create(self.gen)
        xns.create(self.rx)
        try:
            for ns in (self.gen, self.rx):
                with xns.inside(ns):
                    lo_up()
                    disable_ipv6()
            with xns.inside(self.gen):
                add_veth("g0", "r0", peer_ns=self.rx, queues=queues, gro=True)
            self.run_rx(["ip", "addr", "add", f"{self.R0_IP}/24", "dev", "r0"])
            with xns.inside(self.rx):
                from xdpkit.interfaces import get_link, ifindex_of
                self.r0_mac = get_link(ifindex_of("r0")).address
        except BaseException:
            self.close()
            raise

    def run_rx(self, argv: list[str], stdin: str | None = None) -> str:
        proc = subprocess.run(["ip", "netns", "exec", self.rx, *argv], input=stdin, capture_output=True,
                              text=True, timeout=30)
        if proc.returncode != 0:
            raise XdpkitError(f"{' '.join(argv)} failed in {self.rx}: {proc.stderr.strip()}")
        return proc.stdout

    def close(self) -> None:
        for ns in (self.gen, self.rx):
            xns.remove(ns)


class XdpReceiver:
    def __init__(self, name: str, mode: str, path=None, section=None, program="xdpkit_count_drop"):
        self.name, self.mode, self.path, self.section, self.program = name, mode, path, section, program
        self._obj = self._link = None

    def setup(self, pair: LivePair) -> None:
        with xns.inside(pair.rx):
            self._obj = _open(self.path or builtin_object("receivers"), self.section,
                              None if self.section else self.program)
            self._link = next(iter(self._obj.programs.values())).attach("r0", mode=self.mode)

    def teardown(self, pair: LivePair) -> None:
        if self._link is not None:
            self._link.detach()
        if self._obj is not None:
            self._obj.close()


class CommandReceiver:
    """A kernel-stack receiver configured by commands (nftables, iptables)."""

    def __init__(self, name: str, setup: list[list[str]], teardown: list[list[str]], stdin: str | None = None):
        self.name, self._setup, self._teardown, self._stdin = name, setup, teardown, stdin

    def setup(self, pair: LivePair) -> None:
        for argv in self._setup:
            pair.run_rx(argv, stdin=self._stdin if argv[-1] == "-" else None)

    def teardown(self, pair: LivePair) -> None:
        for argv in self._teardown:
            try:
                pair.run_rx(argv)
            except XdpkitError:
                pass  # the namespace goes away anyway


NFT_RULES = """table netdev xdpkit_bench {
    chain ingress { type filter hook ingress device "r0" priority 0; policy accept; counter drop; }
}
"""

RECEIVERS = {
    "xdp-drop": lambda: XdpReceiver("native XDP_DROP", "native"),
    "xdp-pass": lambda: XdpReceiver("native XDP_PASS into the stack", "native", program="xdpkit_count_pass"),
    "generic-drop": lambda: XdpReceiver("generic XDP_DROP", "generic"),
    "nft-drop": lambda: CommandReceiver("nftables netdev ingress drop", [["nft", "-f", "-"]],
                                         [["nft", "delete", "table", "netdev", "xdpkit_bench"]], NFT_RULES),
    "iptables-drop": lambda: CommandReceiver("iptables raw PREROUTING drop",
                                              [["iptables", "-t", "raw", "-A", "PREROUTING", "-i", "r0", "-j", "DROP"]],
                                              [["iptables", "-t", "raw", "-F", "PREROUTING"]]),
}
DEFAULT_RECEIVERS = ("xdp-drop", "xdp-pass", "generic-drop", "nft-drop", "iptables-drop")


def _cpu_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        vals = [float(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return sum(vals) - idle, sum(vals)


@dataclass
class LiveSample:
    samples: list          # received frames per second, one per second of the run
    sent_pps: float
    cpu_percent: float
    received: int
    seconds: float

    @property
    def rx_pps(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0


def measure_live(pair: LivePair, *, duration: float, threads: int, size: int, proto: str = "udp",
                 sample: bool = True, src_ips: int = 1, count_returned: bool = False) -> LiveSample:
    """Drive r0 from g0 for ``duration`` seconds.

    Received frames are read from r0's own counters (ethtool -S rx_queue_N_xdp_packets) once a
    second: one ioctl per sample, nothing per packet, the same for every kind of receiver.
    ``count_returned`` counts at g0 instead: the frames a forwarder on r0 sent back with XDP_TX
    (g0 then needs an XDP program of its own to take them in).
    """
    with xns.inside(pair.gen if count_returned else pair.rx):
        stats = StatsReader("g0" if count_returned else "r0")
    try:
        with xns.inside(pair.gen):
            template = tg.build_template(proto=proto, size=size, dst_mac=pair.r0_mac,
                                         src_mac="02:00:00:00:00:01", dst_ip=pair.R0_IP)
            gen = tg.TrafficGen("g0", template, tg.Flows(src_ips=src_ips, sport_base=1024, sport_count=256))
        try:
            result: dict = {}

            def drive():
                try:
                    with xns.inside(pair.gen):
                        result["gen"] = gen.run(duration=duration, threads=threads)
                except BaseException as exc:  # reported below, in the caller's thread
                    result["error"] = exc

            rx0 = stats.rx_xdp_packets()
            busy0, total0 = _cpu_busy()
            worker = threading.Thread(target=drive, name="xdpkit-bench-gen")
            worker.start()
            samples, prev, t_prev = [], rx0, time.monotonic()
            while worker.is_alive():
                worker.join(timeout=1.0 if sample else None)
                if not sample:
                    break
                now, t_now = stats.rx_xdp_packets(), time.monotonic()
                samples.append((now - prev) / (t_now - t_prev))
                prev, t_prev = now, t_now
            busy1, total1 = _cpu_busy()
            if "error" in result:
                raise result["error"]
            received = stats.rx_xdp_packets() - rx0
        finally:
            gen.close()
    finally:
        stats.close()
    g = result["gen"]
    cpu = 100.0 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    return LiveSample(samples, g.pps, cpu, received, g.seconds)


def median_inner(samples: list[float]) -> float:
    inner = samples[1:-1] if len(samples) > 2 else samples
    return statistics.median(inner) if inner else 0.0


def bench_live(*, receivers=DEFAULT_RECEIVERS, program=None, section=None, duration: float = 5.0,
               threads: int = 1, size: int = 64, log=None) -> dict:
    """Each receiver on r0 in turn, driven by the generator for ``duration`` seconds."""
    if duration < 3:
        raise ConfigError("duration must be at least 3 s (first and last samples are dropped)")
    chosen = []
    if program is not None:
        chosen.append(XdpReceiver(f"{os.path.basename(str(program))}"
                                   + (f" [{section}]" if section else ""), "native", program, section))
    for key in receivers:
        if key not in RECEIVERS:
            raise ConfigError(f"unknown receiver {key!r}; choose from {', '.join(RECEIVERS)}")
        chosen.append(RECEIVERS[key]())
    pair = LivePair(queues=threads)
    rows: list[LiveRow] = []
    try:
        for rcv in chosen:
            if log:
                log(f"  {rcv.name}: {duration:.0f} s ...")
            rcv.setup(pair)
            try:
                m = measure_live(pair, duration=duration, threads=threads, size=size)
            finally:
                rcv.teardown(pair)
            rows.append(LiveRow(rcv.name, median_inner(m.samples) / 1e6, 0.0,
                                [round(x / 1e6, 3) for x in m.samples], m.sent_pps / 1e6, round(m.cpu_percent, 1)))
    finally:
        pair.close()
    ref = rows[0].mpps if rows else 0.0
    for r in rows:
        r.ratio = r.mpps / ref if ref else 0.0
    return {"kind": "live", "duration_s": duration, "threads": threads, "frame_size": size,
            "reference": rows[0].receiver if rows else None, "rows": [asdict(r) for r in rows]}
