"""The live-frames traffic generator.

A BPF program runs on a template frame through BPF_PROG_TEST_RUN with
BPF_F_TEST_XDP_LIVE_FRAMES; each run rewrites the flow fields (source address, ports; checksums
updated incrementally) and redirects the frame out of the target interface. The kernel does the
loop: Python only issues one syscall per chunk of about CALL_SECONDS (1 s) of traffic per thread.
"""
from __future__ import annotations

import ipaddress
import os
import threading
import time
from dataclasses import asdict, dataclass, field

import dpkt

from xdpkit import interfaces as nl
from xdpkit import netns as xns
from xdpkit.interfaces import get_gro, set_gro
from xdpkit.builtin import builtin_object
from xdpkit.errors import ConfigError, XdpkitError
from xdpkit.object import Object

TG_VARY_SRC_IP, TG_VARY_SPORT, TG_VARY_DPORT, TG_IPV6 = 1, 2, 4, 8
HDR_MAX = 60                          # TG_HDR_MAX
RESTORED_LENGTHS = (28, 40, 48, 60)   # the IP + L4 header lengths trafficgen.bpf.c restores
IPPROTO_TCP = 6
PROTOS = ("udp", "tcp", "icmp")
MIN_SIZE, MAX_SIZE = 64, 1500
BATCH_SIZE = 64
CALL_SECONDS = 1.0
_IPPROTO = {"udp": 17, "tcp": 6, "icmp": 1, "icmp6": 58}


class NotReadyError(XdpkitError):
    """The target cannot receive xdp_frames: they would vanish silently."""


@dataclass
class Template:
    """A frame to send and where its flow fields are."""

    frame: bytes
    l3_off: int
    l4_off: int
    l4_proto: int
    ipv6: bool


def _mac(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.replace(":", "").replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 6:
        raise ConfigError(f"not a MAC address: {text!r}")
    return raw


def build_template(*, proto: str = "udp", ipv6: bool = False, size: int = 64,
                   src_mac: str = "02:00:00:00:00:01", dst_mac: str = "02:00:00:00:00:02",
                   src_ip: str | None = None, dst_ip: str | None = None,
                   sport: int = 9, dport: int = 9) -> Template:
    """Build an Ethernet frame (UDP, TCP SYN or ICMP echo over IPv4/IPv6) of ``size`` bytes
    (without FCS), with valid checksums."""
    if proto not in PROTOS:
        raise ConfigError(f"unknown protocol {proto!r}; use one of {', '.join(PROTOS)}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"frame size {size} out of range {MIN_SIZE}..{MAX_SIZE}")
    for name, port in (("source port", sport), ("destination port", dport)):
        if not 0 <= port <= 65535:
            raise ConfigError(f"{name} {port} out of range 0..65535")
    src_ip = src_ip or ("2001:db8:1::2" if ipv6 else "198.18.1.2")
    dst_ip = dst_ip or ("2001:db8:2::2" if ipv6 else "198.18.2.2")
    try:
        src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if (src.version == 6) != ipv6 or (dst.version == 6) != ipv6:
        raise ConfigError(f"addresses {src_ip} -> {dst_ip} do not match IPv{6 if ipv6 else 4}")
    hdr = 14 + (40 if ipv6 else 20) + {"udp": 8, "tcp": 20, "icmp": 8}[proto]
    payload = b"\0" * max(0, size - hdr)
    if proto == "udp":
        # dpkt fills the UDP length for IPv4 only; set it for both.
        l4 = dpkt.udp.UDP(sport=sport, dport=dport, ulen=8 + len(payload), data=payload)
    elif proto == "tcp":
        l4 = dpkt.tcp.TCP(sport=sport, dport=dport, flags=dpkt.tcp.TH_SYN, seq=1, win=65535, data=payload)
    elif ipv6:
        l4 = dpkt.icmp6.ICMP6(type=dpkt.icmp6.ICMP6_ECHO_REQUEST,
                              data=dpkt.icmp6.ICMP6.Echo(id=1, seq=1, data=payload))
    else:
        l4 = dpkt.icmp.ICMP(type=dpkt.icmp.ICMP_ECHO, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=payload))
    l4_name = "icmp6" if (proto == "icmp" and ipv6) else proto
    if ipv6:
        ip = dpkt.ip6.IP6(src=src.packed, dst=dst.packed, nxt=_IPPROTO[l4_name], hlim=64, data=l4)
        ip.plen = len(bytes(l4))
        ip.extension_hdrs = {}
        etype = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(src=src.packed, dst=dst.packed, p=_IPPROTO[l4_name], ttl=64, data=l4)
        etype = dpkt.ethernet.ETH_TYPE_IP
    eth = dpkt.ethernet.Ethernet(src=_mac(src_mac), dst=_mac(dst_mac), type=etype, data=ip)
    frame = bytes(eth)
    l3 = 14
    return Template(frame=frame, l3_off=l3, l4_off=l3 + (40 if ipv6 else 20),
                    l4_proto=_IPPROTO[l4_name], ipv6=ipv6)


@dataclass
class Flows:
    """How many flows: source addresses counted up from the template's, port ranges."""

    src_ips: int = 1
    sport_base: int | None = None
    sport_count: int = 1
    dport_base: int | None = None
    dport_count: int = 1

    def validate(self) -> None:
        if self.src_ips < 1 or self.sport_count < 1 or self.dport_count < 1:
            raise ConfigError("flow counts must be at least 1")
        for base, count, what in ((self.sport_base, self.sport_count, "source"),
                                  (self.dport_base, self.dport_count, "destination")):
            if base is not None and not (0 <= base and base + count - 1 <= 65535):
                raise ConfigError(f"{what} port range {base}+{count} leaves 0..65535")


@dataclass
class GenResult:
    sent: int
    seconds: float
    threads: int
    per_thread: list[int] = field(default_factory=list)
    received: int | None = None
    cpu_percent: float | None = None

    @property
    def pps(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def rx_pps(self) -> float | None:
        return None if self.received is None or self.seconds <= 0 else self.received / self.seconds

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(pps=round(self.pps), rx_pps=None if self.rx_pps is None else round(self.rx_pps))
        return d


# ---- pre-flight ------------------------------------------------------------------------------

@dataclass
class Peer:
    """The other end of a veth: where it lives and whether it takes xdp_frames."""

    ifname: str
    ifindex: int
    netns: str | None          # None: the current namespace
    has_xdp: bool
    gro: bool
    address: str = ""

    @property
    def ready(self) -> bool:
        return self.has_xdp or self.gro

    def where(self) -> str:
        return f"{self.ifname}" + (f" (namespace {self.netns})" if self.netns else "")


def _veth_peer_here(ifindex: int, peer_index: int, remote: bool) -> nl.LinkXdp | None:
    for link in nl.list_links():
        if link.ifindex == peer_index and link.kind == "veth" and link.link == ifindex \
                and (link.link_netnsid is not None) == remote:
            return link
    return None


def find_veth_peer(iface) -> Peer | None:
    """The veth peer of ``iface`` (searching this and every named namespace), or None when
    ``iface`` is not a veth."""
    ifindex = nl.ifindex_of(iface)
    me = nl.get_link(ifindex)
    if me.kind != "veth" or not me.link:
        return None
    remote = me.link_netnsid is not None
    if not remote:
        link = _veth_peer_here(ifindex, me.link, remote)
        if link is not None:
            return Peer(link.ifname, link.ifindex, None, bool(link.drv_prog_id or link.skb_prog_id),
                        get_gro(link.ifname), link.address)
    for ns in xns.list_namespaces() if remote else []:
        try:
            # ifindexes repeat across namespaces: match the namespace by the id ours gave it
            if nl.nsid_of(os.path.join(xns.NETNS_RUN_DIR, ns)) != me.link_netnsid:
                continue
            with xns.inside(ns):
                link = _veth_peer_here(ifindex, me.link, remote)
                gro = get_gro(link.ifname) if link else False
        except (XdpkitError, OSError):
            continue
        if link is not None:
            return Peer(link.ifname, link.ifindex, ns, bool(link.drv_prog_id or link.skb_prog_id), gro,
                        link.address)
    raise NotReadyError(f"cannot find the veth peer of {me.ifname} (it is in a namespace without a name)",
                        hint="give the peer's namespace a name (ip netns attach NAME PID) or enable GRO "
                             "on the peer yourself: ethtool -K PEER gro on")


def preflight(iface, *, prepare: bool = False) -> list[str]:
    """Make sure frames sent out of ``iface`` arrive. Returns notes on what was changed.

    A veth passes redirected xdp_frames to its peer only when the peer has an XDP program or
    GRO enabled; otherwise every frame is dropped without a trace (and pps would be a lie).
    """
    peer = find_veth_peer(iface)
    if peer is None or peer.ready:
        return []
    if not prepare:
        ns = f"ip netns exec {peer.netns} " if peer.netns else ""
        raise NotReadyError(
            f"{nl.ifname_of(nl.ifindex_of(iface))}'s veth peer {peer.where()} has neither an XDP program "
            f"nor GRO: it would silently drop every generated frame",
            hint=f"enable GRO on it ({ns}ethtool -K {peer.ifname} gro on), attach an XDP program there, "
                 f"or pass --prepare to let xdpkit enable GRO")
    if peer.netns:
        with xns.inside(peer.netns):
            set_gro(peer.ifname, True)
    else:
        set_gro(peer.ifname, True)
    return [f"enabled GRO on {peer.where()} so it accepts xdp_frames"]


def peer_rx_counter(iface):
    """A function returning the packets counted so far by an xdpkit receiver on the veth peer
    (an xdpkit program with an ``rx_count`` per-CPU map), or None when there is none."""
    from xdpkit.maps import open_map_by_id
    from xdpkit.xdp import query

    peer = find_veth_peer(iface)
    if peer is None or not peer.has_xdp:
        return None
    if peer.netns:
        with xns.inside(peer.netns):
            atts = query(peer.ifname)
    else:
        atts = query(peer.ifname)
    for att in atts:
        for m in att.maps:
            if att.ours and m.name == "rx_count":
                rx = open_map_by_id(m.id)
                return _Counter(rx)
    return None


class _Counter:
    def __init__(self, m):
        self.map = m

    def __call__(self) -> int:
        return self.map[0].sum()

    def close(self) -> None:
        self.map.close()


# ---- the generator ---------------------------------------------------------------------------

def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class TrafficGen:
    """Send a template frame out of ``iface`` with flows varied in the kernel.

    Use as a context manager (it holds a loaded BPF object). ``run()`` is bounded by ``count``
    and/or ``duration``; ``threads`` threads each pinned to one CPU.
    """

    def __init__(self, iface, template: Template, flows: Flows | None = None):
        self.ifindex = nl.ifindex_of(iface)
        self.ifname = nl.ifname_of(self.ifindex)
        self.template = template
        self.flows = flows or Flows()
        self.flows.validate()
        self._obj = Object.from_file(builtin_object("trafficgen"), program="xdpkit_trafficgen")
        try:
            self._configure()
        except BaseException:
            self._obj.close()
            raise

    def _configure(self, restore_headers: bool = True) -> None:
        t, f = self.template, self.flows
        flags = TG_IPV6 if t.ipv6 else 0
        frame = t.frame
        ip_src_off = t.l3_off + (20 if t.ipv6 else 12)
        ip_base = int.from_bytes(frame[ip_src_off: ip_src_off + 4], "big")
        sport = int.from_bytes(frame[t.l4_off: t.l4_off + 2], "big")
        dport = int.from_bytes(frame[t.l4_off + 2: t.l4_off + 4], "big")
        if f.src_ips > 1:
            flags |= TG_VARY_SRC_IP
        if f.sport_count > 1 or f.sport_base is not None:
            flags |= TG_VARY_SPORT
        if f.dport_count > 1 or f.dport_base is not None:
            flags |= TG_VARY_DPORT
        # the IP and L4 headers, restored in every frame (a receiver may have edited the page)
        l4_len = {IPPROTO_TCP: 20}.get(t.l4_proto, 8)
        headers = frame[t.l3_off:t.l4_off + l4_len] if t.l3_off == 14 and restore_headers else b""
        if len(headers) not in RESTORED_LENGTHS:
            headers = b""
        if ip_base + f.src_ips - 1 > 0xFFFFFFFF:
            raise ConfigError(f"{f.src_ips} source addresses overflow the address")
        self._obj.maps["tg_config"][0] = {
            "ifindex_out": self.ifindex, "flags": flags, "l3_off": t.l3_off, "l4_off": t.l4_off,
            "l4_proto": t.l4_proto, "ip_base": ip_base, "ip_count": f.src_ips,
            "sport_base": sport if f.sport_base is None else f.sport_base, "sport_count": f.sport_count,
            "dport_base": dport if f.dport_base is None else f.dport_base, "dport_count": f.dport_count,
            "eth": frame[:14], "pad": b"\0\0", "hdr_len": len(headers), "hdr": headers.ljust(HDR_MAX, b"\0"),
        }

    @property
    def program(self):
        return self._obj.programs["xdpkit_trafficgen"]

    def sent_total(self) -> int:
        return self._obj.maps["tg_counters"][0].sum()

    def close(self) -> None:
        self._obj.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, *, count: int | None = None, duration: float | None = None, threads: int = 1,
            progress=None, frames: list[bytes] | None = None) -> GenResult:
        """Send until ``count`` frames went out or ``duration`` seconds passed (at least one
        bound is required). ``frames`` replays those frames in turn instead of the template."""
        if count is None and duration is None:
            raise ConfigError("give --count and/or --duration: the generator never runs unbounded")
        if count is not None and count < 1:
            raise ConfigError(f"count must be at least 1, got {count}")
        if duration is not None and duration <= 0:
            raise ConfigError(f"duration must be positive, got {duration}")
        ncpu = len(os.sched_getaffinity(0))
        if not 1 <= threads <= ncpu:
            raise ConfigError(f"threads must be 1..{ncpu} (one per CPU this process may use)")
        shares = _split(count, threads) if count is not None else [None] * threads
        done = [0] * threads
        errors: list[BaseException] = []
        deadline = None if duration is None else time.monotonic() + duration
        cpus = sorted(os.sched_getaffinity(0))
        self._configure(restore_headers=not frames)  # replayed frames keep their own headers
        start_sent = self.sent_total()
        cpu0, t0 = _cpu_seconds(), time.monotonic()

        def worker(i: int) -> None:
            try:
                os.sched_setaffinity(0, {cpus[i % len(cpus)]})  # this thread only
                if frames:
                    done[i] = self._replay(frames, shares[i], deadline)
                else:
                    done[i] = self._loop(shares[i], deadline, lambda n: _tick(i, n))
            except BaseException as exc:  # reported by the caller's thread
                errors.append(exc)

        lock = threading.Lock()
        last = [0.0]

        def _tick(i: int, n: int) -> None:
            if progress is None:
                return
            with lock:
                now = time.monotonic()
                if now - last[0] >= 1.0:
                    last[0] = now
                    progress(self.sent_total() - start_sent, now - t0)

        workers = [threading.Thread(target=worker, args=(i,), name=f"xdpkit-gen-{i}") for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.monotonic() - t0
        cpu = _cpu_seconds() - cpu0
        if errors:
            raise errors[0]
        sent = self.sent_total() - start_sent
        return GenResult(sent=sent, seconds=elapsed, threads=threads, per_thread=done,
                         cpu_percent=round(100 * cpu / elapsed, 1) if elapsed > 0 else None)

    def _loop(self, count: int | None, deadline: float | None, tick) -> int:
        prog, frame = self.program, self.template.frame
        chunk, sent = 1 << 20, 0
        while True:
            want = chunk if count is None else min(chunk, count - sent)
            if want <= 0:
                return sent
            t = time.monotonic()
            if deadline is not None and t >= deadline:
                return sent
            prog.run_live(frame, repeat=want, batch_size=BATCH_SIZE, ingress_ifindex=self.ifindex)
            sent += want
            tick(sent)
            took = time.monotonic() - t
            # Every live-frames call pays ~20 ms of set-up in the kernel (page pool and frame
            # init), so calls last ~1 s to keep that under 2%; the deadline still cuts the last.
            if took > 0:
                chunk = max(BATCH_SIZE, min(1 << 26, int(want * CALL_SECONDS / took)))
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return sent
                # Rates drift (another thread, the receiver's softirq on this CPU): aim short.
                chunk = max(BATCH_SIZE, min(chunk, int(want * 0.9 * left / max(took, 1e-6))))

    def _replay(self, frames: list[bytes], count: int | None, deadline: float | None) -> int:
        prog, sent = self.program, 0
        while True:
            for frame in frames:
                if (count is not None and sent >= count) or (deadline is not None and time.monotonic() >= deadline):
                    return sent
                prog.run_live(frame, repeat=1, batch_size=1, ingress_ifindex=self.ifindex)
                sent += 1


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
