"""The virtual lab, built for real: routing across the dut, idempotence, teardown, raw frames."""
import os
import secrets
import socket
import time

import pytest

from xdpkit._sys import netns
from xdpkit.lab import Lab, send_frames

pytestmark = pytest.mark.kernel

ETH_P_EXPERIMENTAL = 0x88B5  # IEEE 802 local experimental ethertype: no stack reacts to it


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def test_ping_ipv4_across_the_dut(lab):
    r = lab.run("src", ["ping", "-c1", "-W1", lab.addresses.dst_ip4], timeout=5)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ttl=63" in r.stdout  # one hop: forwarded by the dut, not answered by it


def test_ping_ipv6_across_the_dut(lab):
    # DAD is off, so this works right after up() without waiting for addresses to settle.
    r = lab.run("src", ["ping", "-6", "-c1", "-W1", lab.addresses.dst_ip6], timeout=5)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ttl=63" in r.stdout  # IPv6 prints hop limit as ttl too


def test_status_describes_the_topology(lab):
    st = lab.status()
    assert st["name"] == lab.name and st["exists"] and st["complete"]
    assert [n["name"] for n in st["namespaces"]] == [lab.src, lab.dut, lab.dst]
    by_ns = {n["name"]: {i["ifname"]: i for i in n["interfaces"]} for n in st["namespaces"]}
    assert set(by_ns[lab.dut]) == {"lo", "in0", "out0"}
    a = lab.addresses
    assert by_ns[lab.src]["eth0"]["mac"] == a.src_mac
    assert f"{a.dut_out_ip6}/64" in by_ns[lab.dut]["out0"]["addresses"]
    assert f"{a.dst_ip4}/24" in by_ns[lab.dst]["eth0"]["addresses"]
    assert by_ns[lab.dst]["eth0"]["xdp"] == []
    assert by_ns[lab.dut]["in0"]["ifindex"] > 1


def test_up_is_idempotent(lab):
    before = lab.status()
    assert lab.up()["action"] == "unchanged"
    assert lab.status() == before  # same ifindexes, same MACs: nothing was recreated


def test_lab_runs_forwarding_and_gro(lab):
    assert lab.run("dut", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert lab.run("dut", ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "1"
    for role, ifname in (("src", "eth0"), ("dut", "in0"), ("dut", "out0"), ("dst", "eth0")):
        out = lab.run(role, ["ethtool", "-k", ifname]).stdout
        assert "generic-receive-offload: on" in out, (role, ifname)


def test_up_repairs_then_down_removes_everything():
    lab = Lab("r" + secrets.token_hex(3))
    try:
        assert lab.up()["action"] == "created"
        netns.remove(lab.dst)  # half-built: dst and its veth gone
        assert lab.exists() and lab.problems()
        result = lab.up()
        assert result["action"] == "rebuilt" and result["repaired"]
        assert lab.problems() == []
        assert lab.run("src", ["ping", "-c1", "-W1", lab.addresses.dst_ip4], timeout=5).returncode == 0
    finally:
        removed = lab.down()
    assert removed == [lab.src, lab.dut, lab.dst]
    assert lab.down() == []
    assert not lab.exists()
    assert not set(lab.namespaces) & set(netns.list_namespaces())
    assert lab.status() == {"name": lab.name, "exists": False, "complete": False, "namespaces": []}


def test_send_frames_reaches_the_peer(lab):
    marker = os.urandom(16)
    a = lab.addresses
    frame = _mac(a.dut_in_mac) + _mac(a.src_mac) + ETH_P_EXPERIMENTAL.to_bytes(2, "big") + marker + bytes(30)
    with netns.inside(lab.dut):
        rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_EXPERIMENTAL))
    with rx:
        rx.bind(("in0", 0))
        rx.settimeout(0.5)
        assert send_frames(lab.src, "eth0", [frame, frame]) == 2
        seen = 0
        deadline = time.monotonic() + 3
        while seen < 2 and time.monotonic() < deadline:
            try:
                data = rx.recv(2048)
            except socket.timeout:
                continue
            if marker in data:
                assert data[:14] == frame[:14]
                seen += 1
        assert seen == 2


def test_send_frames_rejects_runts_and_unknown_interfaces(lab):
    from xdpkit.errors import ConfigError, NotFoundError

    with pytest.raises(ConfigError):
        send_frames(lab.src, "eth0", [b"\x00" * 13])
    with pytest.raises(NotFoundError):
        send_frames(lab.src, "nosuch0", [b"\x00" * 60])
