"""Maps of every common type through the mapping API, BTF typing, batch, pins and the CLI."""
import ipaddress
import json
import os
import subprocess
import sys

import pytest

import xdpkit
from xdpkit import ConfigError, KernelError
from xdpkit.kernel import possible_cpus
from xdpkit.maps import (ArrayMap, CpuMap, DevMap, LpmTrieMap, PerCpuArrayMap, PerCpuHashMap, ProgArray,
                         XskMap, open_map, open_map_by_id, open_pinned_map)
from tests.packets import udp4

pytestmark = pytest.mark.kernel

MAPS_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct flow { __u32 saddr; __u16 port; __u8 proto; __u8 flags; };
struct stats { __u64 packets; __u64 bytes; };
struct lpm4 { __u32 prefixlen; __u8 addr[4]; };
struct lpm6 { __u32 prefixlen; __u8 addr[16]; };

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 100000);
         __type(key, struct flow); __type(value, struct stats); } flows SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 8);
         __type(key, __u32); __type(value, __u64); } arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __uint(max_entries, 16);
         __type(key, __u32); __type(value, struct stats); } pc_hash SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 4);
         __type(key, __u32); __type(value, __u64); } pc_arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 64);
         __type(key, __u32); __type(value, __u32); } lru SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(max_entries, 1000);
         __uint(map_flags, BPF_F_NO_PREALLOC);
         __type(key, struct lpm4); __type(value, __u32); } lpm_v4 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(max_entries, 1000);
         __uint(map_flags, BPF_F_NO_PREALLOC);
         __type(key, struct lpm6); __type(value, __u32); } lpm_v6 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_DEVMAP); __uint(max_entries, 4);
         __type(key, __u32); __type(value, __u32); } devs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_CPUMAP); __uint(max_entries, 2);
         __type(key, __u32); __type(value, __u32); } cpus SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_XSKMAP); __uint(max_entries, 4);
         __type(key, __u32); __type(value, __u32); } xsks SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4);
         __type(key, __u32); __type(value, __u32); } jumps SEC(".maps");

SEC("xdp")
int use_maps(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&pc_arr, &k);
	if (v)
		*v += 1;
	struct flow fk = {};
	struct lpm4 k4 = {};
	struct lpm6 k6 = {};

	bpf_map_lookup_elem(&flows, &fk); bpf_map_lookup_elem(&arr, &k);
	bpf_map_lookup_elem(&pc_hash, &k); bpf_map_lookup_elem(&lru, &k);
	bpf_map_lookup_elem(&lpm_v4, &k4); bpf_map_lookup_elem(&lpm_v6, &k6);
	bpf_tail_call(ctx, &jumps, 0);
	if (bpf_redirect_map(&xsks, 0, 0) == XDP_REDIRECT && k == 1)
		return bpf_redirect_map(&cpus, 0, 0);
	return bpf_redirect_map(&devs, 1, XDP_PASS);
}

SEC("xdp")
int jump_target(struct xdp_md *ctx) { return XDP_DROP; }

char _license[] SEC("license") = "GPL";
"""


@pytest.fixture
def obj(tmp_path):
    src = tmp_path / "maps.bpf.c"
    src.write_text(MAPS_SRC)
    with xdpkit.Object.from_file(src) as o:
        yield o


def test_map_classes_by_type(obj):
    m = obj.maps
    assert isinstance(m["arr"], ArrayMap) and isinstance(m["pc_hash"], PerCpuHashMap)
    assert isinstance(m["pc_arr"], PerCpuArrayMap) and isinstance(m["lpm_v4"], LpmTrieMap)
    assert isinstance(m["devs"], DevMap) and isinstance(m["cpus"], CpuMap)
    assert isinstance(m["xsks"], XskMap) and isinstance(m["jumps"], ProgArray)


def test_hash_struct_keys_and_values(obj):
    flows = obj.maps["flows"]
    key = {"saddr": 0x0A000001, "port": 53, "proto": 17}
    flows[key] = {"packets": 3, "bytes": 180}
    got = flows[key]
    assert got.packets == 3 and got["bytes"] == 180
    assert key in flows and len(flows) == 1
    assert list(flows) == [{"saddr": 0x0A000001, "port": 53, "proto": 17, "flags": 0}]
    with pytest.raises(ConfigError, match="unknown field"):
        flows[{"sport": 1}] = {"packets": 1}
    with pytest.raises(ConfigError, match="bad key"):
        flows[{"port": 70000}] = {"packets": 1}
    del flows[key]
    assert key not in flows
    with pytest.raises(KeyError):
        del flows[key]
    with pytest.raises(KeyError):
        flows[key]


def test_noexist_flag(obj):
    lru = obj.maps["lru"]
    lru.set(1, 10, flags=xdpkit.maps.BPF_NOEXIST)
    with pytest.raises(KernelError, match="EEXIST"):
        lru.set(1, 11, flags=xdpkit.maps.BPF_NOEXIST)
    assert lru[1] == 10


def test_array_and_percpu_values_summed_after_runs(obj):
    arr = obj.maps["arr"]
    assert len(arr) == 8 and arr[3] == 0
    arr[3] = 42
    assert arr[3] == 42
    with pytest.raises(ConfigError, match="cannot be deleted"):
        del arr[3]
    with pytest.raises(KernelError, match="E2BIG|ENOENT|out of range"):
        arr[8] = 1
    prog = obj.programs["use_maps"]
    for _ in range(5):
        prog.run(udp4())
    per_cpu = obj.maps["pc_arr"][0]
    assert len(per_cpu) == possible_cpus() and per_cpu.sum() == 5
    pc = obj.maps["pc_hash"]
    pc[7] = {"packets": 2, "bytes": 100}  # one value written to every CPU
    vals = pc[7]
    assert vals.sum() == {"packets": 2 * possible_cpus(), "bytes": 100 * possible_cpus()}
    pc[8] = [{"packets": i} for i in range(possible_cpus())]
    assert [v.packets for v in pc[8]] == list(range(possible_cpus()))


def test_lpm_prefix_keys_v4_and_v6(obj):
    v4, v6 = obj.maps["lpm_v4"], obj.maps["lpm_v6"]
    v4["198.18.0.0/15"] = 1
    v4[ipaddress.ip_network("198.18.1.0/24")] = 2
    assert v4.lookup_address("198.18.1.7") == 2
    assert v4.lookup_address("198.19.0.1") == 1
    with pytest.raises(KeyError):
        v4.lookup_address("198.20.0.1")
    v6["2001:db8::/32"] = 6
    assert v6.lookup_address("2001:db8:1::2") == 6
    assert sorted(str(k) for k in v4) == ["198.18.0.0/15", "198.18.1.0/24"]
    with pytest.raises(ConfigError, match="not an IP prefix"):
        v4["198.18.0.0/40"] = 1


def test_batch_update_and_lookup_many_entries(obj):
    flows = obj.maps["flows"]
    items = [({"saddr": i, "port": i % 65536, "proto": 6}, {"packets": i, "bytes": 2 * i})
             for i in range(20000)]
    progress = []
    assert flows.update_batch(items, progress=lambda d, t: progress.append((d, t))) == 20000
    assert progress[-1] == (20000, 20000) and len(progress) > 1
    got = dict((k["saddr"], v.packets) for k, v in flows.items())
    assert len(got) == 20000 and got[12345] == 12345
    assert flows.delete_batch([k for k, _ in items[:5000]]) == 5000
    assert len(flows) == 15000


def test_batch_on_lpm_falls_back(obj):
    v4 = obj.maps["lpm_v4"]
    n = v4.update_batch([(f"198.18.{i}.0/24", i) for i in range(200)])
    assert n == 200 and len(v4.items()) == 200


def test_devmap_cpumap_xskmap_progarray(obj, netns):
    netns.veth("xa", "xb")
    devs = obj.maps["devs"]
    devs[1] = "xb"
    assert devs[1] == xdpkit._sys.netlink.ifindex_of("xb")
    with pytest.raises(xdpkit.NotFoundError):
        devs[2] = "nosuchif"
    cpus = obj.maps["cpus"]
    cpus[0] = 256
    assert cpus[0] == 256
    jumps = obj.maps["jumps"]
    target = obj.programs["jump_target"]
    jumps[0] = target
    assert jumps[0] == target.id
    assert obj.programs["use_maps"].run(udp4()).verdict == xdpkit.Verdict.XDP_DROP  # tail call taken
    del jumps[0]
    assert obj.programs["use_maps"].run(udp4()).verdict == xdpkit.Verdict.XDP_REDIRECT
    xsks = obj.maps["xsks"]
    assert len(xsks) == 4
    with pytest.raises(KernelError):
        xsks[0] = 0  # fd 0 is not an AF_XDP socket: the kernel says so


def test_reopen_by_id_and_pin(obj, tmp_path):
    from xdpkit.bpffs import pin_root

    arr = obj.maps["arr"]
    arr[1] = 99
    with open_map_by_id(arr.id) as again:
        assert again[1] == 99 and again.name == "arr"  # typed from the kernel's BTF
    path = f"{pin_root()}/test-map-{os.getpid()}"
    arr.pin(path)
    try:
        with open_pinned_map(path) as pinned:
            assert pinned[1] == 99
        with open_map(path) as m:
            assert m.id == arr.id
    finally:
        os.unlink(path)


def test_cli_maps_dump_get_set_delete(obj):
    xdpkit_cli = [sys.executable, "-m", "xdpkit", "maps"]
    mid = str(obj.maps["flows"].id)

    def cli(*a):
        return subprocess.run(xdpkit_cli + list(a), capture_output=True, text=True)

    key = '{"saddr": 1, "port": 80, "proto": 6}'
    assert cli("set", mid, key, '{"packets": 5, "bytes": 300}').returncode == 0
    dumped = json.loads(cli("dump", mid, "--json").stdout)
    assert dumped == [{"key": {"saddr": 1, "port": 80, "proto": 6, "flags": 0},
                       "value": {"packets": 5, "bytes": 300}}]
    assert json.loads(cli("get", mid, key, "--json").stdout)["value"]["packets"] == 5
    r = cli("set", mid, key, '{"pakets": 1}')
    assert r.returncode == 1 and "unknown field" in r.stderr and "Traceback" not in r.stderr
    assert cli("delete", mid, key).returncode == 0
    r = cli("get", mid, key)
    assert r.returncode == 1 and "not in map" in r.stderr
    pc = str(obj.maps["pc_arr"].id)
    obj.programs["use_maps"].run(udp4(), repeat=3)
    assert json.loads(cli("dump", pc, "--json").stdout)[0]["value"] == \
        [v for v in obj.maps["pc_arr"][0]]
    lpm = str(obj.maps["lpm_v4"].id)
    assert cli("set", lpm, "198.18.0.0/15", "7").returncode == 0
    assert json.loads(cli("dump", lpm, "--json").stdout) == [{"key": "198.18.0.0/15", "value": 7}]
    listed = json.loads(cli("list", "--json").stdout)
    assert any(m["id"] == int(lpm) and m["type"] == "lpm_trie" for m in listed)
    r = cli("dump", "no_such_map_x")
    assert r.returncode == 1 and "no BPF map named" in r.stderr
