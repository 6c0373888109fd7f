"""ethtool features through pyroute2 (its ioctl socket acts in the calling thread's namespace)."""
from __future__ import annotations

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
