"""The load balancer end to end in the lab: a client, a router, the LB and three backends with
real TCP servers. Connections to the VIPs succeed and spread by weight; a drained backend keeps
its open connection while new ones go elsewhere; a backend whose server dies is drained by the
health check and restored when it comes back."""
import secrets
import time
from collections import Counter

import pytest

from xdpkit._sys import netns as xns
from xdpkit.apps.lb.config import parse_config
from xdpkit.apps.lb.control import LoadBalancer, decap_load, decap_stats, decap_unload
from xdpkit.lab.lb_topology import VIP4, VIP6, LbLab
from xdpkit.testing.plugin import _claim

pytestmark = pytest.mark.kernel

WEIGHTS = (1, 1, 2)


def config(lab: LbLab) -> str:
    b4 = ", ".join(f'{{ address = "{a}", weight = {w} }}' for a, w in zip(lab.backend_addresses(4), WEIGHTS))
    b6 = ", ".join(f'{{ address = "{a}", weight = {w} }}' for a, w in zip(lab.backend_addresses(6), WEIGHTS))
    return f"""
seed = 11
encap_source_v4 = "198.18.99.0/24"
encap_source_v6 = "2001:db8:99::/64"

[[vip]]
address = "{VIP4}"
protocol = "tcp"
port = 80
table_size = 1009
health = {{ kind = "http", interval = 0.1, timeout = 0.3, rise = 2, fall = 2 }}
backends = [{b4}]

[[vip]]
address = "{VIP6}"
protocol = "tcp"
port = 80
table_size = 1009
backends = [{b6}]
"""


@pytest.fixture(scope="module")
def world():
    lab = LbLab("t" + secrets.token_hex(3), backends=3)
    for name in lab.namespaces:
        _claim(name)
    lab.up()
    servers = None
    try:
        servers = lab.start_servers(port=80)
        for i in range(1, 4):
            with xns.inside(lab.ns(f"be{i}")):
                decap_load("eth0")
        with xns.inside(lab.ns("lb")):
            lb = LoadBalancer.load("eth0", parse_config(config(lab)))
        try:
            yield lab, servers, lb
        finally:
            lb.close()
    finally:
        if servers is not None:
            servers.close()
        lab.down()


def backend_names(lab):
    return {a: f"be{i}" for i, a in enumerate(lab.backend_addresses(4), 1)}


def test_connections_succeed_and_spread_by_weight(world):
    lab, _servers, lb = world
    got = Counter(lab.client_get(VIP4, 80, timeout=2.0) for _ in range(240))
    assert sum(got.values()) == 240 and set(got) == {"be1", "be2", "be3"}
    share = {k: v / 240 for k, v in got.items()}
    assert abs(share["be3"] - 0.5) < 0.12 and abs(share["be1"] - 0.25) < 0.1 and abs(share["be2"] - 0.25) < 0.1
    got6 = Counter(lab.client_get(VIP6, 80, timeout=2.0) for _ in range(60))
    assert sum(got6.values()) == 60 and len(got6) == 3
    with xns.inside(lab.ns("lb")):
        st = lb.stats()
    assert st["vips"][0]["packets"] > 240 * 3  # SYN, ACK, request, FIN... per connection
    assert st["flows"]["hits"] > 0 and st["flows"]["misses"] >= 240
    assert st["events"].get("encap_error", {}).get("packets", 0) == 0
    with xns.inside(lab.ns("be1")):
        assert decap_stats("eth0")["events"]["decap_v4"]["packets"] > 0


def test_drain_keeps_open_connection(world):
    lab, _servers, lb = world
    vip = f"tcp/{VIP4}:80"
    with lab.client_hold(VIP4, 80) as conn:
        who = conn.ping()
        addr = {v: k for k, v in backend_names(lab).items()}[who]
        with xns.inside(lab.ns("lb")):
            lb.drain(vip, addr)
        try:
            for _ in range(5):
                assert conn.ping() == who  # the open connection stays on its backend
            new = Counter(lab.client_get(VIP4, 80) for _ in range(60))
            assert sum(new.values()) == 60 and who not in new
        finally:
            with xns.inside(lab.ns("lb")):
                lb.set_weight(vip, addr, WEIGHTS[int(who[2:]) - 1])


def test_health_check_drains_dead_backend_and_restores_it(world):
    from xdpkit.apps.lb.healthloop import HealthLoop

    lab, servers, lb = world
    with xns.inside(lab.ns("lb")):
        loop = HealthLoop("eth0")
    try:
        with xns.inside(lab.ns("lb")):
            loop.run_once()
            assert not lb.down()
        servers.stop(2)
        try:
            with xns.inside(lab.ns("lb")):
                for _ in range(2):  # fall = 2
                    loop.run_once()
                assert lb.down() == {f"tcp/{VIP4}:80 {lab.backend_addresses(4)[1]}"}
                assert loop.checker.status()[1]["up"] is False
            got = Counter(lab.client_get(VIP4, 80) for _ in range(60))
            assert sum(got.values()) == 60 and "be2" not in got
        finally:
            servers.start(2)
        with xns.inside(lab.ns("lb")):
            for _ in range(2):  # rise = 2
                loop.run_once()
            assert not lb.down()
        got = Counter(lab.client_get(VIP4, 80) for _ in range(80))
        assert "be2" in got
    finally:
        loop.close()


def test_cli_drives_the_same_load_balancer(world):
    import json
    import subprocess
    import sys

    lab, _servers, _lb = world

    def cli(*argv):
        return subprocess.run(["ip", "netns", "exec", lab.ns("lb"), sys.executable, "-m", "xdpkit", *argv],
                              capture_output=True, text=True, timeout=30)

    r = cli("lb", "vip", "list", "eth0", "--json")
    assert r.returncode == 0, r.stderr
    vips = json.loads(r.stdout)
    assert [v["vip"] for v in vips] == [f"tcp/{VIP4}:80", f"tcp/[{VIP6}]:80"]
    r = cli("lb", "lookup", "eth0", f"tcp/{VIP4}:80", "198.18.10.2:45678", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["backend"] in lab.backend_addresses(4)
    r = cli("lb", "backend", "drain", "eth0", f"tcp/{VIP4}:80", "198.18.29.9")
    assert r.returncode == 1 and "has no backend 198.18.29.9" in r.stderr and "Traceback" not in r.stderr
    r = cli("lb", "stats", "eth0", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["flows"]["capacity"] == 262144
    r = cli("lb", "decap", "stats", "eth0")
    assert r.returncode == 1 and "no xdpkit decapsulation program" in r.stderr


def test_unload_leaves_the_interfaces_clean(world):
    lab, _servers, _lb = world
    # runs last in the module: the fixture's teardown would otherwise detach nothing
    for i in range(1, 4):
        with xns.inside(lab.ns(f"be{i}")):
            decap_unload("eth0")
    with xns.inside(lab.ns("lb")):
        LoadBalancer.unload("eth0")
        with pytest.raises(Exception, match="no xdpkit load balancer"):
            LoadBalancer.open("eth0")
    time.sleep(0)
