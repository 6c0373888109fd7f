"""Per-CPU maps: one value per possible CPU, with a helper to sum them."""
from __future__ import annotations

import errno as E
import struct

from xdpkit.btf import Record
from xdpkit.errors import ConfigError, KernelError
from xdpkit.maps.base import Map
from xdpkit.maps.array import ArrayMap


class PerCpuValues(list):
    """The values of one key, one per possible CPU (index = CPU number)."""

    def sum(self):
        """Add the per-CPU values: ints add up, structs add field by field."""
        return _sum(list(self))


def _sum(values):
    if not values:
        return 0
    first = values[0]
    if isinstance(first, dict):
        return Record({k: _sum([v[k] for v in values]) for k in first})
    if isinstance(first, list):
        return [_sum([v[i] for v in values]) for i in range(len(first))]
    if isinstance(first, (bytes, bytearray)):
        raise ConfigError("cannot sum raw byte values; give the map BTF types")
    return sum(values)


class PerCpuMixin:
    """Value layout: possible_cpus x round_up(value_size, 8) bytes (a smaller buffer is EINVAL)."""

    @property
    def ncpus(self) -> int:
        if not hasattr(self, "_ncpus"):
            n = self.ops.possible_cpus()
            if n <= 0:
                raise KernelError("libbpf_num_possible_cpus", -n if n < 0 else E.EINVAL)
            self._ncpus = n
        return self._ncpus

    @property
    def stride(self) -> int:
        return (self.info.value_size + 7) & ~7

    @property
    def value_buf_size(self) -> int:
        return self.ncpus * self.stride

    def encode_value(self, value) -> bytes:
        """A single value is written to every CPU; a list gives one value per CPU."""
        if isinstance(value, (list, tuple)) and not isinstance(value, Record) \
                and len(value) == self.ncpus and not self._value_is_array():
            per_cpu = list(value)
        else:
            per_cpu = [value] * self.ncpus
        out = bytearray()
        for v in per_cpu:
            out += Map.encode_value(self, v).ljust(self.stride, b"\0")
        return bytes(out)

    def _value_is_array(self) -> bool:
        from xdpkit.btf import ArrayCodec
        return isinstance(self.value_codec, ArrayCodec)

    def decode_value(self, raw: bytes) -> PerCpuValues:
        s, size = self.stride, self.info.value_size
        return PerCpuValues(self.value_codec.decode(raw[i * s: i * s + size]) for i in range(self.ncpus))

    def sum(self, key):
        return self[key].sum()


class PerCpuHashMap(PerCpuMixin, Map):
    pass


class PerCpuArrayMap(PerCpuMixin, ArrayMap):
    pass


def summed_counters(m: Map) -> dict[int, tuple[int, int]]:
    """A per-CPU array of ``{__u64 packets; __u64 bytes}`` read in one batch: index -> sums.

    The counter convention of xdpkit's programs; raw bytes are summed directly, which is much
    faster than decoding a Record per CPU per entry.
    """
    out = {}
    for k, raw in m.raw_items():
        pk = by = 0
        for off in range(0, len(raw), 16):  # one 16-byte value per CPU (stride = value size)
            p, b = struct.unpack_from("<QQ", raw, off)
            pk += p
            by += b
        out[int.from_bytes(k, "little")] = (pk, by)
    return out
