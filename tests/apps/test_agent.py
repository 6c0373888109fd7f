"""`xdpkit agent` on one node (a test namespace with veth pairs): what it loads, what it leaves
alone, drift, bad configs, its endpoints and logs, SIGTERM (in the middle of an apply too) and
--cleanup-on-exit. The fleet targets are in test_agent_fleet.py."""
import ipaddress
import os
import signal
import sys
import time

import threading

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from xdpkit.lab.fleet import AgentProcess
from xdpkit import xdp
from xdpkit.apps.firewall.control import Firewall
from xdpkit.apps.firewall.rules import parse_config as parse_rules
from xdpkit.builtin import builtin_object
from xdpkit.program import Program

pytestmark = pytest.mark.kernel

INTERVAL = 0.5
RULES = "policy allow\ndeny src 198.18.66.0/24\n"


def write(d, name, text):
    tmp = d / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, d / name)   # one change, as an editor's save or kubelet's swap


def main(*tables, exporter=True) -> str:
    return f"version = 1\n[exporter]\nenabled = {str(exporter).lower()}\n\n" + "\n".join(tables)


def fw(ifaces, rules="firewall.rules", mode="auto") -> str:
    return f'[[firewall]]\ninterfaces = {list(ifaces)!r}\nrules = "{rules}"\nmode = "{mode}"\n'.replace("'", '"')


def stats(ifaces) -> str:
    return f"[[stats]]\ninterfaces = {list(ifaces)!r}\n".replace("'", '"')


@pytest.fixture
def node(netns, tmp_path):
    for i in range(3):
        netns.veth(f"a{i}", f"b{i}")
    cfg = tmp_path / "config"
    cfg.mkdir()
    write(cfg, "firewall.rules", RULES)
    started = []

    def start(*extra, log="agent") -> AgentProcess:
        a = AgentProcess(netns.name, cfg, tmp_path / "state", tmp_path / f"{log}.log", interval=INTERVAL,
                         extra=extra).start()
        started.append(a)
        return a

    yield netns, cfg, start
    for a in started:
        a.stop()


def attached(ifname):
    atts = xdp.query(ifname)
    return atts[0] if atts else None


def verdict(ifname: str, src: str) -> str:
    """What the program on ``ifname`` does with a UDP packet from ``src`` (BPF_PROG_TEST_RUN)."""
    ip = IPv6(src=src, dst="2001:db8:2::2") if ":" in src else IP(src=src, dst="198.18.2.2")
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / UDP(sport=1234, dport=53) / (b"x" * 18))
    prog = Program.from_id(attached(ifname).id)
    try:
        return prog.run(frame).verdict.name
    finally:
        prog.close()


BLOCKED6 = "2001:db8::1"    # the first address of big_set()


def big_set(cfg, n: int = 400_000) -> None:
    """A file: set of IPv6 /128s, big enough that applying it takes a while."""
    net = ipaddress.ip_network("2001:db8::/32")
    with open(cfg / "big.netset", "w") as f:
        for i in range(n):
            f.write(f"{net[i * 7919 + 1]}/128\n")
    write(cfg, "big.rules", "policy allow\ndeny src file:big.netset\n")


def test_loads_what_the_config_names_and_serves_its_endpoints(node):
    ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(fw(["a0"]), stats(["a*1"])))
    a = start()
    body = a.wait_ready()
    assert body["interfaces"] == {"a0": "firewall", "a1": "stats"} and body["generation"] == 1
    assert attached("a0").name == "xdpkit_firewall" and attached("a1").name == "xdpkit_stats"
    assert attached("a2") is None and attached("b0") is None
    with Firewall.open("a0") as f:
        assert f.fingerprint() == parse_rules(RULES).fingerprint()
    assert a.get("/healthz")[0] == 200 and a.get("/nope")[0] == 404
    text = a.get("/metrics")[1]
    assert 'xdpkit_agent_actions_total{action="loaded",app="firewall"} 1.0' in text
    assert f'xdpkit_agent_config_info{{hash="{body["hash"]}"}} 1.0' in text
    assert 'xdpkit_packets_total{ifname="a0",verdict="XDP_PASS"}' in text   # the exporter's part
    assert 'xdpkit_firewall_rule_packets_total{' in text                   # and the apps' own
    loaded = a.events("loaded")
    assert {(e["app"], e["ifname"]) for e in loaded} == {("firewall", "a0"), ("stats", "a1")}
    assert all(e["level"] == "info" and e["node"] == ns.name and e["program_id"] > 0 for e in loaded)
    write(cfg, "xdpkit.toml", main(fw(["a0"]), stats(["a*1"]), exporter=False))
    a.wait_until(lambda x: x.readyz()[1]["generation"] == 2)
    text = a.get("/metrics")[1]
    assert "xdpkit_packets_total" not in text and "xdpkit_agent_reconcile_runs_total" in text


def test_drift_by_hand_is_repaired_and_logged(node):
    _ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(fw(["a0"])))
    a = start()
    a.wait_ready()
    prog = attached("a0").id
    with Firewall.open("a0") as f:
        f.add_rule("deny udp dport 9")   # an operator's change the config does not have
    a.wait_until(lambda x: x.events("repaired"), what="the repair")
    with Firewall.open("a0") as f:
        assert f.fingerprint() == parse_rules(RULES).fingerprint() and f.prog_id == prog
    assert a.events("repaired")[0]["level"] == "warning"
    Firewall.unload("a0")   # removed by hand: loaded again
    a.wait_until(lambda x: [e for e in x.events("loaded") if "gone" in e["msg"]], what="the reload")
    assert attached("a0").name == "xdpkit_firewall"


def test_programs_it_did_not_put_there_are_left_alone(node):
    ns, cfg, start = node
    # a foreign program (ip, not xdpkit) on an interface the config names, and a firewall an
    # operator loaded on one it does not
    r = ns.run(["ip", "link", "set", "dev", "a1", "xdpgeneric", "obj", str(builtin_object("receivers")),
                "sec", "xdp"])
    assert r.returncode == 0, r.stderr
    foreign = attached("a1")
    assert foreign is not None and not foreign.ours
    with Firewall.load("a2", parse_rules(RULES)) as f:
        operators = f.prog_id
    write(cfg, "xdpkit.toml", main(fw(["a0", "a1"])))
    a = start()
    code, body = a.wait_readyz(lambda c, b: b["interfaces"])
    assert code == 503 and body["interfaces"] == {"a0": "firewall"}
    assert len(body["reasons"]) == 1 and body["reasons"][0].startswith("a1: a1 runs program") \
        and "the agent did not put there" in body["reasons"][0]
    assert attached("a1").id == foreign.id and attached("a2").id == operators
    write(cfg, "xdpkit.toml", main(fw(["a0"])))   # a1 leaves the config: nothing to remove there
    a.wait_ready()
    time.sleep(3 * INTERVAL)
    assert attached("a1").id == foreign.id and attached("a2").id == operators
    assert a.events("unloaded") == []
    a.stop()
    Firewall.unload("a2")


def test_an_interface_leaving_the_config_loses_only_the_agents_program(node):
    _ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(fw(["a0", "a1"])))
    a = start()
    a.wait_ready()
    kept = attached("a0").id
    write(cfg, "xdpkit.toml", main(fw(["a0"]), stats(["a2"])))
    a.wait_until(lambda x: x.events("unloaded"), what="the unload")
    a.wait_ready()
    assert attached("a1") is None and attached("a0").id == kept and attached("a2").name == "xdpkit_stats"
    write(cfg, "xdpkit.toml", main(stats(["a0"])))   # another app on a0: replaced
    a.wait_until(lambda x: x.events("reloaded"), what="the reload")
    assert attached("a0").name == "xdpkit_stats" and attached("a2") is None


def test_a_bad_config_at_start_applies_nothing_and_a_conflict_is_reported(node):
    _ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(fw(["a0"]), "[[stats]]\ninterfaces = [\"a1\"]\nmode = \"fast\"\n"))
    a = start()
    code, body = a.wait_readyz(lambda c, b: len(b["reasons"]) == 2)
    assert code == 503 and body["reasons"] == [
        "config rejected: xdpkit.toml:12: [[stats]] #1: mode must be one of auto, native, generic, not 'fast'",
        "no valid config has been read yet"]
    assert attached("a0") is None and attached("a1") is None
    write(cfg, "xdpkit.toml", main(fw(["a*"]), stats(["a1"])))   # a pattern and a name meet on a1
    code, body = a.wait_readyz(lambda c, b: b["interfaces"])
    assert code == 503 and any(r.startswith("a1: ") and "both match a1" in r for r in body["reasons"]), body
    assert attached("a1") is None and attached("a0").name == "xdpkit_firewall"
    write(cfg, "xdpkit.toml", main(fw(["a0"]), stats(["a1", "x9"])))   # a name this node lacks
    code, body = a.wait_readyz(lambda c, b: "a1" in b["interfaces"])
    assert code == 503 and body["reasons"] == ["x9: xdpkit.toml [[stats]] #1 names interface x9, "
                                               "which this node does not have"]


def test_sigterm_leaves_the_data_plane_and_cleanup_on_exit_removes_only_its_own(node):
    _ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(fw(["a0"]), stats(["a1"])))
    a = start()
    a.wait_ready()
    progs = attached("a0").id, attached("a1").id
    assert a.stop() == 0
    assert (attached("a0").id, attached("a1").id) == progs
    with Firewall.load("a2", parse_rules(RULES)) as f:
        operators = f.prog_id
    b = start("--cleanup-on-exit", log="second")
    b.wait_ready()
    assert [e for e in b.events() if e.get("event") in ("loaded", "applied", "adopted")] == []  # adopted as is
    assert b.stop() == 0
    assert attached("a0") is None and attached("a1") is None and attached("a2").id == operators
    assert {e["ifname"] for e in b.events("unloaded")} == {"a0", "a1"}
    assert not any(p.name.endswith(".json") for p in (cfg.parent / "state").iterdir())
    Firewall.unload("a2")


def test_sigterm_in_the_middle_of_an_apply_rolls_it_back(node):
    _ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(fw(["a0"])))
    a = start()
    a.wait_ready()
    big_set(cfg)
    write(cfg, "xdpkit.toml", main(fw(["a0"], rules="big.rules")))
    a.wait_until(lambda x: x.events("config_accepted")[1:], timeout=60, what="the big config")
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=60) in (0, 1)
    assert a.events("interrupted"), a.log()[-2000:]
    assert a.events("applied") == []
    with Firewall.open("a0") as f:
        assert f.fingerprint() == parse_rules(RULES).fingerprint()   # the old rule set, whole
    assert verdict("a0", "198.18.66.5") == "XDP_DROP" and verdict("a0", BLOCKED6) == "XDP_PASS"


def test_an_operator_applying_meanwhile_takes_turns_and_the_config_wins(node):
    ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(fw(["a0"])))
    a = start()
    a.wait_ready()
    (cfg.parent / "operator.conf").write_text("policy deny\n")
    big_set(cfg)
    operator = {}

    def apply_by_hand():
        time.sleep(0.3)   # while the agent compiles or writes the big set
        operator["run"] = ns.run([sys.executable, "-m", "xdpkit", "firewall", "apply", "a0",
                                  str(cfg.parent / "operator.conf")], timeout=120)

    t = threading.Thread(target=apply_by_hand)
    t.start()
    write(cfg, "xdpkit.toml", main(fw(["a0"], rules="big.rules")))
    t.join(timeout=150)
    assert operator["run"].returncode == 0, operator["run"].stderr
    want = parse_rules(f"policy allow\ndeny src file:{cfg}/big.netset\n").fingerprint()

    def converged(_a):
        with Firewall.open("a0") as f:
            return f.fingerprint() == want
    a.wait_until(converged, timeout=60, what="the config's rule set back in force")
    assert verdict("a0", BLOCKED6) == "XDP_DROP" and verdict("a0", "198.18.66.5") == "XDP_PASS"
    a.wait_until(lambda x: x.events("applied"), what="the apply logged")   # logged after the pass
    assert attached("a0").id == a.events("loaded")[0]["program_id"]


def test_a_second_agent_in_the_namespace_waits_for_the_first(node):
    _ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(fw(["a0"])))
    first = start()
    first.wait_ready()
    second = start(log="second")
    waiting = second.wait_until(lambda x: x.events("waiting"), what="the second agent waiting")
    assert waiting[0]["holder"] == first.proc.pid
    assert second.events("started") == [] and first.readyz()[0] == 200   # it does nothing meanwhile
    first.kill9()   # the kernel frees the claim with the process
    second.wait_ready()
    assert [e for e in second.events() if e.get("event") in ("loaded", "applied", "adopted")] == []


def test_check_validates_without_touching_the_node(node):
    ns, cfg, _start = node
    write(cfg, "xdpkit.toml", main(fw(["a0"]), stats(["a1"])))
    r = ns.run([sys.executable, "-m", "xdpkit", "agent", "--config-dir", str(cfg), "--check"])
    assert r.returncode == 0 and "firewall on a0" in r.stdout, r.stderr
    assert attached("a0") is None
    write(cfg, "firewall.rules", RULES + "deny sport 99999\n")
    r = ns.run([sys.executable, "-m", "xdpkit", "agent", "--config-dir", str(cfg), "--check"])
    assert r.returncode == 1 and "firewall.rules: line 3:" in r.stderr and "Traceback" not in r.stderr
    r = ns.run([sys.executable, "-m", "xdpkit", "agent", "--config-dir", str(cfg), "--once",
                "--state-dir", str(cfg.parent / "state")], timeout=60)
    assert r.returncode == 1 and '"event": "config_rejected"' in r.stdout


def test_the_fleet_demo_shows_what_it_says():
    from xdpkit.agent.demo import run_demo
    from xdpkit.lab.lb_topology import LbLab
    from xdpkit.testing.plugin import _claim

    name = "t" + __import__("secrets").token_hex(3)
    for ns in LbLab(name, nodes=3).namespaces:
        _claim(ns)
    lines = []
    result = run_demo(name, log=lines.append)
    assert result["ok"] and result["same_backends"] and len(result["hashes"]) == 1
    assert result["restart"]["writes"] == [] and result["restart"]["after"] == result["restart"]["backend"]
    assert all(ms < 2000 for ms in result["change_ms"].values())   # the watch, well within an interval
    assert lines[-1].startswith("done in") and "OK" in lines[-1]


LB_NO_SOURCE = """[[vip]]
address = "198.18.200.1"
protocol = "tcp"
port = 80
backends = [{ address = "198.18.21.2" }]
"""   # no encap_source_v4, and the test interfaces have no IPv4 address: this node cannot load it


def lb_table(ifaces, mode="auto") -> str:
    return f'[[lb]]\ninterfaces = {list(ifaces)!r}\nconfig = "lb.toml"\nhealth = false\nmode = "{mode}"\n'.replace("'", '"')


def test_a_replacement_that_fails_leaves_the_old_program_in_place(node):
    _ns, cfg, start = node
    write(cfg, "lb.toml", LB_NO_SOURCE)
    write(cfg, "xdpkit.toml", main(stats(["a0", "a1"])))
    a = start()
    a.wait_ready()
    before = {i: (attached(i).id, attached(i).mode.value) for i in ("a0", "a1")}
    assert before["a0"][1] == "native"
    # a0: another app in the same mode (one atomic swap); a1: another app in another mode (detach,
    # attach): both fail on this node, and both interfaces keep the program they had
    write(cfg, "xdpkit.toml", main(lb_table(["a0"]), lb_table(["a1"], mode="generic")))
    code, body = a.wait_readyz(lambda c, b: len(b["reasons"]) == 2)
    assert code == 503 and all("no IPv4 address" in r for r in body["reasons"]), body
    for i in ("a0", "a1"):
        assert (attached(i).id, attached(i).mode.value) == before[i]
    time.sleep(2 * INTERVAL)
    assert {i: (attached(i).id, attached(i).mode.value) for i in ("a0", "a1")} == before


def test_a_repeated_rule_is_not_drift(node):
    _ns, cfg, start = node
    write(cfg, "firewall.rules", RULES + "deny src 198.18.66.0/24\n")
    write(cfg, "xdpkit.toml", main(fw(["a0"])))
    a = start()
    a.wait_ready()
    time.sleep(4 * INTERVAL)
    assert a.events("repaired") == [] and a.metric('xdpkit_agent_actions_total{action="loaded",app="firewall"}') == 1


def test_an_operators_program_in_another_mode_is_reported_not_reloaded(node):
    _ns, cfg, start = node
    with Firewall.load("a1", parse_rules(RULES), mode="generic") as f:
        operators = f.prog_id
    write(cfg, "xdpkit.toml", main(fw(["a1"], mode="native")))
    a = start()
    code, body = a.wait_readyz(lambda c, b: b["reasons"] and "a1" in b["reasons"][0])
    assert code == 503 and "the agent reloads only its own programs" in body["reasons"][0]
    assert attached("a1").id == operators and attached("a1").mode.value == "generic"
    a.stop()
    Firewall.unload("a1")


def test_a_renamed_interface_keeps_its_program_and_owner(node):
    ns, cfg, start = node
    write(cfg, "xdpkit.toml", main(stats(["[ac]2"])))
    a = start()
    a.wait_ready()
    prog = attached("a2").id
    for argv in (["ip", "link", "set", "a2", "down"], ["ip", "link", "set", "a2", "name", "c2"],
                 ["ip", "link", "set", "c2", "up"]):
        assert ns.run(argv).returncode == 0
    a.wait_until(lambda x: x.readyz()[1]["interfaces"] == {"c2": "stats"}, what="the record following the rename")
    assert attached("c2").id == prog
    assert [e for e in a.events() if e.get("event") in ("loaded", "adopted", "reloaded", "unloaded")] == \
        [e for e in a.events("loaded") if e["ifname"] == "a2"]
