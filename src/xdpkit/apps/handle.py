"""What every app's control plane shares: a handle on the app's program and maps on one interface.

An app is loaded once (``obj`` holds the loaded object) or found later on the interface by
any process (``maps`` opened by id from the attachment). ``close()`` releases our fds only; the
program stays attached until the app's ``unload``.
"""
from __future__ import annotations

import struct

from xdpkit.errors import XdpkitError
from xdpkit.maps import Map, open_maps_by_id

CHUNK = 65536


class AppHandle:
    KIND = "app"  # used in messages: "firewall map fw_gen not found"

    def __init__(self, ifname: str, maps: dict[str, Map], *, obj=None, prog_id: int = 0):
        self.ifname = ifname
        self.maps = maps
        self._obj = obj
        self.prog_id = prog_id

    @classmethod
    def from_attachment(cls, att, open_map=None):
        """The app behind an attachment from ``xdp.query``; ``open_map(id)`` may supply cached
        maps (the exporter's), which the handle then must not close."""
        if open_map is None:
            return cls(att.ifname, open_maps_by_id(m["id"] for m in att.maps), prog_id=att.id)
        maps = {}
        for m in att.maps:
            mp = open_map(m["id"])
            maps[mp.name] = mp
        return cls(att.ifname, maps, prog_id=att.id)

    def close(self) -> None:
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        else:
            for m in self.maps.values():
                m.close()
        self.maps = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _map(self, name: str) -> Map:
        try:
            return self.maps[name[:15]]  # the kernel keeps 15 characters of a map name
        except KeyError:
            raise XdpkitError(f"{self.KIND} map {name} not found (program {self.prog_id})") from None


def zero_array(m: Map) -> None:
    """Every entry of an array map set to zero bytes, in batches."""
    n = m.max_entries
    for base in range(0, n, CHUNK):
        k = min(CHUNK, n - base)
        m.update_batch_buffers(struct.pack(f"<{k}I", *range(base, base + k)), bytes(m.value_buf_size * k), k)
