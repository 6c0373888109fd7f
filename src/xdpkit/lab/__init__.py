"""The lab layer: virtual networks of namespaces and veths (topology, lb_topology), the
live-frames traffic generator (trafficgen), benchmarks (bench) and the core demo (demo).

Above core and beside observe/: it builds test networks and drives traffic, owns no app.
"""
from xdpkit.lab.topology import (ADDRESSES, ROLES, Lab, LabAddresses, add_veth, build_or_remove,
                                 disable_ipv6, lo_up, remove_namespaces, send_frames)

__all__ = ["ADDRESSES", "ROLES", "Lab", "LabAddresses", "add_veth", "build_or_remove", "disable_ipv6",
           "lo_up", "remove_namespaces", "send_frames"]
