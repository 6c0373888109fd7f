"""`make demo`: the tutorial flow on the built-in lab.

Builds the lab, compiles the per-EtherType counter, attaches it natively to the dut's ingress
interface, sends IPv4, IPv6 and ARP traffic from src across the dut, prints the counts per
EtherType by name, detaches and tears the lab down, leaving nothing behind.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from xdpkit import bpffs
from xdpkit import netns
from xdpkit.compile import compile_file
from xdpkit.errors import XdpkitError
from xdpkit.ethertypes import ethertype_name
from xdpkit.lab import ADDRESSES, Lab
from xdpkit.maps import PerCpuValues
from xdpkit.object import Object
from xdpkit.xdp import query

EXAMPLES = Path(__file__).parent.parent / "examples"
COUNTER = EXAMPLES / "xdp_ethertype_count.bpf.c"
SHOWN = (0x0800, 0x86DD, 0x0806)


def _traffic(lab: Lab, log) -> None:
    a = ADDRESSES
    # Forget neighbours so ARP (IPv4) and neighbour discovery (IPv6) really cross the wire.
    lab.run("src", ["ip", "neigh", "flush", "all"])
    for argv in (["ping", "-c", "5", "-i", "0.2", "-W", "1", a.dst_ip4],
                 ["ping", "-6", "-c", "5", "-i", "0.2", "-W", "1", a.dst_ip6]):
        r = lab.run("src", argv, timeout=15)
        log(f"    {' '.join(argv)}: " + (r.stdout.strip().splitlines() or ["?"])[-2 if r.stdout.count("\n") > 1 else -1])
    if shutil.which("arping"):
        lab.run("src", ["arping", "-c", "3", "-w", "3", "-I", "eth0", a.dut_in_ip4], timeout=10)
        log(f"    arping -c 3 {a.dut_in_ip4}: sent 3 ARP requests")


def run_demo(lab_name: str = "xdpdemo", log=print) -> dict:
    log = log or (lambda _m: None)
    lab = Lab(lab_name)
    result: dict = {"ok": False, "lab": lab_name, "counts": []}
    started = time.monotonic()
    pin_roots = bpffs.existing_pin_roots()  # the lab makes one; the demo pins nothing in it
    try:
        log(f"[1/6] building lab {lab_name!r}: {lab.src} <-> {lab.dut} <-> {lab.dst}")
        lab.up()
        log(f"[2/6] compiling {COUNTER.name}")
        obj_path = compile_file(COUNTER)
        with netns.inside(lab.dut), Object.from_file(obj_path) as obj:
            prog = obj.program()
            link = prog.attach("in0", mode="native", netlink=True)
            try:
                (att,) = query("in0")
                log(f"[3/6] attached {att.name} (id {att.id}, tag {att.tag}) to {lab.dut}/in0 "
                    f"in {att.mode.value} mode")
                log(f"[4/6] sending IPv4, IPv6 and ARP traffic from {lab.src} to {lab.dst}")
                _traffic(lab, log)
                counts = {}
                for key, values in obj.maps["ethertype_count"].items():
                    counts[key] = values.sum() if isinstance(values, PerCpuValues) else values
            finally:
                link.detach()
            log(f"[5/6] detached from {lab.dut}/in0; packets seen per EtherType:")
        rows = [{"ethertype": f"0x{k:04X}", "name": ethertype_name(k), "packets": v}
                for k, v in sorted(counts.items(), key=lambda kv: (kv[0] not in SHOWN, kv[0]))]
        width = max([len(r["name"]) for r in rows] + [9])
        log(f"    {'ETHERTYPE':<10} {'NAME':<{width}} PACKETS")
        for r in rows:
            log(f"    {r['ethertype']:<10} {r['name']:<{width}} {r['packets']}")
        result["counts"] = rows
        result["ok"] = all(counts.get(k, 0) > 0 for k in SHOWN)
        if not result["ok"]:
            missing = [ethertype_name(k) for k in SHOWN if not counts.get(k)]
            log(f"    expected traffic of every kind; none seen for {', '.join(missing)}")
    finally:
        removed = lab.down()
        bpffs.remove_empty_pin_roots(keep=pin_roots)
        log(f"[6/6] lab removed ({', '.join(removed) or 'nothing left'}) in {time.monotonic() - started:.1f}s")
    if lab.exists():
        raise XdpkitError(f"lab {lab_name} still exists after teardown")
    return result
