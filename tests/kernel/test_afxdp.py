"""AF_XDP sockets for real on veth pairs: exact frames in, frames out, in-place echo, steering
that leaves other traffic to the stack, clear errors, and nothing left after many sockets."""
import os
import socket
import threading
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from xdpkit.afxdp import Steer, XskSocket
from xdpkit.errors import ConfigError, KernelError, NotSupportedError
from xdpkit.lab import send_frames
from xdpkit.xdp import query

from tests.capture import Capture

pytestmark = pytest.mark.kernel

A_MAC, B_MAC = "02:58:44:00:0a:01", "02:58:44:00:0a:02"
A_IP, B_IP = "198.18.10.1", "198.18.10.2"


class Pair:
    def __init__(self, ns, peer):
        self.ns, self.peer = ns, peer

    def send(self, frames: list[bytes]) -> None:
        """Raw frames out of xb, in the peer namespace."""
        send_frames(self.peer.name, "xb", frames)


@pytest.fixture
def pair(make_netns):
    """xa (where the socket binds; the test runs in its namespace) and xb, its peer, in another
    namespace; both without IPv6 (router solicitations and MLD reports would be frames nobody
    sent)."""
    ns, peer = make_netns(ipv6=False), make_netns(ipv6=False)
    with ns.inside():
        ns.veth("xa", "xb", peer_ns=peer.name)
    ns.run(["ip", "link", "set", "xa", "address", A_MAC], check=True)
    ns.run(["ip", "addr", "add", f"{A_IP}/24", "dev", "xa"], check=True)
    peer.run(["ip", "link", "set", "xb", "address", B_MAC], check=True)
    peer.run(["ip", "addr", "add", f"{B_IP}/24", "dev", "xb"], check=True)
    with ns.inside():
        yield Pair(ns, peer)


def udp(i: int, dport: int = 9000, size: int = 10) -> bytes:
    return bytes(Ether(src=B_MAC, dst=A_MAC) / IP(src=B_IP, dst=A_IP) / UDP(sport=1000 + i, dport=dport)
                 / (bytes([i % 256]) * size))


def receive(xsk: XskSocket, want: int, timeout: float = 3.0) -> list[bytes]:
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = xsk.recv(64)
        got += [bytes(f) for f in batch]
        xsk.recycle(batch)
        if not batch.n:
            time.sleep(0.001)
    return got


def test_frames_arrive_exactly_and_in_order(pair):
    frames = [udp(i, size=10 + i) for i in range(300)]
    with XskSocket("xa") as xsk:
        assert not xsk.zerocopy                       # veth: copy mode (auto fell back)
        pair.send(frames)
        got = receive(xsk, len(frames))
        assert got == frames
        assert xsk.steering() == {"to_socket": 300, "no_match": 0, "no_socket": 0}
        st = xsk.statistics()
        assert st["rx_dropped"] == 0 and st["rx_ring_full"] == 0


def test_the_fill_ring_is_refilled_so_more_frames_than_the_ring_arrive(pair):
    with XskSocket("xa", ring_size=64, frames=128) as xsk:
        frames = [udp(i) for i in range(1000)]
        for k in range(0, 1000, 50):                  # bursts below the ring size
            pair.send(frames[k:k + 50])
            assert receive(xsk, 50) == frames[k:k + 50]


def test_sent_frames_reach_the_peer(pair):
    out = [bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src=A_IP, dst=B_IP) / UDP(sport=7, dport=7000 + i) / b"tx!")
           for i in range(50)]
    with pair.peer.inside():
        cap = Capture("xb")
    try:
        with XskSocket("xa", steer=None) as xsk:
            assert xsk.send(out) == 50
            deadline = time.monotonic() + 2
            done = 0
            while done < 50 and time.monotonic() < deadline:
                done += xsk.complete()       # kicks the kernel again: copy mode sends 32 a kick
            assert done == 50
            got = cap.frames(lambda d: d[:6] == bytes.fromhex(B_MAC.replace(":", "")) and b"tx!" in d, 50)
    finally:
        cap.close()
    assert [g[:len(out[0])] for g in got] == out


def test_echo_swaps_and_sends_back_in_place(pair):
    with pair.peer.inside():
        cap = Capture("xb")
    try:
        with XskSocket("xa") as xsk:
            frames = [udp(i) for i in range(20)]
            pair.send(frames)
            echoed, deadline = 0, time.monotonic() + 3
            while echoed < 20 and time.monotonic() < deadline:
                batch = xsk.recv(64)
                for f in batch:                      # swap MACs in the UMEM, no copy
                    dst = bytes(f[0:6])
                    f[0:6] = f[6:12]
                    f[6:12] = dst
                echoed += xsk.forward(batch)
            assert echoed == 20
            back = cap.frames(lambda d: d[:6] == bytes.fromhex(B_MAC.replace(":", "")) and d[6:12] ==
                              bytes.fromhex(A_MAC.replace(":", "")), 20)
            deadline = time.monotonic() + 2
            while xsk.fill_ring.free() and time.monotonic() < deadline:   # every frame came back to fill
                xsk.complete()
            assert xsk.fill_ring.free() == 0
    finally:
        cap.close()
    assert sorted(b[12:] for b in back) == sorted(f[12:] for f in frames)


def test_steering_leaves_tcp_to_the_stack_while_udp_goes_to_the_socket(pair):
    server = socket.create_server((A_IP, 7100))
    replies = []

    def serve():
        server.settimeout(5)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            while data := conn.recv(100):
                conn.sendall(data.upper())
                replies.append(data)

    t = threading.Thread(target=serve)
    t.start()
    try:
        with XskSocket("xa", steer=Steer(proto="udp", port=9000)) as xsk:
            with pair.peer.inside():
                c = socket.create_connection((A_IP, 7100), timeout=5)
            with c:
                for i in range(5):
                    c.sendall(b"hello")
                    assert c.recv(100) == b"HELLO"
                    pair.send([udp(i, dport=9000), udp(i, dport=9001)])
            got = receive(xsk, 5)
            assert got == [udp(i, dport=9000) for i in range(5)]
            assert receive(xsk, 1, timeout=0.3) == []       # port 9001 went to the stack
            assert xsk.steering()["to_socket"] == 5 and xsk.steering()["no_match"] >= 10
    finally:
        t.join(10)
        server.close()


@pytest.mark.parametrize("kwargs, error, words", [
    ({"queue": 5}, ConfigError, r"xa has 1 receive queue \(0\.\.0\); there is no queue 5"),
    ({"frame_size": 3000}, ConfigError, "must be a power of two"),
    ({"ring_size": 100}, ConfigError, "must be a power of two"),
    ({"frames": 100}, ConfigError, "use at least"),
    ({"mode": "zerocopy"}, NotSupportedError, "zero-copy AF_XDP on xa"),
    ({"mode": "fast"}, ConfigError, "unknown mode"),
])
def test_bad_settings_are_one_clear_error_and_leave_nothing(pair, kwargs, error, words):
    with pytest.raises(error, match=words):
        XskSocket("xa", **kwargs)
    assert query("xa") == []


def test_a_busy_queue_says_so_and_names_the_program_feeding_it(pair):
    with XskSocket("xa"):
        with pytest.raises(KernelError, match=r"xa queue 0 is busy: another AF_XDP socket holds it; "
                                              r"the XDP program on xa is 'xdpkit_xsk_steer' \(id \d+"):
            XskSocket("xa", steer=None)


def test_no_leaks_after_100_sockets(pair):
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with XskSocket("xa"):
        pass
    before = fds()
    for _ in range(100):
        with XskSocket("xa", ring_size=64, frames=128) as xsk:
            pair.send([udp(0)])
            assert len(receive(xsk, 1)) == 1
    assert fds() == before
    assert query("xa") == []


# ---- the tools ----------------------------------------------------------------------------

def run_in_background(pair, **kw):
    """run_tool in a thread inside xa's namespace; returns (thread, result holder) once the
    steering program is attached."""
    from xdpkit import netns as xns
    from xdpkit.apps.afxdp.tools import run_tool

    out = {}

    def go():
        with xns.inside(pair.ns.name):
            try:
                out["result"] = run_tool(iface="xa", **kw)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                out["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    deadline = time.monotonic() + 5
    while not query("xa") and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return t, out


def test_rxdrop_counts_exactly_what_was_sent(pair):
    t, out = run_in_background(pair, tool="rxdrop", count=500, duration=10)
    pair.send([udp(i) for i in range(500)])
    t.join(15)
    res = out["result"]
    assert (res.frames, res.lost, res.interrupted) == (500, 0, False)
    assert res.bytes == 500 * len(udp(0)) and res.steering["to_socket"] == 500
    assert query("xa") == []                          # the steering program left with the socket


def test_dump_writes_the_frames_that_arrived(pair, tmp_path):
    from xdpkit.pcap import read_frames

    frames = [udp(i, size=20 + i % 50) for i in range(300)]
    t, out = run_in_background(pair, tool="dump", count=300, duration=10, pcap_path=tmp_path / "x.pcap")
    pair.send(frames)
    t.join(15)
    res = out["result"]
    assert (res.frames, res.written, res.lost) == (300, 300, 0)
    assert list(read_frames(tmp_path / "x.pcap")) == frames


def test_echo_answers_with_addresses_and_ports_swapped(pair):
    with pair.peer.inside():
        cap = Capture("xb")
    try:
        t, out = run_in_background(pair, tool="echo", count=10, duration=10)
        pair.send([udp(i) for i in range(10)])
        t.join(15)
        assert out["result"].sent == 10
        back = cap.frames(lambda d: Ether(d).haslayer(UDP) and Ether(d)[UDP].sport == 9000, 10)
    finally:
        cap.close()
    assert len(back) == 10
    for i, raw in enumerate(sorted(back, key=lambda d: Ether(d)[UDP].dport)):
        e = Ether(raw)
        assert (e.src, e.dst, e[IP].src, e[IP].dst, e[UDP].dport) == (A_MAC, B_MAC, A_IP, B_IP, 1000 + i)
        fixed = IP(bytes(e[IP]))
        fixed.chksum = None
        fixed[UDP].chksum = None
        assert bytes(IP(bytes(fixed))) == bytes(e[IP])   # checksums still right after the swap


# ---- two interfaces, one UMEM ---------------------------------------------------------------

@pytest.fixture
def two_pairs(make_netns):
    """xa (peer xb in ns `left`) and xc (peer xd in ns `right`), the test in the middle."""
    mid, left, right = (make_netns(ipv6=False) for _ in range(3))
    with mid.inside():
        mid.veth("xa", "xb", peer_ns=left.name)
        mid.veth("xc", "xd", peer_ns=right.name)
    with mid.inside():
        yield mid, left, right


def test_fwd_moves_frames_both_ways_through_one_umem(two_pairs):
    mid, left, right = two_pairs
    to_right = [udp(i) for i in range(200)]
    to_left = [bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src=A_IP, dst=B_IP) / UDP(sport=5, dport=6000 + i) / b"back")
               for i in range(100)]
    with right.inside():
        at_right = Capture("xd")
    with left.inside():
        at_left = Capture("xb")
    try:
        from xdpkit import netns as xns
        from xdpkit.apps.afxdp.tools import run_tool

        out = {}

        def go():
            with xns.inside(mid.name):
                out["result"] = run_tool("fwd", "xa", out_iface="xc", count=300, duration=10)

        t = threading.Thread(target=go)
        t.start()
        deadline = time.monotonic() + 5
        while len(query()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        send_frames(left.name, "xb", to_right)
        send_frames(right.name, "xd", to_left)
        t.join(15)
        got_right = at_right.frames(lambda d: d in to_right, 200)
        got_left = at_left.frames(lambda d: d in to_left, 100)
    finally:
        at_right.close()
        at_left.close()
    res = out["result"]
    assert (res.frames, res.sent, res.lost) == (300, 300, 0)
    assert got_right == to_right and got_left == to_left
    assert query() == []


def test_a_shared_umem_needs_room_and_another_queue(two_pairs):
    with XskSocket("xa", steer=None) as a:          # 4096 frames, rings of 2048: no room left
        with pytest.raises(ConfigError, match="the UMEM has 0 free frames"):
            XskSocket("xc", share=a, steer=None)
        with pytest.raises(ConfigError, match="already has that socket"):
            XskSocket("xa", share=a, steer=None)
    with XskSocket("xa", steer=None, frames=8192) as a, XskSocket("xc", share=a, steer=None) as c:
        assert c.umem is a.umem and not c.zerocopy


def test_the_simple_iterator_yields_each_frame(pair):
    frames = [udp(i) for i in range(70)]
    with XskSocket("xa") as xsk:
        pair.send(frames)
        got = []
        for f in xsk.frames(idle_timeout=2):      # bounded: ends 2 s after the last frame
            got.append(f)
            if len(got) == 70:
                break
        assert got == frames
        assert list(xsk.frames(idle_timeout=0.2)) == []
        assert xsk.send_batch([udp(1)]) == 1
        pair.send(frames[:3])                           # the names, called for real
        batch, deadline = xsk.recv_batch(8), time.monotonic() + 2
        while batch.n < 3 and time.monotonic() < deadline:
            batch.release_views()
            time.sleep(0.01)
            batch = xsk.recv_batch(8)
        assert [bytes(f) for f in batch] == frames[:3]
        free = xsk.fill_ring.free()
        xsk.fill(batch)
        assert xsk.fill_ring.free() == free - 3


def test_two_queues_of_one_interface_share_a_umem(make_netns):
    """Sockets on queues 0 and 1 of a two-queue veth share one UMEM and one steering program;
    frames of many flows spread over both queues and all of them arrive, each on its queue's
    socket."""
    from xdpkit.lab import add_veth

    ns, peer = make_netns(ipv6=False), make_netns(ipv6=False)
    with ns.inside():
        add_veth("xa", "xb", peer_ns=peer.name, queues=2)
        frames = [udp(i) for i in range(400)]           # 400 source ports: both queues
        with XskSocket("xa", 0, frames=8192, ring_size=1024) as q0, \
                XskSocket("xa", 1, share=q0, ring_size=1024) as q1:
            assert len(query("xa")) == 1                # one steering program for both
            send_frames(peer.name, "xb", frames)
            got0, got1, deadline = [], [], time.monotonic() + 3
            while len(got0) + len(got1) < 400 and time.monotonic() < deadline:
                for xsk, got in ((q0, got0), (q1, got1)):
                    b = xsk.recv(64)
                    got += [bytes(f) for f in b]
                    xsk.recycle(b)
            assert sorted(got0 + got1) == sorted(frames)
            assert got0 and got1                        # both queues were used
            assert q1.steering()["to_socket"] == 400
        assert query("xa") == []
