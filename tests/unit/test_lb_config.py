"""Load balancer config parsing and validation, VIP keys, the Python flow hash, CLI arguments."""
import json

from collections import Counter

import pytest

from xdpkit.apps.lb.config import BackendConfig, LbConfig, VipConfig, parse_config, parse_dict, parse_vip_key
from xdpkit.apps.lb.control import check_config
from xdpkit.apps.lb.flowhash import flow_hash, flow_key, flow_slot, outer_source
from xdpkit.cli.main import main
from xdpkit.errors import ConfigError

GOOD = """
seed = 7
encap_source_v4 = "198.18.99.0/24"
mtu = 1500

[[vip]]
address = "198.18.200.1"
port = 80
table_size = 1009
health = { kind = "http", path = "/healthz", fall = 3 }
backends = ["198.18.21.2", { address = "198.18.22.2", weight = 2 }]

[[vip]]
address = "2001:DB8:200::1"
protocol = "udp"
hash = "no-sport"
table_size = 1009
"""


def test_good_config_is_parsed_and_normalised():
    cfg = parse_config(GOOD)
    v4, v6 = cfg.vips
    assert v4.key == "tcp/198.18.200.1:80" and v6.key == "udp/[2001:db8:200::1]:*"
    assert v4.backends == (BackendConfig("198.18.21.2", 1), BackendConfig("198.18.22.2", 2))
    assert v4.health.kind == "http" and v4.health.fall == 3 and v4.health.rise == 2
    assert v6.hash == "no-sport" and v6.family == 6 and v6.backends == ()
    assert parse_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # the kernel-held JSON round-trips


@pytest.mark.parametrize("text,message", [
    ("colour = 1", "unknown key 'colour'"),
    ("[[vip]]\nport = 80", "VIP without address"),
    ('[[vip]]\naddress = "198.18.200.300"', "not an IPv4 or IPv6 address"),
    ('[[vip]]\naddress = "198.18.200.1"\nprotocol = "sctp"', "protocol 'sctp' is not tcp or udp"),
    ('[[vip]]\naddress = "198.18.200.1"\nport = 70000', "port 70000 is out of range"),
    ('[[vip]]\naddress = "198.18.200.1"\ntable_size = 1000', "table_size 1000 is not prime"),
    ('[[vip]]\naddress = "198.18.200.1"\nhash = "3-tuple"', "hash '3-tuple'"),
    ('[[vip]]\naddress = "198.18.200.1"\nbackends = [{ address = "198.18.21.2", weight = -1 }]',
     "weight -1 is out of range"),
    ('[[vip]]\naddress = "198.18.200.1"\nbackends = ["198.18.21.2", "198.18.21.2"]', "appears twice"),
    ('[[vip]]\naddress = "198.18.200.1"\n[[vip]]\naddress = "198.18.200.1"', "appears twice"),
    ('[[vip]]\naddress = "198.18.200.1"\nhealth = { kind = "tcp" }', "needs a port"),
    ('[[vip]]\naddress = "198.18.200.1"\nport = 80\nhealth = { kind = "icmp" }', "health kind 'icmp'"),
    ('[[vip]]\naddress = "198.18.200.1"\nport = 80\nhealth = { path = "x" }', "must start with /"),
    ('[[vip]]\naddress = "198.18.200.1"\ntable_size = 3\nbackends = ["198.18.21.2", "198.18.21.3", "198.18.21.4"]',
     "not larger than"),
    ('encap_source_v4 = "2001:db8::/64"', "not an IPv4 prefix"),
    ('gateway_mac = "02:00:00:00:01"', "not a MAC address"),
    ("mtu = 576", "below 1280"),
    ("seed = [", "config"),  # TOML syntax
])
def test_bad_configs_name_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_vip_keys():
    assert parse_vip_key("tcp/198.18.200.1:80") == ("tcp", "198.18.200.1", 80)
    assert parse_vip_key("udp/[2001:db8::1]:53") == ("udp", "2001:db8::1", 53)
    assert parse_vip_key("tcp/198.18.200.1") == ("tcp", "198.18.200.1", 0)
    assert parse_vip_key("tcp/198.18.200.1:*") == ("tcp", "198.18.200.1", 0)
    for bad in ("198.18.200.1:80", "icmp/198.18.200.1", "tcp/2001:db8::1:80", "tcp/nope:80"):
        with pytest.raises(ConfigError):
            parse_vip_key(bad)


def test_with_vip_replaces_in_place_and_validates():
    cfg = parse_config(GOOD)
    v = cfg.vips[0]
    cfg2 = cfg.with_vip(VipConfig(address=v.address, port=80, table_size=1009,
                                  backends=(BackendConfig("198.18.23.2"),)))
    assert [x.key for x in cfg2.vips] == [x.key for x in cfg.vips]
    assert cfg2.vips[0].backends == (BackendConfig("198.18.23.2"),)
    with pytest.raises(ConfigError, match="not prime"):
        cfg.with_vip(VipConfig(address="198.18.200.9", table_size=10))
    assert cfg.without_vip("tcp/198.18.200.1:80").vips == cfg.vips[1:]
    with pytest.raises(ConfigError, match="no VIP"):
        cfg.without_vip("tcp/198.18.200.1:81")
    assert LbConfig().vips == ()


def test_flow_hash_is_deterministic_and_seeded():
    k = flow_key("198.18.10.2", "198.18.200.1", "tcp", 40000, 80)
    assert len(k) == 40 and k[36:38] == bytes([6, 4])
    assert flow_hash(k, 7) == flow_hash(k, 7) != flow_hash(k, 8)
    assert flow_hash(k, 7) != flow_hash(flow_key("198.18.10.2", "198.18.200.1", "tcp", 40001, 80), 7)
    k6 = flow_key("2001:db8:10::2", "2001:db8:200::1", "udp", 1, 2)
    assert k6[37] == 6 and 0 <= flow_hash(k6, 0) < 2**32
    # pinned: tests/apps/test_lb_packets.py checks that the BPF program derives the same outer
    # source from this very flow, so a change on either side shows up in both places
    assert flow_hash(k, 7) == 0xC2ACA832 and flow_hash(k6, 0) == 0x98CA42D7
    with pytest.raises(ValueError):
        flow_key("198.18.10.2", "2001:db8::1", "tcp", 1, 2)


def test_flow_slot_and_outer_source():
    k = flow_key("198.18.10.2", "198.18.200.1", "tcp", 40000, 80)
    s, tag = flow_slot(k, 7, 1024)
    assert s == tag & 1023 and tag >> 32 == flow_hash(k, 7) and tag != 0
    # flows spread evenly over the sets and the Maglev slots (chi-square-like bounds)
    keys = [flow_key("198.18.10.2", "198.18.200.1", "udp", p, 53) for p in range(1024, 1024 + 40960)]
    for counts in (Counter(flow_slot(k, 1, 1024)[0] for k in keys), Counter(flow_hash(k, 1) % 1021 for k in keys)):
        assert len(counts) > 1000 and max(counts.values()) < 80
    keys6 = [flow_key(f"2001:db8::{i:x}", "2001:db8:200::1", "tcp", 40000, 443) for i in range(40960)]
    counts = Counter(flow_slot(k, 1, 1024)[0] for k in keys6)
    assert len(counts) == 1024 and max(counts.values()) < 80
    assert outer_source(0, "198.18.99.0/24") == "198.18.99.0"
    assert outer_source(0xFFFFFFFF, "198.18.99.0/24") == "198.18.99.255"
    assert outer_source(0xFFFFFFFF, "198.18.99.7/32") == "198.18.99.7"
    assert outer_source(0x12345678, "2001:db8:99::/64").startswith("2001:db8:99::")
    srcs = {outer_source(flow_hash(flow_key("198.18.10.2", "198.18.200.1", "tcp", p, 80), 7), "198.18.99.0/24")
            for p in range(1000, 1200)}
    assert len(srcs) > 100  # flows spread over the prefix


def test_check_config_builds_tables():
    out = check_config(parse_config(GOOD))
    assert out["vips"] == 2 and out["backends"] == 2 and out["tables_seconds"] >= 0


def test_cli_check(tmp_path, capsys):
    good, bad = tmp_path / "lb.toml", tmp_path / "bad.toml"
    good.write_text(GOOD)
    bad.write_text('[[vip]]\naddress = "198.18.200.1"\ntable_size = 1000\n')
    assert main(["lb", "check", str(good)]) == 0
    assert "2 VIPs, 2 backends" in capsys.readouterr().out
    assert main(["lb", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "table_size 1000 is not prime" in err and "hint: use 1009" in err and "Traceback" not in err
    assert main(["lb", "check", str(tmp_path / "missing.toml")]) == 1
    assert "cannot read" in capsys.readouterr().err
