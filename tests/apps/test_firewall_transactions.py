"""Firewall applies are all or nothing: a bad config, a kernel refusal part-way, SIGINT, SIGTERM
and SIGKILL in the middle leave exactly the previous rule set in force (checked with packets
through the attached program), a later apply never inherits entries it did not write, and two
writers at once end with exactly one of their rule sets in force and listed."""
import signal
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from xdpkit import ConfigError, Verdict
from xdpkit.apps.firewall.control import _GEN, _GEN_DIRTY, _GEN_ENTRIES, Firewall
from xdpkit.apps.firewall.rules import parse_config
from tests.concurrent import apply_at_once

pytestmark = pytest.mark.kernel

E = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
A = "policy allow\ndeny udp dport 53\ndeny src 198.19.103.0/24\n"
# 2,097,152 /24 blocks: seconds to write, so a signal lands in the middle. It covers 198.18/15,
# so entries it leaves behind would show as drops of the test's packets.
BIG = "policy allow\ndeny src 192.0.0.0/3 udp dport 7\n"


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


def prefix_entries(fw) -> int:
    return sum(len(list(fw._map(n).raw_keys())) for n in ("fw_src4_24", "fw_src4_32", "fw_dst4_24", "fw_dst4_32"))


def dirty(fw, gen) -> int:
    return fw._gen_info(gen)[_GEN_DIRTY]


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


A512 = "policy allow\ndeny src 198.18.0.0/15 udp dport 53\n"       # 512 /24 blocks
B512 = "policy allow\ndeny src 198.18.0.0/15 tcp dport 80\n"       # 512 more: 1,024 > 1,000


def test_an_apply_without_room_for_both_sets_is_refused_before_writing(netns):
    netns.veth("xa", "xb")
    fw = Firewall.load("xa", parse_config(A512), mode="generic", prefix_entries=1000)
    try:
        with pytest.raises(ConfigError, match="fw_src4_24 holds 1,000 entries; the rule set in force uses 512"):
            fw.apply(parse_config(B512))
        assert prefix_entries(fw) == 512 and dirty(fw, 1 - fw.generation) == 0
        assert verdict(fw, udp()) == Verdict.XDP_DROP and verdict(fw, tcp()) == Verdict.XDP_PASS
    finally:
        Firewall.unload("xa")
        fw.close()


def test_a_kernel_refusal_part_way_rolls_back(netns):
    """The kernel refuses part-way (E2BIG): as for a firewall an older xdpkit loaded, which kept
    no entry counts, so the room check cannot see the set in force."""
    netns.veth("xa", "xb")
    fw = Firewall.load("xa", parse_config(A512), mode="generic", prefix_entries=1000)
    try:
        gen = fw.generation
        info = list(fw._gen_info(gen))
        info[_GEN_ENTRIES] = [0, 0, 0, 0]
        fw._map("fw_gen").update_raw(gen.to_bytes(4, "little"), _GEN.pack(*info))
        verdict(fw, udp())
        with pytest.raises(Exception) as exc:
            fw.apply(parse_config(B512))
        assert "E2BIG" in str(exc.value) or "ENOSPC" in str(exc.value) or "ENOMEM" in str(exc.value)
        assert [r.text for r in fw.ruleset().rules] == ["deny src 198.18.0.0/15 udp dport 53"]
        assert fw.stats()["rules"][0]["packets"] == 1
        assert verdict(fw, udp()) == Verdict.XDP_DROP and verdict(fw, tcp()) == Verdict.XDP_PASS
        assert prefix_entries(fw) == 512 and dirty(fw, 1 - fw.generation) == 0
        # the next apply starts from a clean generation: nothing of b's half-written entries
        fw.apply(parse_config("policy allow\ndeny src 198.19.77.0/24\n"))
        assert verdict(fw, tcp()) == Verdict.XDP_PASS and verdict(fw, udp()) == Verdict.XDP_PASS
        assert verdict(fw, tcp("198.19.77.1")) == Verdict.XDP_DROP
        assert prefix_entries(fw) == 1
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
        if "table entries" in line and int(line.split("/")[0].replace(",", "")) >= 65536:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError("the big apply showed no progress")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_in_the_middle_leaves_the_old_rule_set(fw_a, netns, tmp_path, sig):
    conf = tmp_path / "big.conf"
    conf.write_text(BIG)
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
    inactive = 1 - fw_a.generation
    if sig == signal.SIGKILL:
        assert dirty(fw_a, inactive) == 1 and prefix_entries(fw_a) > 1000   # left for the next apply
    else:
        assert dirty(fw_a, inactive) == 0 and prefix_entries(fw_a) == 1      # rolled back
    fw_a.apply(parse_config("policy allow\ndeny src 198.19.77.0/24\n"))
    assert verdict(fw_a, udp(dport=7)) == Verdict.XDP_PASS                # no stale BIG entry in force
    assert verdict(fw_a, udp()) == Verdict.XDP_PASS
    assert verdict(fw_a, udp("198.19.77.5")) == Verdict.XDP_DROP
    assert prefix_entries(fw_a) == 1 and dirty(fw_a, 1 - fw_a.generation) == 0


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
        assert prefix_entries(fw_a) == 256 + 1 and dirty(fw_a, 1 - fw_a.generation) == 0
