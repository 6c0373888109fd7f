"""ethtool features through pyroute2 (its ioctl socket acts in the calling thread's namespace)."""
from __future__ import annotations

import ctypes
import fcntl
import socket
import struct

from pyroute2.ethtool import Ethtool

from xdpkit.errors import XdpkitError


def get_gro(ifname: str) -> bool:
    with Ethtool() as et:
        try:
            return bool(et.get_features(ifname).features["rx-gro"].enable)
        except (OSError, KeyError) as exc:
            raise XdpkitError(f"cannot read GRO state of {ifname}: {exc}") from None


def set_gro(ifname: str, on: bool = True) -> None:
    """``ethtool -K IF gro on|off``.

    A veth accepts redirected xdp_frames (XDP_TX/REDIRECT, live frames) only if its peer has
    an XDP program or GRO enabled; otherwise they vanish silently.
    """
    with Ethtool() as et:
        feats = et.get_features(ifname)
        feats.features["rx-gro"].enable = on
        et.set_features(ifname, feats)


def set_tx_checksum(ifname: str, on: bool = True) -> None:
    """``ethtool -K IF tx on|off``: with it off the stack writes full checksums itself.

    Needed where an XDP program forwards a veth's frames (XDP_TX, redirect): a veth sends
    CHECKSUM_PARTIAL packets, and the "finish the checksum" note does not survive the trip
    through an xdp_frame, so the receiver sees a bad checksum.
    """
    with Ethtool() as et:
        feats = et.get_features(ifname)
        for name, feat in feats.features.items():
            if name.startswith("tx-checksum") and feat.available:
                feat.enable = on
        et.set_features(ifname, feats)


class StatsReader:
    """``ethtool -S IF`` as a dict, through one ioctl socket opened in the current namespace.

    Used to sample receive counters once a second: one ioctl per sample, none per packet.
    """

    def __init__(self, ifname: str):
        from pyroute2.ethtool.ioctl import IoctlEthtool

        self.ifname = ifname
        self._io = IoctlEthtool(ifname)

    def read(self) -> dict[str, int]:
        return dict(self._io.get_statistics())

    def rx_xdp_packets(self) -> int:
        """Frames a veth took in through its XDP receive path, summed over its queues."""
        return sum(v for k, v in self.read().items() if k.startswith("rx_queue_") and k.endswith("_xdp_packets"))

    def close(self) -> None:
        self._io.close()



SIOCETHTOOL = 0x8946
ETHTOOL_GCHANNELS = 0x0000003C
_CHANNELS = struct.Struct("<9I")   # struct ethtool_channels: cmd, 4 maxima, rx, tx, other, combined


def rx_channels(ifname: str) -> int | None:
    """Receive queues in use (ETHTOOL_GCHANNELS: rx or combined channels), or None when the
    driver does not say. The ioctl acts in the calling thread's namespace."""
    data = ctypes.create_string_buffer(_CHANNELS.pack(ETHTOOL_GCHANNELS, *([0] * 8)), _CHANNELS.size)
    ifreq = struct.pack("16sP", ifname.encode()[:15], ctypes.addressof(data))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sk:
        try:
            fcntl.ioctl(sk.fileno(), SIOCETHTOOL, ifreq)
        except OSError:
            return None
    fields = _CHANNELS.unpack(data.raw)
    return max(fields[5], fields[8]) or None
