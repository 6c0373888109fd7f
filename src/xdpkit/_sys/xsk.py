"""AF_XDP sockets, raw: the socket, its options, bind, the ring mappings (<linux/if_xdp.h>).

Python's socket module creates a socket of any family and passes option bytes through, but it
cannot bind one it does not know (AF_XDP), so bind goes through libc. Everything here is bytes
and integers; xdpkit.afxdp gives it shape.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as E
import mmap
import os
import socket
import struct

from xdpkit.errors import KernelError

AF_XDP = 44
SOL_XDP = 283

# setsockopt/getsockopt names
XDP_MMAP_OFFSETS = 1
XDP_RX_RING = 2
XDP_TX_RING = 3
XDP_UMEM_REG = 4
XDP_UMEM_FILL_RING = 5
XDP_UMEM_COMPLETION_RING = 6
XDP_STATISTICS = 7
XDP_OPTIONS = 8

# bind flags
XDP_SHARED_UMEM = 1 << 0
XDP_COPY = 1 << 1
XDP_ZEROCOPY = 1 << 2
XDP_USE_NEED_WAKEUP = 1 << 3

XDP_RING_NEED_WAKEUP = 1 << 0
XDP_OPTIONS_ZEROCOPY = 1 << 0

# mmap page offsets of the four rings
PGOFF_RX = 0
PGOFF_TX = 0x80000000
PGOFF_FILL = 0x100000000
PGOFF_COMPLETION = 0x180000000

_OFFSETS = struct.Struct("<16Q")           # struct xdp_mmap_offsets: rx, tx, fr, cr x (producer, consumer, desc, flags)
_UMEM_REG = struct.Struct("<QQIII4x")      # struct xdp_umem_reg (with tx_metadata_len = 0)
_STATISTICS = struct.Struct("<6Q")         # struct xdp_statistics
STATISTICS = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
              "rx_fill_ring_empty_descs", "tx_ring_empty_descs")
RING_NAMES = ("rx", "tx", "fill", "completion")


class _SockaddrXdp(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint16), ("flags", ctypes.c_uint16), ("ifindex", ctypes.c_uint32),
                ("queue_id", ctypes.c_uint32), ("shared_umem_fd", ctypes.c_uint32)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.bind.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32]


def open_socket() -> socket.socket:
    try:
        return socket.socket(AF_XDP, socket.SOCK_RAW, 0)
    except OSError as exc:
        raise KernelError("socket(AF_XDP)", exc.errno or E.EAFNOSUPPORT, "creating an AF_XDP socket",
                          hint="the kernel needs CONFIG_XDP_SOCKETS; run as root") from None


def _setsockopt(sock: socket.socket, opt: int, value: bytes, what: str) -> None:
    try:
        sock.setsockopt(SOL_XDP, opt, value)
    except OSError as exc:
        raise KernelError("setsockopt(SOL_XDP)", exc.errno, what) from None


def register_umem(sock: socket.socket, addr: int, size: int, frame_size: int, headroom: int) -> None:
    _setsockopt(sock, XDP_UMEM_REG, _UMEM_REG.pack(addr, size, frame_size, headroom, 0),
                f"registering a UMEM of {size} bytes in frames of {frame_size}")


def set_ring_size(sock: socket.socket, ring: str, size: int) -> None:
    opt = {"rx": XDP_RX_RING, "tx": XDP_TX_RING, "fill": XDP_UMEM_FILL_RING,
           "completion": XDP_UMEM_COMPLETION_RING}[ring]
    _setsockopt(sock, opt, struct.pack("<I", size), f"sizing the {ring} ring to {size} entries")


def mmap_offsets(sock: socket.socket) -> dict[str, tuple[int, int, int, int]]:
    """Ring name -> (producer, consumer, descriptors, flags) byte offsets in its mapping."""
    try:
        raw = sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, _OFFSETS.size)
    except OSError as exc:
        raise KernelError("getsockopt(XDP_MMAP_OFFSETS)", exc.errno, "reading the ring layout") from None
    v = _OFFSETS.unpack(raw)
    return {name: tuple(v[4 * i:4 * i + 4]) for i, name in enumerate(RING_NAMES)}


def map_ring(sock: socket.socket, pgoff: int, size: int) -> mmap.mmap:
    try:
        return mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                         mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
    except OSError as exc:
        raise KernelError("mmap", exc.errno, "mapping an AF_XDP ring") from None


def bind(sock: socket.socket, ifindex: int, queue: int, flags: int, shared_fd: int = 0) -> None:
    addr = _SockaddrXdp(AF_XDP, flags, ifindex, queue, shared_fd)
    if _libc.bind(sock.fileno(), ctypes.byref(addr), ctypes.sizeof(addr)) != 0:
        err = ctypes.get_errno()
        raise KernelError("bind(AF_XDP)", err, f"binding to ifindex {ifindex} queue {queue}")


def statistics(sock: socket.socket) -> dict[str, int]:
    try:
        raw = sock.getsockopt(SOL_XDP, XDP_STATISTICS, _STATISTICS.size)
    except OSError as exc:
        raise KernelError("getsockopt(XDP_STATISTICS)", exc.errno, "reading socket statistics") from None
    raw = raw.ljust(_STATISTICS.size, b"\0")  # older kernels return the first three only
    return dict(zip(STATISTICS, _STATISTICS.unpack(raw)))


def zerocopy(sock: socket.socket) -> bool:
    try:
        raw = sock.getsockopt(SOL_XDP, XDP_OPTIONS, 4)
    except OSError as exc:
        raise KernelError("getsockopt(XDP_OPTIONS)", exc.errno, "reading socket options") from None
    return bool(struct.unpack("<I", raw)[0] & XDP_OPTIONS_ZEROCOPY)


def kick_tx(sock: socket.socket) -> None:
    """Tell the kernel the TX ring has work (sendto with nothing, MSG_DONTWAIT)."""
    try:
        sock.send(b"", socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as exc:
        if exc.errno not in (E.EBUSY, E.ENOBUFS, E.EAGAIN, E.ENETDOWN):
            raise KernelError("sendto(AF_XDP)", exc.errno, "waking the kernel for TX") from None


def kick_rx(sock: socket.socket) -> None:
    """Tell the kernel the fill ring has frames again (recvfrom with nothing, MSG_DONTWAIT)."""
    try:
        sock.recv(0, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as exc:
        if exc.errno not in (E.EAGAIN, E.EBUSY, E.ENETDOWN):
            raise KernelError("recvfrom(AF_XDP)", exc.errno, "waking the kernel for RX") from None


def buffer_address(buf: mmap.mmap) -> int:
    """The virtual address of an anonymous mapping (what XDP_UMEM_REG wants)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def anonymous(size: int) -> mmap.mmap:
    return mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0),
                     mmap.PROT_READ | mmap.PROT_WRITE)


def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")
