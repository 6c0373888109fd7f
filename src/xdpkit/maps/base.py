"""The Map type: a BPF map as a Python MutableMapping, with batch operations.

Everything here is logic over bytes (codecs, chunking, falling back from batch syscalls to one
key at a time); the syscalls themselves are ``Map.ops`` (_sys/mapops.py), which a unit test
replaces with an in-memory kernel.
"""
from __future__ import annotations

import errno as E
from collections.abc import Iterable, Iterator, MutableMapping

from xdpkit._sys.mapops import LIBBPF
from xdpkit.btf import BytesCodec, Codec, fit_codec
from xdpkit.errors import ConfigError, KernelError, XdpkitError
from xdpkit.kernel import BPF_ANY, ENOTSUPP, MapInfo, MapType, obj_pin
from xdpkit.kernel import BPF_EXIST, BPF_NOEXIST  # noqa: F401 (xdpkit.maps re-exports them)

#: A batch call failing with these before it did anything means "no batch ops for this map".
_BATCH_UNSUPPORTED = {E.EINVAL, E.EOPNOTSUPP, ENOTSUPP, E.EPERM}
BATCH_CHUNK = 8192


class Map(MutableMapping):
    """A BPF map. ``m[k]``, ``m[k] = v``, ``del m[k]``, ``k in m``, iteration, ``items()``.

    Keys and values are encoded and decoded through codecs built from the map's BTF; raw bytes
    of the right size are always accepted, and :meth:`raw` gives undecoded access.
    """

    #: The map syscalls (bytes in, bytes out, -errno); an in-memory kernel in unit tests.
    ops = LIBBPF

    def __init__(self, fd: int, info: MapInfo, key_codec: Codec | None = None,
                 value_codec: Codec | None = None, *, owned: bool = True, ops=None):
        if ops is not None:
            self.ops = ops
        self._fd = fd
        self.info = info
        self._owned = owned
        self.key_codec = fit_codec(key_codec, info.key_size, "key", info.name)
        self.value_codec = fit_codec(value_codec, info.value_size, "value", info.name)

    # ---- identity -------------------------------------------------------------------------
    name = property(lambda self: self.info.name)
    id = property(lambda self: self.info.id)
    type = property(lambda self: MapType(self.info.type) if self.info.type in MapType._value2member_map_
                    else self.info.type)
    key_size = property(lambda self: self.info.key_size)
    value_size = property(lambda self: self.info.value_size)
    max_entries = property(lambda self: self.info.max_entries)

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise XdpkitError(f"map '{self.name}' is closed")
        return self._fd

    def close(self) -> None:
        """Release our handle on the map (idempotent). The map lives on while others use it."""
        fd, self._fd = self._fd, -1
        if fd >= 0 and self._owned:
            import os
            os.close(fd)

    def _invalidate(self) -> None:
        self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        raw = "".join(f" raw {what}s" for what, _ in self.raw_reasons.items())
        return (f"<{type(self).__name__} {self.name!r} id={self.id} type={MapType.name_of(self.info.type)} "
                f"key={self.key_size}B value={self.value_size}B max_entries={self.max_entries}{raw}>")

    @property
    def raw_reasons(self) -> dict[str, str]:
        """Why keys or values read as raw bytes although the map has BTF: {"key"|"value": reason}.
        Empty when the codecs come from BTF, or when the map has no BTF at all."""
        return {what: c.reason for what, c in (("key", self.key_codec), ("value", self.value_codec))
                if isinstance(c, BytesCodec) and c.reason}

    # ---- encoding hooks (subclasses change value layout) ---------------------------------
    @property
    def value_buf_size(self) -> int:
        return self.info.value_size

    def encode_key(self, key) -> bytes:
        try:
            return self.key_codec.pack(key)
        except ConfigError as exc:
            raise ConfigError(f"bad key for map '{self.name}': {exc}") from None

    def decode_key(self, raw: bytes):
        return self.key_codec.decode(raw)

    def encode_value(self, value) -> bytes:
        try:
            return self.value_codec.pack(value)
        except ConfigError as exc:
            raise ConfigError(f"bad value for map '{self.name}': {exc}") from None

    def decode_value(self, raw: bytes):
        return self.value_codec.decode(raw)

    def parse_key(self, text: str):
        return self.key_codec.parse(text)

    def parse_value(self, text: str):
        return self.value_codec.parse(text)

    # ---- raw access -------------------------------------------------------------------------
    def _error(self, syscall: str, err: int, what: str):
        hint = None
        if err == E.E2BIG:
            hint = f"the map is full (max_entries {self.max_entries}) or the key is out of range"
        elif err == E.EEXIST:
            hint = "the key already exists (BPF_NOEXIST)"
        elif err in (E.EINVAL,) and self.info.type in (MapType.ARRAY, MapType.PERCPU_ARRAY) \
                and syscall == "BPF_MAP_DELETE_ELEM":
            hint = "array map entries cannot be deleted; set them to zero instead"
        return KernelError(syscall, err, f"map '{self.name}' {what}", hint=hint)

    def lookup_raw(self, key: bytes) -> bytes | None:
        ret, value = self.ops.lookup(self.fd, key, self.value_buf_size)
        if ret < 0:
            if -ret == E.ENOENT:
                return None
            raise self._error("BPF_MAP_LOOKUP_ELEM", -ret, "lookup")
        return value

    def update_raw(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        ret = self.ops.update(self.fd, key, value, flags)
        if ret < 0:
            raise self._error("BPF_MAP_UPDATE_ELEM", -ret, "update")

    def delete_raw(self, key: bytes) -> bool:
        ret = self.ops.delete(self.fd, key)
        if ret < 0:
            if -ret == E.ENOENT:
                return False
            raise self._error("BPF_MAP_DELETE_ELEM", -ret, "delete")
        return True

    def raw_keys(self) -> Iterator[bytes]:
        prev = None
        while True:
            ret, key = self.ops.next_key(self.fd, prev, self.key_size)
            if ret < 0:
                if -ret == E.ENOENT:
                    return
                raise self._error("BPF_MAP_GET_NEXT_KEY", -ret, "iterate")
            yield key
            prev = key

    # ---- mapping protocol -----------------------------------------------------------------
    def __getitem__(self, key):
        raw = self.lookup_raw(self.encode_key(key))
        if raw is None:
            raise KeyError(key)
        return self.decode_value(raw)

    def __setitem__(self, key, value) -> None:
        self.update_raw(self.encode_key(key), self.encode_value(value))

    def set(self, key, value, *, flags: int = BPF_ANY) -> None:
        """Update with explicit flags: BPF_ANY, BPF_NOEXIST (create only), BPF_EXIST."""
        self.update_raw(self.encode_key(key), self.encode_value(value), flags)

    def __delitem__(self, key) -> None:
        if not self.delete_raw(self.encode_key(key)):
            raise KeyError(key)

    def __contains__(self, key) -> bool:
        return self.lookup_raw(self.encode_key(key)) is not None

    def __iter__(self):
        for raw in self.raw_keys():
            yield self.decode_key(raw)

    def __len__(self) -> int:
        return sum(1 for _ in self.raw_keys())

    def items(self):  # type: ignore[override]
        """All (key, value) pairs, fetched with batch lookups where the map supports them."""
        return [(self.decode_key(k), self.decode_value(v)) for k, v in self.raw_items()]

    def values(self):  # type: ignore[override]
        return [v for _, v in self.items()]

    def raw_items(self) -> list[tuple[bytes, bytes]]:
        try:
            return self.lookup_batch_raw()
        except _BatchUnsupported:
            out = []
            for k in self.raw_keys():
                v = self.lookup_raw(k)
                if v is not None:  # deleted while we iterated
                    out.append((k, v))
            return out

    def clear(self) -> None:
        for k in list(self.raw_keys()):
            self.delete_raw(k)

    # ---- batch operations ---------------------------------------------------------------
    def lookup_batch_raw(self, chunk: int = BATCH_CHUNK) -> list[tuple[bytes, bytes]]:
        keys, vals, n = self.lookup_batch_buffers(chunk)
        ks, vs = self.key_size, self.value_buf_size
        return [(keys[i * ks:(i + 1) * ks], vals[i * vs:(i + 1) * vs]) for i in range(n)]

    def lookup_batch_buffers(self, chunk: int = BATCH_CHUNK) -> tuple[bytes, bytes, int]:
        """Every entry as two packed buffers (keys, values) and the count: the cheap way to
        read a map of millions of entries. Raises _BatchUnsupported when the map has no batch
        lookup (the first call fails with EINVAL, EOPNOTSUPP, ENOTSUPP or EPERM)."""
        ks, vs = self.key_size, self.value_buf_size
        kparts, vparts, total = [], [], 0
        token = None
        while True:
            ret, keys, vals, n, token_out = self.ops.lookup_batch(self.fd, token, ks, vs, chunk)
            err = -ret if ret < 0 else 0
            if err and err != E.ENOENT:
                if token is None and err in _BATCH_UNSUPPORTED:
                    raise _BatchUnsupported()
                raise self._error("BPF_MAP_LOOKUP_BATCH", err, "batch lookup")
            kparts.append(keys[:ks * n])
            vparts.append(vals[:vs * n])
            total += n
            if err == E.ENOENT:  # end of map; entries returned with it are still valid
                return b"".join(kparts), b"".join(vparts), total
            token = token_out

    def update_batch(self, items: Iterable[tuple], *, flags: int = BPF_ANY,
                     chunk: int = BATCH_CHUNK, progress=None) -> int:
        """Insert many (key, value) pairs with BPF_MAP_UPDATE_BATCH; returns how many.

        ``progress(done, total)`` is called after every chunk. Falls back to single updates
        on maps without batch support. Raises after the first failing chunk, saying how many
        entries went in.
        """
        pairs = [(self.encode_key(k), self.encode_value(v)) for k, v in items]
        return self.update_batch_raw(pairs, flags=flags, chunk=chunk, progress=progress)

    def update_batch_raw(self, pairs: list[tuple[bytes, bytes]], *, flags: int = BPF_ANY,
                         chunk: int = BATCH_CHUNK, progress=None) -> int:
        return self.update_batch_buffers(b"".join(k for k, _ in pairs), b"".join(v for _, v in pairs),
                                         len(pairs), flags=flags, chunk=chunk, progress=progress)

    def update_batch_buffers(self, keys: bytes, values: bytes, count: int, *, flags: int = BPF_ANY,
                             chunk: int = BATCH_CHUNK, progress=None) -> int:
        """Write ``count`` entries given as packed key and value buffers.

        A map without batch updates (the first call fails having written nothing, with EINVAL,
        EOPNOTSUPP, ENOTSUPP or EPERM) is written one entry at a time instead."""
        ks, vs = self.key_size, self.value_buf_size
        if len(keys) != ks * count or len(values) != vs * count:
            raise ConfigError(f"map '{self.name}': {count} entries need {ks * count} key bytes and "
                              f"{vs * count} value bytes")
        kview, vview = memoryview(keys), memoryview(values)
        done = 0
        batch_ok = True
        while done < count:
            part = min(chunk, count - done)
            kpart = kview[done * ks:(done + part) * ks]
            vpart = vview[done * vs:(done + part) * vs]
            if batch_ok:
                ret, n = self.ops.update_batch(self.fd, kpart, vpart, part, flags)
                if ret < 0 and -ret in _BATCH_UNSUPPORTED and done == 0 and n == 0:
                    batch_ok = False
                    continue
                if ret < 0:
                    raise self._error("BPF_MAP_UPDATE_BATCH", -ret,
                                      f"batch update ({done + n} of {count} entries written)")
            else:
                for i in range(part):
                    self.update_raw(bytes(kpart[i * ks:(i + 1) * ks]), bytes(vpart[i * vs:(i + 1) * vs]), flags)
            done += part
            if progress:
                progress(done, count)
        return done

    def delete_batch(self, keys: Iterable, *, chunk: int = BATCH_CHUNK) -> int:
        return self.delete_batch_raw([self.encode_key(k) for k in keys], chunk=chunk)

    def delete_batch_raw(self, raw: list[bytes], *, chunk: int = BATCH_CHUNK) -> int:
        return self.delete_batch_buffer(b"".join(raw), len(raw), chunk=chunk)

    def delete_batch_buffer(self, keys: bytes, count: int, *, chunk: int = BATCH_CHUNK) -> int:
        """Delete ``count`` keys given as one packed buffer (one at a time where the map has no
        batch delete)."""
        ks = self.key_size
        view = memoryview(keys)
        done = 0
        while done < count:
            part = min(chunk, count - done)
            kpart = view[done * ks:(done + part) * ks]
            ret, n = self.ops.delete_batch(self.fd, kpart, part)
            if ret < 0 and -ret in _BATCH_UNSUPPORTED and n == 0:
                for i in range(part):
                    self.delete_raw(bytes(kpart[i * ks:(i + 1) * ks]))
            elif ret < 0:
                raise self._error("BPF_MAP_DELETE_BATCH", -ret, f"batch delete ({done + n} deleted)")
            done += part
        return done

    def pin(self, path: str) -> None:
        obj_pin(self.fd, path)


class _BatchUnsupported(Exception):
    pass
