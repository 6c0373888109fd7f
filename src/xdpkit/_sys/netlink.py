"""Netlink through pyroute2: interface lookup, the IFLA_XDP attribute (attach/query), and the
links, addresses and routes a lab builds.

Only this module talks rtnetlink. Operations act on the calling thread's network namespace,
so xdpkit works inside `ip netns exec NS` and in tests that setns().
"""
from __future__ import annotations

import errno as E
import socket
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from xdpkit.errors import KernelError, NotFoundError

# The XDP_FLAGS_* that set_xdp sends are kernel facts shared with bpf_link: xdpkit.kernel has them.

IFA_F_NODAD = 0x02   # an IPv6 address used at once, without duplicate address detection

# IFLA_XDP_ATTACHED values
XDP_ATTACHED_NONE, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_ATTACHED_HW, XDP_ATTACHED_MULTI = range(5)


_ATTACHED_WORDS = {"xdp": XDP_ATTACHED_DRV, "xdpgeneric": XDP_ATTACHED_SKB,
                   "xdpoffload": XDP_ATTACHED_HW, "xdpmulti": XDP_ATTACHED_MULTI}


@dataclass
class LinkXdp:
    """What IFLA_XDP reports for one interface."""

    ifindex: int
    ifname: str
    drv_prog_id: int = 0
    skb_prog_id: int = 0
    hw_prog_id: int = 0
    mtu: int = 0
    operstate: str = ""
    address: str = ""                 # MAC
    kind: str = ""                    # link kind: veth, dummy, ...
    link: int = 0                     # IFLA_LINK: a veth's peer ifindex
    link_netnsid: int | None = None   # set when that peer lives in another namespace


class NetlinkCallError(KernelError):
    """An rtnetlink request failed; ``extack`` holds the kernel's own explanation."""

    def __init__(self, what: str, err: int, extack: str = ""):
        self.extack = extack
        super().__init__("RTM_SETLINK", err, what + (f" ({extack})" if extack else ""))


def ifindex_of(iface) -> int:
    """An interface's index from its name, or an index given as int or digits (a name made of
    digits wins over an index)."""
    if isinstance(iface, int) and not isinstance(iface, bool):
        return iface
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        if isinstance(iface, str) and iface.isdigit():
            return int(iface)
        raise NotFoundError(f"no such interface: {iface!r} in this network namespace",
                            hint="list interfaces with `ip link`; inside a namespace use `ip netns exec NS ...`") from None


def ifname_of(ifindex: int) -> str:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        raise NotFoundError(f"no interface with ifindex {ifindex} in this network namespace") from None


def _xdp_of(msg) -> LinkXdp:
    info = msg.get_attr("IFLA_LINKINFO")
    out = LinkXdp(ifindex=msg["index"], ifname=msg.get_attr("IFLA_IFNAME") or "",
                  mtu=msg.get_attr("IFLA_MTU") or 0, operstate=msg.get_attr("IFLA_OPERSTATE") or "",
                  address=msg.get_attr("IFLA_ADDRESS") or "",
                  kind=(info.get_attr("IFLA_INFO_KIND") if info is not None else "") or "",
                  link=msg.get_attr("IFLA_LINK") or 0, link_netnsid=msg.get_attr("IFLA_LINK_NETNSID"))
    xdp = msg.get_attr("IFLA_XDP")
    if xdp is None:
        return out
    attached = xdp.get_attr("IFLA_XDP_ATTACHED") or XDP_ATTACHED_NONE
    if isinstance(attached, str):  # pyroute2 decodes the mode to iproute2's words
        attached = _ATTACHED_WORDS.get(attached, XDP_ATTACHED_NONE)
    prog_id = xdp.get_attr("IFLA_XDP_PROG_ID") or 0
    if attached == XDP_ATTACHED_DRV:
        out.drv_prog_id = prog_id
    elif attached == XDP_ATTACHED_SKB:
        out.skb_prog_id = prog_id
    elif attached == XDP_ATTACHED_HW:
        out.hw_prog_id = prog_id
    elif attached == XDP_ATTACHED_MULTI:
        out.drv_prog_id = xdp.get_attr("IFLA_XDP_DRV_PROG_ID") or 0
        out.skb_prog_id = xdp.get_attr("IFLA_XDP_SKB_PROG_ID") or 0
        out.hw_prog_id = xdp.get_attr("IFLA_XDP_HW_PROG_ID") or 0
    return out


def list_links() -> list[LinkXdp]:
    """Every interface in the current namespace with its XDP attachments."""
    with IPRoute() as ipr:
        return [_xdp_of(m) for m in ipr.get_links()]


def _link_message(ifindex: int):
    with IPRoute() as ipr:
        try:
            return ipr.get_links(ifindex)[0]
        except NetlinkError as exc:
            if exc.code == E.ENODEV:
                raise NotFoundError(f"no interface with ifindex {ifindex} in this network namespace") from None
            raise


def get_link(ifindex: int) -> LinkXdp:
    return _xdp_of(_link_message(ifindex))


def rx_queues(ifindex: int) -> int:
    """How many receive queues the interface has (IFLA_NUM_RX_QUEUES). Netlink, not
    /sys/class/net: sysfs shows the namespace that mounted it, not the caller's."""
    return int(_link_message(ifindex).get_attr("IFLA_NUM_RX_QUEUES") or 1)


def set_xdp(ifindex: int, prog_fd: int, flags: int, expected_fd: int | None = None) -> None:
    """Send IFLA_XDP {FD, FLAGS[, EXPECTED_FD]}: attach (fd >= 0) or detach (fd = -1); ``flags``
    are xdpkit.kernel's XDP_FLAGS_*.

    pyroute2's ``link('set', xdp_fd=...)`` sends no flags; the nested-attribute form does.
    """
    attrs = [("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    with IPRoute(ext_ack=True) if _supports_ext_ack() else IPRoute() as ipr:
        try:
            ipr.link("set", index=ifindex, xdp={"attrs": attrs})
        except NetlinkError as exc:
            extack = ""
            if len(exc.args) > 1 and isinstance(exc.args[1], str) and exc.args[1] != _strerror(exc.code):
                extack = exc.args[1]
            raise NetlinkCallError("setting IFLA_XDP", exc.code, extack) from None


def _strerror(code: int) -> str:
    import os
    return os.strerror(code)


_EXT_ACK: bool | None = None


def _supports_ext_ack() -> bool:
    global _EXT_ACK
    if _EXT_ACK is None:
        try:
            IPRoute(ext_ack=True).close()
            _EXT_ACK = True
        except TypeError:
            _EXT_ACK = False
    return _EXT_ACK


def nsid_of(netns_path: str) -> int | None:
    """The id the current namespace uses for another namespace (IFLA_LINK_NETNSID speaks in
    these), or None when it has not assigned one."""
    import os

    fd = os.open(netns_path, os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            res = ipr.get_netnsid(fd=fd)
    finally:
        os.close(fd)
    nsid = (res or {}).get("nsid")
    return None if nsid is None or nsid >= 0x7FFFFFFF else nsid


def addresses(ifindex: int) -> list[str]:
    """The interface's global-scope IP addresses (IPv4 first), without prefix lengths."""
    with IPRoute() as ipr:
        msgs = ipr.get_addr(index=ifindex)
    out = [(m["family"], m.get_attr("IFA_ADDRESS")) for m in msgs if m["scope"] == 0]
    return [a for _, a in sorted(out, key=lambda fa: fa[0] != socket.AF_INET) if a]


# ---- building links, addresses and routes (the lab's, and the test plugin's) ------------------

def create_veth(a: str, b: str, *, peer_ns_fd: int | None = None, queues: int = 1,
                mac_a: str | None = None, mac_b: str | None = None) -> int:
    """Make veth pair a/b in this namespace, b moved to ``peer_ns_fd`` in the same request (never
    a half-made pair). Returns a's ifindex; both ends are down."""
    peer: dict = {"ifname": b}
    qargs = {"num_tx_queues": queues, "num_rx_queues": queues} if queues > 1 else {}
    peer.update(qargs)
    if mac_b:
        peer["address"] = mac_b
    if peer_ns_fd is not None:
        peer["net_ns_fd"] = peer_ns_fd
    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname=a, kind="veth", peer=peer, **qargs, **({"address": mac_a} if mac_a else {}))
        except NetlinkError as exc:
            err = KernelError("RTM_NEWLINK", exc.code or E.EIO, f"creating veth {a}/{b}")
            err.hint = "an interface with that name may already exist (`ip link`)"
            raise err from None
        return ipr.link_lookup(ifname=a)[0]


def set_up(ifname: str) -> int:
    """Bring ``ifname`` up; its ifindex."""
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise NotFoundError(f"no such interface: {ifname!r} in this network namespace")
        ipr.link("set", index=idx[0], state="up")
        return idx[0]


def add_address(ifname: str, cidr: str, *, nodad: bool = False) -> None:
    """Add ``cidr`` (198.18.1.1/24, 2001:db8::1/64) to ``ifname``; ``nodad`` skips IPv6 DAD."""
    address, _, plen = cidr.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with IPRoute() as ipr:
        ipr.addr("add", index=ifindex_of(ifname), address=address, prefixlen=int(plen), family=family,
                 **({"flags": IFA_F_NODAD} if nodad else {}))


def add_route(dst: str, gateway: str) -> None:
    with IPRoute() as ipr:
        ipr.route("add", dst=dst, gateway=gateway)


def has_route(dst: str, gateway: str) -> bool:
    net, _, plen = dst.partition("/")
    family = socket.AF_INET6 if ":" in net else socket.AF_INET
    with IPRoute() as ipr:
        return any(r.get_attr("RTA_DST") == net and r["dst_len"] == int(plen) and r.get_attr("RTA_GATEWAY") == gateway
                   for r in ipr.get_routes(family=family))


@dataclass
class LinkState:
    """A link as the lab reads it back: identity, MAC, operational state, addresses (with lengths)."""

    ifindex: int
    ifname: str
    mac: str
    state: str
    addresses: list = field(default_factory=list)


def link_states() -> list[LinkState]:
    """Every link of this namespace with its addresses."""
    with IPRoute() as ipr:
        links = [LinkState(ln["index"], ln.get_attr("IFLA_IFNAME"), ln.get_attr("IFLA_ADDRESS"),
                           ln.get_attr("IFLA_OPERSTATE")) for ln in ipr.get_links()]
        by_index = {ln.ifindex: ln for ln in links}
        for a in ipr.get_addr():
            if a["index"] in by_index:
                by_index[a["index"]].addresses.append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    return links
