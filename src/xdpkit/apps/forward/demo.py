"""`xdpkit forward demo` (third part of `make demo`): the forwarding plane at work on the router lab.

Builds the router lab (src, a dut routing between three networks, dst and alt), loads the plane
on the dut's three interfaces, then:
- pings dst: the first packets meet no neighbour entry and go through the stack, which resolves
  it; the rest cross at XDP (the counters show both);
- sends 64 MiB over TCP from src to dst through the plane (the router lab's end hosts write full
  checksums, see lab/topology.py);
- moves a route from dst to alt without touching the plane: the next packets go the new way;
- unloads the plane and pings again through the kernel's own forwarding; tears everything down.
"""
from __future__ import annotations

import socket
import threading
import time

from xdpkit import netns
from xdpkit.apps.forward.control import Forwarder, counted_since
from xdpkit.errors import XdpkitError
from xdpkit.lab import Lab

FAR = "198.18.100.1"        # on the loopback of both dst and alt; the dut's route picks one
TCP_BYTES = 64 << 20


def _counts(lab: Lab) -> dict:
    with netns.inside(lab.dut), Forwarder.open("in0") as fwd:
        return fwd.event_packets()


def _ping(lab: Lab, dst: str, count: int) -> tuple[int, str]:
    r = lab.run("src", ["ping", "-c", str(count), "-i", "0.1", "-W", "1", dst], timeout=15)
    lines = r.stdout.strip().splitlines()
    return r.returncode, next((ln for ln in lines if "packets transmitted" in ln), "no answer")


def _who_answers(lab: Lab) -> str:
    """Which host holds the TCP port on FAR: dst and alt listen with their names as the answer."""
    with netns.inside(lab.src):
        with socket.create_connection((FAR, 7002), timeout=3) as c:
            return c.recv(16).decode()


def _tcp_transfer(lab: Lab) -> float:
    a = lab.addresses
    with netns.inside(lab.dst):
        server = socket.create_server((a.dst_ip4, 7001))
    got = [0]

    def serve():
        server.settimeout(10)
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(1 << 16):
                got[0] += len(chunk)

    t = threading.Thread(target=serve)
    t.start()
    started = time.monotonic()
    try:
        with netns.inside(lab.src):
            c = socket.create_connection((a.dst_ip4, 7001), timeout=10)
        with c:
            c.sendall(b"\x5a" * TCP_BYTES)
    finally:
        t.join(15)
        server.close()
    if got[0] != TCP_BYTES:
        raise XdpkitError(f"TCP across the plane delivered {got[0]} of {TCP_BYTES} bytes")
    return time.monotonic() - started


class _Namers:
    """A TCP server on FAR:7002 in dst and in alt that answers with its host's role."""

    def __init__(self, lab: Lab):
        self.servers = []
        for role in ("dst", "alt"):
            with netns.inside(lab.ns(role)):
                s = socket.create_server((FAR, 7002))
            s.settimeout(0.2)
            self.servers.append((role, s))
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, args=rs) for rs in self.servers]
        for t in self.threads:
            t.start()

    def _serve(self, role, s) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = s.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.sendall(role.encode())

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        for _, s in self.servers:
            s.close()


def run_demo(lab_name: str = "xfwdemo", log=print) -> dict:
    log = log or (lambda _m: None)
    lab = Lab(lab_name, router=True)
    a = lab.addresses
    result: dict = {"ok": False, "lab": lab_name}
    started = time.monotonic()
    namers = None
    try:
        log(f"[1/6] building the router lab {lab_name!r}: {lab.src} -> {lab.dut} -> {lab.dst}, {lab.alt}")
        lab.up()
        for role in ("dst", "alt"):
            lab.run(role, ["ip", "addr", "add", FAR + "/32", "dev", "lo"], check=True)
        lab.run("dut", ["ip", "route", "add", FAR + "/32", "via", a.dst_ip4], check=True)
        namers = _Namers(lab)
        with netns.inside(lab.dut):
            Forwarder.load(["in0", "out0", "out1"]).close()
        log(f"[2/6] forwarding plane on {lab.dut}: in0, out0, out1 (kernel FIB, next hops remembered)")

        before = _counts(lab)
        rc, line = _ping(lab, a.dst_ip4, 10)
        d = counted_since(before, _counts(lab))
        log(f"[3/6] ping {a.dst_ip4}: {line}")
        log(f"    to the stack (no neighbour yet): {d.get('no_neigh', 0)}, "
            f"at XDP: {d.get('looked_up', 0)} looked up + {d.get('forwarded', 0)} remembered")
        result["ping"] = {"ok": rc == 0, **d}

        before = _counts(lab)
        seconds = _tcp_transfer(lab)
        d = counted_since(before, _counts(lab))
        log(f"[4/6] TCP: {TCP_BYTES >> 20} MiB from src to dst in {seconds:.2f}s "
            f"({TCP_BYTES * 8 / seconds / 1e9:.1f} Gbit/s); "
            f"{d.get('forwarded', 0) + d.get('looked_up', 0)} segments and ACKs forwarded at XDP")
        result["tcp"] = {"seconds": seconds, **d}

        first = _who_answers(lab)
        lab.run("dut", ["ip", "route", "replace", FAR + "/32", "via", a.alt_ip4], check=True)
        second = _who_answers(lab)
        log(f"[5/6] {FAR} answered by {first}; after `ip route replace {FAR}/32 via {a.alt_ip4}` "
            f"(no reload) by {second}")
        result["route_change"] = {"before": first, "after": second}

        with netns.inside(lab.dut):
            with Forwarder.open("in0") as fwd:
                stats = fwd.stats()
            Forwarder.unload()
        rc2, line2 = _ping(lab, a.dst_ip4, 3)
        log(f"[6/6] plane counters: {stats['forwarded']} forwarded at XDP, {stats['to_stack']} to the stack, "
            f"{stats['dropped']} dropped; unloaded, kernel forwarding again: {line2}")
        result["stats"] = stats
        result["ok"] = (rc == 0 and rc2 == 0 and result["ping"].get("no_neigh", 0) >= 1
                        and result["ping"].get("forwarded", 0) >= 1 and first == "dst" and second == "alt")
        if not result["ok"]:
            log("    unexpected: the pings should succeed, first via the stack then at XDP, and the "
                "route change should move the answers from dst to alt")
    finally:
        if namers is not None:
            namers.close()
        if netns.exists(lab.dut):
            with netns.inside(lab.dut):
                Forwarder.unload()   # and its pins, which removing the namespace would leave
        removed = lab.down()
        log(f"    lab removed ({len(removed)} namespaces) in {time.monotonic() - started:.1f}s")
    if lab.exists():
        raise XdpkitError(f"lab {lab_name} still exists after teardown")
    return result

