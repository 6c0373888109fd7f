"""The kernel's facts, each in one place, and its object registry.

Every kernel constant and name limit xdpkit uses outside apps/ lives here (uapi names, so they
can be grepped against the kernel headers): XDP verdicts, map and program types, attach and
update flags, the 15-character object name limit, capabilities, ioctl numbers. The rest is the
object registry: BPF program and map ids, their info, and fds by id, which lets a later process
(or ``xdpkit status``) find an attached program and its maps from nothing but the program id,
without pins.
"""
from __future__ import annotations

import enum
import errno as E
import os
from dataclasses import dataclass, field

from xdpkit._sys.libbpf import ffi, require
from xdpkit.btf import KIND_TYPEDEF
from xdpkit.errors import ConfigError, KernelError, NotFoundError

# ---- names and limits -----------------------------------------------------------------------

#: Characters the kernel keeps of a program or map name (BPF_OBJ_NAME_LEN 16, less the NUL):
#: a map declared ``xdpkit_st_verdict`` is ``xdpkit_st_verdi`` in the kernel.
OBJ_NAME_LEN = 15
#: Interface names: IFNAMSIZ bytes with the NUL.
IFNAMSIZ = 16
#: BPF_PROG_TEST_RUN refuses XDP frames shorter than an Ethernet header (ETH_HLEN).
ETH_HLEN = 14


def kernel_name(name: str) -> str:
    """``name`` as the kernel keeps it for a program or map (its first OBJ_NAME_LEN characters)."""
    return name[:OBJ_NAME_LEN]


class Verdict(enum.IntEnum):
    """XDP return codes (enum xdp_action), named as in the kernel."""

    XDP_ABORTED = 0
    XDP_DROP = 1
    XDP_PASS = 2
    XDP_TX = 3
    XDP_REDIRECT = 4

    @classmethod
    def parse(cls, text: str) -> "Verdict":
        key = text.strip().upper()
        if not key.startswith("XDP_"):
            key = "XDP_" + key
        try:
            return cls[key]
        except KeyError:
            raise ConfigError(f"unknown verdict {text!r}; use one of {[v.name for v in cls]}") from None


#: Verdict names by value: the slot names of every per-verdict counter.
VERDICT_NAMES = tuple(v.name for v in Verdict)

# ---- flags ------------------------------------------------------------------------------------

# XDP attach flags (uapi if_link.h): IFLA_XDP_FLAGS, and the flags of an XDP BPF_LINK_CREATE.
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4

# Map update flags (BPF_MAP_UPDATE_ELEM and batch elem_flags).
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

#: BPF_PROG_TEST_RUN flag: XDP frames really go out (XDP_TX/REDIRECT), recycled between runs.
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1

#: enum bpf_link_type: BPF_LINK_TYPE_XDP.
BPF_LINK_TYPE_XDP = 6

#: enum bpf_stats_type: BPF_STATS_RUN_TIME (run_cnt, run_time_ns).
BPF_STATS_RUN_TIME = 0
#: The sysctl that keeps those statistics on for everyone.
BPF_STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"

#: Kernel-internal "operation not supported" (not in errno): what some BPF syscalls return.
ENOTSUPP = 524

#: statfs f_type of a bpffs.
BPF_FS_MAGIC = 0xCAFE4A11

# Capabilities (uapi capability.h) that BPF and XDP need.
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

# ethtool's ioctl: the driver name of an interface.
SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x00000003

# Instruction opcodes of the two-instruction probe program (r0 = imm; exit).
BPF_ALU64_MOV_K = 0x07 | 0xB0 | 0x00   # BPF_ALU64 | BPF_MOV | BPF_K
BPF_JMP_EXIT = 0x05 | 0x90             # BPF_JMP | BPF_EXIT


class _KernelEnum(enum.IntEnum):
    @classmethod
    def name_of(cls, value: int) -> str:
        """Lower-case kernel name, or type_N for values newer than this table."""
        try:
            return cls(value).name.lower()
        except ValueError:
            return f"type_{value}"


class MapType(_KernelEnum):
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33


class ProgType(_KernelEnum):
    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    TRACING = 26
    EXT = 28


#: enum bpf_attach_type: BPF_XDP.
BPF_XDP_ATTACH_TYPE = 37


class OwnedFd:
    """A file descriptor we opened and must close; ``close()`` is idempotent."""

    def __init__(self, fd: int):
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __int__(self):
        return self.fd


@dataclass
class ProgramInfo:
    id: int
    name: str
    type: int
    tag: str
    map_ids: list[int] = field(default_factory=list)
    btf_id: int = 0
    load_time_ns: int = 0
    run_cnt: int = 0
    run_time_ns: int = 0
    verified_insns: int = 0

    @property
    def type_name(self) -> str:
        return ProgType.name_of(self.type)


@dataclass
class MapInfo:
    id: int
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    btf_id: int = 0
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0

    @property
    def type_name(self) -> str:
        return MapType.name_of(self.type)


def _cstr(arr) -> str:
    return ffi.string(arr).decode(errors="replace")


def program_info(fd: int) -> ProgramInfo:
    lib = require()
    info = ffi.new("struct bpf_prog_info *")
    size = ffi.new("uint32_t *", ffi.sizeof("struct bpf_prog_info"))
    ret = lib.bpf_obj_get_info_by_fd(fd, info, size)
    if ret < 0:
        raise KernelError("BPF_OBJ_GET_INFO_BY_FD", -ret, "reading program info")
    nmaps = info.nr_map_ids
    map_ids: list[int] = []
    if nmaps:
        ids = ffi.new("uint32_t[]", nmaps)
        info2 = ffi.new("struct bpf_prog_info *")
        info2.nr_map_ids = nmaps
        info2.map_ids = int(ffi.cast("uintptr_t", ids))
        size[0] = ffi.sizeof("struct bpf_prog_info")
        ret = lib.bpf_obj_get_info_by_fd(fd, info2, size)
        if ret < 0:
            raise KernelError("BPF_OBJ_GET_INFO_BY_FD", -ret, "reading program map ids")
        map_ids = [ids[i] for i in range(min(nmaps, info2.nr_map_ids))]
    name = _cstr(info.name)
    if len(name) == OBJ_NAME_LEN and info.btf_id and info.nr_func_info:
        name = _full_name_from_btf(fd, info) or name
    return ProgramInfo(
        id=info.id, name=name, type=info.type,
        tag=bytes(ffi.buffer(info.tag, 8)).hex(), map_ids=map_ids, btf_id=info.btf_id,
        load_time_ns=info.load_time, run_cnt=info.run_cnt, run_time_ns=info.run_time_ns,
        verified_insns=info.verified_insns)


def _full_name_from_btf(fd: int, info) -> str | None:
    """The kernel keeps OBJ_NAME_LEN (15) characters of a program name; its BTF keeps the whole function name
    (bpftool shows that one, so we do too)."""
    lib = require()
    rec = info.func_info_rec_size or 8
    buf = ffi.new("uint32_t[]", (rec // 4) * info.nr_func_info)
    q = ffi.new("struct bpf_prog_info *")
    q.nr_func_info = info.nr_func_info
    q.func_info_rec_size = rec
    q.func_info = int(ffi.cast("uintptr_t", buf))
    size = ffi.new("uint32_t *", ffi.sizeof("struct bpf_prog_info"))
    if lib.bpf_obj_get_info_by_fd(fd, q, size) < 0:
        return None
    btf = lib.btf__load_from_kernel_by_id(info.btf_id)
    if btf == ffi.NULL:
        return None
    try:
        t = lib.btf__type_by_id(btf, buf[1])  # first record: {insn_off 0, type_id}
        if t == ffi.NULL:
            return None
        return ffi.string(lib.btf__name_by_offset(btf, t.name_off)).decode() or None
    finally:
        lib.btf__free(btf)


def map_info(fd: int) -> MapInfo:
    lib = require()
    info = ffi.new("struct bpf_map_info *")
    size = ffi.new("uint32_t *", ffi.sizeof("struct bpf_map_info"))
    ret = lib.bpf_obj_get_info_by_fd(fd, info, size)
    if ret < 0:
        raise KernelError("BPF_OBJ_GET_INFO_BY_FD", -ret, "reading map info")
    return MapInfo(id=info.id, name=_cstr(info.name), type=info.type, key_size=info.key_size,
                   value_size=info.value_size, max_entries=info.max_entries, flags=info.map_flags,
                   btf_id=info.btf_id, btf_key_type_id=info.btf_key_type_id,
                   btf_value_type_id=info.btf_value_type_id)


def _iter_ids(getter, what: str) -> list[int]:
    out = []
    cur = ffi.new("uint32_t *", 0)
    start = 0
    while True:
        ret = getter(start, cur)
        if ret < 0:
            if -ret == E.ENOENT:
                return out  # no more ids
            # EPERM for an unprivileged caller: "no maps" would be a lie
            raise KernelError(f"BPF_{what}_GET_NEXT_ID", -ret, f"listing {what.lower()}s",
                              hint="run as root (listing BPF objects needs CAP_SYS_ADMIN)"
                              if -ret in (E.EPERM, E.EACCES) else None)
        out.append(cur[0])
        start = cur[0]


def _check_id(kind: str, object_id: int) -> None:
    if not 0 < object_id <= 0xFFFFFFFF:
        raise NotFoundError(f"no BPF {kind} with id {object_id} (ids are 1..4294967295)")


def program_ids() -> list[int]:
    return _iter_ids(require().bpf_prog_get_next_id, "PROG")


def map_ids() -> list[int]:
    return _iter_ids(require().bpf_map_get_next_id, "MAP")


def link_ids() -> list[int]:
    return _iter_ids(require().bpf_link_get_next_id, "LINK")


def program_fd_by_id(prog_id: int) -> OwnedFd:
    _check_id("program", prog_id)
    fd = require().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        if -fd == E.ENOENT:
            raise NotFoundError(f"no BPF program with id {prog_id}")
        raise KernelError("BPF_PROG_GET_FD_BY_ID", -fd, f"program {prog_id}")
    return OwnedFd(fd)


def map_fd_by_id(map_id: int) -> OwnedFd:
    _check_id("map", map_id)
    fd = require().bpf_map_get_fd_by_id(map_id)
    if fd < 0:
        if -fd == E.ENOENT:
            raise NotFoundError(f"no BPF map with id {map_id}")
        raise KernelError("BPF_MAP_GET_FD_BY_ID", -fd, f"map {map_id}")
    return OwnedFd(fd)


def program_info_by_id(prog_id: int) -> ProgramInfo:
    with program_fd_by_id(prog_id) as fd:
        return program_info(fd.fd)


def map_info_by_id(map_id: int) -> MapInfo:
    with map_fd_by_id(map_id) as fd:
        return map_info(fd.fd)


def obj_get(path: str) -> OwnedFd:
    """Open a pinned BPF object (map, program or link) by its bpffs path."""
    fd = require().bpf_obj_get(os.fsencode(path))
    if fd < 0:
        if -fd == E.ENOENT:
            raise NotFoundError(f"nothing pinned at {path}")
        raise KernelError("BPF_OBJ_GET", -fd, path)
    return OwnedFd(fd)


def obj_pin(fd: int, path: str) -> None:
    ret = require().bpf_obj_pin(fd, os.fsencode(path))
    if ret < 0:
        hint = None
        if -ret in (E.EPERM, E.EINVAL):
            hint = "the path must be inside a mounted bpffs (xdpkit doctor shows where)"
        raise KernelError("BPF_OBJ_PIN", -ret, path, hint=hint)


def possible_cpus() -> int:
    n = require().libbpf_num_possible_cpus()
    if n <= 0:
        raise KernelError("libbpf_num_possible_cpus", -n if n < 0 else E.EINVAL)
    return n


def bind_map(prog_fd: int, map_fd: int) -> None:
    """Tie a map to a program (BPF_PROG_BIND_MAP) so it lives as long as the program and shows
    in its map ids, even if the program's code never touches it."""
    ret = require().bpf_prog_bind_map(prog_fd, map_fd, ffi.NULL)
    if ret < 0:
        raise KernelError("BPF_PROG_BIND_MAP", -ret)


# ---- tracing and statistics switches (the observe layer's needs) ------------------------------


def raw_tracepoint_open(prog_fd: int) -> OwnedFd:
    """Attach a tp_btf/raw tracepoint program at the tracepoint its BTF names; closing the fd
    detaches it."""
    fd = require().bpf_raw_tracepoint_open(ffi.NULL, prog_fd)
    if fd < 0:
        raise KernelError("BPF_RAW_TRACEPOINT_OPEN", -fd, "attaching a tracepoint program")
    return OwnedFd(fd)


def enable_run_time_stats() -> OwnedFd:
    """Kernel BPF run-time statistics (run_cnt, run_time_ns) on while the fd stays open."""
    fd = require().bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        raise KernelError("BPF_ENABLE_STATS", -fd, "enabling kernel BPF statistics",
                          hint="needs root (CAP_SYS_ADMIN); or: sysctl -w kernel.bpf_stats_enabled=1")
    return OwnedFd(fd)


def vmlinux_has_tracepoint(event: str) -> bool:
    """Whether the running kernel's BTF declares tracepoint ``event`` (its btf_trace_ typedef)."""
    lib = require()
    btf = lib.btf__load_vmlinux_btf()
    if btf == ffi.NULL:
        return False
    try:
        return lib.btf__find_by_name_kind(btf, f"btf_trace_{event}".encode(), KIND_TYPEDEF) > 0
    finally:
        lib.btf__free(btf)


def bpf_usable() -> str | None:
    """Why the bpf() syscall cannot be used here (libbpf missing, not permitted), or None."""
    try:
        program_ids()
    except KernelError as exc:
        return f"the bpf() syscall is not usable here: {os.strerror(exc.errno)}"
    except Exception as exc:  # libbpf missing or unloadable
        return f"libbpf unavailable: {exc}"
    return None
