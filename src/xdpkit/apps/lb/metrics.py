"""Prometheus metrics of the load balancer with VIPs and backends as labels (registered by the
exporter CLI; the exporter alone would export its counter maps by index only)."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from xdpkit.apps.lb.control import PROGRAM, LoadBalancer


def collect(att, open_map):
    """Metric families for one attachment (nothing when it is not the xdpkit load balancer)."""
    if att.name != PROGRAM or not att.ours:
        return []
    s = LoadBalancer.from_attachment(att, open_map).stats()  # the exporter's cached maps: not closed
    vip_p = CounterMetricFamily("xdpkit_lb_vip_packets", "Packets forwarded per VIP", labels=["ifname", "vip"])
    vip_b = CounterMetricFamily("xdpkit_lb_vip_bytes", "Bytes forwarded per VIP", labels=["ifname", "vip"])
    be_p = CounterMetricFamily("xdpkit_lb_backend_packets", "Packets forwarded per backend",
                               labels=["ifname", "vip", "backend"])
    be_b = CounterMetricFamily("xdpkit_lb_backend_bytes", "Bytes forwarded per backend",
                               labels=["ifname", "vip", "backend"])
    up = GaugeMetricFamily("xdpkit_lb_backend_healthy", "1 when the health check has the backend up",
                           labels=["ifname", "vip", "backend"])
    weight = GaugeMetricFamily("xdpkit_lb_backend_weight", "Configured weight (0 = drained)",
                               labels=["ifname", "vip", "backend"])
    for v in s["vips"]:
        vip_p.add_metric([att.ifname, v["vip"]], v["packets"])
        vip_b.add_metric([att.ifname, v["vip"]], v["bytes"])
        for b in v["backends"]:
            labels = [att.ifname, v["vip"], b["address"]]
            be_p.add_metric(labels, b["packets"])
            be_b.add_metric(labels, b["bytes"])
            up.add_metric(labels, int(b["healthy"]))
            weight.add_metric(labels, b["weight"])
    events = CounterMetricFamily("xdpkit_lb_events", "Flow-table hits and misses, errors, ICMP sent",
                                 labels=["ifname", "event"])
    for name, e in s["events"].items():
        events.add_metric([att.ifname, name], e["packets"])
    return [vip_p, vip_b, be_p, be_b, up, weight, events]
