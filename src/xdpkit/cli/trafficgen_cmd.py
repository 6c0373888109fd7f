"""`xdpkit trafficgen IFACE`: the live-frames generator."""
from __future__ import annotations

from xdpkit import pcap
from xdpkit.lab import trafficgen as tg
from xdpkit import interfaces as nl
from xdpkit.ui.output import emit_json, info
from xdpkit.errors import ConfigError
from xdpkit.ui.args import positive_float, positive_int


def register(sub) -> None:
    p = sub.add_parser("trafficgen", help="send frames out of an interface from the kernel (live frames)")
    p.add_argument("iface")
    p.add_argument("--proto", choices=tg.PROTOS, default="udp", help="udp, tcp (SYN) or icmp (echo)")
    p.add_argument("-6", "--ipv6", action="store_true")
    p.add_argument("--size", type=positive_int, default=64, help="frame size in bytes, 64..1500 (default 64)")
    p.add_argument("--src-mac", help="default: the interface's MAC")
    p.add_argument("--dst-mac", help="default: the veth peer's MAC")
    p.add_argument("--src-ip", help="default: 198.18.1.2 / 2001:db8:1::2 (the lab's src)")
    p.add_argument("--dst-ip", help="default: 198.18.2.2 / 2001:db8:2::2 (the lab's dst)")
    p.add_argument("--src-ips", type=positive_int, default=1, metavar="N", help="vary the source over N addresses")
    p.add_argument("--sport", default="9", metavar="P[-Q]", help="source port or range")
    p.add_argument("--dport", default="9", metavar="P[-Q]", help="destination port or range")
    p.add_argument("--pcap", metavar="FILE", help="replay the frames of a capture in turn")
    p.add_argument("--count", type=positive_int, help="frames to send")
    p.add_argument("--duration", type=positive_float, help="seconds to send")
    p.add_argument("--threads", type=positive_int, default=1, help="sender threads, one per CPU")
    p.add_argument("--prepare", action="store_true",
                   help="enable GRO on a veth peer that could not otherwise receive the frames")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trafficgen)


def _port_range(text: str, what: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise ConfigError(f"{what} must be a port or a range like 1000-1999, got {text!r}") from None
    if not (0 <= a <= b <= 65535):
        raise ConfigError(f"{what} range {text!r} must lie within 0..65535, low to high")
    return a, b - a + 1


def cmd_trafficgen(args) -> int:
    notes = tg.preflight(args.iface, prepare=args.prepare)
    for n in notes:
        info(f"note: {n}")
    me = nl.get_link(nl.ifindex_of(args.iface))
    peer = tg.find_veth_peer(args.iface)
    dst_mac = args.dst_mac or (peer.address if peer else None)
    if not dst_mac:
        raise ConfigError(f"{me.ifname} is not a veth: give the destination MAC with --dst-mac")
    sport, nsport = _port_range(args.sport, "--sport")
    dport, ndport = _port_range(args.dport, "--dport")
    template = tg.build_template(proto=args.proto, ipv6=args.ipv6, size=args.size,
                                 src_mac=args.src_mac or me.address, dst_mac=dst_mac,
                                 src_ip=args.src_ip, dst_ip=args.dst_ip, sport=sport, dport=dport)
    flows = tg.Flows(src_ips=args.src_ips, sport_base=sport if nsport > 1 else None, sport_count=nsport,
                     dport_base=dport if ndport > 1 else None, dport_count=ndport)
    frames = list(pcap.read_frames(args.pcap)) if args.pcap else None
    if frames == []:
        raise ConfigError(f"{args.pcap} holds no frames")
    rx = tg.peer_rx_counter(args.iface)
    try:
        with tg.TrafficGen(args.iface, template, flows) as gen:
            rx0 = rx() if rx else None
            progress = None if args.json else (
                lambda sent, secs: info(f"  {secs:5.1f}s  sent {sent:,}  ({sent / secs / 1e6:.2f} Mpps)"))
            result = gen.run(count=args.count, duration=args.duration, threads=args.threads,
                             progress=progress, frames=frames)
            if rx:
                result.received = rx() - rx0
    finally:
        if rx:
            rx.close()
    if args.json:
        emit_json(result.to_dict())
    else:
        line = (f"sent {result.sent:,} frames in {result.seconds:.2f} s: {result.pps / 1e6:.2f} Mpps "
                f"({result.threads} thread{'s' if result.threads > 1 else ''}, CPU {result.cpu_percent}%)")
        if result.received is not None:
            line += f"; received {result.received:,} ({result.rx_pps / 1e6:.2f} Mpps) by the xdpkit program on the peer"
        print(line)
    return 0
