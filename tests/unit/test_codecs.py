import ipaddress

import pytest

from xdpkit.btf import ArrayCodec, BytesCodec, IntCodec, Member, Record, StructCodec, to_jsonable
from xdpkit.errors import ConfigError
from xdpkit.maps.lpm import LpmKeyCodec
from xdpkit.maps.percpu import PerCpuValues


def test_int_codec_roundtrip_and_range():
    c = IntCodec(2, signed=False, type_name="__u16")
    assert c.encode(0x86DD) == b"\xdd\x86"
    assert c.decode(b"\xdd\x86") == 0x86DD
    assert c.parse("0x0800") == 0x800
    with pytest.raises(ConfigError, match="does not fit"):
        c.encode(70000)
    with pytest.raises(ConfigError, match="must be an integer"):
        c.parse("ipv4")


def test_signed_int():
    c = IntCodec(4, signed=True)
    assert c.decode(c.encode(-5)) == -5


def test_struct_codec_fields_and_errors():
    u8 = IntCodec(1)
    s = StructCodec(12, [Member("dst", 0, 0, ArrayCodec(u8, 6)), Member("src", 48, 0, ArrayCodec(u8, 6))],
                    type_name="struct egress_mac")
    raw = s.encode({"dst": "02:00:00:00:00:01"})
    assert raw == bytes.fromhex("020000000001") + bytes(6)
    rec = s.decode(raw)
    assert isinstance(rec, Record) and rec.dst == bytes.fromhex("020000000001")
    assert s.parse('{"src": "aabbccddeeff"}') == {"src": "aabbccddeeff"}
    with pytest.raises(ConfigError, match="unknown field"):
        s.encode({"nope": 1})
    with pytest.raises(ConfigError, match="JSON"):
        s.parse("{bad")


def test_bitfield_member():
    s = StructCodec(4, [Member("a", 0, 3, IntCodec(4)), Member("b", 3, 5, IntCodec(4))])
    raw = s.encode({"a": 5, "b": 17})
    assert s.decode(raw) == {"a": 5, "b": 17}
    with pytest.raises(ConfigError):
        s.encode({"a": 8})


def test_bytes_codec_and_hex_prefix():
    c = BytesCodec(4)
    assert c.parse("hex:01020304") == b"\x01\x02\x03\x04"
    with pytest.raises(ConfigError, match="expected 4 bytes"):
        c.parse("hex:0102")


def test_lpm_key_codec_v4_v6():
    v4 = LpmKeyCodec(8)
    raw = v4.encode("198.18.0.0/15")
    assert raw == (15).to_bytes(4, "little") + bytes([198, 18, 0, 0])
    assert v4.decode(raw) == ipaddress.ip_network("198.18.0.0/15")
    assert v4.encode(ipaddress.ip_address("198.18.1.2"))[:4] == (32).to_bytes(4, "little")
    v6 = LpmKeyCodec(20)
    assert v6.decode(v6.encode("2001:db8::/32")) == ipaddress.ip_network("2001:db8::/32")
    with pytest.raises(ConfigError, match="IPv6 but this trie holds IPv4"):
        v4.encode("2001:db8::/32")
    with pytest.raises(ConfigError, match="not an IP prefix"):
        v4.parse("198.18.0.0/99")


def test_percpu_sum_ints_and_structs():
    assert PerCpuValues([1, 2, 3]).sum() == 6
    s = PerCpuValues([Record(p=1, b=10), Record(p=2, b=20)]).sum()
    assert s == {"p": 3, "b": 30}


def test_to_jsonable():
    assert to_jsonable({"a": b"\x01", "b": [Record(x=1)]}) == {"a": "01", "b": [{"x": 1}]}
