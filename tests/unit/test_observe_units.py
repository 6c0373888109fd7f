"""Observability without a kernel: counter decoding, rates, trace attribution, listen
addresses, CLI arguments, an empty scrape."""
import argparse
import struct

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xdpkit.observe import exporter, monitor, stats, trace
from xdpkit.cli import commands, observe_cmd, system_cmd
from xdpkit.errors import ConfigError


# ---- stats ------------------------------------------------------------------------------------

def test_map_names_match_the_kernels_truncated_ones():
    maps = [{"id": 1, "name": "xdpkit_st_etype", "type": "percpu_array"},
            {"id": 2, "name": "xdpkit_st_verdi", "type": "percpu_array"},  # xdpkit_st_verdict, cut
            {"id": 3, "name": "xdpkit_st_proto", "type": "hash"},          # wrong type: not ours
            {"id": 4, "name": "rule_hits", "type": "percpu_hash"}]
    assert stats.stats_map_ids(maps) == {"etype": 1, "verdict": 2}


def test_slot_names():
    assert stats.slot_name("etype", 4) == "VLAN"
    assert stats.slot_name("proto", 5) == "non-IP"
    assert stats.slot_name("verdict", 4) == "XDP_REDIRECT"
    assert stats.slot_name("etype", 7) == "index7"


class FakePerCpuArray:
    """Just what read_counters uses: stride, ncpus, max_entries and a batch lookup."""

    def __init__(self, per_cpu: dict, ncpus=2, max_entries=8):
        self.ncpus, self.stride, self.max_entries = ncpus, 16, max_entries
        self.rows = [(struct.pack("<I", i), b"".join(struct.pack("<QQ", *per_cpu.get(i, [(0, 0)] * ncpus)[c])
                                                     for c in range(ncpus)))
                     for i in range(max_entries)]

    def lookup_batch_raw(self, chunk):
        assert chunk >= self.max_entries  # one call for the whole array
        return self.rows


def test_read_counters_sums_cpus_and_shows_spare_slots_only_when_used():
    m = FakePerCpuArray({1: [(3, 300), (4, 400)], 7: [(0, 0), (1, 64)]})
    got = stats.read_counters(m, "etype")
    assert got["IPv4"] == stats.Counter(7, 700)
    assert got["index7"] == stats.Counter(1, 64)
    assert got["ARP"] == stats.Counter(0, 0) and "index7" in got
    assert stats.read_counters(FakePerCpuArray({}), "etype").keys() == set(stats.ETYPE_NAMES)


def test_sample_total_and_rates():
    a = stats.Sample(10.0, {"verdict": {"XDP_PASS": stats.Counter(10, 1000)},
                            "etype": {"IPv4": stats.Counter(10, 1000)}})
    b = stats.Sample(12.0, {"verdict": {"XDP_PASS": stats.Counter(30, 3000), "XDP_DROP": stats.Counter(4, 400)},
                            "etype": {"IPv4": stats.Counter(34, 3400)}})
    assert b.total() == stats.Counter(34, 3400)
    r = stats.rates(a, b)
    assert r["interval_s"] == 2.0
    assert r["verdict"]["XDP_PASS"] == {"packets": 30, "bytes": 3000, "pps": 10.0, "bps": 8000.0}
    assert r["verdict"]["XDP_DROP"]["pps"] == 2.0  # a slot new in this sample counts from zero
    assert r["total"] == {"packets": 34, "bytes": 3400, "pps": 12.0, "bps": 9600.0}
    assert b.to_dict()["total"] == {"packets": 34, "bytes": 3400}


def test_total_without_verdict_map_uses_etype():
    s = stats.Sample(0.0, {"etype": {"IPv6": stats.Counter(2, 200)}})
    assert s.total() == stats.Counter(2, 200)
    assert stats.Sample(0.0).total() == stats.Counter()


# ---- trace attribution ---------------------------------------------------------------------------

STACK_LINES = [
    "  python-1 [001] b..11 10.000001: bpf_trace_printk: from alpha",
    "  python-1 [000] b..11 10.000002: bpf_trace_printk: from beta",   # another CPU in between
    "  python-1 [001] b..11 10.000003: <stack trace>",
    " => trace_event_raw_event_bpf_trace_printk",
    " => bpf_trace_printk",
    " => bpf_prog_467118f8111e4727_alpha_prog_full_name",
    " => bpf_test_run",
    "  python-1 [000] b..11 10.000004: <stack trace>",
    " => bpf_trace_printk",
    " => bpf_prog_1ff39055f041d768_helper+0x2c/0x40",
    " => bpf_prog_aaaaaaaaaaaaaaaa_beta",
    None,  # idle: the last stack is complete
    "  python-1 [001] b..11 10.000005: bpf_trace_printk: never got a stack",
]


def test_printk_lines_pair_with_their_cpus_stack():
    lines = list(trace.attribute_stacks(iter(STACK_LINES)))
    assert [(ln.message, ln.program) for ln in lines] == [("from alpha", "alpha_prog_full_name"),
                                                          ("from beta", "helper")]
    assert lines[1]._progs == [("1ff39055f041d768", "helper"), ("aaaaaaaaaaaaaaaa", "beta")]


def test_program_filter_by_name_and_truncated_name():
    alpha, beta = list(trace.attribute_stacks(iter(STACK_LINES)))
    assert trace.ProgramFilter("alpha_prog_full_name").matches(alpha)
    assert trace.ProgramFilter("alpha_prog_full").matches(alpha)  # the kernel's 15 characters
    assert not trace.ProgramFilter("alpha").matches(alpha)
    assert trace.ProgramFilter("beta").matches(beta) and trace.ProgramFilter("helper").matches(beta)
    with pytest.raises(Exception):
        trace.ProgramFilter(" ")


def test_stack_programs_ignores_kernel_frames():
    assert trace.stack_programs([" => bpf_test_run", " => 0xffffffffc00007c1"]) == []
    assert trace.stack_programs([" => bpf_prog_0123456789abcdef+0x10/0x40"]) == [("0123456789abcdef", "")]


# ---- monitor --------------------------------------------------------------------------------------

def test_monitor_names():
    assert monitor.program_for("xdp_redirect_map_err") == "xdpkit_mon_redirect_map_err"
    assert monitor._errno_name(-22) == "EINVAL" and monitor._errno_name(0) == ""
    assert monitor._action_name(0) == "XDP_ABORTED" and monitor._action_name(9) == "9"
    with pytest.raises(ConfigError):
        monitor.Monitor(["xdp_bogus"])


# ---- exporter -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("127.0.0.1:9435", ("127.0.0.1", 9435)), (":9100", ("0.0.0.0", 9100)), ("9100", ("0.0.0.0", 9100)),
    ("[::1]:0", ("::1", 0)), ("localhost:80", ("localhost", 80))])
def test_parse_listen(text, want):
    assert exporter.parse_listen(text) == want


@pytest.mark.parametrize("bad", ["127.0.0.1:x", "1.2.3.4:70000", "[::1]9435", "not-a-host:80"])
def test_parse_listen_rejects(bad):
    with pytest.raises(ConfigError):
        exporter.parse_listen(bad)


def test_key_labels():
    assert exporter._key_label(53) == "53"
    assert exporter._key_label({"addr": "198.18.0.1", "port": 80}) == "addr=198.18.0.1,port=80"
    assert exporter._key_label(b"\x01\x02") == "0102"


def test_counter_values_are_recognised_by_layout():
    from xdpkit.btf import IntCodec, Member, StructCodec

    u64 = IntCodec(8)
    own = StructCodec(16, [Member("packets", 0, 0, u64), Member("bytes", 64, 0, u64)],
                      type_name="struct fw_counter")
    other = StructCodec(16, [Member("hits", 0, 0, u64), Member("bytes", 64, 0, u64)], type_name="struct x")
    assert exporter.is_counter_value(own)
    assert not exporter.is_counter_value(other) and not exporter.is_counter_value(u64)


def test_empty_scrape_is_valid_exposition(monkeypatch):
    monkeypatch.setattr(exporter, "_xdpkit_attachments", lambda: [])
    text = exporter.Exporter("127.0.0.1:0").render()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["xdpkit_exporter_errors"].type == "counter"
    assert fams["xdpkit_packets"].samples == []


# ---- CLI arguments ---------------------------------------------------------------------------------

def parser_with(*modules):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    for m in modules:
        m.register(sub)
    return p


def test_observe_subcommands_and_defaults():
    p = parser_with(observe_cmd)
    a = p.parse_args(["stats", "eth0", "--once", "--json"])
    assert (a.iface, a.once, a.json, a.interval, a.mode) == ("eth0", True, True, 1.0, "auto")
    a = p.parse_args(["monitor", "--duration", "2", "--count", "5", "--events", "xdp_exception"])
    assert (a.duration, a.count, a.events, a.json) == (2.0, 5, "xdp_exception", False)
    a = p.parse_args(["exporter"])
    assert (a.listen, a.once, a.bpf_stats, a.max_series) == ("127.0.0.1:9435", False, False, 1000)


def test_status_stats_and_trace_program_options():
    a = parser_with(commands).parse_args(["status", "eth0", "--stats", "--interval", "0.5"])
    assert (a.stats, a.interval, a.iface) == (True, 0.5, "eth0")
    assert parser_with(commands).parse_args(["status"]).stats is False
    a = parser_with(system_cmd).parse_args(["trace", "--program", "xdp_fw"])
    assert a.program == "xdp_fw"


def test_monitor_text_row():
    r = monitor.EventCount(event="xdp_redirect_err", netns=1, ifindex=2, ifname="r0@ns", prog_id=7,
                           prog_name="fw", action="XDP_REDIRECT", err=-22, errno="EINVAL", target=9,
                           map_id=0, events=3, packets=3, drops=3)
    row = observe_cmd._event_row(0.0, r)
    assert row[1:] == ["xdp_redirect_err", "r0@ns", "fw(7)", "XDP_REDIRECT", "EINVAL target 9", 3, 3, 3]
