"""Load balancer changes are all or nothing: a config the kernel cannot keep, too many VIPs, a
bad weight, SIGINT/SIGKILL in the middle leave the previous config in force (new flows go where
it says, checked with packets), and two writers at once end with one config, listed and used."""
import signal
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from xdpkit import ConfigError, Verdict
from xdpkit.apps import transaction
from xdpkit.apps.lb.config import parse_config
from xdpkit.apps.lb.control import Limits, LoadBalancer
from xdpkit.apps.lb.maglev import next_prime
from tests.concurrent import apply_at_once

pytestmark = pytest.mark.kernel

VIP = "198.18.200.1"


def config(backend: str, extra: str = "") -> str:
    return f"""
seed = 7
encap_source_v4 = "198.18.99.0/24"
encap_source_v6 = "2001:db8:99::/64"
[[vip]]
address = "{VIP}"
port = 80
table_size = 1009
backends = ["{backend}"]
{extra}"""


def many_backends_vip(n: int, address: str = "2001:db8:200::1") -> str:
    backends = ", ".join(f'"2001:db8:1::{i:x}"' for i in range(1, n + 1))
    return f'[[vip]]\naddress = "{address}"\nport = 80\ntable_size = {next_prime(2 * n)}\nbackends = [{backends}]\n'


A = config("198.18.21.2")
B = config("198.18.22.2")


def new_flow_backend(lb, sport: int) -> str:
    frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                  / IP(src="198.18.10.2", dst=VIP) / TCP(sport=sport, dport=80, flags="S"))
    res = lb._obj.programs["xdpkit_lb"].run(frame)
    assert res.verdict == Verdict.XDP_TX
    return Ether(res.data)[IP].dst


_sport = iter(range(20000, 60000))


def assert_in_force(lb, backend: str):
    """The listed config and new flows agree: everything goes to ``backend``."""
    assert [b.address for b in lb.config().vips[0].backends] == [backend]
    assert {new_flow_backend(lb, next(_sport)) for _ in range(4)} == {backend}


def used_backend_slots(lb) -> int:
    return sum(1 for _, v in lb._map("lb_backends").raw_items() if v[24])  # family byte set


@pytest.fixture
def lb_a(netns):
    netns.veth("la", "lx")
    lb = LoadBalancer.load("la", parse_config(A), mode="generic", limits=Limits(backends=8192))
    try:
        assert_in_force(lb, "198.18.21.2")
        yield lb
    finally:
        LoadBalancer.unload("la")
        lb.close()


def test_a_config_too_large_to_keep_changes_nothing(lb_a):
    too_large = config("198.18.22.2", many_backends_vip(7000))
    with pytest.raises(ConfigError, match="too large to keep in the kernel"):
        lb_a.apply(parse_config(too_large))
    assert_in_force(lb_a, "198.18.21.2")
    assert used_backend_slots(lb_a) == 1


def test_too_many_vips_leave_the_tx_port_and_config_alone(lb_a):
    before = lb_a._map("lb_tx_port").lookup_raw(b"\0" * 4)
    vips = "".join(f'[[vip]]\naddress = "198.18.201.{i}"\nport = 80\ntable_size = 13\nbackends = ["198.18.22.2"]\n'
                   for i in range(1, 70))
    with pytest.raises(ConfigError, match="70 VIPs; this load balancer holds at most 64"):
        lb_a.apply(parse_config(config("198.18.22.2", vips).replace("seed = 7", 'seed = 7\nredirect = "lx"')))
    assert lb_a._map("lb_tx_port").lookup_raw(b"\0" * 4) == before
    assert_in_force(lb_a, "198.18.21.2")


def test_an_out_of_range_weight_is_refused_and_everything_still_reads(lb_a):
    for weight in (70000, -1):
        with pytest.raises(ConfigError, match="weight"):
            lb_a.add_backend(f"tcp/{VIP}:80", "198.18.30.1", weight=weight)
    with pytest.raises(ConfigError, match="not an IPv4 or IPv6 address"):
        lb_a.add_backend(f"tcp/{VIP}:80", "300.1.1.1")
    assert lb_a.stats()["vips"][0]["backends"][0]["address"] == "198.18.21.2"
    assert lb_a.backend_of("198.18.10.2", VIP, "tcp", 1234, 80) == "198.18.21.2"
    assert_in_force(lb_a, "198.18.21.2")


def test_a_kept_vip_changes_its_table_with_the_switch(lb_a):
    """A weight change writes the VIP's new Maglev table to a region of its own, which the VIP
    table switch puts in force (no in-place rewrite that packets could see half-done)."""
    lb_a.apply(parse_config(config("198.18.21.2").replace('backends = ["198.18.21.2"]',
                                                          'backends = ["198.18.21.2", "198.18.22.2"]')))
    (_, base_before, _, _), = lb_a._placed().values()
    lb_a.set_weight(f"tcp/{VIP}:80", "198.18.21.2", 0)
    (_, base_after, _, _), = lb_a._placed().values()
    assert base_after != base_before
    assert {new_flow_backend(lb_a, next(_sport)) for _ in range(8)} == {"198.18.22.2"}


def test_two_writers_at_once_end_with_one_config(lb_a, netns, tmp_path):
    confs = {"a": tmp_path / "a.toml", "b": tmp_path / "b.toml"}
    confs["a"].write_text(A)
    confs["b"].write_text(B)
    for _ in range(6):
        apply_at_once(netns, "xdpkit.apps.lb.control:LoadBalancer", "xdpkit.apps.lb.config", "la",
                      [confs["a"], confs["b"]], 4)
        listed = lb_a.config().vips[0].backends[0].address
        assert listed in ("198.18.21.2", "198.18.22.2")
        assert_in_force(lb_a, listed)
        assert used_backend_slots(lb_a) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_in_the_middle_leaves_the_old_config(netns, tmp_path, sig):
    """The test holds the apply lock until the CLI says it waits, then lets it go and signals it
    while it plans a two-million-slot Maglev table: inside its transaction, before the switch."""
    netns.veth("la", "lx")
    lb = LoadBalancer.load("la", parse_config(A), mode="generic", limits=Limits(ring=1 << 22))
    try:
        big = tmp_path / "big.toml"
        big.write_text(config("198.18.22.2", '[[vip]]\naddress = "198.18.200.2"\nport = 80\n'
                                             'table_size = 2000003\nbackends = ["198.18.23.2"]\n'))
        cmd = ["ip", "netns", "exec", netns.name, sys.executable, "-m", "xdpkit", "lb", "apply", "la", str(big)]
        with transaction.exclusive(lb.prog_id):
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            assert "waiting for another change" in proc.stderr.readline()
        time.sleep(0.2)
        proc.send_signal(sig)
        err = proc.stderr.read()
        rc = proc.wait(timeout=60)
        proc.stderr.close()
        assert rc == (-9 if sig == signal.SIGKILL else 130), err
        assert "Traceback" not in err
        assert_in_force(lb, "198.18.21.2")
        assert len(lb._placed()) == 1 and used_backend_slots(lb) == 1
        lb.apply(parse_config(B))                     # whatever a killed apply left is not inherited
        assert_in_force(lb, "198.18.22.2")
        assert used_backend_slots(lb) == 1
    finally:
        LoadBalancer.unload("la")
        lb.close()


def test_a_write_refused_part_way_gives_back_what_it_wrote(lb_a, monkeypatch):
    """The kernel refuses the VIP table write, after the new backend slots and the Maglev region
    were written: the slots are given back and the old config stays in force."""
    from xdpkit.errors import KernelError

    vip_table = lb_a._map("lb_vip_table")

    def refuse(*args, **kwargs):
        raise KernelError("BPF_MAP_UPDATE_BATCH", 12, "map 'lb_vip_table' batch update")  # ENOMEM

    monkeypatch.setattr(vip_table, "update_batch_buffers", refuse)
    with pytest.raises(KernelError, match="ENOMEM"):
        lb_a.apply(parse_config(B.replace('backends = ["198.18.22.2"]', 'backends = ["198.18.22.2", "198.18.23.2"]')))
    monkeypatch.undo()
    assert used_backend_slots(lb_a) == 1
    assert_in_force(lb_a, "198.18.21.2")
    lb_a.apply(parse_config(B))
    assert_in_force(lb_a, "198.18.22.2")
