"""LPM-trie maps: keys are prefixes, written "198.18.0.0/15", "2001:db8::/32" or ipaddress objects."""
from __future__ import annotations

import ipaddress

from xdpkit.btf import Codec
from xdpkit.errors import ConfigError
from xdpkit.maps.base import Map


class LpmKeyCodec(Codec):
    """struct { __u32 prefixlen; __u8 data[N]; } with data in network byte order."""

    def __init__(self, size: int):
        self.size = size
        self.data_len = size - 4
        self.type_name = "lpm key"

    def encode(self, value) -> bytes:
        if isinstance(value, str):
            value = self._parse(value)
        if isinstance(value, tuple):
            plen, data = value
            data = bytes(data)
            if len(data) > self.data_len or not 0 <= plen <= 8 * self.data_len:
                raise ConfigError(f"prefix ({plen}, {data.hex()}) does not fit a {self.data_len}-byte key")
            return int(plen).to_bytes(4, "little") + data.ljust(self.data_len, b"\0")
        if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            value = ipaddress.ip_network(value)
        if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            packed = value.network_address.packed
            if len(packed) != self.data_len:
                want = {4: "IPv4", 16: "IPv6"}.get(self.data_len, f"{self.data_len}-byte")
                raise ConfigError(f"{value} is IPv{value.version} but this trie holds {want} prefixes")
            return value.prefixlen.to_bytes(4, "little") + packed
        raise ConfigError(f"LPM key must be a prefix like '198.18.0.0/15', got {value!r}")

    def _parse(self, text: str):
        try:
            return ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"not an IP prefix: {text!r} (expected e.g. 198.18.0.0/15 or 2001:db8::/32)") from None

    def decode(self, raw: bytes):
        plen = int.from_bytes(raw[:4], "little")
        data = raw[4: 4 + self.data_len]
        if self.data_len in (4, 16):
            addr = ipaddress.ip_address(data)
            return ipaddress.ip_network(f"{addr}/{plen}", strict=False)
        return (plen, bytes(data))


class LpmTrieMap(Map):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_codec = LpmKeyCodec(self.key_size)

    def lookup_address(self, address):
        """Longest-prefix match for one address: the value of the most specific prefix."""
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        return self[ipaddress.ip_network(addr)]
