"""The forwarding plane on the router lab, for real: frames cross the dut through XDP with exact
TTLs, checksums and MACs; what the plane cannot finish reaches the stack (first packets of a new
neighbour, TTL 1), route and neighbour changes act on the very next packet, blackhole routes
drop and count, and unloading gives the stack its forwarding back with nothing left behind."""
import secrets
import socket
import threading
import time

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from xdpkit import netns as xns
from xdpkit.apps.forward.control import EVENTS, Forwarder, counted_since
from xdpkit.errors import ConfigError, XdpkitError
from xdpkit.lab import Lab
from xdpkit.testing.plugin import _claim
from xdpkit.xdp import query

from tests.capture import Capture

pytestmark = pytest.mark.kernel

FAR4, FAR6 = "198.18.100.1", "2001:db8:100::1"     # answered by dst or alt, as the route says


@pytest.fixture(scope="module")
def lab():
    lab = Lab("f" + secrets.token_hex(3), router=True)
    for name in lab.namespaces:
        _claim(name)
    lab.up()
    try:
        for role in ("dst", "alt"):
            lab.run(role, ["ip", "addr", "add", FAR4 + "/32", "dev", "lo"], check=True)
            lab.run(role, ["ip", "addr", "add", FAR6 + "/128", "dev", "lo"], check=True)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def plane(lab):
    """A plane on every dut interface, fresh neighbours; unloaded after the test."""
    lab.run("dut", ["ip", "neigh", "flush", "all"])
    lab.run("dut", ["ip", "-6", "neigh", "flush", "all"])
    with xns.inside(lab.dut):
        Forwarder.load(["in0", "out0", "out1"]).close()
    try:
        yield lab
    finally:
        with xns.inside(lab.dut):
            Forwarder.unload()


def counts(lab) -> dict:
    with xns.inside(lab.dut), Forwarder.open("in0") as fwd:
        return fwd.event_packets()


delta = counted_since


def to_router(lab, pkt) -> bytes:
    a = lab.addresses
    return bytes(Ether(src=a.src_mac, dst=a.dut_in_mac) / pkt)


def ping(lab, dst: str, count: int = 3) -> None:
    r = lab.run("src", ["ping", "-6" if ":" in dst else "-4", "-c", str(count), "-i", "0.1", "-W", "1", dst],
                timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr


def udp_from_src(lab, dst: str, *, ttl: int = 64, sport: int = 4000, payload: bytes = b"xdpkit-forward"):
    a = lab.addresses
    if ":" in dst:
        return to_router(lab, IPv6(src=a.src_ip6, dst=dst, hlim=ttl) / UDP(sport=sport, dport=9) / payload)
    return to_router(lab, IP(src=a.src_ip4, dst=dst, ttl=ttl) / UDP(sport=sport, dport=9) / payload)


def is_udp_to(dst: str, sport: int = 4000):
    def match(raw):
        e = Ether(raw)
        ip = e.getlayer(IPv6 if ":" in dst else IP)
        return ip is not None and ip.dst == dst and e.haslayer(UDP) and e[UDP].sport == sport
    return match


# ---- forwarding ---------------------------------------------------------------------------

@pytest.mark.parametrize("dst", ["198.18.2.2", "2001:db8:2::2"])
def test_ping_goes_via_the_stack_first_then_via_xdp(plane, dst):
    before = counts(plane)
    ping(plane, dst, count=5)
    d = delta(before, counts(plane))
    assert d.get("no_neigh", 0) >= 1          # the stack resolved the new neighbour
    assert d.get("forwarded", 0) + d.get("looked_up", 0) >= 8   # the rest of 10 crossed at XDP


def test_tcp_crosses_the_plane(plane):
    a = plane.addresses
    with xns.inside(plane.dst):
        server = socket.create_server((a.dst_ip4, 7001))
    got = []

    def serve():
        server.settimeout(5)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while len(data) < 100_000:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            got.append(data)
            conn.sendall(b"ok")

    t = threading.Thread(target=serve)
    t.start()
    try:
        before = counts(plane)
        with xns.inside(plane.src):
            c = socket.create_connection((a.dst_ip4, 7001), timeout=5)
        with c:
            c.sendall(bytes(range(256)) * 400)  # 102,400 bytes
            c.shutdown(socket.SHUT_WR)
            assert c.recv(2) == b"ok"
    finally:
        t.join(10)
        server.close()
    assert got and got[0] == (bytes(range(256)) * 400)[:len(got[0])] and len(got[0]) >= 100_000
    d = delta(before, counts(plane))
    assert d.get("forwarded", 0) >= 20       # segments and ACKs, both ways, through XDP


@pytest.mark.parametrize("dst", ["198.18.2.2", "2001:db8:2::2"])
def test_forwarded_frames_are_exact(plane, dst):
    a = plane.addresses
    ping(plane, dst, count=1)                  # the dut knows the neighbour now
    frame = udp_from_src(plane, dst, ttl=9)
    with Capture("eth0", plane.dst) as cap:
        before = counts(plane)
        plane.send_frames("src", "eth0", [frame])
        got = cap.frames(is_udp_to(dst))
    assert len(got) == 1
    out, sent = Ether(got[0]), Ether(frame)
    assert (out.src, out.dst) == (a.dut_out_mac, a.dst_mac)
    if ":" in dst:
        assert out[IPv6].hlim == 8
        assert bytes(out[IPv6].payload) == bytes(sent[IPv6].payload)
    else:
        assert out[IP].ttl == 8
        expect = IP(bytes(sent[IP]))
        expect.ttl, expect.chksum = 8, None
        assert bytes(out[IP]) == bytes(IP(bytes(expect)))   # checksum recomputed from scratch agrees
    d = delta(before, counts(plane))
    assert d.get("forwarded", 0) + d.get("looked_up", 0) >= 1   # (and dst's port unreachable back)


def test_the_next_hop_is_remembered(plane):
    ping(plane, "198.18.2.2", count=1)
    frames = [udp_from_src(plane, "198.18.2.2", sport=4100)] * 5
    with Capture("eth0", plane.dst) as cap:
        before = counts(plane)
        plane.send_frames("src", "eth0", frames)
        assert len(cap.frames(is_udp_to("198.18.2.2", 4100), want=5)) == 5
    d = delta(before, counts(plane))
    assert d.get("looked_up", 0) <= 2 and d.get("forwarded", 0) >= 4   # dst's ICMP errors too


@pytest.mark.parametrize("family", [4, 6])
def test_ttl_1_gets_the_stacks_time_exceeded(plane, family):
    a = plane.addresses
    dst = "198.18.2.2" if family == 4 else "2001:db8:2::2"
    with Capture("eth0", plane.src) as cap:
        before = counts(plane)
        plane.send_frames("src", "eth0", [udp_from_src(plane, dst, ttl=1)])

        def time_exceeded(raw):
            e = Ether(raw)
            if family == 4:
                return e.haslayer(ICMP) and e[ICMP].type == 11 and e[IP].src == a.dut_in_ip4
            return e.haslayer(IPv6) and e[IPv6].nh == 58 and bytes(e[IPv6].payload)[:1] == b"\x03"
        assert len(cap.frames(time_exceeded)) == 1
    assert delta(before, counts(plane)).get("ttl") == 1


@pytest.mark.parametrize("far", [FAR4, FAR6])
def test_route_and_neighbour_changes_act_on_the_next_packet(plane, far):
    a = plane.addresses
    v6 = ":" in far
    via_dst, via_alt = (a.dst_ip6, a.alt_ip6) if v6 else (a.dst_ip4, a.alt_ip4)
    fam = ["-6"] if v6 else ["-4"]
    prefix = far + ("/128" if v6 else "/32")
    plane.run("dut", ["ip", *fam, "route", "replace", prefix, "via", via_dst], check=True)
    try:
        ping(plane, via_dst, count=1)
        ping(plane, via_alt, count=1)
        with Capture("eth0", plane.dst) as at_dst, Capture("eth0", plane.alt) as at_alt:
            for i in range(3):                            # remembered after the first
                plane.send_frames("src", "eth0", [udp_from_src(plane, far, sport=4200)])
            assert len(at_dst.frames(is_udp_to(far, 4200), want=3)) == 3
            plane.run("dut", ["ip", *fam, "route", "replace", prefix, "via", via_alt], check=True)
            plane.send_frames("src", "eth0", [udp_from_src(plane, far, sport=4200)])
            assert len(at_alt.frames(is_udp_to(far, 4200))) == 1
            assert at_dst.frames(is_udp_to(far, 4200), timeout=0.3) == []
            # a neighbour's new MAC: the next frame carries it
            plane.run("dut", ["ip", *fam, "neigh", "replace", via_alt, "lladdr", "02:58:44:00:03:99",
                              "dev", "out1"], check=True)
            plane.send_frames("src", "eth0", [udp_from_src(plane, far, sport=4200)])
            got = at_alt.frames(is_udp_to(far, 4200))
            assert len(got) == 1 and Ether(got[0]).dst == "02:58:44:00:03:99"
    finally:
        plane.run("dut", ["ip", *fam, "route", "del", prefix])
        plane.run("dut", ["ip", *fam, "neigh", "del", via_alt, "dev", "out1"])   # permanent: not flushed


@pytest.mark.parametrize("family", [4, 6])
def test_blackhole_unreachable_prohibit_drop_and_count(plane, family):
    if family == 4:
        kinds = {"blackhole": "198.18.101.0/24", "unreachable": "198.18.102.0/24", "prohibit": "198.18.103.0/24"}
        target = {k: p.replace("0/24", "7") for k, p in kinds.items()}
    else:
        kinds = {"blackhole": "2001:db8:101::/64", "unreachable": "2001:db8:102::/64",
                 "prohibit": "2001:db8:103::/64"}
        target = {k: p.replace("::/64", "::7") for k, p in kinds.items()}
    fam = ["-4"] if family == 4 else ["-6"]
    for kind, prefix in kinds.items():
        plane.run("dut", ["ip", *fam, "route", "add", kind, prefix], check=True)
    try:
        before = counts(plane)
        with Capture("eth0", plane.dst) as cap:
            for kind in kinds:
                plane.send_frames("src", "eth0", [udp_from_src(plane, target[kind])] * 2)
            assert cap.frames(lambda d: Ether(d).haslayer(UDP) and Ether(d)[UDP].sport == 4000, timeout=0.3) == []
        d = delta(before, counts(plane))
        assert {k: d.get(k) for k in kinds} == {k: 2 for k in kinds}
    finally:
        for prefix in kinds.values():
            plane.run("dut", ["ip", *fam, "route", "del", prefix])


def test_frames_for_the_router_itself_go_to_the_stack(plane):
    a = plane.addresses
    before = counts(plane)
    ping(plane, a.dut_out_ip4, count=2)
    assert delta(before, counts(plane)).get("local", 0) >= 2


def test_unload_restores_stack_forwarding_and_leaves_nothing(lab):
    with xns.inside(lab.dut):
        Forwarder.load(["in0", "out0"]).close()
        pins = Forwarder.planes()[0]["pins"]
        removed = Forwarder.unload()
        assert [p["members"] for p in removed] == [["in0", "out0"]]
        assert query() == [] and Forwarder.planes() == []
    import os
    assert not os.path.exists(pins)
    ping(lab, "198.18.2.2", count=2)
    ping(lab, "2001:db8:2::2", count=2)


# ---- CPUMAP and flooding --------------------------------------------------------------------

def test_cpus_spread_what_goes_to_the_stack(lab):
    with xns.inside(lab.dut):
        Forwarder.load(["in0", "out0"], cpus=[1]).close()
    try:
        before = counts(lab)
        ping(lab, lab.addresses.dut_in_ip4, count=3)     # local: to the stack, through CPU 1
        d = delta(before, counts(lab))
        assert d.get("to_cpu", 0) >= 3 and d.get("local", 0) >= 3
    finally:
        with xns.inside(lab.dut):
            Forwarder.unload()


def test_flood_sends_broadcasts_out_of_every_other_member(lab):
    with xns.inside(lab.dut):
        Forwarder.load(["in0", "out0", "out1"], flood=True).close()
    try:
        frame = bytes(Ether(src=lab.addresses.src_mac, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"flood!" * 10))

        def mine(raw):
            return raw[12:14] == b"\x88\xb5" and raw[14:20] == b"flood!"
        with Capture("eth0", lab.dst) as at_dst, Capture("eth0", lab.alt) as at_alt:
            before = counts(lab)
            lab.send_frames("src", "eth0", [frame])
            assert len(at_dst.frames(mine)) == 1 and len(at_alt.frames(mine)) == 1
        assert delta(before, counts(lab)) == {"flooded": 1}
    finally:
        with xns.inside(lab.dut):
            Forwarder.unload()


# ---- bad input: a clear error and nothing loaded ---------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"ifaces": ["in0", "nosuch0"]}, "no interface 'nosuch0'"),
    ({"ifaces": ["in0", "eth0"]}, "is in network namespace"),
    ({"ifaces": ["in0", "in0"]}, "named twice"),
    ({"ifaces": ["in0"], "cpus": [999]}, "CPU 999 is not online"),
    ({"ifaces": ["in0"], "cpu_queue": 0}, "out of range"),
    ({"ifaces": ["in0"], "cache_slots": 1000}, "power of two"),
    ({"ifaces": ["in0"], "fib": "fast"}, "unknown FIB mode"),
    ({"ifaces": ["in0"], "flood": True}, "at least two"),
])
def test_bad_input_is_refused_before_anything_loads(lab, kwargs, message):
    kwargs = dict(kwargs)
    with xns.inside(lab.dut):
        with pytest.raises(ConfigError, match=message):
            Forwarder.load(kwargs.pop("ifaces"), **kwargs)
        assert query() == []


def test_a_second_plane_on_a_member_is_refused(lab):
    with xns.inside(lab.dut):
        Forwarder.load(["in0", "out0"]).close()
        try:
            with pytest.raises(XdpkitError, match="already loaded on out0"):
                Forwarder.load(["out1", "out0"])
            assert {a.ifname for a in query()} == {"in0", "out0"}
        finally:
            Forwarder.unload()


# ---- what an operator expects of the kernel ---------------------------------------------------

def test_the_forwarding_sysctl_is_honoured_at_once(plane):
    ping(plane, "198.18.2.2", count=1)
    frame = udp_from_src(plane, "198.18.2.2", sport=4300)
    with Capture("eth0", plane.dst) as cap:
        plane.send_frames("src", "eth0", [frame])
        assert len(cap.frames(is_udp_to("198.18.2.2", 4300))) == 1      # remembered now
        plane.run("dut", ["sysctl", "-qw", "net.ipv4.conf.in0.forwarding=0"], check=True)
        try:
            before = counts(plane)
            plane.send_frames("src", "eth0", [frame])
            assert cap.frames(is_udp_to("198.18.2.2", 4300), timeout=0.3) == []
            assert delta(before, counts(plane)).get("fwd_off") == 1
        finally:
            plane.run("dut", ["sysctl", "-qw", "net.ipv4.conf.in0.forwarding=1"], check=True)
        plane.send_frames("src", "eth0", [frame])
        assert len(cap.frames(is_udp_to("198.18.2.2", 4300))) == 1


@pytest.mark.parametrize("fib, arrives_at", [("full", "alt"), ("direct", "dst")])
def test_policy_rules_apply_with_fib_full_only(lab, fib, arrives_at):
    a = lab.addresses
    lab.run("dut", ["ip", "route", "replace", FAR4 + "/32", "via", a.dst_ip4], check=True)
    lab.run("dut", ["ip", "route", "replace", FAR4 + "/32", "via", a.alt_ip4, "table", "100"], check=True)
    lab.run("dut", ["ip", "rule", "add", "from", a.src_ip4, "to", FAR4, "lookup", "100", "pref", "100"], check=True)
    try:
        ping(lab, a.dst_ip4, count=1)
        ping(lab, a.alt_ip4, count=1)
        with xns.inside(lab.dut):
            Forwarder.load(["in0", "out0", "out1"], fib=fib).close()
        try:
            with Capture("eth0", lab.ns(arrives_at)) as cap:
                lab.send_frames("src", "eth0", [udp_from_src(lab, FAR4, sport=4400)] * 2)
                assert len(cap.frames(is_udp_to(FAR4, 4400), want=2)) == 2
        finally:
            with xns.inside(lab.dut):
                Forwarder.unload()
    finally:
        lab.run("dut", ["ip", "rule", "del", "pref", "100"])
        lab.run("dut", ["ip", "route", "del", FAR4 + "/32"])
        lab.run("dut", ["ip", "route", "flush", "table", "100"])


def test_generic_mode(lab):
    with xns.inside(lab.dut):
        Forwarder.load(["in0", "out0"], mode="generic").close()
        try:
            assert {a["mode"] for a in Forwarder.planes()[0]["attached"]} == {"generic"}
            before = counts(lab)
            ping(lab, "198.18.2.2", count=3)
            d = delta(before, counts(lab))
            assert d.get("forwarded", 0) + d.get("looked_up", 0) >= 5
        finally:
            Forwarder.unload()


# ---- loading is all or nothing --------------------------------------------------------------

def test_a_refusal_part_way_leaves_nothing(lab, tmp_path):
    import os

    from xdpkit import compile_file
    from xdpkit.bpffs import pin_root

    obj_path = compile_file(os.path.join(os.path.dirname(__import__("xdpkit").__file__), "examples",
                                         "xdp_pass.bpf.c"))
    lab.run("dut", ["ip", "link", "set", "dev", "out1", "xdpdrv", "obj", str(obj_path), "sec", "xdp"], check=True)
    try:
        pins_before = set(os.listdir(pin_root()))
        with xns.inside(lab.dut):
            with pytest.raises(XdpkitError, match="out1 is busy"):
                Forwarder.load(["in0", "out0", "out1"])   # in0 and out0 are attached by then
            assert [(a.ifname, a.ours) for a in query()] == [("out1", False)]
        assert set(os.listdir(pin_root())) == pins_before
    finally:
        lab.run("dut", ["ip", "link", "set", "dev", "out1", "xdpdrv", "off"])


def test_an_interrupt_part_way_leaves_nothing(lab, monkeypatch):
    import os

    from xdpkit.apps.forward import control
    from xdpkit.bpffs import pin_root

    real = control.Forwarder._save

    def interrupted(self, settings):
        real(self, settings)
        raise KeyboardInterrupt   # Ctrl-C after the maps are filled and the hooks pinned

    monkeypatch.setattr(control.Forwarder, "_save", interrupted)
    pins_before = set(os.listdir(pin_root()))
    with xns.inside(lab.dut):
        with pytest.raises(KeyboardInterrupt):
            Forwarder.load(["in0", "out0"])
        assert query() == []
    assert set(os.listdir(pin_root())) == pins_before


def test_unload_removes_the_pins_of_a_plane_whose_namespace_was_deleted(make_netns):
    import os

    from xdpkit.apps.forward.control import PIN_PREFIX
    from xdpkit.bpffs import pin_root

    ns = make_netns()
    with ns.inside():
        ns.veth("fa", "fb")
        Forwarder.load(["fa", "fb"]).close()
        pins = Forwarder.planes()[0]["pins"]
    assert os.path.basename(pins).startswith(PIN_PREFIX) and os.path.isdir(pins)
    xns.remove(ns.name)                       # the plane goes with its interfaces; the pins stay
    deadline = time.monotonic() + 5
    while os.path.isdir(pins) and time.monotonic() < deadline:
        Forwarder.unload()                    # in any namespace: removes pins of programs gone
        time.sleep(0.05)
    assert not os.path.isdir(pins)
    assert pin_root()


def test_the_demo_runs_and_cleans_up():
    from xdpkit.apps.forward.demo import run_demo

    name = "x" + secrets.token_hex(3)
    for role in ("src", "dut", "dst", "alt"):
        _claim(f"{name}-{role}")
    result = run_demo(lab_name=name, log=None)
    assert result["ok"], result
    assert result["route_change"] == {"before": "dst", "after": "alt"}
    assert result["tcp"]["forwarded"] > 100


def test_the_exporter_shows_the_plane_once_with_reasons(plane):
    import subprocess
    import sys

    from prometheus_client.parser import text_string_to_metric_families

    ping(plane, "198.18.2.2", count=3)
    r = subprocess.run(["ip", "netns", "exec", plane.dut, sys.executable, "-m", "xdpkit", "exporter", "--once"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    fams = {f.name: f for f in text_string_to_metric_families(r.stdout)}
    samples = [s for s in fams["xdpkit_forward_packets"].samples if s.name.endswith("_total")]
    assert len(samples) == len(EVENTS)                        # one plane, not one per member
    got = {s.labels["event"]: s.value for s in samples}
    now = counts(plane)
    assert got["no_neigh"] >= 1 and 0 < got["forwarded"] + got["looked_up"] <= now["forwarded"] + now["looked_up"]


def test_flows_that_differ_in_one_byte_each_keep_their_next_hop(plane):
    """256 flows differing only in the source port's low byte, twice, on one CPU: the second
    pass is remembered for nearly all (4,096 direct-mapped slots: ~8 pairs collide by chance; a
    hash whose low bits ignore a byte sent them all to 8 slots, where they evicted each other)."""
    import os

    from xdpkit.kernel import Verdict
    from xdpkit.program import Program

    ping(plane, "198.18.2.2", count=1)
    frames = [udp_from_src(plane, "198.18.2.2", sport=0x4000 + i) for i in range(256)]
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        with xns.inside(plane.dut):
            from xdpkit.interfaces import ifindex_of

            in0 = ifindex_of("in0")
            prog = Program.from_id(Forwarder.planes()[0]["program"])
            with prog:
                first = counts(plane)
                for _ in range(2):
                    for f in frames:
                        assert prog.run(f, ingress_ifindex=in0).verdict == Verdict.XDP_REDIRECT
    finally:
        os.sched_setaffinity(0, cpus)
    d = delta(first, counts(plane))
    assert d.get("forwarded", 0) >= 224 and d["forwarded"] + d.get("looked_up", 0) == 512


def test_two_flows_in_one_set_both_stay_remembered(plane):
    """With 2 slots (one set of two ways) two flows alternating both hit after their first
    packets; a third flow pushes one out."""
    import os

    from xdpkit.program import Program

    with xns.inside(plane.dut):
        Forwarder.unload()
        Forwarder.load(["in0", "out0", "out1"], cache_slots=2).close()
    ping(plane, "198.18.2.2", count=1)
    flows = [udp_from_src(plane, "198.18.2.2", sport=4500 + i) for i in range(3)]
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        with xns.inside(plane.dut), Program.from_id(Forwarder.planes()[0]["program"]) as prog:
            from xdpkit.interfaces import ifindex_of

            in0 = ifindex_of("in0")
            before = counts(plane)
            for _ in range(5):
                for f in flows[:2]:
                    prog.run(f, ingress_ifindex=in0)
            two = delta(before, counts(plane))
            before = counts(plane)
            for _ in range(3):
                for f in flows:
                    prog.run(f, ingress_ifindex=in0)
            three = delta(before, counts(plane))
    finally:
        os.sched_setaffinity(0, cpus)
    assert two == {"looked_up": 2, "forwarded": 8}
    assert three.get("looked_up", 0) >= 3          # three flows, two ways: they take turns


def test_an_interface_without_ethernet_is_refused(netns):
    netns.run(["ip", "tuntap", "add", "mode", "tun", "name", "xt0"], check=True)
    netns.veth("xa", "xb")
    with pytest.raises(ConfigError, match="xt0 has no Ethernet address"):
        Forwarder.load(["xa", "xt0"])
    assert query() == []
