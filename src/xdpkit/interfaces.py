"""Interfaces of the calling thread's namespace: name <-> ifindex, links and their XDP state,
addresses, and what a lab builds (veth pairs, addresses, routes) and tunes (GRO, TX checksum
offload, per-queue counters). The one public door to rtnetlink and ethtool above core."""
from xdpkit._sys.ethtool import StatsReader, get_gro, rx_channels, set_gro, set_tx_checksum
from xdpkit._sys.netlink import (IFA_F_NODAD, LinkState, LinkXdp, add_address, add_route, addresses, create_veth,
                                 get_link, has_route, ifindex_of, ifname_of, link_states, list_links, nsid_of,
                                 set_up)
from xdpkit._sys.netlink import rx_queues as _allocated_rx_queues

__all__ = ["IFA_F_NODAD", "LinkState", "LinkXdp", "StatsReader", "add_address", "add_route", "addresses",
           "create_veth", "get_gro", "get_link", "has_route", "ifindex_of", "ifname_of", "link_states",
           "list_links", "nsid_of", "rx_queues", "set_gro", "set_tx_checksum", "set_up"]


def rx_queues(iface) -> int:
    """Receive queues the interface uses: what its driver reports (ethtool channels), else the
    queues allocated (netlink). /sys/class/net would show the namespace that mounted sysfs."""
    ifindex = ifindex_of(iface)
    return rx_channels(ifname_of(ifindex)) or _allocated_rx_queues(ifindex)
