"""`xdpkit lb demo` (second half of `make demo`): the load balancer at work on its own lab.

Builds the load-balancer lab (a client, a router, the LB and three backends running HTTP servers
with the VIP on their loopback), attaches the decapsulation program to the backends and the load
balancer to the LB's interface with weights 1:1:2, then:
- opens many connections from the client and shows how they spread over the backends;
- holds one connection open, drains its backend, and shows the held connection still answered by
  that backend while every new connection goes to the others;
- prints the load balancer's counters, and tears everything down, leaving nothing behind.
"""
from __future__ import annotations

import time
from collections import Counter

from xdpkit import netns
from xdpkit.apps.lb.config import parse_config
from xdpkit.apps.lb.control import LoadBalancer, decap_load
from xdpkit.lab.lb_topology import VIP4, LbLab
from xdpkit.errors import ConfigError, XdpkitError

WEIGHTS = (1, 1, 2)


def _spread(lab: LbLab, connections: int) -> dict[str, int]:
    got = Counter(lab.client_get(VIP4, 80, timeout=2.0) for _ in range(connections))
    return {name: got.get(name, 0) for name in (f"be{i}" for i in range(1, lab.backends + 1))}


def _show(spread: dict[str, int], log) -> None:
    total = sum(spread.values()) or 1
    for name, n in spread.items():
        log((f"    {name}: {n:4d} connections ({100 * n / total:4.1f}%)  " + "#" * round(40 * n / total)).rstrip())


def run_demo(lab_name: str = "xlbdemo", connections: int = 200, log=print) -> dict:
    if not 10 <= connections <= 10000:
        raise ConfigError(f"connections {connections} is out of range 10..10000")
    log = log or (lambda _m: None)
    lab = LbLab(lab_name, backends=len(WEIGHTS))
    vip = f"tcp/{VIP4}:80"
    result: dict = {"ok": False, "lab": lab_name, "vip": vip, "weights": dict(zip(lab.backend_addresses(4), WEIGHTS))}
    started = time.monotonic()
    try:
        log(f"[1/6] building lab {lab_name!r}: client -> router -> lb -> be1..be3 (HTTP servers, VIP on lo)")
        lab.up()
        lab.start_servers(port=80)
        log("[2/6] attaching the decapsulation program to each backend's eth0")
        for i in range(1, lab.backends + 1):
            with netns.inside(lab.ns(f"be{i}")):
                decap_load("eth0")
        with netns.inside(lab.ns("lb")):
            lb = LoadBalancer.load("eth0", parse_config(lab.lb_config(WEIGHTS)))
        try:
            log(f"[3/6] load balancer on {lab.ns('lb')}/eth0: {vip} -> be1, be2, be3 with weights "
                + ":".join(map(str, WEIGHTS)))
            log(f"[4/6] {connections} HTTP connections from the client:")
            spread = _spread(lab, connections)
            _show(spread, log)
            result["spread"] = spread

            held_on = None
            with lab.client_hold(VIP4, 80) as conn:
                held_on = conn.ping()
                address = lab.address(held_on)
                with netns.inside(lab.ns("lb")):
                    lb.drain(vip, address)
                log(f"[5/6] one connection held open on {held_on}; {held_on} drained (weight 0). "
                    f"{connections // 2} new connections:")
                after = _spread(lab, connections // 2)
                _show(after, log)
                still = conn.ping()
            log(f"    the held connection is still answered by {still}")
            result.update(drained=held_on, after_drain=after, held_connection_stayed=still == held_on)

            with netns.inside(lab.ns("lb")):
                stats = lb.stats()
                LoadBalancer.unload("eth0")
        finally:
            lb.close()
        v = stats["vips"][0]
        log(f"[6/6] load balancer counters for {vip}: {v['packets']} packets, "
            f"flow table {stats['flows']['hits']} hits / {stats['flows']['misses']} misses")
        for b in v["backends"]:
            log(f"    {b['address']:<14} weight {b['weight']}  {b['state']:<8} {b['packets']:6d} packets")
        result["stats"] = stats
        counts = list(spread.values())
        result["ok"] = (sum(counts) == connections and min(counts) > 0 and after.get(held_on, 1) == 0
                        and sum(after.values()) == connections // 2 and still == held_on)
        if not result["ok"]:
            log("    unexpected: every connection should succeed, reach all backends before the drain, "
                "avoid the drained one after it, and the held connection should stay")
    finally:
        removed = lab.down()
        log(f"    lab removed ({len(removed)} namespaces) in {time.monotonic() - started:.1f}s")
    if lab.exists():
        raise XdpkitError(f"lab {lab_name} still exists after teardown")
    return result
