"""Prometheus metrics of the forwarding plane with the reasons as labels (registered by the
exporter CLI). The counters belong to the plane, not to one member, so they are exported once,
from the attachment of the plane's first member."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from xdpkit.apps.forward.control import PROGRAM, Forwarder


def collect(att, open_map):
    """Metric families for one attachment (nothing unless it is a plane's first member)."""
    if att.name != PROGRAM or not att.ours:
        return []
    fwd = Forwarder.from_attachment(att, open_map)  # the exporter's cached maps: not closed
    if fwd.settings().members[:1] != [att.ifname]:
        return []
    s = fwd.stats()
    packets = CounterMetricFamily("xdpkit_forward_packets", "Frames per outcome (forwarded, to the stack "
                                  "and why, dropped)", labels=["program", "event"])
    octets = CounterMetricFamily("xdpkit_forward_bytes", "Bytes per outcome", labels=["program", "event"])
    for name, e in s["events"].items():
        packets.add_metric([str(att.id), name], e["packets"])
        octets.add_metric([str(att.id), name], e["bytes"])
    return [packets, octets]
