"""`xdpkit afxdp rxdrop|echo|dump`: loops over an AF_XDP socket, bounded, with progress.

Each tool receives in batches until ``count`` frames or ``duration`` seconds (or Ctrl-C), reports
frames per second and the kernel's drop counters (XDP_STATISTICS) once a second through
``progress``, and returns a summary. When no frame is ready it waits in poll() (100 ms at most),
so an idle tool costs nothing.
"""
from __future__ import annotations

import select
import struct
import time
from dataclasses import asdict, dataclass, field

import dpkt

from xdpkit.afxdp import Steer, XskSocket
from xdpkit.errors import ConfigError
from xdpkit.pcap import LINKTYPE_ETHERNET

TOOLS = ("rxdrop", "echo", "dump", "fwd")
RING = 2048
# Frames the kernel dropped for the socket. A frame dropped for an empty fill ring raises both
# rx_dropped and rx_fill_ring_empty_descs (the bench found them equal in every round, and
# sent - written == rx_dropped + rx_ring_full exactly), so the latter is not added again.
DROPS = ("rx_dropped", "rx_ring_full")


@dataclass
class ToolResult:
    tool: str
    ifname: str
    queue: int
    out_ifname: str = ""
    zerocopy: bool = False
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    pps: float = 0.0
    sent: int = 0
    written: int = 0
    lost: int = 0                     # frames the kernel dropped for this socket (sum of DROPS)
    statistics: dict = field(default_factory=dict)
    steering: dict = field(default_factory=dict)
    interrupted: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


# Ethernet, the IPv4 header (EtherType, version+IHL and protocol apart), the addresses, the ports.
_V4_CHECK = struct.Struct(">6s6sHB8sB2s4s4s2s2s")


def swap_batch(umem: memoryview, addrs, lens) -> None:
    """swap_addresses on every frame of a batch, reading and writing the UMEM in place: no view
    per frame, and for IPv4 TCP/UDP without options (the common case) one unpack and one pack,
    ~4x faster than swapping field by field."""
    unpack, pack = _V4_CHECK.unpack_from, _V4_CHECK.pack_into
    for a, n in zip(addrs, lens):
        if n >= 38:
            dst, src, etype, vihl, mid, proto, csum, s4, d4, sp, dp = unpack(umem, a)
            if etype == 0x0800 and vihl == 0x45 and proto in (6, 17):
                pack(umem, a, src, dst, etype, vihl, mid, proto, csum, d4, s4, dp, sp)
                continue
        swap_addresses(umem[a:a + n])


def swap_addresses(f: memoryview) -> None:
    """Ethernet source <-> destination, and for IPv4/IPv6 the addresses (and TCP/UDP ports):
    every checksum stays valid, since each sum only changes order. (Batches take swap_batch.)"""
    n = len(f)
    h = bytes(f[:58])
    f[0:12] = h[6:12] + h[0:6]
    if h[12:14] == b"\x08\x00" and n >= 34:
        f[26:34] = h[30:34] + h[26:30]
        l4, proto = 14 + (h[14] & 0x0F) * 4, h[23]
    elif h[12:14] == b"\x86\xdd" and n >= 54:
        f[22:54] = h[38:54] + h[22:38]
        l4, proto = 54, h[20]
    else:
        return
    if proto in (6, 17) and n >= l4 + 4:
        if l4 + 4 <= len(h):
            f[l4:l4 + 4] = h[l4 + 2:l4 + 4] + h[l4:l4 + 2]
        else:  # IPv4 options push the ports past the copy
            f[l4:l4 + 4] = bytes(f[l4 + 2:l4 + 4]) + bytes(f[l4:l4 + 2])


def run_tool(tool: str, iface: str, *, queue: int = 0, mode: str = "auto", xdp_mode: str = "auto",
             steer: Steer | None = Steer(), batch: int = 256, count: int | None = None,
             duration: float | None = None, pcap_path=None, out_iface: str | None = None,
             progress=None) -> ToolResult:
    """Run ``tool`` until ``count`` frames, ``duration`` seconds or Ctrl-C (then it stops cleanly
    and says so in ``interrupted``)."""
    if tool not in TOOLS:
        raise ConfigError(f"unknown tool {tool!r}; use {', '.join(TOOLS)}")
    if tool == "dump" and pcap_path is None:
        raise ConfigError("dump needs a file to write: -w FILE.pcap")
    if count is not None and count < 1 or duration is not None and duration <= 0 or not 1 <= batch <= 65536:
        raise ConfigError("count, duration and batch must be positive (batch at most 65536)")
    pcap = None
    if pcap_path is not None:
        try:
            fh = open(pcap_path, "wb")
        except OSError as exc:
            raise ConfigError(f"cannot write {pcap_path}: {exc.strerror}") from None
        pcap = (fh, dpkt.pcap.Writer(fh, linktype=LINKTYPE_ETHERNET, nano=True))
    try:
        if tool == "fwd":
            if not out_iface:
                raise ConfigError("fwd needs the interface to forward to: xdpkit afxdp fwd IN OUT")
            # One UMEM for both sockets, so frames cross without a copy: 4 pools of a ring each.
            with XskSocket(iface, queue, mode=mode, xdp_mode=xdp_mode, steer=steer, frames=4 * RING,
                           ring_size=RING) as a, \
                 XskSocket(out_iface, queue, xdp_mode=xdp_mode, steer=steer, share=a, ring_size=RING) as b:
                return _fwd_loop(a, b, batch, count, duration, progress)
        with XskSocket(iface, queue, mode=mode, xdp_mode=xdp_mode, steer=steer) as xsk:
            return _loop(xsk, tool, batch, count, duration, pcap, progress)
    finally:
        if pcap is not None:
            pcap[0].close()


def _lost(socks) -> int:
    return sum(x.statistics()[k] for x in socks for k in DROPS)


class _Clock:
    """The loops' bound (count, deadline) and their once-a-second progress line."""

    def __init__(self, count, duration, progress, lost):
        self.count, self.progress, self.lost = count, progress, lost
        self.start = time.monotonic()
        self.deadline = self.start + duration if duration else None
        self.next_report, self.last = self.start + 1.0, 0

    def go_on(self, frames: int) -> bool:
        now = time.monotonic()
        if self.count is not None and frames >= self.count or self.deadline is not None and now >= self.deadline:
            return False
        if self.progress is not None and now >= self.next_report:
            self.progress(now - self.start, frames, frames - self.last, self.lost())
            self.next_report, self.last = self.next_report + 1.0, frames
        return True

    def want(self, batch: int, frames: int) -> int:
        return batch if self.count is None else min(batch, self.count - frames)


DRAIN_S = 1.0   # at the end, how long frames already on a TX ring may take to leave


def _drain(socks) -> None:
    """Let what is on the TX rings leave before the sockets close (copy mode sends 32 a kick)."""
    deadline = time.monotonic() + DRAIN_S
    while any(x.tx.free() < x.ring_size for x in socks) and time.monotonic() < deadline:
        for x in socks:
            x.complete()
        time.sleep(0.0005)


def _finish(res: ToolResult, clock: _Clock, socks) -> ToolResult:
    _drain(socks)
    res.seconds = time.monotonic() - clock.start
    res.pps = res.frames / res.seconds if res.seconds > 0 else 0.0
    stats = [x.statistics() for x in socks]
    res.statistics = {k: sum(st[k] for st in stats) for k in stats[0]}
    res.lost = sum(res.statistics[k] for k in DROPS)
    steering = [x.steering() for x in socks]
    res.steering = {k: sum(st.get(k, 0) for st in steering) for k in steering[0]}
    return res


def _fwd_loop(a: XskSocket, b: XskSocket, batch: int, count, duration, progress) -> ToolResult:
    """Frames received on either socket leave through the other, in place."""
    res = ToolResult("fwd", a.ifname, a.queue, b.ifname, a.zerocopy)
    poller = select.poll()
    for x in (a, b):
        poller.register(x.fileno(), select.POLLIN)
    clock = _Clock(count, duration, progress, lambda: _lost((a, b)))
    try:
        while clock.go_on(res.frames):
            moved = 0
            for rx, tx in ((a, b), (b, a)):
                got = rx.recv(clock.want(batch, res.frames))
                if got.n:
                    res.frames += got.n
                    res.bytes += sum(got.lens)
                    moved += got.n
                    res.sent += rx.forward(got, to=tx)
                else:
                    got.release_views()
                tx.complete()
            if not moved:
                poller.poll(100)
    except KeyboardInterrupt:
        res.interrupted = True
    return _finish(res, clock, (a, b))


def _loop(xsk: XskSocket, tool: str, batch: int, count, duration, pcap, progress) -> ToolResult:
    res = ToolResult(tool, xsk.ifname, xsk.queue, "", xsk.zerocopy)
    poller = select.poll()
    poller.register(xsk.fileno(), select.POLLIN)
    clock = _Clock(count, duration, progress, lambda: _lost((xsk,)))
    try:
        while clock.go_on(res.frames):
            want = clock.want(batch, res.frames)
            b = xsk.recv(want)
            if not b.n:
                b.release_views()
                if tool == "echo":
                    xsk.complete()
                poller.poll(100)
                continue
            res.frames += b.n
            res.bytes += sum(b.lens)
            if tool == "dump":
                writer = pcap[1]
                ts = time.time()
                for f in b:
                    writer.writepkt(f, ts=ts)
                res.written += b.n
            if tool == "echo":
                swap_batch(xsk.umem, b.addrs, b.lens)
                res.sent += xsk.forward(b)
                xsk.complete()   # sent frames back to the fill ring at once, or it runs dry
            else:
                xsk.recycle(b)
    except KeyboardInterrupt:
        res.interrupted = True
    return _finish(res, clock, (xsk,))
