"""Maps against an in-memory kernel: encoding (BTF codecs, LPM prefixes, per-CPU layouts) and
the batch logic (chunks, ENOENT at the end, falling back to one key at a time) with no root and
no libbpf calls. The fake implements the seam Map uses (Map.ops, _sys/mapops.py)."""
import errno as E
import ipaddress
import warnings
from collections import Counter

import pytest

from xdpkit import maps as xmaps
from xdpkit._sys import libbpf
from xdpkit.btf import ArrayCodec, BtfLayoutWarning, BytesCodec, IntCodec, Member, StructCodec
from xdpkit.errors import ConfigError, KernelError
from xdpkit.kernel import BPF_NOEXIST, ENOTSUPP, MapInfo, MapType
from xdpkit.maps import LpmTrieMap, PerCpuArrayMap, PerCpuHashMap, PerCpuValues


@pytest.fixture(autouse=True)
def no_libbpf(monkeypatch):
    """A map operation that reaches libbpf fails the test."""
    def refuse():
        raise AssertionError("the fake kernel was bypassed: libbpf was called")

    monkeypatch.setattr(libbpf, "require", refuse)
    import xdpkit._sys.mapops as mapops
    monkeypatch.setattr(mapops, "require", refuse)


class FakeMap:
    def __init__(self, info: MapInfo, value_buf: int, batch_errno: int = 0, fail_after: int | None = None):
        self.info, self.value_buf = info, value_buf
        self.data: dict[bytes, bytes] = {}
        self.batch_errno = batch_errno     # non-zero: this map has no batch ops
        self.fail_after = fail_after       # the Nth batch lookup call fails with EFAULT


class FakeKernel:
    """Hash-map semantics in insertion order; the batch calls behave like the kernel's generic
    batch code: a call that runs out of entries returns them with ENOENT."""

    def __init__(self, ncpus: int = 3):
        self.ncpus = ncpus
        self.maps: dict[int, FakeMap] = {}
        self.calls = Counter()

    def map(self, cls, mtype, key_size, value_size, *, max_entries=64, key=None, value=None,
            batch_errno=0, fail_after=None):
        fd = 100 + len(self.maps)
        info = MapInfo(id=fd, name=f"m{fd}", type=mtype, key_size=key_size, value_size=value_size,
                       max_entries=max_entries)
        m = cls(fd, info, key, value, owned=False, ops=self)
        self.maps[fd] = FakeMap(info, m.value_buf_size, batch_errno, fail_after)
        return m

    # ---- the seam: same signatures and results as _sys.mapops.LibbpfMapOps ----
    def lookup(self, fd, key, value_size):
        self.calls["lookup"] += 1
        m = self.maps[fd]
        assert len(key) == m.info.key_size and value_size == m.value_buf
        return (0, m.data[bytes(key)]) if bytes(key) in m.data else (-E.ENOENT, b"")

    def update(self, fd, key, value, flags):
        self.calls["update"] += 1
        m = self.maps[fd]
        key, value = bytes(key), bytes(value)
        assert len(key) == m.info.key_size and len(value) == m.value_buf
        if flags == BPF_NOEXIST and key in m.data:
            return -E.EEXIST
        if key not in m.data and len(m.data) >= m.info.max_entries:
            return -E.E2BIG
        m.data[key] = value
        return 0

    def delete(self, fd, key):
        self.calls["delete"] += 1
        return 0 if self.maps[fd].data.pop(bytes(key), None) is not None else -E.ENOENT

    def next_key(self, fd, key, key_size):
        self.calls["next_key"] += 1
        keys = list(self.maps[fd].data)
        i = 0 if key is None or key not in keys else keys.index(key) + 1
        return (0, keys[i]) if i < len(keys) else (-E.ENOENT, b"")

    def lookup_batch(self, fd, token, key_size, value_size, count):
        self.calls["lookup_batch"] += 1
        m = self.maps[fd]
        if m.batch_errno:
            return -m.batch_errno, b"", b"", 0, b""
        if m.fail_after is not None and self.calls["lookup_batch"] > m.fail_after:
            return -E.EFAULT, b"", b"", 0, b""
        keys = list(m.data)
        start = 0 if token is None else int.from_bytes(token, "little")
        part = keys[start:start + count]
        ret = -E.ENOENT if len(part) < count else 0  # ran out: the last entries come with ENOENT
        return (ret, b"".join(part), b"".join(m.data[k] for k in part), len(part),
                (start + len(part)).to_bytes(8, "little"))

    def update_batch(self, fd, keys, values, count, flags):
        self.calls["update_batch"] += 1
        m = self.maps[fd]
        if m.batch_errno:
            return -m.batch_errno, 0
        ks, vs = m.info.key_size, m.value_buf
        keys, values = bytes(keys), bytes(values)
        for i in range(count):
            ret = self.update(fd, keys[i * ks:(i + 1) * ks], values[i * vs:(i + 1) * vs], flags)
            self.calls["update"] -= 1  # counted as part of the batch call
            if ret < 0:
                return ret, i
        return 0, count

    def delete_batch(self, fd, keys, count):
        self.calls["delete_batch"] += 1
        m = self.maps[fd]
        if m.batch_errno:
            return -m.batch_errno, 0
        ks, keys = m.info.key_size, bytes(keys)
        for i in range(count):
            if m.data.pop(keys[i * ks:(i + 1) * ks], None) is None:
                return -E.ENOENT, i
        return 0, count

    def possible_cpus(self):
        return self.ncpus


@pytest.fixture
def kern():
    return FakeKernel()


COUNTER = StructCodec(16, [Member("packets", 0, 0, IntCodec(8)), Member("bytes", 64, 0, IntCodec(8))],
                      type_name="struct counter")
FLOW = StructCodec(8, [Member("addr", 0, 0, ArrayCodec(IntCodec(1), 4)), Member("port", 32, 0, IntCodec(2)),
                       Member("proto", 48, 0, IntCodec(1))], type_name="struct flow")


def u32(i):
    return i.to_bytes(4, "little")


# ---- encoding ---------------------------------------------------------------------------------

def test_struct_keys_and_values_from_btf_codecs(kern):
    m = kern.map(xmaps.Map, MapType.HASH, 8, 16, key=FLOW, value=COUNTER)
    m[{"addr": bytes([198, 18, 0, 1]), "port": 53, "proto": 17}] = {"packets": 3, "bytes": 300}
    (raw_key, raw_value), = kern.maps[m.fd].data.items()
    assert raw_key == bytes([198, 18, 0, 1]) + (53).to_bytes(2, "little") + bytes([17, 0])
    assert raw_value == (3).to_bytes(8, "little") + (300).to_bytes(8, "little")
    (key, value), = m.items()
    assert key == {"addr": bytes([198, 18, 0, 1]), "port": 53, "proto": 17} and value.packets == 3
    with pytest.raises(ConfigError, match="unknown field"):
        m[{"addr": b"\0" * 4}] = {"pakets": 1}
    with pytest.raises(ConfigError, match="bad value for map"):
        m[{"port": 1}] = {"packets": -1}
    assert m.raw_reasons == {}


def test_lpm_keys_are_prefixes_in_network_order(kern):
    m = kern.map(LpmTrieMap, MapType.LPM_TRIE, 8, 4, value=IntCodec(4))
    m["198.18.0.0/15"] = 1
    m[ipaddress.ip_network("203.0.113.0/24")] = 2
    m[ipaddress.ip_address("192.0.2.7")] = 3             # an address is a /32
    data = kern.maps[m.fd].data
    assert (15).to_bytes(4, "little") + bytes([198, 18, 0, 0]) in data
    assert (32).to_bytes(4, "little") + bytes([192, 0, 2, 7]) in data
    assert dict(m.items()) == {ipaddress.ip_network("198.18.0.0/15"): 1,
                               ipaddress.ip_network("203.0.113.0/24"): 2,
                               ipaddress.ip_network("192.0.2.7/32"): 3}
    with pytest.raises(ConfigError, match="IPv6 but this trie holds IPv4"):
        m["2001:db8::/32"] = 1
    with pytest.raises(ConfigError, match="not an IP prefix"):
        m.parse_key("198.18.0.0/33")
    m6 = kern.map(LpmTrieMap, MapType.LPM_TRIE, 20, 4, value=IntCodec(4))
    m6["2001:db8::/32"] = 9
    assert list(kern.maps[m6.fd].data) == [(32).to_bytes(4, "little") + ipaddress.ip_address("2001:db8::").packed]


def test_per_cpu_values_are_padded_to_8_bytes_per_cpu(kern):
    twelve = StructCodec(12, [Member("a", 0, 0, IntCodec(4)), Member("b", 32, 0, IntCodec(4)),
                              Member("c", 64, 0, IntCodec(4))], type_name="struct three")
    m = kern.map(PerCpuHashMap, MapType.PERCPU_HASH, 4, 12, key=IntCodec(4), value=twelve)
    assert (m.ncpus, m.stride, m.value_buf_size) == (3, 16, 48)
    m[1] = {"a": 5}                                        # one value: written to every CPU
    one = u32(5) + bytes(8) + bytes(4)                      # 12 bytes + 4 of padding
    assert kern.maps[m.fd].data[u32(1)] == one * 3
    m[2] = [{"a": i, "c": 10 * i} for i in range(3)]       # one value per CPU
    got = m[2]
    assert isinstance(got, PerCpuValues) and [v.c for v in got] == [0, 10, 20]
    assert got.sum() == {"a": 3, "b": 0, "c": 30}
    arr = kern.map(PerCpuArrayMap, MapType.PERCPU_ARRAY, 4, 8, value=IntCodec(8))
    arr[0] = [1, 2, 3]
    assert kern.maps[arr.fd].data[u32(0)] == b"".join(i.to_bytes(8, "little") for i in (1, 2, 3))
    assert arr.sum(0) == 6


def test_a_btf_type_of_another_size_is_raw_and_says_why(kern):
    with pytest.warns(BtfLayoutWarning, match="BTF value type 'struct counter' is 16 bytes but the map's values are 24"):
        m = kern.map(xmaps.Map, MapType.HASH, 4, 24, key=IntCodec(4), value=COUNTER)
    assert isinstance(m.value_codec, BytesCodec) and set(m.raw_reasons) == {"value"}
    assert "raw values" in repr(m) and isinstance(m.key_codec, IntCodec)
    m[1] = bytes(range(24))                                 # raw bytes still work
    assert m[1] == bytes(range(24))
    with pytest.raises(ConfigError, match="raw bytes .*struct counter"):
        m[2] = {"packets": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # a map without BTF: no warning, no reason
        plain = kern.map(xmaps.Map, MapType.HASH, 4, 24)
    assert plain.raw_reasons == {} and isinstance(plain.value_codec, BytesCodec)
    with pytest.raises(ConfigError, match="no BTF types"):
        plain[u32(1)] = {"packets": 1}


# ---- batch logic ----------------------------------------------------------------------------

def _fill(kern, m, n):
    for i in range(n):
        kern.maps[m.fd].data[u32(i)] = (i * 10).to_bytes(8, "little")


@pytest.mark.parametrize("n,chunk,calls", [
    (7, 3, 3),     # 3 + 3 + 1 (the last with ENOENT)
    (6, 3, 3),     # 3 + 3 + an empty ENOENT call
    (7, 100, 1),   # all at once, with ENOENT
    (0, 8, 1),     # an empty map: ENOENT at once
])
def test_batch_lookup_keeps_entries_returned_with_enoent(kern, n, chunk, calls):
    m = kern.map(xmaps.Map, MapType.HASH, 4, 8, key=IntCodec(4), value=IntCodec(8))
    _fill(kern, m, n)
    keys, values, count = m.lookup_batch_buffers(chunk=chunk)
    assert count == n and kern.calls["lookup_batch"] == calls
    assert keys == b"".join(u32(i) for i in range(n))
    assert m.items() == [(i, i * 10) for i in range(n)] and kern.calls["lookup"] == 0


@pytest.mark.parametrize("errno", [E.EINVAL, E.EOPNOTSUPP, ENOTSUPP, E.EPERM])
def test_no_batch_lookup_falls_back_to_one_key_at_a_time(kern, errno):
    m = kern.map(xmaps.Map, MapType.HASH, 4, 8, key=IntCodec(4), value=IntCodec(8), batch_errno=errno)
    _fill(kern, m, 5)
    assert m.items() == [(i, i * 10) for i in range(5)]
    assert kern.calls["lookup_batch"] == 1 and kern.calls["lookup"] == 5 and kern.calls["next_key"] == 6


def test_a_batch_lookup_failing_later_is_an_error_not_a_fallback(kern):
    m = kern.map(xmaps.Map, MapType.HASH, 4, 8, key=IntCodec(4), value=IntCodec(8), fail_after=1)
    _fill(kern, m, 10)
    with pytest.raises(KernelError, match="batch lookup") as exc:
        m.lookup_batch_buffers(chunk=4)
    assert exc.value.errno == E.EFAULT and kern.calls["lookup"] == 0


@pytest.mark.parametrize("errno", [E.EINVAL, ENOTSUPP])
def test_no_batch_update_or_delete_falls_back_per_element(kern, errno):
    m = kern.map(xmaps.Map, MapType.HASH, 4, 8, key=IntCodec(4), value=IntCodec(8), batch_errno=errno)
    seen = []
    assert m.update_batch([(i, i) for i in range(7)], chunk=3, progress=lambda d, t: seen.append((d, t))) == 7
    assert kern.calls["update_batch"] == 1 and kern.calls["update"] == 7   # asked once, then one by one
    assert seen == [(3, 7), (6, 7), (7, 7)] and dict(m.items()) == {i: i for i in range(7)}
    assert m.delete_batch(range(5), chunk=2) == 5
    assert kern.calls["delete"] == 5 and dict(m.items()) == {5: 5, 6: 6}


def test_batch_update_in_chunks_and_a_refusal_part_way(kern):
    m = kern.map(xmaps.Map, MapType.HASH, 4, 8, key=IntCodec(4), value=IntCodec(8), max_entries=5)
    seen = []
    with pytest.raises(KernelError, match=r"batch update \(5 of 8 entries written\)") as exc:
        m.update_batch([(i, i) for i in range(8)], chunk=3, progress=lambda d, t: seen.append(d))
    assert exc.value.errno == E.E2BIG and "map is full" in exc.value.hint
    assert seen == [3] and kern.calls["update_batch"] == 2 and kern.calls["update"] == 0
    with pytest.raises(KernelError, match=r"\(0 of 1 entries written\)") as exc:
        m.update_batch([(0, 1)], flags=BPF_NOEXIST)    # elem flags reach the kernel
    assert exc.value.errno == E.EEXIST and "already exists" in exc.value.hint
    with pytest.raises(KernelError, match=r"batch delete \(1 deleted\)"):
        m.delete_batch([0, 99])
    with pytest.raises(ConfigError, match="3 entries need 12 key bytes and 24 value bytes"):
        m.update_batch_buffers(b"\0" * 8, b"\0" * 24, 3)


def test_array_keys_are_indexes_and_entries_cannot_be_deleted(kern):
    a = kern.map(xmaps.ArrayMap, MapType.ARRAY, 4, 8, max_entries=4, value=IntCodec(8))
    a[2] = 7
    assert kern.maps[a.fd].data == {u32(2): (7).to_bytes(8, "little")} and len(a) == 4
    with pytest.raises(ConfigError, match="cannot be deleted"):
        del a[2]
