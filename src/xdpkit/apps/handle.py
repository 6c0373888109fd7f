"""What every app's control plane shares: a handle on the app's program and maps on one interface.

An app is loaded once (``obj`` holds the loaded object) or found later on the interface by
any process (``maps`` opened by id from the attachment). ``close()`` releases our fds only; the
program stays attached until the app's ``unload``.
"""
from __future__ import annotations

import contextlib
import struct

from xdpkit import interfaces as nl
from xdpkit.apps import transaction
from xdpkit.errors import NotFoundError, XdpkitError
from xdpkit.kernel import kernel_name
from xdpkit.maps import Map, open_maps_by_id
from xdpkit.xdp import detach, query

CHUNK = 65536


class AppHandle:
    KIND = "app"          # in messages: "no xdpkit firewall on eth0"
    COMMAND = "app"       # its CLI noun: "xdpkit firewall load eth0"
    PROGRAM = ""          # the app's XDP program name, how it is found on an interface
    CHANGE_HINT = ""      # what to do instead of loading twice

    def __init__(self, ifname: str, maps: dict[str, Map], *, obj=None, prog_id: int = 0):
        self.ifname = ifname
        self.maps = maps
        self._obj = obj
        self.prog_id = prog_id

    @classmethod
    def _attachment(cls, ifname: str):
        """Our program of this app on ``ifname``, or None."""
        for att in query(ifname):
            if att.name == cls.PROGRAM and att.ours:
                return att
        return None

    @classmethod
    def _ifname_free(cls, iface) -> str:
        """The interface's name, after checking that the app is not loaded there yet."""
        ifname = nl.ifname_of(nl.ifindex_of(iface))
        att = cls._attachment(ifname)
        if att is not None:
            raise XdpkitError(f"a {cls.KIND} is already loaded on {ifname} (program {att.id})",
                              hint=cls.CHANGE_HINT.format(ifname=ifname) or None)
        return ifname

    @classmethod
    def _from_object(cls, ifname: str, obj, prog):
        """The handle of a freshly loaded object (its maps by kernel name)."""
        return cls(ifname, {kernel_name(m.name): m for m in obj.maps.values()}, obj=obj, prog_id=prog.id)

    @classmethod
    def open(cls, iface, *, on_wait=None):
        """The app attached to ``iface`` by any earlier process. ``on_wait(message)`` is told
        when one of its changes has to wait for another writer (see ``transaction``)."""
        ifname = nl.ifname_of(nl.ifindex_of(iface))
        att = cls._attachment(ifname)
        if att is None:
            raise NotFoundError(f"no xdpkit {cls.KIND} on {ifname}",
                                hint=f"load one: xdpkit {cls.COMMAND} load {ifname}")
        handle = cls.from_attachment(att)
        handle.on_wait = on_wait
        return handle

    @classmethod
    def unload(cls, iface) -> None:
        """Detach the app from ``iface`` (only ours: a foreign program there is not touched)."""
        ifname = nl.ifname_of(nl.ifindex_of(iface))
        att = cls._attachment(ifname)
        if att is None:
            raise NotFoundError(f"no xdpkit {cls.KIND} on {ifname}")
        with transaction.exclusive(att.id):  # not while another process is changing it
            detach(ifname)
        transaction.remove_lock(att.id)

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

    @contextlib.contextmanager
    def transaction(self, *, on_wait=None):
        """The block is this app instance's only writer (across processes); SIGTERM/SIGHUP in it
        raise KeyboardInterrupt like Ctrl-C, so a change rolls back instead of stopping half-way."""
        with transaction.exclusive(self.prog_id, on_wait=on_wait or self.on_wait), transaction.interruptible():
            yield

    #: called with a message when a change waits for another writer (the CLI prints it)
    on_wait = None

    def _map(self, name: str) -> Map:
        try:
            return self.maps[kernel_name(name)]  # the kernel keeps OBJ_NAME_LEN characters
        except KeyError:
            raise XdpkitError(f"{self.KIND} map {name} not found (program {self.prog_id})") from None


def zero_array(m: Map) -> None:
    """Every entry of an array map set to zero bytes, in batches."""
    n = m.max_entries
    for base in range(0, n, CHUNK):
        k = min(CHUNK, n - base)
        m.update_batch_buffers(struct.pack(f"<{k}I", *range(base, base + k)), bytes(m.value_buf_size * k), k)
