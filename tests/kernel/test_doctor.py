"""The doctor on this machine, and per-interface checks on veths inside a test namespace."""
import os
import subprocess
import uuid

import pytest

from xdpkit import features
from xdpkit._sys import netlink, netns
from xdpkit.kernel import XDP_FLAGS_SKB_MODE

pytestmark = pytest.mark.kernel

if os.geteuid() != 0:
    if os.environ.get("CI") == "true":
        raise RuntimeError("kernel tests must run as root under CI=true")
    pytest.skip("needs root and a BPF-capable kernel", allow_module_level=True)


@pytest.fixture
def veth_ns():
    """A fresh netns holding a veth pair vd0 <-> vd1 (both up); removed afterwards."""
    from pyroute2 import IPRoute

    name = f"xdpkit-doc-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        with netns.inside(name):
            with IPRoute() as ipr:
                ipr.link("add", ifname="vd0", kind="veth", peer="vd1")
                for ifname in ("vd0", "vd1"):
                    ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
        yield name
    finally:
        netns.remove(name)
    assert name not in netns.list_namespaces()


def _by_name(checks):
    return {c.name: c for c in checks}


def _ip_link(ns: str, ifname: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-d", "link", "show", "dev", ifname],
                          capture_output=True, text=True, check=True).stdout


def test_machine_checks():
    checks = features.run_checks(ifaces=[])
    by = _by_name(checks)
    for name in ("kernel", "libbpf", "bpf syscall", "jit", "btf", "capabilities", "test_run", "live_frames"):
        assert by[name].status == "ok", by[name]
    for c in checks:
        assert c.status in ("ok", "warn", "fail")
        if c.status != "ok":
            assert c.fix, c
    assert not any(c.name.endswith(": driver") for c in checks)  # ifaces=[] means none


def test_veth_native_known(veth_ns):
    with netns.inside(veth_ns):
        checks = features.run_checks()  # default: every interface but lo
    by = _by_name(checks)
    assert "lo: driver" not in by
    assert by["vd0: driver"].detail == "veth"
    assert by["vd0: native"].status == "ok"
    assert by["vd0: native"].detail == "native: yes (driver veth)"
    assert by["vd1: xdp"].detail == "no XDP program attached"
    # net.core.bpf_jit_enable exists only in the initial netns: the doctor must still say "ok"
    assert by["jit"].status == "ok", by["jit"]


def test_doctor_under_ip_netns_exec(veth_ns):
    """`ip netns exec` gives a fresh /sys and a netns without the JIT sysctl."""
    import json
    import sys

    code = ("import json; from xdpkit import features; "
            "print(json.dumps([c.to_dict() for c in features.run_checks()]))")
    proc = subprocess.run(["ip", "netns", "exec", veth_ns, sys.executable, "-c", code],
                          capture_output=True, text=True, check=True, timeout=60)
    by = {c["name"]: c for c in json.loads(proc.stdout)}
    for name in ("bpf syscall", "jit", "btf", "test_run"):
        assert by[name]["status"] == "ok", by[name]
    assert by["vd0: native"]["detail"] == "native: yes (driver veth)"
    if by["bpffs"]["status"] != "ok":
        assert by["bpffs"]["fix"] == "mount -t bpf bpf /sys/fs/bpf"
        assert "/run/xdpkit/bpffs" in by["bpffs"]["detail"]


def test_probe_leaves_nothing_attached(veth_ns):
    with netns.inside(veth_ns):
        checks = features.run_checks(["vd0"], probe=True)
        links = {ln.ifname: ln for ln in netlink.list_links()}
    c = _by_name(checks)["vd0: native"]
    assert c.status == "ok" and "probed" in c.detail, c
    assert "vd1: driver" not in _by_name(checks)
    assert links["vd0"].drv_prog_id == 0 and links["vd0"].skb_prog_id == 0
    out = _ip_link(veth_ns, "vd0")
    assert "prog/xdp" not in out and " xdp" not in out, out


def test_probe_skips_interface_with_program(veth_ns):
    fd = features.load_pass_program()
    try:
        with netns.inside(veth_ns):
            idx = netlink.ifindex_of("vd0")
            netlink.set_xdp(idx, fd, XDP_FLAGS_SKB_MODE)
            try:
                by = _by_name(features.run_checks(["vd0"], probe=True))
                after = netlink.get_link(idx)
            finally:
                netlink.set_xdp(idx, -1, XDP_FLAGS_SKB_MODE)
    finally:
        os.close(fd)
    assert after.skb_prog_id != 0  # our generic program was not touched
    assert "generic" in by["vd0: xdp"].detail and str(after.skb_prog_id) in by["vd0: xdp"].detail
    assert "not probed" in by["vd0: native"].detail
    assert "xdpgeneric" not in _ip_link(veth_ns, "vd0")


def test_unknown_interface_fails_with_fix(veth_ns):
    with netns.inside(veth_ns):
        checks = features.run_checks(["nope0"])
    c = _by_name(checks)["nope0: interface"]
    assert c.status == "fail" and c.fix


def test_tracepoint_exists():
    assert features.tracepoint_exists("xdp", "xdp_exception")
    assert not features.tracepoint_exists("xdp", "no_such_tracepoint_xyz")
    assert not features.tracepoint_exists("..", "xdp")
