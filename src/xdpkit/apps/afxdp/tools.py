"""`xdpkit afxdp rxdrop|echo|dump`: loops over an AF_XDP socket, bounded, with progress.

Each tool receives in batches until ``count`` frames or ``duration`` seconds (or Ctrl-C), reports
frames per second and the kernel's drop counters (XDP_STATISTICS) once a second through
``progress``, and returns a summary. When no frame is ready it waits in poll() (100 ms at most),
so an idle tool costs nothing.
"""
from __future__ import annotations

import select
import time
from dataclasses import asdict, dataclass, field

import dpkt

from xdpkit.afxdp import Steer, XskSocket
from xdpkit.errors import ConfigError
from xdpkit.pcap import LINKTYPE_ETHERNET

TOOLS = ("rxdrop", "echo", "dump")
DROPS = ("rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs", "rx_invalid_descs")


@dataclass
class ToolResult:
    tool: str
    ifname: str
    queue: int
    zerocopy: bool
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


def swap_addresses(f: memoryview) -> None:
    """Ethernet source <-> destination, and for IPv4/IPv6 the addresses (and TCP/UDP ports):
    every checksum stays valid, since each sum only changes order."""
    f[0:6], f[6:12] = bytes(f[6:12]), bytes(f[0:6])
    etype = f[12] << 8 | f[13]
    if etype == 0x0800 and len(f) >= 34:
        ihl = (f[14] & 0x0F) * 4
        f[26:30], f[30:34] = bytes(f[30:34]), bytes(f[26:30])
        l4, proto = 14 + ihl, f[23]
    elif etype == 0x86DD and len(f) >= 54:
        f[22:38], f[38:54] = bytes(f[38:54]), bytes(f[22:38])
        l4, proto = 54, f[20]
    else:
        return
    if proto in (6, 17) and len(f) >= l4 + 4:
        f[l4:l4 + 2], f[l4 + 2:l4 + 4] = bytes(f[l4 + 2:l4 + 4]), bytes(f[l4:l4 + 2])


def run_tool(tool: str, iface: str, *, queue: int = 0, mode: str = "auto", xdp_mode: str = "auto",
             steer: Steer | None = Steer(), batch: int = 256, count: int | None = None,
             duration: float | None = None, pcap_path=None, progress=None) -> ToolResult:
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
        with XskSocket(iface, queue, mode=mode, xdp_mode=xdp_mode, steer=steer) as xsk:
            return _loop(xsk, tool, batch, count, duration, pcap, progress)
    finally:
        if pcap is not None:
            pcap[0].close()


def _loop(xsk: XskSocket, tool: str, batch: int, count, duration, pcap, progress) -> ToolResult:
    res = ToolResult(tool, xsk.ifname, xsk.queue, xsk.zerocopy)
    poller = select.poll()
    poller.register(xsk.fileno(), select.POLLIN)
    start = time.monotonic()
    deadline = start + duration if duration else None
    next_report, last_frames = start + 1.0, 0
    try:
        while count is None or res.frames < count:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if progress is not None and now >= next_report:
                stats = xsk.statistics()
                progress(now - start, res.frames, res.frames - last_frames, sum(stats[k] for k in DROPS))
                next_report, last_frames = next_report + 1.0, res.frames
            want = batch if count is None else min(batch, count - res.frames)
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
                fh, writer = pcap
                ts = time.time()
                for f in b:
                    writer.writepkt(f, ts=ts)
                res.written += b.n
            if tool == "echo":
                for f in b:
                    swap_addresses(f)
                res.sent += xsk.forward(b)
            else:
                xsk.recycle(b)
    except KeyboardInterrupt:
        res.interrupted = True
    res.seconds = time.monotonic() - start
    res.pps = res.frames / res.seconds if res.seconds > 0 else 0.0
    res.statistics = xsk.statistics()
    res.lost = sum(res.statistics[k] for k in DROPS)
    res.steering = xsk.steering()
    return res
