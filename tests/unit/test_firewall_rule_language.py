"""Rule-language fixes: protocols implied by several fields, several protocol words, strict
dotted-quad addresses and prefix lengths (in rules and in address-set files, with file:line)."""
import time

import pytest

from xdpkit.apps.firewall.rules import parse_config, parse_prefix, parse_rule, read_set_file
from xdpkit.errors import ConfigError


def test_flags_with_ports_imply_tcp():
    assert parse_rule("deny dport 22 flags syn/syn,ack").protos == {6}


def test_several_protocol_words_mean_any_of_them():
    assert parse_rule("deny tcp udp dport 53").protos == {6, 17}
    assert parse_rule("deny tcp proto 132").protos == {6, 132}
    with pytest.raises(ConfigError, match="ports only exist for tcp and udp"):
        parse_rule("deny tcp icmp dport 53")


def test_fields_no_protocol_has_together_are_an_error():
    with pytest.raises(ConfigError, match="no protocol has all of ports, icmp-type"):
        parse_rule("deny dport 53 icmp-type 8")


@pytest.mark.parametrize("text,words", [
    ("010.0.0.1", "no leading zeros"), ("0x0a.1.2.3", "not an IPv4 address"), ("1.2.3", "not a CIDR"),
    ("256.1.1.1", "not an IPv4 address"), ("1.2.3.4/33", "over 32"),
    ("1.2.3.4/-1", "bad prefix length '-1'"), ("1.2.3.4/-8", "bad prefix length"), ("1.2.3.4/", "bad prefix length"),
    ("1.2.3.4/08", "bad prefix length"), ("2001:db8::/129", "0..128"), ("2001:db8::/-1", "bad prefix length"),
])
def test_addresses_are_strict(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_prefix(text)


def test_plain_addresses_still_parse():
    assert parse_prefix("198.18.0.0/15") == (4, 0xC6120000, 15)
    assert parse_prefix("198.18.7.9") == (4, 0xC6120709, 32)
    assert parse_prefix("0.0.0.0/0") == (4, 0, 0)
    assert parse_prefix("2001:db8::/32") == (6, 0x20010DB8 << 96, 32)


@pytest.mark.parametrize("bad", ["0x0a.1.2.3", "010.0.0.1", "1.2.3.4/-1", "1.2.3.4/-8", "1.2.3.4/40"])
def test_a_bad_line_in_a_set_file_names_file_and_line_quickly(tmp_path, bad):
    f = tmp_path / "list.netset"
    f.write_text(f"# a list\n198.18.0.0/24\n{bad}\n198.18.1.0/24\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=f"list.netset:3: "):
        read_set_file(str(f))
    with pytest.raises(ConfigError):
        parse_config(f"deny src file:{f}\n")
    assert time.monotonic() - t0 < 2


def test_a_large_set_file_still_loads(tmp_path):
    f = tmp_path / "big.netset"
    f.write_text("".join(f"198.{18 + (i >> 16) % 2}.{(i >> 8) & 255}.{i & 255}/32\n" for i in range(200_000)))
    prefixes = read_set_file(str(f))
    assert len(prefixes) == 200_000 and prefixes[0] == (4, 0xC6120000, 32)
