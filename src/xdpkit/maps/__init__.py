"""BPF maps as Python mappings. One module per map family; ``make_map`` picks the class."""
from __future__ import annotations

import os

from xdpkit._sys.libbpf import ffi, require
from xdpkit.btf import BtfReader, Codec
from xdpkit.errors import ConfigError, KernelError, NotFoundError
from xdpkit.kernel import MapInfo, MapType, OwnedFd, kernel_name, map_fd_by_id, map_ids, map_info, obj_get
from xdpkit.maps.array import ArrayMap
from xdpkit.maps.base import BPF_ANY, BPF_EXIST, BPF_NOEXIST, Map
from xdpkit.maps.fdmaps import ArrayOfMaps, CpuMap, DevMap, DevMapHash, ProgArray, XskMap
from xdpkit.maps.lpm import LpmTrieMap
from xdpkit.maps.percpu import PerCpuArrayMap, PerCpuHashMap, PerCpuValues

_CLASSES = {
    MapType.ARRAY: ArrayMap,
    MapType.PERCPU_HASH: PerCpuHashMap,
    MapType.LRU_PERCPU_HASH: PerCpuHashMap,
    MapType.PERCPU_ARRAY: PerCpuArrayMap,
    MapType.LPM_TRIE: LpmTrieMap,
    MapType.DEVMAP: DevMap,
    MapType.DEVMAP_HASH: DevMapHash,
    MapType.CPUMAP: CpuMap,
    MapType.XSKMAP: XskMap,
    MapType.PROG_ARRAY: ProgArray,
    MapType.ARRAY_OF_MAPS: ArrayOfMaps,
}

BPF_F_NO_PREALLOC = 1 << 0
BPF_F_INNER_MAP = 1 << 12


def make_map(fd: int, info: MapInfo, key_codec: Codec | None = None,
             value_codec: Codec | None = None, *, owned: bool = True, ops=None) -> Map:
    """The Map class for ``info.type``; ``ops``: the map syscalls (default: libbpf)."""
    cls = _CLASSES.get(info.type, Map)
    return cls(fd, info, key_codec, value_codec, owned=owned, ops=ops)


def _kernel_codecs(info: MapInfo) -> tuple[Codec | None, Codec | None]:
    """Codecs from the BTF the kernel keeps for the map (none when it was created without)."""
    if not info.btf_id:
        return None, None
    lib = require()
    btf = lib.btf__load_from_kernel_by_id(info.btf_id)
    if btf == ffi.NULL:
        return None, None
    try:
        reader = BtfReader(btf)
        key = reader.codec(info.btf_key_type_id, info.key_size) if info.btf_key_type_id else None
        value = reader.codec(info.btf_value_type_id, info.value_size) if info.btf_value_type_id else None
        return key, value
    finally:
        lib.btf__free(btf)


def _from_fd(fd: OwnedFd) -> Map:
    try:
        info = map_info(fd.fd)
        key, value = _kernel_codecs(info)
    except BaseException:
        fd.close()
        raise
    return make_map(fd.fd, info, key, value, owned=True)


def create_map(map_type: MapType, name: str, key_size: int, value_size: int, max_entries: int, *,
               flags: int = 0) -> Map:
    """A new map without BTF, owned by the returned Map (the kernel frees it with the last
    reference: this fd, a program using it, or an outer map holding it)."""
    lib = require()
    opts = ffi.new("struct bpf_map_create_opts *")
    opts.sz = ffi.sizeof("struct bpf_map_create_opts")
    opts.map_flags = flags
    fd = lib.bpf_map_create(int(map_type), kernel_name(name).encode(), key_size, value_size, max_entries, opts)
    if fd < 0:
        size = f"{max_entries:,} entries of {value_size} bytes"
        raise KernelError("BPF_MAP_CREATE", -fd, f"creating map {name!r} ({size})",
                          hint="the kernel may be short of memory for it" if -fd == 12 else None)
    return _from_fd(OwnedFd(fd))


def open_map_by_id(map_id: int) -> Map:
    """Open a live map by its kernel id; close it (or use ``with``) when done."""
    return _from_fd(map_fd_by_id(map_id))


def open_maps_by_id(ids) -> dict[str, Map]:
    """Maps by id, keyed by their kernel names (OBJ_NAME_LEN characters); all or none are opened."""
    maps: dict[str, Map] = {}
    try:
        for map_id in ids:
            m = open_map_by_id(map_id)
            maps[m.name] = m
    except BaseException:
        for m in maps.values():
            m.close()
        raise
    return maps


def open_pinned_map(path: str | os.PathLike) -> Map:
    """Reopen a map pinned in bpffs."""
    fd = obj_get(os.fspath(path))
    try:
        info = map_info(fd.fd)
    except Exception:
        fd.close()
        raise ConfigError(f"{path} is pinned but is not a BPF map") from None
    return _from_fd(fd)


def find_map_ids(name: str) -> list[int]:
    """Ids of live maps with this name (the kernel keeps OBJ_NAME_LEN characters of it)."""
    return [info.id for info in list_maps() if info.name == kernel_name(name)]


def attached_map_ids(name: str | None = None) -> list[int]:
    """Ids of maps used by XDP programs attached in the current network namespace
    (only those called ``name``, when given), each once."""
    from xdpkit.xdp import query

    ids = [m.id for att in query() for m in att.maps if name is None or m.name == kernel_name(name)]
    return list(dict.fromkeys(ids))


def open_map(ref) -> Map:
    """Open a map by id (int or digits), bpffs path, or name.

    A name is looked up first among the maps of XDP programs attached in this network
    namespace, then among all maps; it must match exactly one map.
    """
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return open_map_by_id(int(ref))
    ref = str(ref)
    if ref.startswith("/"):
        return open_pinned_map(ref)
    candidates = attached_map_ids(ref) or find_map_ids(ref)
    if not candidates:
        raise NotFoundError(f"no BPF map named {ref!r}", hint="list maps with `xdpkit maps list`")
    if len(candidates) > 1:
        raise ConfigError(f"{len(candidates)} maps are named {ref!r} (ids {', '.join(map(str, candidates))})",
                          hint="name the map by id instead")
    return open_map_by_id(candidates[0])


def list_maps(ids: list[int] | None = None) -> list[MapInfo]:
    """Info for the given map ids, or for every map in the kernel."""
    out = []
    for mid in (map_ids() if ids is None else ids):
        try:
            with map_fd_by_id(mid) as fd:
                out.append(map_info(fd.fd))
        except NotFoundError:
            continue
    return out


__all__ = ["create_map", "ArrayOfMaps", "open_map", "list_maps", "attached_map_ids", "Map", "ArrayMap", "PerCpuHashMap", "PerCpuArrayMap", "PerCpuValues", "LpmTrieMap",
           "DevMap", "DevMapHash", "CpuMap", "XskMap", "ProgArray", "make_map", "open_map_by_id",
           "open_pinned_map", "find_map_ids", "BPF_ANY", "BPF_NOEXIST", "BPF_EXIST"]
