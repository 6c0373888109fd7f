"""The pytest plugin's fixtures and leak checker, against the real kernel."""
import os
import secrets
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from xdpkit._sys import netns as nsmod
from xdpkit.testing import check_leaks, snapshot

pytestmark = pytest.mark.kernel

HOST_NS = nsmod.current_id()  # collection runs in the namespace pytest started in


def test_netns_fixture_runs_the_test_inside(netns):
    assert netns.name.startswith("xdpkt-") and netns.name in nsmod.list_namespaces()
    assert nsmod.current_id() != HOST_NS
    a, b = netns.veth("xk0", "xk1")
    assert socket.if_nametoindex("xk0") == a and socket.if_nametoindex("xk1") == b
    # A child process forked from this thread is in the namespace too.
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert {ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines()} == {"lo", "xk0", "xk1"}
    assert ",UP," in netns.run(["ip", "link", "show", "lo"]).stdout  # lo is up (operstate UNKNOWN)


def test_make_netns_and_veth_across_namespaces(make_netns):
    one, two = make_netns(), make_netns()
    assert one.name != two.name
    ia, ib = one.veth("xka", "xkb", peer_ns=two.name)
    with pytest.raises(OSError):
        socket.if_nametoindex("xka")  # not here in the host namespace
    with one.inside():
        assert socket.if_nametoindex("xka") == ia
    with two.inside():
        assert socket.if_nametoindex("xkb") == ib
    assert "generic-receive-offload: on" in two.run(["ethtool", "-k", "xkb"]).stdout


def test_fixture_namespace_and_interfaces_are_gone_afterwards(tmp_path):
    """Run a real inner test that uses `netns`, then look from the host namespace."""
    ifname = "xki" + secrets.token_hex(3)
    record = tmp_path / "ns.txt"
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(f"""
        import socket, pytest
        pytestmark = pytest.mark.kernel
        def test_inner(netns):
            netns.veth({ifname!r}, {ifname + 'p'!r})
            assert socket.if_nametoindex({ifname!r}) > 0
            open({str(record)!r}, "w").write(netns.name)
    """))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    inner_ns = record.read_text()
    assert inner_ns.startswith("xdpkt-")
    assert inner_ns not in nsmod.list_namespaces()
    with pytest.raises(OSError):
        socket.if_nametoindex(ifname)


def test_leak_checker_sees_a_leaked_netns():
    before = snapshot()
    name = "xdpkt-leak-" + secrets.token_hex(3)
    nsmod.create(name)
    try:
        leaks = check_leaks(before, timeout=0.2)
        assert f"network namespace {name!r}" in leaks
    finally:
        nsmod.remove(name)
    assert not [x for x in check_leaks(before) if name in x]


def test_leak_checker_sees_a_leaked_fd():
    before = snapshot()
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        leaks = check_leaks(before, timeout=0.1)
        assert any("file descriptor" in x and "/dev/null" in x for x in leaks), leaks
    finally:
        os.close(fd)
    assert not [x for x in check_leaks(before) if "file descriptor" in x]


def test_leak_checker_sees_a_pin_and_an_xdp_program():
    from xdpkit import bpffs, kernel
    from xdpkit._sys.libbpf import ffi, require

    lib = require()
    # r0 = XDP_PASS; exit  (struct bpf_insn: code, dst|src<<4, off, imm)
    insns = bytes([0xB7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
    before = snapshot()
    fd = lib.bpf_prog_load(kernel.ProgType.XDP, b"xdpkt_leak", b"GPL", insns, 2, ffi.NULL)
    assert fd >= 0, os.strerror(-fd)
    pin = os.path.join(bpffs.pin_root(), "leak-" + secrets.token_hex(3))
    try:
        kernel.obj_pin(fd, pin)
        leaks = check_leaks(before, timeout=0.1)
        assert f"pinned file {pin}" in leaks
        assert any(x.startswith("XDP program id") and "xdpkt_leak" in x for x in leaks), leaks
    finally:
        if os.path.exists(pin):
            os.unlink(pin)
        os.close(fd)
    # Only our own items: other processes on the machine may load programs meanwhile.
    assert not [x for x in check_leaks(before) if "xdpkt_leak" in x or pin in x]


def test_leak_checker_ignores_namespaces_of_other_live_processes():
    """Concurrent sessions on one machine: their claimed or occupied namespaces are not our leaks."""
    from xdpkit.testing import plugin

    before = snapshot()
    claimed, occupied = ("xdpkt-other-" + secrets.token_hex(3) for _ in range(2))
    sleeper = None
    nsmod.create(claimed)
    nsmod.create(occupied)
    os.makedirs(plugin.CLAIMS_DIR, exist_ok=True)
    claim_file = os.path.join(plugin.CLAIMS_DIR, "1")  # pid 1 is alive and is not us
    try:
        with open(claim_file, "a") as f:
            f.write(claimed + "\n")
        sleeper = subprocess.Popen(["ip", "netns", "exec", occupied, "sleep", "30"])
        deadline = time.monotonic() + 5
        while occupied not in plugin._netns_occupied_by_others({occupied}):
            assert time.monotonic() < deadline, "sleeper never entered the namespace"
            time.sleep(0.02)
        assert not [x for x in check_leaks(before, timeout=0.1) if claimed in x or occupied in x]
        sleeper.kill()
        sleeper.wait(5)
        leaks = check_leaks(before, timeout=0.1)
        assert f"network namespace {occupied!r}" in leaks  # nobody in it any more: a leak
    finally:
        if sleeper and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(5)
        os.unlink(claim_file)
        nsmod.remove(claimed)
        nsmod.remove(occupied)
