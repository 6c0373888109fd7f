"""Doctor helpers that need no root: Check, CapEff parsing, version comparison, mounts."""
import struct

from xdpkit import features
from xdpkit.features import (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, Check, clang_major,
                             fstype_at, has_cap, parse_capeff, parse_version, version_at_least)

ROOT_STATUS = "Name:\tpython\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n"
# docker-like default set: no SYS_ADMIN, no BPF, no NET_ADMIN
DOCKER_STATUS = "CapEff:\t00000000a80425fb\n"
# CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN only
MINIMAL = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN)


def test_check_to_dict():
    c = Check("jit", "warn", "JIT disabled", "sysctl -w net.core.bpf_jit_enable=1")
    assert c.to_dict() == {"name": "jit", "status": "warn", "detail": "JIT disabled",
                           "fix": "sysctl -w net.core.bpf_jit_enable=1"}
    assert Check("btf", "ok", "present").to_dict()["fix"] is None


def test_parse_capeff():
    root = parse_capeff(ROOT_STATUS)
    assert all(has_cap(root, c) for c in (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF))
    docker = parse_capeff(DOCKER_STATUS)
    assert docker == 0xA80425FB
    assert not has_cap(docker, CAP_SYS_ADMIN) and not has_cap(docker, CAP_BPF)
    assert not has_cap(docker, CAP_NET_ADMIN)
    assert parse_capeff("Name:\tx\n") == 0


def test_caps_check_statuses():
    assert features._check_caps(parse_capeff(ROOT_STATUS)).status == "ok"
    bad = features._check_caps(parse_capeff(DOCKER_STATUS))
    assert bad.status == "fail" and bad.fix and "root" in bad.fix
    assert features._check_caps(MINIMAL).status == "ok"
    no_net = features._check_caps(1 << CAP_BPF | 1 << CAP_PERFMON)
    assert no_net.status == "warn" and "CAP_NET_ADMIN" in no_net.detail and no_net.fix


def test_versions():
    assert parse_version("6.18.44-fc-v782") == (6, 18, 44)
    assert parse_version("5.10.0-21-amd64") == (5, 10, 0)
    assert parse_version("4.9") == (4, 9)
    assert parse_version("garbage") == ()
    assert version_at_least((5, 10, 0), (5, 10))
    assert version_at_least((6, 1), (5, 10))
    assert not version_at_least((5, 4, 250), (5, 10))
    assert not version_at_least((4, 17, 99), (4, 18))
    assert version_at_least((1, 1), (1, 0)) and not version_at_least((0, 8), (1, 0))
    assert not version_at_least((), (4, 18))


def test_kernel_check_thresholds(monkeypatch):
    for release, status in [("6.18.0", "ok"), ("5.10.0-21-amd64", "ok"), ("5.4.0", "warn"),
                            ("4.18.0-513.el8", "warn"), ("4.14.1", "fail")]:
        monkeypatch.setattr(features.platform, "release", lambda r=release: r)
        c = features._check_kernel()
        assert c.status == status, release
        assert (c.fix is None) == (status == "ok")


def test_clang_major():
    assert clang_major("Debian clang version 14.0.6") == 14
    assert clang_major("clang version 19.1.7 (https://github.com/llvm/llvm-project ...)") == 19
    assert clang_major("Apple LLVM") is None


def test_fstype_at_last_mount_wins():
    mounts = ("sysfs /sys sysfs rw 0 0\n"
              "sysfs /sys/fs/bpf sysfs rw 0 0\n"
              "bpf /sys/fs/bpf bpf rw,mode=700 0 0\n")
    assert fstype_at(mounts, "/sys/fs/bpf") == "bpf"
    assert fstype_at("sysfs /sys sysfs rw 0 0\n", "/sys/fs/bpf") is None
    assert features._check_bpffs(mounts).status == "ok"
    c = features._check_bpffs("sysfs /sys sysfs rw 0 0\n")
    assert c.status == "warn" and c.fix == "mount -t bpf bpf /sys/fs/bpf"
    assert "ip netns exec" in c.detail and "/run/xdpkit/bpffs" in c.detail


def test_tracefs_check_mounted():
    c = features._check_tracefs("tracefs /sys/kernel/tracing tracefs rw 0 0\n", 0)
    assert c.status == "ok"
    c = features._check_tracefs("sysfs /sys sysfs rw 0 0\n", 1 << CAP_SYS_ADMIN)
    assert c.status == "warn" and "mount -t tracefs tracefs /sys/kernel/tracing" in c.fix


def test_jit_check(monkeypatch):
    for val, status in [("1\n", "ok"), ("0\n", "warn"), ("2\n", "warn")]:
        monkeypatch.setattr(features, "_read", lambda p, v=val: v)
        c = features._check_jit()
        assert c.status == status
        if status != "ok":
            assert "sysctl -w net.core.bpf_jit_enable=1" in c.fix


def test_xdp_pass_bytecode():
    insns = features.xdp_pass_insns()
    assert len(insns) == 16
    code0, regs0, off0, imm0 = struct.unpack("=BBhi", insns[:8])
    assert (code0, regs0, off0, imm0) == (0xB7, 0, 0, 2)  # r0 = 2 (XDP_PASS)
    assert insns[8] == 0x95  # exit


def test_native_driver_list():
    for drv in ("veth", "virtio_net", "mlx5_core", "i40e", "ice", "ixgbe", "bnxt_en", "ena", "tun"):
        assert drv in features.NATIVE_XDP_DRIVERS
    assert "ifb" not in features.NATIVE_XDP_DRIVERS
