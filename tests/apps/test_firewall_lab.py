"""End to end on the lab: a UDP flood from src is dropped at the dut's ingress while a TCP
connection from src to dst keeps working."""
import socket
import threading

import pytest

from xdpkit.lab import trafficgen as tg
from xdpkit._sys import netns as xns
from xdpkit.apps.firewall.control import Firewall
from xdpkit.apps.firewall.rules import parse_config
from xdpkit.lab import ADDRESSES as A

pytestmark = pytest.mark.kernel


def _echo_server(ns: str):
    with xns.inside(ns):
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((A.dst_ip4, 7777))
        srv.listen(1)
    srv.settimeout(10)

    def serve():
        try:
            conn, _ = srv.accept()
            conn.settimeout(10)
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_flood_dropped_while_tcp_keeps_working(lab):
    srv, server = _echo_server(lab.dst)
    try:
        with xns.inside(lab.dut):
            fw = Firewall.load("in0", parse_config("deny udp dport 9\npolicy allow"), mode="native")
        try:
            with xns.inside(lab.src):
                client = socket.create_connection((A.dst_ip4, 7777), timeout=5)
                t = tg.build_template(proto="udp", size=64, src_mac=A.src_mac, dst_mac=A.dut_in_mac,
                                      src_ip=A.src_ip4, dst_ip=A.dst_ip4, dport=9)
                gen = tg.TrafficGen("eth0", t, tg.Flows(src_ips=64, sport_count=512))
            result = {}

            def flood():
                with xns.inside(lab.src):
                    result["gen"] = gen.run(duration=3)

            flooder = threading.Thread(target=flood)
            flooder.start()
            echoed = 0
            try:
                with client:
                    for i in range(30):
                        msg = f"hello {i}".encode()
                        client.sendall(msg)
                        if client.recv(64) == msg:
                            echoed += 1
            finally:
                flooder.join()
                gen.close()
            sent = result["gen"].sent
            with xns.inside(lab.dut):
                stats = fw.stats()
        finally:
            with xns.inside(lab.dut):
                Firewall.unload("in0")
            fw.close()
    finally:
        srv.close()
        server.join(timeout=5)
    assert echoed == 30
    dropped = stats["rules"][0]["packets"]
    assert sent > 10_000 and 0.5 * sent <= dropped <= sent
    assert stats["verdicts"]["XDP_PASS"]["packets"] >= 30  # the TCP exchange went through
