"""A fleet on one machine: five load-balancer "nodes" (lab namespaces), one `xdpkit agent`
process each, all reading one config directory laid out like a Kubernetes ConfigMap volume,
plus an agent on the router running the firewall on the client's side (a node of another role,
so with its own config directory).

The targets of the fleet issue, each end to end with real packets and connections:
* the same flow sent through each node's LB lands on the same backend (no state shared);
* a config change reaches every node within two intervals (the distribution is printed);
* a bad config pushed to every node is rejected by every node the same way, the previous state
  stays in force, and the fix then applies everywhere;
* kill -9 and restart of the agents under a steady flood and a live connection: no legitimate
  packet lost, the connection stays on its backend, the firewall's counters continue.
"""
import calendar
import hashlib
import json
import secrets
import socket
import statistics
import threading
import time

import pytest

from xdpkit.lab.fleet import AgentProcess, ConfigMapDir
from xdpkit import xdp
from xdpkit._sys import netns as xns
from xdpkit.apps.firewall import sized
from xdpkit.apps.firewall.control import Firewall
from xdpkit.apps.lb.config import parse_config
from xdpkit.apps.lb.control import LoadBalancer, decap_load
from xdpkit.lab.lb_topology import VIP4, LbLab
from xdpkit.testing.plugin import _claim

pytestmark = pytest.mark.kernel

NODES = 5
INTERVAL = 1.0
FLOOD_PORT = 9999       # legitimate UDP from the client to be1, through the router's firewall
DENIED_PORT = 7         # denied by the firewall, counted by its rule
RATED_PORT = 5          # rate-limited per source: the state the firewall keeps must survive
SPORTS = range(41000, 41024)


HEALTH = '{ kind = "http", interval = 0.2, timeout = 0.5, rise = 2, fall = 2 }'


def lb_toml(lab: LbLab, weights=(1, 1, 1), health: bool = False) -> str:
    return lab.lb_config(weights, seed=11, table_size=1009, health=HEALTH if health else "")


MAIN = """version = 1

[[lb]]
interfaces = ["eth0"]
config = "lb.toml"
health = false
"""

ROUTER = {"xdpkit.toml": """version = 1

[[firewall]]
interfaces = ["cli0"]
rules = "firewall.rules"
""", "firewall.rules": f"""policy allow
deny udp dport {DENIED_PORT}
ratelimit udp dport {RATED_PORT} rate 1/s per-source
"""}


def files(lab, *, health: bool = False, **kw) -> dict:
    main = MAIN.replace("health = false", "health = true") if health else MAIN
    return {"xdpkit.toml": main, "lb.toml": lb_toml(lab, health=health, **kw)}


def start_agent(lab, role, base, log_name, extra=()) -> AgentProcess:
    config = base / ("config-rtr" if role == "rtr" else "config")
    return AgentProcess(lab.ns(role), config, base / f"state-{role}", base / f"{log_name}.log",
                        interval=INTERVAL, extra=extra).start()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    lab = LbLab("t" + secrets.token_hex(3), backends=3, nodes=NODES)
    for name in lab.namespaces:
        _claim(name)
    base = tmp_path_factory.mktemp("fleet")
    lab.up()
    agents = {}  # namespace -> its agent now (tests replace the ones they restart)
    try:
        servers = lab.start_servers(port=80)
        for i in range(1, 4):
            with xns.inside(lab.ns(f"be{i}")):
                decap_load("eth0")
        cm = ConfigMapDir(base / "config", files(lab))
        ConfigMapDir(base / "config-rtr", ROUTER)
        for role in lab.lb_nodes + ["rtr"]:
            agents[lab.ns(role)] = start_agent(lab, role, base, role)
        for a in agents.values():
            a.wait_ready()
        yield lab, servers, cm, agents, base
    finally:
        for a in agents.values():
            a.stop()
        lab.down()


def kernel_lb_config(lab, role):
    with xns.inside(lab.ns(role)), LoadBalancer.open("eth0") as lb:
        return lb.config(), lb.prog_id


def node_agents(fleet):
    lab, _servers, _cm, agents, _base = fleet
    return [agents[lab.ns(r)] for r in lab.lb_nodes]


def backends_through(lab, node) -> dict[int, str]:
    lab.route_vips_to(node)
    return {sport: lab.client_get(VIP4, 80, sport=sport, timeout=3.0) for sport in SPORTS}


def test_same_flow_lands_on_the_same_backend_through_every_node(fleet):
    lab, *_ = fleet
    seen = {node: backends_through(lab, node) for node in lab.lb_nodes}
    first = seen["lb"]
    assert len(set(first.values())) >= 2, first  # flows spread, so agreement is not trivial
    for node, got in seen.items():
        assert got == first, f"{node} sent flows elsewhere than lb: {got} vs {first}"
    prog_ids = {kernel_lb_config(lab, n)[1] for n in lab.lb_nodes}
    assert len(prog_ids) == NODES  # five separate data planes, no shared state
    lab.route_vips_to("lb")


def _applied_after(agent: AgentProcess, t_write: float, count_before: int) -> float:
    """Seconds from the write to the agent's "applied" of the new config (its own log)."""
    def new_apply(a):
        applied = [e for e in a.events("applied") if e["app"] == "lb"]
        return applied[count_before] if len(applied) > count_before else None
    e = agent.wait_until(new_apply, timeout=4 * INTERVAL + 5, what="the applied config")
    t = calendar.timegm(time.strptime(e["time"][:19], "%Y-%m-%dT%H:%M:%S")) + int(e["time"][20:23]) / 1000
    return t - t_write


def test_a_config_change_reaches_every_node_within_two_intervals(fleet):
    lab, _servers, cm, agents, _base = fleet
    latencies = []
    for round_, weights in enumerate(((1, 1, 2), (2, 1, 1), (1, 1, 1))):
        before = {a.ns: len([e for e in a.events("applied") if e["app"] == "lb"]) for a in node_agents(fleet)}
        t_write = time.time()
        cm.update(files(lab, weights=weights))
        want = parse_config(lb_toml(lab, weights=weights))
        for a in node_agents(fleet):
            latencies.append(_applied_after(a, t_write, before[a.ns]))
        for node in lab.lb_nodes:  # and the kernel holds it
            assert kernel_lb_config(lab, node)[0] == want
    print(f"\nconfig change -> applied, {len(latencies)} node updates: min {min(latencies) * 1000:.0f} ms, "
          f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
          f"(interval {INTERVAL * 1000:.0f} ms)")
    assert max(latencies) < 2 * INTERVAL, latencies


def test_a_bad_config_is_rejected_by_every_node_alike_and_the_fix_applies(fleet):
    lab, _servers, cm, agents, _base = fleet
    good = {n: kernel_lb_config(lab, n) for n in lab.lb_nodes}
    bad = files(lab)
    bad["lb.toml"] = bad["lb.toml"].replace("weight = 1 }", "weight = -1 }", 1)
    errors_before = {a.ns: a.metric("xdpkit_agent_config_errors_total") for a in node_agents(fleet)}
    cm.update(bad)
    reasons = set()
    for a in node_agents(fleet):
        code, body = a.wait_readyz(lambda c, b: c == 503,
                                  what="not ready on the bad config")
        assert len(body["reasons"]) == 1 and "lb.toml:" in body["reasons"][0] and "weight" in body["reasons"][0]
        reasons.add(body["reasons"][0])
        assert a.metric("xdpkit_agent_config_errors_total") == errors_before[a.ns] + 1
        assert a.metric("xdpkit_agent_config_valid") == 0
        rejected = a.events("config_rejected")[-1]
        assert rejected["level"] == "error" and rejected["error"] in body["reasons"][0]
    assert len(reasons) == 1, reasons  # every node says the same
    time.sleep(2 * INTERVAL)  # interval passes re-read the bad config: still nothing changes
    for n in lab.lb_nodes:
        assert kernel_lb_config(lab, n) == good[n]
    assert lab.client_get(VIP4, 80, timeout=3.0).startswith("be")  # traffic still served
    fixed = files(lab, weights=(1, 2, 1))
    cm.update(fixed)
    want = parse_config(fixed["lb.toml"])
    for a in node_agents(fleet):
        a.wait_ready()
        assert a.metric("xdpkit_agent_config_valid") == 1
    for n in lab.lb_nodes:
        cfg, prog_id = kernel_lb_config(lab, n)
        assert cfg == want and prog_id == good[n][1]  # applied in place, not reloaded


def test_every_node_runs_the_health_checks(fleet):
    lab, servers, cm, _agents, _base = fleet
    cm.update(files(lab, health=True))
    key = f"tcp/{VIP4}:80 {lab.address('be1')}"

    def down_everywhere(want: bool):
        for n in lab.lb_nodes:
            with xns.inside(lab.ns(n)), LoadBalancer.open("eth0") as lb:
                if (key in lb.down()) != want:
                    return False
        return True

    agent = node_agents(fleet)[0]
    try:
        servers.stop(1)
        agent.wait_until(lambda _a: down_everywhere(True), what="be1 drained on every node")
        for a in node_agents(fleet):
            assert [e["backend"] for e in a.events("backend_down")] == [lab.address("be1")]
        lab.route_vips_to("lb3")  # new flows (remembered ones stay on a drained backend)
        assert {lab.client_get(VIP4, 80, sport=s, timeout=3.0) for s in range(42000, 42016)} <= {"be2", "be3"}
        servers.start(1)
        agent.wait_until(lambda _a: down_everywhere(False), what="be1 restored on every node")
    finally:
        servers.start(1)
        lab.route_vips_to("lb")
        cm.update(files(lab))
    for a in node_agents(fleet):
        a.wait_until(lambda x: not [e for e in x.events("backend_up")] == [], what="the up event")


class UdpFlood:
    """A steady, bounded UDP stream from the client: ``count`` datagrams to ``port`` of ``dst``
    at ``rate`` a second, counted by a receiver in ``rx_ns`` (or only sent, rx_ns None)."""

    def __init__(self, lab, dst: str, port: int, count: int, rate: int, rx_ns: str | None):
        self.lab, self.dst, self.port, self.count, self.rate = lab, dst, port, count, rate
        self.sent = 0
        self.received = 0
        self.rx = None
        if rx_ns is not None:
            with xns.inside(rx_ns):
                self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self.rx.bind((dst, port))
            self.rx.settimeout(0.5)
        self._threads = [threading.Thread(target=self._send, daemon=True)]
        if self.rx is not None:
            self._threads.append(threading.Thread(target=self._receive, daemon=True))

    def _send(self):
        with xns.inside(self.lab.ns("cli")):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            t0 = time.monotonic()
            for i in range(self.count):
                wait = t0 + i / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                s.sendto(i.to_bytes(4, "big"), (self.dst, self.port))
                self.sent += 1

    def _receive(self):
        idle_since = None
        while True:
            try:
                self.rx.recv(64)
                self.received += 1
                idle_since = None
            except socket.timeout:
                if self.sent == self.count:
                    if idle_since is not None:
                        return
                    idle_since = time.monotonic()

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        for t in self._threads:
            t.join(timeout=self.count / self.rate + 30)
        if self.rx is not None:
            self.rx.close()


def rate_state(lab) -> dict:
    """A digest of the router firewall's rate-limit state: per rule and per source."""
    with xns.inside(lab.ns("rtr")), Firewall.open("cli0") as fw, sized.inner_maps(fw, sized.RATE_MAPS) as held:
        out = {(name, slot): hashlib.sha256(b"".join(k + v for k, v in m.raw_items())).hexdigest()
               for name, slot, m in held}
        out["per rule"] = hashlib.sha256(b"".join(k + v for k, v in fw._map("fw_rl_rule").raw_items())).hexdigest()
        return out


def test_kill9_and_restart_under_flood_loses_nothing(fleet):
    lab, _servers, _cm, agents, base = fleet
    lab.route_vips_to("lb")
    rtr_agent, lb_agent = agents[lab.ns("rtr")], agents[lab.ns("lb")]
    with UdpFlood(lab, lab.address("be1"), RATED_PORT, count=20, rate=1000, rx_ns=None):
        pass   # 20 from one source in 20 ms: 1/s lets one through
    with xns.inside(lab.ns("rtr")), Firewall.open("cli0") as fw:
        fw_prog = fw.prog_id
        denied_before = fw.stats()["rules"][0]["packets"]
        assert fw.stats()["rules"][1]["packets"] >= 18   # over the rate: the state is real
    rates = rate_state(lab)
    lb_prog = kernel_lb_config(lab, "lb")[1]
    flows = backends_through(lab, "lb")
    with lab.client_hold(VIP4, 80, timeout=3.0) as held:
        held_backend = held.ping()
        be1 = lab.address("be1")
        with UdpFlood(lab, be1, FLOOD_PORT, count=15000, rate=5000, rx_ns=lab.ns("be1")) as legit, \
                UdpFlood(lab, be1, DENIED_PORT, count=3000, rate=1000, rx_ns=None) as denied:
            time.sleep(0.5)
            for a in (rtr_agent, lb_agent):
                a.kill9()
            assert held.ping() == held_backend  # served with no agent running
            for role in ("rtr", "lb"):
                agents[lab.ns(role)] = start_agent(lab, role, base, f"{role}-2")
            for a in (agents[rtr_agent.ns], agents[lb_agent.ns]):
                a.wait_ready()
            time.sleep(2 * INTERVAL)  # a few passes of the new agents during the flood
            assert held.ping() == held_backend
        assert legit.sent == 15000 and denied.sent == 3000
        assert legit.received == legit.sent, f"lost {legit.sent - legit.received} legitimate packets"
        assert held.ping() == held_backend
    for a in (agents[rtr_agent.ns], agents[lb_agent.ns]):
        changes = [e for e in a.events() if e.get("event") in ("loaded", "applied", "adopted", "repaired", "reloaded")]
        assert changes == [], changes  # adopted as they were: nothing loaded or re-applied
    with xns.inside(lab.ns("rtr")), Firewall.open("cli0") as fw:
        assert fw.prog_id == fw_prog
        assert fw.stats()["rules"][0]["packets"] == denied_before + 3000  # counted across the restart
    assert kernel_lb_config(lab, "lb")[1] == lb_prog
    assert backends_through(lab, "lb") == flows  # established mapping unchanged
    assert rate_state(lab) == rates   # rate-limit state untouched by the restart


def test_sigterm_leaves_the_data_plane_and_a_watchless_restart_adopts_it(fleet):
    lab, _servers, cm, agents, base = fleet
    progs = {n: kernel_lb_config(lab, n)[1] for n in lab.lb_nodes}
    for a in node_agents(fleet):
        assert a.stop() == 0
        assert a.events("stopped")[-1]["cleanup"] is False
    for n in lab.lb_nodes:  # still attached, still serving
        assert kernel_lb_config(lab, n)[1] == progs[n]
        with xns.inside(lab.ns(n)):
            assert xdp.query("eth0")[0].id == progs[n]
    for role in lab.lb_nodes:
        agents[lab.ns(role)] = start_agent(lab, role, base, f"{role}-nowatch", extra=("--no-watch",))
    for a in node_agents(fleet):
        a.wait_ready()
    latencies = []
    before = {a.ns: len([e for e in a.events("applied") if e["app"] == "lb"]) for a in node_agents(fleet)}
    t_write = time.time()
    cm.update(files(lab, weights=(3, 1, 1)))
    for a in node_agents(fleet):
        latencies.append(_applied_after(a, t_write, before[a.ns]))
    print(f"\nwithout the watch (interval only): {', '.join(f'{x * 1000:.0f}' for x in sorted(latencies))} ms")
    assert max(latencies) < 2 * INTERVAL, latencies
    for a in node_agents(fleet):
        loaded = [e for e in a.events() if e.get("event") in ("loaded", "adopted", "reloaded")]
        assert loaded == []
    for n in lab.lb_nodes:
        assert kernel_lb_config(lab, n)[1] == progs[n]
    assert json.loads(node_agents(fleet)[0].get("/readyz")[1])["interfaces"] == {"eth0": "lb"}
