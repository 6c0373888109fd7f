"""Maps whose values name other kernel objects: devmap, cpumap, xskmap, prog_array.

Values are written as an interface (name or ifindex), a queue size, a socket fd or a program;
reading a prog_array returns program ids, as the kernel reports them.
"""
from __future__ import annotations

import socket

from xdpkit.btf import IntCodec, StructCodec
from xdpkit.errors import ConfigError, NotFoundError
from xdpkit.maps.array import ArrayMap
from xdpkit.maps.base import Map


def ifindex_of(iface) -> int:
    if isinstance(iface, int):
        return iface
    if isinstance(iface, str) and iface.isdigit():
        return int(iface)
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        raise NotFoundError(f"no such interface: {iface!r} in this network namespace") from None


class _DevValueMixin:
    """Value: __u32 ifindex, or struct bpf_devmap_val {ifindex; prog fd/id}."""

    def encode_value(self, value) -> bytes:
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = ifindex_of(value)
            if self.info.value_size == 8:
                return value.to_bytes(4, "little") + (0).to_bytes(4, "little")
            return value.to_bytes(4, "little")
        return Map.encode_value(self, value)

    def parse_value(self, text: str):
        return text if not text.lstrip().startswith("{") else super().parse_value(text)

    def decode_value(self, raw: bytes):
        if isinstance(self.value_codec, StructCodec):
            return Map.decode_value(self, raw)
        ifindex = int.from_bytes(raw[:4], "little")
        if self.info.value_size == 8:
            return {"ifindex": ifindex, "prog_id": int.from_bytes(raw[4:8], "little")}
        return ifindex


class DevMap(_DevValueMixin, ArrayMap):
    pass


class DevMapHash(_DevValueMixin, Map):
    pass


class CpuMap(ArrayMap):
    """Value: __u32 qsize, or struct bpf_cpumap_val {qsize; prog fd/id}. Key: CPU number."""

    def encode_value(self, value) -> bytes:
        if isinstance(value, int) and not isinstance(value, bool):
            return value.to_bytes(4, "little") + bytes(self.info.value_size - 4)
        return super().encode_value(value)

    def decode_value(self, raw: bytes):
        if isinstance(self.value_codec, StructCodec):
            return super().decode_value(raw)
        qsize = int.from_bytes(raw[:4], "little")
        if self.info.value_size == 8:
            return {"qsize": qsize, "prog_id": int.from_bytes(raw[4:8], "little")}
        return qsize


def _fd_of(value) -> int:
    if hasattr(value, "fd"):
        return int(value.fd)
    if hasattr(value, "fileno"):
        return value.fileno()
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"expected a file descriptor or an object with one, got {value!r}")


class _FdValueArray(ArrayMap):
    """Written with an fd (or an object holding one); read back as the kernel reports it."""

    def encode_value(self, value) -> bytes:
        return _fd_of(value).to_bytes(4, "little")

    def decode_value(self, raw: bytes):
        return int.from_bytes(raw[:4], "little")

    def __delitem__(self, key) -> None:
        Map.__delitem__(self, key)  # unlike plain arrays, fd slots can be emptied


class ArrayOfMaps(_FdValueArray):
    """Value written: a map (or its fd); value read: the inner map's id (0: empty slot)."""

    def inner_id(self, index: int) -> int:
        raw = self.lookup_raw(index.to_bytes(4, "little"))
        return int.from_bytes(raw[:4], "little") if raw else 0

    def parse_value(self, text: str):
        return IntCodec(4, type_name="map fd").parse(text)


class XskMap(_FdValueArray):
    """Value: an AF_XDP socket fd (write-only from user space: the kernel refuses lookups)."""

    def parse_value(self, text: str):
        return IntCodec(4, type_name="socket fd").parse(text)


class ProgArray(_FdValueArray):
    """Value written: a program (or its fd); value read: the program id."""

    def parse_value(self, text: str):
        """On the command line a program is named by its id."""
        from xdpkit.program import Program

        return Program.from_id(IntCodec(4, type_name="program id").parse(text))
