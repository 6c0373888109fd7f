"""`xdpkit agent --demo` (fourth part of `make demo`): a fleet of three load-balancer nodes, each
with its own `xdpkit agent` process, all reading one ConfigMap-style directory.

Shows: every node serving from the same config; the same flow sent through each node landing on
the same backend; a config change reaching every node (timed); a bad config refused by every
node alike while the previous one keeps serving, then the fix; an agent killed with -9 and
restarted while a connection is held (the new agent adopts the data plane and writes nothing);
SIGTERM leaving the data plane up. Then everything is torn down.
"""
from __future__ import annotations

import shutil
import tempfile
import time

from xdpkit import netns
from xdpkit.apps.lb.config import parse_config
from xdpkit.apps.lb.control import LoadBalancer, decap_load
from xdpkit.errors import XdpkitError
from xdpkit.lab.fleet import AgentProcess, ConfigMapDir
from xdpkit.lab.lb_topology import VIP4, LbLab

NODES = 3
INTERVAL = 2.0
SPORTS = range(43000, 43008)
MAIN = """version = 1

[[lb]]
interfaces = ["eth0"]
config = "lb.toml"
health = false
"""


def _kernel_config(lab: LbLab, node: str):
    with netns.inside(lab.ns(node)), LoadBalancer.open("eth0") as lb:
        return lb.config()


def run_demo(lab_name: str = "xfleet", log=print) -> dict:
    log = log or (lambda _m: None)
    lab = LbLab(lab_name, backends=3, nodes=NODES)
    work = tempfile.mkdtemp(prefix="xdpkit-fleet-")
    agents: dict[str, AgentProcess] = {}
    result: dict = {"ok": False, "lab": lab_name, "nodes": lab.lb_nodes}
    started = time.monotonic()

    def agent(node: str, log_name: str) -> AgentProcess:
        return AgentProcess(lab.ns(node), f"{work}/config", f"{work}/state-{node}", f"{work}/{log_name}.log",
                            interval=INTERVAL).start()

    try:
        log(f"[1/7] building lab {lab_name!r}: client -> router -> {', '.join(lab.lb_nodes)} -> be1..be3")
        lab.up()
        lab.start_servers(port=80)
        for i in range(1, 4):
            with netns.inside(lab.ns(f"be{i}")):
                decap_load("eth0")
        cm = ConfigMapDir(f"{work}/config", {"xdpkit.toml": MAIN, "lb.toml": lab.lb_config((1, 1, 1), seed=5)})
        log(f"[2/7] one agent per node, all reading {cm.path} (laid out like a ConfigMap volume)")
        for node in lab.lb_nodes:
            agents[node] = agent(node, node)
        ready = {node: a.wait_ready() for node, a in agents.items()}
        for node, body in ready.items():
            log(f"    {node}: ready, config {body['hash'][:12]}, running {body['interfaces']}")
        result["hashes"] = sorted({b["hash"] for b in ready.values()})

        log(f"[3/7] the same {len(SPORTS)} flows (client ports {SPORTS.start}..{SPORTS.stop - 1}) through each node:")
        seen = {}
        for node in lab.lb_nodes:
            lab.route_vips_to(node)
            seen[node] = [lab.client_get(VIP4, 80, sport=s, timeout=3.0) for s in SPORTS]
            log(f"    via {node:4}: {' '.join(seen[node])}")
        result["same_backends"] = all(v == seen["lb"] for v in seen.values())
        log("    every node picked the same backend for every flow, with no state shared"
            if result["same_backends"] else "    THE NODES DISAGREE")
        lab.route_vips_to("lb")

        log("[4/7] a config change (weights 1:1:1 -> 3:1:1), written like kubelet does:")
        want = lab.lb_config((3, 1, 1), seed=5)
        t0 = time.monotonic()
        cm.update({"xdpkit.toml": MAIN, "lb.toml": want})
        reached = {}
        for node, a in agents.items():
            a.wait_until(lambda _a, n=node: _kernel_config(lab, n) == parse_config(want), what="the change")
            reached[node] = round((time.monotonic() - t0) * 1000)
        log("    in the kernel of " + ", ".join(f"{n} after {ms} ms" for n, ms in reached.items())
            + f" (interval {INTERVAL:g} s; the directory watch acts at once)")
        result["change_ms"] = reached

        log("[5/7] a bad config (a weight of -1) pushed to every node:")
        before = {n: _kernel_config(lab, n) for n in lab.lb_nodes}
        cm.update({"xdpkit.toml": MAIN, "lb.toml": want.replace("weight = 3", "weight = -1")})
        reasons = {}
        for node, a in agents.items():
            _code, body = a.wait_readyz(lambda c, b: c == 503,
                                       what="the rejection")
            reasons[node] = body["reasons"][0]
        log(f"    every node: /readyz 503, {next(iter(reasons.values()))!r}")
        kept = all(_kernel_config(lab, n) == before[n] for n in lab.lb_nodes)
        log(f"    previous config still in force everywhere: {kept}; still serving: "
            f"{lab.client_get(VIP4, 80, timeout=3.0)}")
        cm.update({"xdpkit.toml": MAIN, "lb.toml": want})
        for a in agents.values():
            a.wait_ready()
        log("    fixed: every node ready again")
        result["bad_config"] = {"same_reason": len(set(reasons.values())) == 1, "kept": kept}

        log("[6/7] kill -9 of the agent on lb while a connection is held, then a new agent:")
        with lab.client_hold(VIP4, 80, timeout=3.0) as held:
            backend = held.ping()
            agents["lb"].kill9()
            alone = held.ping()
            agents["lb"] = agent("lb", "lb-restarted")
            agents["lb"].wait_ready()
            writes = [e["event"] for e in agents["lb"].events()
                      if e.get("event") in ("loaded", "applied", "adopted", "repaired", "reloaded")]
            after = held.ping()
        log(f"    held connection on {backend}; with no agent: {alone}; after the restart: {after}; "
            f"the new agent's changes to the data plane: {writes or 'none'}")
        result["restart"] = {"backend": backend, "after": after, "writes": writes}

        log("[7/7] SIGTERM to every agent: the data plane stays")
        for a in agents.values():
            a.stop()
        log(f"    with no agent running, the VIP still answers: {lab.client_get(VIP4, 80, timeout=3.0)}")
        result["ok"] = (result["same_backends"] and len(result["hashes"]) == 1 and kept
                        and result["bad_config"]["same_reason"] and backend == alone == after and not writes)
    finally:
        for a in agents.values():
            try:
                a.stop()
            except XdpkitError:
                pass
        lab.down()
        shutil.rmtree(work, ignore_errors=True)
        result["seconds"] = round(time.monotonic() - started, 1)
    log(f"done in {result['seconds']} s: {'OK' if result['ok'] else 'FAILED'}; lab removed")
    if not result["ok"]:
        raise XdpkitError("the fleet demo did not show what it should", hint="see the lines above")
    return result
