"""Prometheus metrics of the firewall with rule texts as labels (registered by the exporter CLI).

The exporter already exports any {packets, bytes} counter map by key; this adds what only the
firewall knows: which rule a counter slot belongs to, and the names of the reasons.
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from xdpkit.apps.firewall.control import PROGRAM, Firewall


def collect(att, open_map):
    """Metric families for one attachment (nothing when it is not the xdpkit firewall)."""
    if att.name != PROGRAM or not att.ours:
        return []
    s = Firewall.from_attachment(att, open_map).stats()  # the exporter's cached maps: not closed
    rule_p = CounterMetricFamily("xdpkit_firewall_rule_packets", "Packets decided by each rule",
                                 labels=["ifname", "index", "rule"])
    rule_b = CounterMetricFamily("xdpkit_firewall_rule_bytes", "Bytes decided by each rule",
                                 labels=["ifname", "index", "rule"])
    for r in s["rules"]:
        labels = [att.ifname, str(r["index"]), r["rule"]]
        rule_p.add_metric(labels, r["packets"])
        rule_b.add_metric(labels, r["bytes"])
    reason_p = CounterMetricFamily("xdpkit_firewall_reason_packets", "Packets per decision reason",
                                   labels=["ifname", "reason"])
    for name, v in s["reasons"].items():
        reason_p.add_metric([att.ifname, name], v["packets"])
    mem = GaugeMetricFamily("xdpkit_firewall_map_memory_bytes", "Kernel memory of the firewall's maps",
                            labels=["ifname"])
    mem.add_metric([att.ifname], s["memory_bytes"])
    return [rule_p, rule_b, reason_p, mem]
