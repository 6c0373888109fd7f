"""Firewall applies are all or nothing: a bad config, a kernel refusal part-way, SIGINT, SIGTERM
and SIGKILL in the middle leave exactly the previous rule set in force (checked with packets
through the attached program), a later apply never inherits maps it did not make, only the
generation in force holds maps once an apply returns, and two writers at once end with exactly one
of their rule sets in force and listed."""
import signal
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from xdpkit import ConfigError, Verdict
from xdpkit.apps.firewall import sized
from xdpkit.apps.firewall.control import Firewall
from xdpkit.apps.firewall.rules import parse_config
from tests.concurrent import apply_at_once

pytestmark = pytest.mark.kernel

E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A = "policy allow\ndeny udp dport 53\ndeny src 198.19.103.0/24\n"
# 600,000 host addresses and 198.18.0.0/15: seconds to compile and write, so a signal lands in the
# middle; a table of it left in force would show as drops of the test's packets.
BIG = "policy allow\ndeny src file:{netset} udp dport 7\n"


def big_config(tmp_path):
    netset = tmp_path / "big.netset"
    netset.write_text("198.18.0.0/15\n" + "".join(f"{11 + i % 180}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n"
                                                   for i in range(600_000)))
    conf = tmp_path / "big.conf"
    conf.write_text(BIG.format(netset=netset))
    return conf


def udp(src="198.18.1.2", dport=53):
    return bytes(Ether(**E) / IP(src=src, dst="198.18.2.2") / UDP(sport=1000, dport=dport) / (b"x" * 18))


def tcp(src="198.18.1.2", dport=80):
    return bytes(Ether(**E) / IP(src=src, dst="198.18.2.2") / TCP(sport=1000, dport=dport))


def verdict(fw, frame):
    return fw._obj.programs["xdpkit_firewall"].run(frame).verdict


def assert_rule_set_a(fw, udp53_count=None):
    """Exactly A is in force: listed, and by packets (which count: the counter is read first)."""
    assert [r.text for r in fw.ruleset().rules] == ["deny udp dport 53", "deny src 198.19.103.0/24"]
    if udp53_count is not None:
        assert fw.stats()["rules"][0]["packets"] == udp53_count
    assert verdict(fw, udp(dport=53)) == Verdict.XDP_DROP
    assert verdict(fw, udp("198.19.103.9", dport=80)) == Verdict.XDP_DROP
    assert verdict(fw, udp(dport=7)) == Verdict.XDP_PASS          # BIG's rule is not in force
    assert verdict(fw, tcp()) == Verdict.XDP_PASS


def slot_maps(fw) -> dict[tuple[str, int], int]:
    """(outer map, generation) -> id of the map in that slot, for every occupied slot."""
    with sized.inner_maps(fw) as held:
        return {(name, slot): m.id for name, slot, m in held}


def only_in_force(fw) -> bool:
    """Once an apply has returned, the old generation's slots are empty."""
    return all(slot == fw.generation for _name, slot in slot_maps(fw))


@pytest.fixture
def fw_a(netns):
    netns.veth("xa", "xb")
    fw = Firewall.load("xa", parse_config(A), mode="generic")
    try:
        for _ in range(3):
            assert verdict(fw, udp()) == Verdict.XDP_DROP
        yield fw
    finally:
        Firewall.unload("xa")
        fw.close()


def test_a_config_that_fails_validation_changes_nothing(fw_a, tmp_path, netns):
    long_rule = "deny src " + ",".join(f"198.18.{i}.{j}" for i in range(8) for j in range(8))
    assert len(long_rule) > 507
    sent = 0
    for bad in (f"policy allow\n{long_rule}\n", "policy deny\ndeny udp dport 99999\n"):
        with pytest.raises(ConfigError):
            fw_a.apply(parse_config(bad))
        assert_rule_set_a(fw_a, udp53_count=3 + sent)      # counters of kept rules survive too
        sent += 1
    (tmp_path / "long.conf").write_text(f"policy allow\n{long_rule}\n")
    r = netns.run([sys.executable, "-m", "xdpkit", "firewall", "check", str(tmp_path / "long.conf")])
    assert r.returncode == 1 and "rule 1: rule is" in r.stderr and "Traceback" not in r.stderr


A512 = "policy allow\ndeny src 198.18.0.0/15 udp dport 53\n"
B512 = "policy allow\ndeny src 198.18.0.0/15 tcp dport 80\ndeny dst 198.19.9.0/24\n"


def test_a_kernel_refusal_part_way_rolls_back(netns, monkeypatch):
    """The kernel refuses the second of the new generation's maps after the first is in its
    slot (a map of the wrong shape for fw_dst4): the rule set in force stays, by packets."""
    netns.veth("xa", "xb")
    fw = Firewall.load("xa", parse_config(A512), mode="generic")
    try:
        before = slot_maps(fw)
        verdict(fw, udp())
        create = sized.create

        def create_one_wrong(fw_, sizes, gen, step):
            maps = create(fw_, sizes, gen, step)
            maps["fw_dst4"].close()
            maps["fw_dst4"] = sized.create_map(sized.MapType.ARRAY, "fw_dst4", 4, 8, 4, flags=sized.BPF_F_INNER_MAP)
            return maps

        monkeypatch.setattr(sized, "create", create_one_wrong)
        with pytest.raises(Exception) as exc:
            fw.apply(parse_config(B512))
        assert "EINVAL" in str(exc.value)
        monkeypatch.setattr(sized, "create", create)
        assert [r.text for r in fw.ruleset().rules] == ["deny src 198.18.0.0/15 udp dport 53"]
        assert fw.stats()["rules"][0]["packets"] == 1
        assert verdict(fw, udp()) == Verdict.XDP_DROP and verdict(fw, tcp()) == Verdict.XDP_PASS
        assert all(slot_maps(fw)[k] == v for k, v in before.items())   # the maps in force are untouched
        # the next apply puts its own maps in the slot the failed one had written
        fw.apply(parse_config("policy allow\ndeny src 198.19.77.0/24\n"))
        assert verdict(fw, tcp()) == Verdict.XDP_PASS and verdict(fw, udp()) == Verdict.XDP_PASS
        assert verdict(fw, tcp("198.19.77.1")) == Verdict.XDP_DROP
        assert only_in_force(fw) and set(slot_maps(fw)) == {("fw_src4", fw.generation), ("fw_src4_dir", fw.generation)}
    finally:
        Firewall.unload("xa")
        fw.close()


def _apply_in_background(netns, conf):
    return subprocess.Popen(["ip", "netns", "exec", netns.name, sys.executable, "-m", "xdpkit",
                             "firewall", "apply", "xa", str(conf)], stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a background job of a shell starts with SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_progress(proc, deadline_s=60):
    """Until the apply has written part of its big table (not only its small arrays)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if "table entries" in line and int(line.split("/")[0].replace(",", "")) >= 30000:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError("the big apply showed no progress")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_in_the_middle_leaves_the_old_rule_set(fw_a, netns, tmp_path, sig):
    conf = big_config(tmp_path)
    with _apply_in_background(netns, conf) as proc:
        try:
            _wait_for_progress(proc)
            proc.send_signal(sig)
            rest = proc.stderr.read()
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == (130 if sig != signal.SIGKILL else -9), rest
    assert "Traceback" not in rest
    assert_rule_set_a(fw_a, udp53_count=3)
    assert only_in_force(fw_a)       # the interrupted apply's maps died with its fds
    fw_a.apply(parse_config("policy allow\ndeny src 198.19.77.0/24\n"))
    assert verdict(fw_a, udp(dport=7)) == Verdict.XDP_PASS                # nothing of BIG in force
    assert verdict(fw_a, udp()) == Verdict.XDP_PASS
    assert verdict(fw_a, udp("198.19.77.5")) == Verdict.XDP_DROP
    assert only_in_force(fw_a)


def test_two_writers_at_once_end_with_exactly_one_rule_set(fw_a, netns, tmp_path):
    confs = {}
    for name, net in (("a", "198.19.101.0/24"), ("b", "198.19.102.0/24")):
        # a few hundred table entries each, so the writes overlap in time
        confs[name] = tmp_path / f"{name}.conf"
        confs[name].write_text(f"policy allow\ndeny src {net}\ndeny src 198.18.0.0/16 tcp dport 9\n")
    for _ in range(6):
        apply_at_once(netns, "xdpkit.apps.firewall.control:Firewall", "xdpkit.apps.firewall.rules", "xa",
                      [confs["a"], confs["b"]], 3)
        listed = [r.text for r in fw_a.ruleset().rules]
        drops_a = verdict(fw_a, udp("198.19.101.1")) == Verdict.XDP_DROP
        drops_b = verdict(fw_a, udp("198.19.102.1")) == Verdict.XDP_DROP
        assert drops_a != drops_b                             # exactly one of the two in force
        assert listed[0] == ("deny src 198.19.101.0/24" if drops_a else "deny src 198.19.102.0/24")
        assert verdict(fw_a, tcp("198.18.3.3", dport=9)) == Verdict.XDP_DROP
        assert only_in_force(fw_a) and len(slot_maps(fw_a)) == 2      # the IPv4 source table: trees, direct index
