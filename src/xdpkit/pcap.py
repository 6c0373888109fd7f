"""Read and write packet captures (pcap and pcapng) through dpkt."""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import dpkt

from xdpkit.errors import ConfigError, NotFoundError

LINKTYPE_ETHERNET = 1


def read_frames(path: str | os.PathLike) -> Iterator[bytes]:
    """Yield every frame of an Ethernet pcap or pcapng file."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise NotFoundError(f"no such capture file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        magic = fh.read(4)
        fh.seek(0)
        try:
            reader = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        except (ValueError, dpkt.dpkt.Error) as exc:
            raise ConfigError(f"{path} is not a pcap or pcapng file ({exc})") from None
        if reader.datalink() != LINKTYPE_ETHERNET:
            raise ConfigError(f"{path} has link type {reader.datalink()}; XDP needs Ethernet frames (1)")
        try:
            for _ts, frame in reader:
                yield bytes(frame)
        except (ValueError, dpkt.dpkt.NeedData) as exc:
            raise ConfigError(f"{path} is truncated or corrupt ({exc})") from None


def write_frames(path: str | os.PathLike, frames: Iterable[bytes]) -> int:
    """Write frames to a new Ethernet pcap file; returns how many were written."""
    n = 0
    with open(path, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=LINKTYPE_ETHERNET)
        for frame in frames:
            writer.writepkt(bytes(frame), ts=0)
            n += 1
    return n
