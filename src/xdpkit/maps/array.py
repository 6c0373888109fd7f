"""Array maps: fixed keys 0..max_entries-1 that always exist."""
from __future__ import annotations

from xdpkit.btf import IntCodec
from xdpkit.errors import ConfigError
from xdpkit.maps.base import Map


class ArrayMap(Map):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.key_size == 4 and not isinstance(self.key_codec, IntCodec):
            self.key_codec = IntCodec(4, type_name="index")

    def __len__(self) -> int:
        return self.max_entries  # every index exists; no need to walk the keys

    def __delitem__(self, key) -> None:
        raise ConfigError(f"array map '{self.name}' entries cannot be deleted; set them to zero instead")

    def clear(self) -> None:
        zero = bytes(self.info.value_size)
        for i in range(self.max_entries):
            self[i] = zero
