"""`xdpkit afxdp rxdrop|echo|dump IFACE`: thin commands over xdpkit.apps.afxdp.tools."""
from __future__ import annotations

from xdpkit.afxdp import Steer
from xdpkit.afxdp.xsk import MODES, PROTOCOLS
from xdpkit.apps.afxdp.tools import run_tool
from xdpkit.ui.args import int_range, positive_float, positive_int
from xdpkit.ui.output import emit_json, info

XDP_MODES = ["native", "generic", "auto"]


def register(sub) -> None:
    p = sub.add_parser("afxdp", help="AF_XDP sockets: receive, echo or capture frames in user space")
    asub = p.add_subparsers(dest="afxdp_command", metavar="TOOL")
    asub.required = True
    for tool, helptext in (("rxdrop", "receive and drop, counting (the fast path's ceiling)"),
                           ("echo", "send every frame back with addresses and ports swapped"),
                           ("dump", "write received frames to a pcap file"),
                           ("fwd", "forward between two interfaces through one UMEM, both ways")):
        q = asub.add_parser(tool, help=helptext)
        q.add_argument("iface", metavar="IN" if tool == "fwd" else "IFACE")
        if tool == "fwd":
            q.add_argument("out_iface", metavar="OUT")
        q.add_argument("--queue", type=int_range(0, 4095), default=0, help="receive queue to bind (default 0)")
        q.add_argument("--mode", choices=MODES, default="auto", help="copy, zerocopy or auto (zero-copy if the driver has it)")
        q.add_argument("--xdp-mode", choices=XDP_MODES, default="auto", help="how the steering program attaches")
        q.add_argument("--proto", choices=sorted(PROTOCOLS), help="steer only this protocol to the socket")
        q.add_argument("--port", type=int_range(1, 65535), help="with tcp or udp: only this destination port")
        q.add_argument("--batch", type=int_range(1, 65536), default=256, help="frames per ring operation")
        q.add_argument("--count", type=positive_int, help="stop after this many frames")
        q.add_argument("--duration", type=positive_float, help="stop after this many seconds")
        if tool == "dump":
            q.add_argument("-w", dest="write", required=True, metavar="FILE.pcap", help="capture file to write")
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_tool, tool=tool)


def cmd_tool(args) -> int:
    progress = None if args.json else (
        lambda secs, frames, delta, lost: info(f"  {secs:5.1f}s  {frames:,} frames  ({delta / 1e6:.2f} Mpps)"
                                               f"  lost {lost:,}"))
    res = run_tool(args.tool, args.iface, queue=args.queue, mode=args.mode, xdp_mode=args.xdp_mode,
                   steer=Steer(args.proto, args.port or 0), batch=args.batch, count=args.count,
                   duration=args.duration, pcap_path=getattr(args, "write", None),
                   out_iface=getattr(args, "out_iface", None), progress=progress)
    if args.json:
        emit_json(res.to_dict())
        return 0
    mode = "zero-copy" if res.zerocopy else "copy"
    where = f"{res.ifname} <-> {res.out_ifname}" if res.out_ifname else res.ifname
    print(f"{res.tool} on {where} queue {res.queue} ({mode}): {res.frames:,} frames in {res.seconds:.1f}s "
          f"({res.pps / 1e6:.2f} Mpps), lost {res.lost:,}"
          + (f", sent {res.sent:,}" if res.tool in ("echo", "fwd") else "")
          + (f", wrote {res.written:,} to {args.write}" if res.tool == "dump" else "")
          + (" (interrupted)" if res.interrupted else ""))
    return 0
