"""Frames arriving on an interface, for tests that check what left a program (AF_PACKET)."""
import socket
import time

from xdpkit import netns as xns

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
RCVBUF = 16 << 20


class Capture:
    """Every frame arriving on ``ifname`` (in namespace ``ns``, else the thread's own), from now on."""

    def __init__(self, ifname: str = "eth0", ns: str | None = None):
        if ns is None:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        else:
            with xns.inside(ns):
                self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        # A frame that came through a veth's NAPI costs a page of receive buffer: the default
        # (~208 KiB) held 56 of them and dropped the rest of a burst.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
        self.sock.bind((ifname, 0))

    def frames(self, match, want: int = 1, timeout: float = 2.0) -> list[bytes]:
        """Up to ``want`` received frames (raw bytes) for which ``match(frame)`` holds, waiting at
        most ``timeout`` seconds; frames this host sent out are skipped."""
        out, deadline = [], time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            if addr[2] != socket.PACKET_OUTGOING and match(data):
                out.append(data)
        return out

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
