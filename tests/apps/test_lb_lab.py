"""The load balancer's lab without any load balancer: plain routing, backend servers, lifecycle."""
import secrets

import pytest

from xdpkit._sys import netns
from xdpkit._sys.ethtool import get_gro
from xdpkit.lab import lb_topology as lbmod
from xdpkit.lab.lb_topology import VIP4, VIP6, LbLab
from xdpkit.errors import ConfigError, LabError
from xdpkit.testing.plugin import _claim

pytestmark = pytest.mark.kernel


def _new_lab(suffix: str, backends: int) -> LbLab:
    lab = LbLab("t" + secrets.token_hex(2) + suffix, backends=backends)
    for name in lab.namespaces:
        _claim(name)  # so a concurrent pytest session's leak check does not count them
    return lab


@pytest.fixture(scope="module")
def lblab():
    lab = _new_lab("l", 3)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture
def servers(lblab):
    s = lblab.start_servers(port=80)
    try:
        yield s
    finally:
        s.close()  # function-scoped, so the leak check sees every server fd closed


@pytest.mark.parametrize("family", [4, 6])
def test_client_reaches_every_backend_through_the_router(lblab, servers, family):
    addrs = lblab.backend_addresses(family)
    assert addrs == [f"198.18.2{i}.2" if family == 4 else f"2001:db8:2{i}::2" for i in (1, 2, 3)]
    assert [lblab.client_get(a) for a in addrs] == ["be1", "be2", "be3"]


def test_held_connection_answers_pings(lblab, servers):
    with lblab.client_hold(lblab.address("be3", 6)) as held, lblab.client_hold("198.18.21.2") as other:
        assert [held.ping() for _ in range(3)] == ["be3"] * 3
        assert other.ping() == "be1"


def test_stop_refuses_connections_and_start_brings_the_backend_back(lblab, servers):
    be2 = lblab.address("be2")
    with lblab.client_hold(be2) as held:
        assert held.ping() == "be2"  # accepted now: stop() resets connections still in the backlog
        servers.stop(2)
        with pytest.raises(ConnectionRefusedError):
            lblab.client_get(be2)
        with pytest.raises(ConnectionRefusedError):
            lblab.client_get(lblab.address("be2", 6))
        assert held.ping() == "be2"  # established connections outlive the listener by default
        assert lblab.client_get(lblab.address("be1")) == "be1"  # the others are untouched
        servers.start(2)
        assert lblab.client_get(be2) == "be2"
        servers.stop(2, connections=True)
        with pytest.raises(ConnectionError):
            held.ping()
    servers.start(2)
    assert lblab.client_get(lblab.address("be2", 6)) == "be2"


def test_router_forwards_and_sends_the_vips_to_the_lb(lblab):
    sysctl = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter",
              "net.ipv4.conf.default.rp_filter"] + [f"net.ipv4.conf.{i}.rp_filter"
                                                    for i in ("cli0", "lb0", "be1", "be2", "be3")]
    out = lblab.run("rtr", ["sysctl", "-n", *sysctl], timeout=5).stdout.split()
    assert out == ["1", "1"] + ["0"] * 7
    for vip, nexthop in ((VIP4, "via 198.18.11.2 dev lb0"), (VIP6, "via 2001:db8:11::2 dev lb0")):
        assert nexthop in lblab.run("rtr", ["ip", "route", "get", vip], timeout=5).stdout
    # Nothing answers a VIP yet: the LB node neither owns nor forwards it.
    with pytest.raises(OSError):
        lblab.client_get(VIP4, timeout=0.3)


def test_backends_own_the_vips_and_have_gro_everywhere(lblab):
    for i in (1, 2, 3):
        r = lblab.run(f"be{i}", ["ip", "-o", "addr", "show", "dev", "lo"], timeout=5)
        assert f"{VIP4}/32" in r.stdout and f"{VIP6}/128" in r.stdout
        assert "tentative" not in r.stdout
    ends = [(role, "eth0") for role in ("cli", "lb", "be1", "be2", "be3")]
    ends += [("rtr", i) for i in ("cli0", "lb0", "be1", "be2", "be3")]
    for role, ifname in ends:
        with netns.inside(lblab.ns(role)):
            assert get_gro(ifname), (role, ifname)


def test_direct_server_return_path_works_with_plain_routing(lblab, servers):
    """Stand-in for the LB: the router itself steers the client's VIP traffic to be2. be2 answers
    from the VIP on its lo and the reply goes back through the router's be2 link, where the
    VIP's reverse path would be lb0: strict rp_filter would drop exactly this."""
    rule = ["rule", "add", "iif", "cli0", "lookup", "100", "pref", "100"]
    try:
        for fam, net, gw in (("-4", "198.18.200.0/24", "198.18.22.2"),
                             ("-6", "2001:db8:200::/64", "2001:db8:22::2")):
            lblab.run("rtr", ["ip", fam, "route", "add", net, "via", gw, "table", "100"], check=True)
            lblab.run("rtr", ["ip", fam, *rule], check=True)
        assert lblab.client_get(VIP4) == "be2"
        assert lblab.client_get(VIP6) == "be2"
        with lblab.client_hold(VIP6) as held:
            assert held.ping() == "be2"
    finally:
        for fam in ("-4", "-6"):
            lblab.run("rtr", ["ip", fam, "rule", "del", "pref", "100"])
            lblab.run("rtr", ["ip", fam, "route", "flush", "table", "100"])
    assert "lookup 100" not in lblab.run("rtr", ["ip", "rule"]).stdout


def test_up_twice_is_an_error_and_down_removes_everything():
    lab = _new_lab("d", 1)
    try:
        lab.up()
        assert lab.namespaces == [f"{lab.name}-{r}" for r in ("cli", "rtr", "lb", "be1")]
        with pytest.raises(LabError, match="already exists"):
            lab.up()
        with pytest.raises(LabError, match="already exists"):
            LbLab(lab.name, backends=2).up()
        assert all(netns.exists(n) for n in lab.namespaces)  # the failed up() removed nothing
    finally:
        removed = lab.down()
    assert removed == lab.namespaces
    assert lab.down() == [] and not lab.exists()
    assert not set(lab.namespaces) & set(netns.list_namespaces())


def test_context_manager_and_failed_build_leave_nothing(monkeypatch):
    lab = _new_lab("c", 1)
    with lab as same:
        assert same is lab and lab.exists()
        s = lab.start_servers(port=8080)
        assert lab.client_get(lab.address("be1"), port=8080) == "be1"
    assert not lab.exists()  # down() also closed the servers (the leak check counts their fds)
    s.close()  # idempotent

    def broken(*a, **kw):
        raise RuntimeError("no veth for you")

    monkeypatch.setattr(lbmod, "add_veth", broken)
    with pytest.raises(LabError, match="no veth for you"):
        lab.up()
    assert not lab.exists()


def test_bad_arguments_are_config_errors():
    for kwargs in ({"name": "Bad_Name"}, {"name": "x" * 9}, {"backends": 0}, {"backends": 33}):
        with pytest.raises(ConfigError):
            LbLab(**kwargs)
    with pytest.raises(ConfigError):
        LbLab().ns("be9")
    with pytest.raises(ConfigError):
        LbLab().address("rtr")


def test_demo_spreads_drains_and_cleans_up(capsys):
    import json

    from xdpkit.apps.lb.demo import run_demo
    from xdpkit.cli.main import main as cli_main

    name = "xd" + secrets.token_hex(3)
    for ns in LbLab(name).namespaces:
        _claim(ns)
    assert cli_main(["lb", "demo", "--name", name, "--connections", "60", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and sum(out["spread"].values()) == 60 and min(out["spread"].values()) > 0
    assert out["after_drain"][out["drained"]] == 0 and sum(out["after_drain"].values()) == 30
    assert out["held_connection_stayed"]
    assert out["stats"]["flows"]["misses"] >= 90
    assert not LbLab(name).exists()
    with pytest.raises(ConfigError, match="connections 5"):
        run_demo(name, 5)
