"""The BPF map syscalls, bytes in and bytes out, through libbpf.

:class:`xdpkit.maps.Map` keeps its logic (codecs, chunking, the batch fallback) above this seam
and calls only these methods, so the logic runs unchanged against an in-memory kernel in unit
tests (tests/unit/test_maps_fake_kernel.py). Every method returns libbpf's result: 0 or a
negative errno, with the data it read.
"""
from __future__ import annotations

import errno as E

from xdpkit._sys.libbpf import ffi, require

# Batch buffers are overwritten by the kernel before they are read: no need to clear them.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)


def batch_token_size(key_size: int) -> int:
    """Room for the kernel's opaque batch position (a key, or a 4-byte bucket for hashes)."""
    return max(key_size, 8)


class LibbpfMapOps:
    """The real kernel. Stateless; one instance serves every map."""

    def lookup(self, fd: int, key: bytes, value_size: int) -> tuple[int, bytes]:
        val = _alloc("char[]", max(value_size, 1))
        ret = require().bpf_map_lookup_elem(fd, key, val)
        return ret, (bytes(ffi.buffer(val, value_size)) if ret == 0 else b"")

    def update(self, fd: int, key: bytes, value: bytes, flags: int) -> int:
        return require().bpf_map_update_elem(fd, key, value, flags)

    def delete(self, fd: int, key: bytes) -> int:
        return require().bpf_map_delete_elem(fd, key)

    def next_key(self, fd: int, key: bytes | None, key_size: int) -> tuple[int, bytes]:
        """The key after ``key`` (the first key when None); -ENOENT after the last."""
        nxt = _alloc("char[]", max(key_size, 1))
        ret = require().bpf_map_get_next_key(fd, ffi.NULL if key is None else key, nxt)
        return ret, (bytes(ffi.buffer(nxt, key_size)) if ret == 0 else b"")

    def lookup_batch(self, fd: int, token: bytes | None, key_size: int, value_size: int,
                     count: int) -> tuple[int, bytes, bytes, int, bytes]:
        """Up to ``count`` entries from position ``token`` (None: the start).

        Returns (ret, keys, values, n, next token). At the end of the map ret is -ENOENT and
        the n entries returned with it are still valid.
        """
        keys = _alloc("char[]", max(key_size * count, 1))
        vals = _alloc("char[]", max(value_size * count, 1))
        tsize = batch_token_size(key_size)
        tok_in = ffi.NULL if token is None else ffi.from_buffer(token.ljust(tsize, b"\0"))
        tok_out = _alloc("char[]", tsize)
        n = ffi.new("uint32_t *", count)
        opts = ffi.new("struct bpf_map_batch_opts *", {"sz": ffi.sizeof("struct bpf_map_batch_opts")})
        ret = require().bpf_map_lookup_batch(fd, tok_in, tok_out, keys, vals, n, opts)
        got = n[0] if ret == 0 or ret == -E.ENOENT else 0  # the last entries come with ENOENT
        return (ret, bytes(ffi.buffer(keys, key_size * got)), bytes(ffi.buffer(vals, value_size * got)),
                got, bytes(ffi.buffer(tok_out, tsize)))

    def update_batch(self, fd: int, keys, values, count: int, flags: int) -> tuple[int, int]:
        """Write ``count`` packed entries; returns (ret, how many the kernel processed)."""
        n = ffi.new("uint32_t *", count)
        opts = ffi.new("struct bpf_map_batch_opts *",
                       {"sz": ffi.sizeof("struct bpf_map_batch_opts"), "elem_flags": flags})
        ret = require().bpf_map_update_batch(fd, ffi.from_buffer(keys), ffi.from_buffer(values), n, opts)
        return ret, n[0]

    def delete_batch(self, fd: int, keys, count: int) -> tuple[int, int]:
        n = ffi.new("uint32_t *", count)
        opts = ffi.new("struct bpf_map_batch_opts *", {"sz": ffi.sizeof("struct bpf_map_batch_opts")})
        ret = require().bpf_map_delete_batch(fd, ffi.from_buffer(keys), n, opts)
        return ret, n[0]

    def possible_cpus(self) -> int:
        """Per-CPU maps hold one value per possible CPU; <= 0 is -errno."""
        return require().libbpf_num_possible_cpus()


LIBBPF = LibbpfMapOps()
