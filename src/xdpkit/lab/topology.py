"""The virtual lab: three network namespaces joined by veth pairs, a routed path for XDP work.

    {name}-src  eth0 ──── in0  {name}-dut  out0 ──── eth0  {name}-dst
    198.18.1.2/24   198.18.1.1/24      198.18.2.1/24    198.18.2.2/24
    2001:db8:1::2/64 2001:db8:1::1/64  2001:db8:2::1/64 2001:db8:2::2/64

The dut forwards IPv4 and IPv6; src and dst route 198.18.0.0/15 and 2001:db8::/32 through it.
Only benchmark/documentation ranges are used (RFC 2544 and RFC 3849), and nothing here touches
the host's own interfaces: every netlink call runs with the thread inside a lab namespace.

MACs are fixed (02:58:44:00:<net>:<host>, locally administered) so tests and demos can build
frames without asking the kernel, and so a half-built lab is recognisable.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import asdict, dataclass

from xdpkit import bpffs, interfaces, netns
from xdpkit.errors import ConfigError, LabError, NotFoundError, XdpkitError
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,7}$")
ROLES = ("src", "dut", "dst", "alt")


def _mac(net: int, host: int) -> str:
    return f"02:58:44:00:{net:02x}:{host:02x}"


@dataclass(frozen=True)
class LabAddresses:
    """Every address in the lab (the same for every lab name: namespaces keep them apart)."""

    src_ip4: str = "198.18.1.2"
    src_ip6: str = "2001:db8:1::2"
    src_mac: str = _mac(1, 2)
    dut_in_ip4: str = "198.18.1.1"
    dut_in_ip6: str = "2001:db8:1::1"
    dut_in_mac: str = _mac(1, 1)
    dut_out_ip4: str = "198.18.2.1"
    dut_out_ip6: str = "2001:db8:2::1"
    dut_out_mac: str = _mac(2, 1)
    dst_ip4: str = "198.18.2.2"
    dst_ip6: str = "2001:db8:2::2"
    dst_mac: str = _mac(2, 2)
    # the router lab's third network (Lab(router=True))
    dut_alt_ip4: str = "198.18.3.1"
    dut_alt_ip6: str = "2001:db8:3::1"
    dut_alt_mac: str = _mac(3, 1)
    alt_ip4: str = "198.18.3.2"
    alt_ip6: str = "2001:db8:3::2"
    alt_mac: str = _mac(3, 2)

    def to_dict(self) -> dict:
        return asdict(self)


ADDRESSES = LabAddresses()


@dataclass(frozen=True)
class _Iface:
    role: str
    ifname: str
    mac: str
    ip4: str
    ip6: str


@dataclass(frozen=True)
class _Route:
    role: str
    dst: str
    gateway: str


_A = ADDRESSES
_IFACES = (
    _Iface("src", "eth0", _A.src_mac, _A.src_ip4 + "/24", _A.src_ip6 + "/64"),
    _Iface("dut", "in0", _A.dut_in_mac, _A.dut_in_ip4 + "/24", _A.dut_in_ip6 + "/64"),
    _Iface("dut", "out0", _A.dut_out_mac, _A.dut_out_ip4 + "/24", _A.dut_out_ip6 + "/64"),
    _Iface("dst", "eth0", _A.dst_mac, _A.dst_ip4 + "/24", _A.dst_ip6 + "/64"),
)
# (end in the endpoint namespace, its peer in the dut)
_VETHS = ((_IFACES[0], _IFACES[1]), (_IFACES[3], _IFACES[2]))
_ROUTES = (
    _Route("src", "198.18.0.0/15", _A.dut_in_ip4),
    _Route("src", "2001:db8::/32", _A.dut_in_ip6),
    _Route("dst", "198.18.0.0/15", _A.dut_out_ip4),
    _Route("dst", "2001:db8::/32", _A.dut_out_ip6),
)
# The router lab adds a third network behind the dut, so a route can move traffic between two.
_ALT_IFACES = (
    _Iface("alt", "eth0", _A.alt_mac, _A.alt_ip4 + "/24", _A.alt_ip6 + "/64"),
    _Iface("dut", "out1", _A.dut_alt_mac, _A.dut_alt_ip4 + "/24", _A.dut_alt_ip6 + "/64"),
)
_ALT_ROUTES = (
    _Route("alt", "198.18.0.0/15", _A.dut_alt_ip4),
    _Route("alt", "2001:db8::/32", _A.dut_alt_ip6),
)
_FORWARDING = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


# ---- building blocks (also used by xdpkit.testing) -----------------------------------------

def _ns_fd(name: str) -> int:
    try:
        return os.open(os.path.join(netns.NETNS_RUN_DIR, name), os.O_RDONLY)
    except FileNotFoundError:
        raise NotFoundError(f"no network namespace named {name!r}", hint="see `ip netns list`") from None


def add_veth(a: str, b: str, *, peer_ns: str | None = None, up: bool = True, gro: bool = True,
             mac_a: str | None = None, mac_b: str | None = None, queues: int = 1) -> tuple[int, int]:
    """Create veth pair ``a``/``b`` in this thread's namespace; ``b`` goes to ``peer_ns`` if given.

    The peer is moved in the same RTM_NEWLINK (IFLA_NET_NS_FD in the peer info), so there is
    never a half-made pair with the peer in the wrong namespace. Returns (ifindex_a, ifindex_b),
    each valid in its own namespace.
    """
    fd = _ns_fd(peer_ns) if peer_ns else None
    try:
        try:
            idx_a = interfaces.create_veth(a, b, peer_ns_fd=fd, queues=queues, mac_a=mac_a, mac_b=mac_b)
        except XdpkitError as exc:
            raise LabError(f"cannot create veth {a}/{b}: {exc}", hint=exc.hint) from None
        if up:
            interfaces.set_up(a)
        if gro:
            interfaces.set_gro(a)
    finally:
        if fd is not None:
            os.close(fd)
    if peer_ns:
        with netns.inside(peer_ns):
            return idx_a, _finish_peer(b, up, gro)
    return idx_a, _finish_peer(b, up, gro)


def _finish_peer(ifname: str, up: bool, gro: bool) -> int:
    idx = interfaces.set_up(ifname) if up else interfaces.ifindex_of(ifname)
    if gro:
        interfaces.set_gro(ifname)
    return idx


def lo_up() -> None:
    interfaces.set_up("lo")


def disable_ipv6() -> None:
    """No IPv6 in this thread's namespace, for interfaces made from now on too: fresh links
    would otherwise send router solicitations and MLD reports, noise in exact counts."""
    for conf in ("all", "default"):
        _write(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "1")


def send_frames(ns: str, ifname: str, frames: list[bytes], *, timeout: float = 2.0) -> int:
    """Send raw Ethernet frames out of ``ifname`` in namespace ``ns`` (AF_PACKET). Returns the count.

    The socket is opened with this thread inside ``ns`` (a socket belongs to the namespace it was
    created in). ``timeout`` bounds each send, so a stuck queue cannot hang the caller.
    """
    for f in frames:
        if len(f) < 14:
            raise ConfigError(f"frame of {len(f)} bytes is shorter than an Ethernet header (14)")
    with netns.inside(ns):
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
            s.settimeout(timeout)
            try:
                s.bind((ifname, 0))
            except OSError:
                raise NotFoundError(f"no interface {ifname!r} in namespace {ns!r}",
                                    hint=f"see `ip netns exec {ns} ip link`") from None
            for f in frames:
                s.send(f)
    return len(frames)


# ---- the lab -------------------------------------------------------------------------------

def remove_namespaces(names) -> list[str]:
    """Remove those of ``names`` that exist (their veths go with them); the names removed."""
    removed = []
    for name in names:
        if netns.exists(name):
            netns.remove(name)
            removed.append(name)
    return removed


def build_or_remove(build, down, what: str) -> None:
    """Run ``build``; if it fails, ``down`` removes whatever it made (never a half-built lab)
    and the error goes on, unexpected ones as a LabError naming ``what``."""
    try:
        build()
    except BaseException as exc:
        down()
        if isinstance(exc, XdpkitError) or not isinstance(exc, Exception):
            raise
        raise LabError(f"building {what} failed: {exc}",
                       hint="run as root; `ip netns list` shows what exists") from exc


class Lab:
    """A named lab (default "xdpkit"): namespaces ``{name}-src``, ``{name}-dut``, ``{name}-dst``.

    ``router=True`` is the router lab: a third network behind the dut (``{name}-alt``, dut
    ``out1``), and transmit checksum offload off on the end hosts. A veth leaves a locally sent
    TCP or UDP checksum for "hardware" to finish (CHECKSUM_PARTIAL); a frame that the dut
    forwards with XDP leaves as it came, unfinished, and the receiver drops it (ICMP, whose
    checksum the stack always writes, still works, so ping passes and TCP does not).
    """

    addresses = ADDRESSES

    def __init__(self, name: str = "xdpkit", *, router: bool = False):
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"invalid lab name {name!r}: use 1-8 characters from a-z, 0-9 and '-', "
                              "not starting with '-'", field="name")
        self.name = name
        self.router = router
        self._ifaces = _IFACES + (_ALT_IFACES if router else ())
        self._veths = _VETHS + (((_ALT_IFACES[0], _ALT_IFACES[1]),) if router else ())
        self._routes = _ROUTES + (_ALT_ROUTES if router else ())

    @classmethod
    def existing(cls, name: str = "xdpkit") -> "Lab":
        """The lab of that name as it exists: the router lab if its third network is there."""
        return cls(name, router=netns.exists(f"{name}-alt"))

    def __repr__(self) -> str:
        return f"<Lab {self.name}{' router' if self.router else ''}>"

    # names
    @property
    def src(self) -> str:
        return f"{self.name}-src"

    @property
    def dut(self) -> str:
        return f"{self.name}-dut"

    @property
    def dst(self) -> str:
        return f"{self.name}-dst"

    @property
    def alt(self) -> str:
        return f"{self.name}-alt"

    @property
    def namespaces(self) -> list[str]:
        return [self.src, self.dut, self.dst] + ([self.alt] if self.router else [])

    def ns(self, role: str) -> str:
        """Namespace name for a role ("src", "dut", "dst", "alt"); a full lab namespace name passes through."""
        if role in ROLES and (role != "alt" or self.router):
            return f"{self.name}-{role}"
        if role in self.namespaces:
            return role
        raise ConfigError(f"unknown lab role {role!r}; use {', '.join(ROLES[:len(self.namespaces)])}",
                          field="role")

    # lifecycle
    def exists(self) -> bool:
        """True if any of the lab's namespaces exists (a half-built lab exists too)."""
        return any(netns.exists(n) for n in self.namespaces + [self.alt])

    def up(self) -> dict:
        """Build the lab, or leave it as is if it is complete; a partial lab is rebuilt."""
        pin_root = bpffs.pin_root()
        problems = self.problems()
        if not problems:
            return {"name": self.name, "action": "unchanged", "namespaces": self.namespaces,
                    "bpffs": pin_root}
        rebuilt = self.exists()
        if rebuilt:
            self.down()
        build_or_remove(self._build, self.down, f"lab {self.name}")
        left = self._settled_problems()
        if left:
            self.down()
            raise LabError(f"lab {self.name} is not right after building it: {'; '.join(left)}")
        return {"name": self.name, "action": "rebuilt" if rebuilt else "created",
                "repaired": problems if rebuilt else [], "namespaces": self.namespaces,
                "bpffs": pin_root}

    def down(self) -> list[str]:
        """Remove the lab's namespaces (their veths go with them), the router lab's third network
        too. Returns the names removed."""
        return remove_namespaces(self.namespaces + ([] if self.router else [self.alt]))

    def _build(self) -> None:
        for name in self.namespaces:
            netns.create(name)
            with netns.inside(name):
                lo_up()
                # Addresses also carry IFA_F_NODAD; this covers link-local and anything added later.
                for conf in ("all", "default"):
                    _write(f"/proc/sys/net/ipv6/conf/{conf}/accept_dad", "0")
        with netns.inside(self.dut):
            for path in _FORWARDING:
                _write(path, "1")
        for end, peer in self._veths:
            with netns.inside(self.ns(end.role)):
                add_veth(end.ifname, peer.ifname, peer_ns=self.dut, mac_a=end.mac, mac_b=peer.mac)
                if self.router:
                    interfaces.set_tx_checksum(end.ifname, False)
        for iface in self._ifaces:  # links are up at both ends now, so routes find their gateways
            with netns.inside(self.ns(iface.role)):
                for cidr in (iface.ip4, iface.ip6):
                    interfaces.add_address(iface.ifname, cidr, nodad=True)
        for r in self._routes:
            with netns.inside(self.ns(r.role)):
                interfaces.add_route(r.dst, r.gateway)

    def _settled_problems(self, timeout: float = 5.0) -> list[str]:
        """problems() once the kernel has caught up: a veth's operational state (carrier) is set
        by the kernel's link watcher, which batches events and can lag a second or more behind
        `ip link set up` when many links change at once."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.problems()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    # inspection
    def problems(self) -> list[str]:
        """What differs from a complete lab (empty list: the lab is complete)."""
        missing = [n for n in self.namespaces if not netns.exists(n)]
        if missing:
            return [f"namespace {n} missing" for n in missing]
        out = []
        links: dict[str, dict] = {}  # one dump per namespace (this runs in a polling loop)
        for iface in self._ifaces:
            ns = self.ns(iface.role)
            if ns not in links:
                with netns.inside(ns):
                    links[ns] = {ln.ifname: ln for ln in interfaces.link_states()}
            link = links[ns].get(iface.ifname)
            if link is None:
                out.append(f"{ns}: no interface {iface.ifname}")
                continue
            if link.mac != iface.mac:
                out.append(f"{ns}: {iface.ifname} has MAC {link.mac}")
            if link.state != "UP":
                out.append(f"{ns}: {iface.ifname} is {link.state}")
            for want in (iface.ip4, iface.ip6):
                if want not in link.addresses:
                    out.append(f"{ns}: {iface.ifname} lacks {want}")
        for r in self._routes:
            ns = self.ns(r.role)
            with netns.inside(ns):
                if not interfaces.has_route(r.dst, r.gateway):
                    out.append(f"{ns}: no route {r.dst} via {r.gateway}")
        with netns.inside(self.dut):
            for path in _FORWARDING:
                if _read(path) != "1":
                    out.append(f"{self.dut}: {path} is not 1")
        return out

    def status(self) -> dict:
        """The lab's namespaces, their interfaces, addresses and XDP attachments."""
        from xdpkit import xdp  # imported late: it needs libbpf, building a lab does not

        spaces = []
        for name in self.namespaces:
            if not netns.exists(name):
                continue
            with netns.inside(name):
                states = interfaces.link_states()
                links = [(ln.ifindex, ln.ifname, ln.mac, ln.state) for ln in states]
                addrs = {ln.ifindex: ln.addresses for ln in states}
                attached = [att.to_dict() for att in xdp.query()]
            spaces.append({"name": name, "interfaces": [
                {"ifname": ifname, "ifindex": idx, "mac": mac, "state": state,
                 "addresses": addrs.get(idx, []),
                 "xdp": [a for a in attached if a["ifindex"] == idx]}
                for idx, ifname, mac, state in links]})
        return {"name": self.name, "exists": bool(spaces), "complete": self.problems() == [],
                "namespaces": spaces}

    # doing things in it
    def run(self, role: str, argv: list[str], *, timeout: float = 10.0,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` in a lab namespace through ``ip netns exec`` (text output captured)."""
        ns = self.ns(role)
        try:
            return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                                  timeout=timeout, check=check)
        except subprocess.TimeoutExpired:
            raise LabError(f"{' '.join(argv)!r} in {ns} did not finish within {timeout}s") from None
        except subprocess.CalledProcessError as exc:
            raise LabError(f"{' '.join(argv)!r} in {ns} failed (exit {exc.returncode}): "
                           f"{(exc.stderr or '').strip()}") from None

    def send_frames(self, role: str, ifname: str, frames: list[bytes], **kw) -> int:
        return send_frames(self.ns(role), ifname, frames, **kw)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value + "\n")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()
