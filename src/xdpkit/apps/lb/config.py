"""The load balancer's configuration: services (VIPs) with backend pools, validated.

A config file is TOML::

    seed = 7                          # Maglev/flow-hash seed: equal on every LB node
    encap_source_v4 = "198.18.99.0/24"  # outer source addresses (chosen by flow hash)
    encap_source_v6 = "2001:db8:99::/64"
    mtu = 1500                        # largest frame payload the LB may send (0 = the interface's)
    # gateway_mac = "02:00:00:00:00:01"  # next hop for encapsulated packets (default: sender)
    # redirect = "eth1"                  # send with XDP_REDIRECT out of this interface

    [[vip]]
    address = "198.18.200.1"
    protocol = "tcp"                  # tcp | udp
    port = 80                         # 0 or omitted: every port
    hash = "5-tuple"                  # or "no-sport": a client's flows all go to one backend
    table_size = 65537                # prime
    health = { kind = "http", port = 80, path = "/", interval = 1.0, timeout = 0.5, rise = 2, fall = 2 }
    backends = [
        { address = "198.18.21.2", weight = 2 },
        { address = "198.18.22.2" },
    ]

Backends are named by their address (the Maglev permutation comes from that name), so LB nodes
with the same config and seed pick the same backend for the same flow. Everything is checked
before anything is applied; an error names the VIP, the backend and the field.
"""
from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import asdict, dataclass, replace

from xdpkit.apps.lb.maglev import DEFAULT_SIZE, is_prime, next_prime
from xdpkit.errors import ConfigError
from xdpkit.textfile import read_text

PROTOCOLS = {"tcp": 6, "udp": 17}
HASHES = ("5-tuple", "no-sport")
MAX_WEIGHT = 65535
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_TOP_KEYS = {"seed", "encap_source_v4", "encap_source_v6", "mtu", "gateway_mac", "redirect", "vip"}
_VIP_KEYS = {"address", "protocol", "port", "hash", "table_size", "health", "backends"}
_BACKEND_KEYS = {"address", "weight"}
_HEALTH_KEYS = {"kind", "port", "path", "interval", "timeout", "rise", "fall"}


@dataclass(frozen=True)
class HealthCheck:
    """How the control plane probes a VIP's backends (their real address, not the VIP)."""

    kind: str = "tcp"             # "tcp": connect succeeds; "http": GET path answers 2xx/3xx
    port: int = 0                 # 0: the VIP's port
    path: str = "/"
    interval: float = 1.0         # seconds between probes of one backend
    timeout: float = 0.5
    rise: int = 2                 # consecutive successes to mark a down backend up
    fall: int = 2                 # consecutive failures to mark an up backend down


@dataclass(frozen=True)
class BackendConfig:
    address: str                  # normalised (ipaddress str)
    weight: int = 1               # 0 = drained: keeps its flows, gets no new ones

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4


@dataclass(frozen=True)
class VipConfig:
    address: str
    protocol: str = "tcp"
    port: int = 0                 # 0 = every port
    hash: str = "5-tuple"
    table_size: int = DEFAULT_SIZE
    health: HealthCheck | None = None
    backends: tuple[BackendConfig, ...] = ()

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4

    @property
    def key(self) -> str:
        """The VIP's identity in commands and stats: ``tcp/198.18.200.1:80`` (``:*`` = all)."""
        host = f"[{self.address}]" if self.family == 6 else self.address
        return f"{self.protocol}/{host}:{self.port or '*'}"

    def backend(self, address: str) -> BackendConfig:
        addr = normalise_address(address, "backend address")
        for b in self.backends:
            if b.address == addr:
                return b
        raise ConfigError(f"VIP {self.key} has no backend {addr}")


@dataclass(frozen=True)
class LbConfig:
    seed: int = 0
    encap_source_v4: str = ""
    encap_source_v6: str = ""
    mtu: int = 0
    gateway_mac: str = ""
    redirect: str = ""
    vips: tuple[VipConfig, ...] = ()

    def vip(self, key: str) -> VipConfig:
        want = parse_vip_key(key)
        for v in self.vips:
            if (v.protocol, v.address, v.port) == want:
                return v
        raise ConfigError(f"no VIP {key}", hint="see `xdpkit lb vip list IFACE`")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vip"] = d.pop("vips")
        for v in d["vip"]:
            if v["health"] is None:
                del v["health"]
        return d

    def with_vip(self, vip: VipConfig) -> "LbConfig":
        """A copy with ``vip`` added at the end, or replacing the VIP with the same key in place."""
        if any(v.key == vip.key for v in self.vips):
            vips = tuple(vip if v.key == vip.key else v for v in self.vips)
        else:
            vips = self.vips + (vip,)
        return validate(replace(self, vips=vips))

    def without_vip(self, key: str) -> "LbConfig":
        gone = self.vip(key)
        return replace(self, vips=tuple(v for v in self.vips if v.key != gone.key))


def normalise_address(text, what: str) -> str:
    try:
        return str(ipaddress.ip_address(str(text).strip().strip("[]")))
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not an IPv4 or IPv6 address") from None


def parse_vip_key(key: str) -> tuple[str, str, int]:
    """``tcp/198.18.200.1:80``, ``udp/[2001:db8::1]:53``, ``tcp/198.18.200.1`` (all ports)."""
    m = re.fullmatch(r"(tcp|udp)/(\[[^\]]+\]|[^:/\[\]]+)(?::(\d+|\*))?", key.strip())
    if not m:
        raise ConfigError(f"VIP {key!r} is not PROTO/ADDRESS[:PORT]",
                          hint="e.g. tcp/198.18.200.1:80 or udp/[2001:db8::53]:53")
    port = 0 if m.group(3) in (None, "*") else int(m.group(3))
    if not 0 <= port <= 65535:
        raise ConfigError(f"VIP {key!r}: port {port} is out of range 1..65535 (or * for every port)")
    return m.group(1), normalise_address(m.group(2), "VIP address"), port


def _int(value, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{what} {value} is out of range {lo}..{hi}")
    return value


def _number(value, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number, not {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{what} {value} is out of range {lo}..{hi}")
    return float(value)


def _unknown(d: dict, allowed: set, where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r}", hint=f"known keys: {', '.join(sorted(allowed))}")


def parse_health(d, where: str) -> HealthCheck:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: health must be a table, not {d!r}")
    _unknown(d, _HEALTH_KEYS, f"{where} health")
    kind = d.get("kind", "tcp")
    if kind not in ("tcp", "http"):
        raise ConfigError(f"{where}: health kind {kind!r} is not tcp or http")
    path = d.get("path", "/")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"{where}: health path {path!r} must start with /")
    h = HealthCheck(kind=kind, port=_int(d.get("port", 0), f"{where}: health port", 0, 65535), path=path,
                    interval=_number(d.get("interval", 1.0), f"{where}: health interval", 0.05, 3600),
                    timeout=_number(d.get("timeout", 0.5), f"{where}: health timeout", 0.01, 600),
                    rise=_int(d.get("rise", 2), f"{where}: health rise", 1, 100),
                    fall=_int(d.get("fall", 2), f"{where}: health fall", 1, 100))
    return h


def parse_backend(d, where: str) -> BackendConfig:
    if isinstance(d, str):
        d = {"address": d}
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: a backend is a table {{address = ..., weight = ...}}, not {d!r}")
    _unknown(d, _BACKEND_KEYS, where)
    if "address" not in d:
        raise ConfigError(f"{where}: backend without address")
    return BackendConfig(address=normalise_address(d["address"], f"{where}: backend address"),
                         weight=_int(d.get("weight", 1), f"{where}: weight", 0, MAX_WEIGHT))


def parse_vip(d, where: str) -> VipConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: a VIP is a table, not {d!r}")
    _unknown(d, _VIP_KEYS, where)
    if "address" not in d:
        raise ConfigError(f"{where}: VIP without address")
    address = normalise_address(d["address"], f"{where}: VIP address")
    proto = d.get("protocol", "tcp")
    if proto not in PROTOCOLS:
        raise ConfigError(f"{where}: protocol {proto!r} is not tcp or udp")
    port = _int(d.get("port", 0), f"{where}: port", 0, 65535)
    where = f"VIP {proto}/{address}:{port or '*'}"
    hsh = d.get("hash", "5-tuple")
    if hsh not in HASHES:
        raise ConfigError(f"{where}: hash {hsh!r} is not one of {', '.join(HASHES)}")
    backends = d.get("backends", [])
    if not isinstance(backends, list):
        raise ConfigError(f"{where}: backends must be a list")
    health = parse_health(d["health"], where) if "health" in d else None
    return VipConfig(address=address, protocol=proto, port=port, hash=hsh,
                     table_size=_int(d.get("table_size", DEFAULT_SIZE), f"{where}: table_size", 3, 1 << 24),
                     health=health,
                     backends=tuple(parse_backend(b, f"{where} backend #{i + 1}") for i, b in enumerate(backends)))


def _prefix(text: str, version: int, what: str) -> str:
    if not text:
        return ""
    try:
        net = ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a CIDR prefix") from None
    if net.version != version:
        raise ConfigError(f"{what} {text!r} is not an IPv{version} prefix")
    return str(net)


def validate_weight(weight) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise ConfigError(f"weight {weight!r} must be an integer in 0..{MAX_WEIGHT}")
    return weight


def validate(cfg: LbConfig) -> LbConfig:
    """Check the relations between fields (duplicates, sizes); returns ``cfg``."""
    seen = set()
    for v in cfg.vips:
        for b in v.backends:
            try:
                validate_weight(b.weight)
            except ConfigError as exc:
                raise ConfigError(f"VIP {v.key}: backend {b.address}: {exc}") from None
        if v.key in seen:
            raise ConfigError(f"VIP {v.key} appears twice")
        seen.add(v.key)
        if v.health is not None and not (v.health.port or v.port):
            raise ConfigError(f"VIP {v.key}: the health check needs a port (the VIP serves every port)",
                              hint="set health.port")
        if not is_prime(v.table_size):
            raise ConfigError(f"VIP {v.key}: table_size {v.table_size} is not prime",
                              hint=f"use {next_prime(v.table_size)}")
        addrs = [b.address for b in v.backends]
        dup = {a for a in addrs if addrs.count(a) > 1}
        if dup:
            raise ConfigError(f"VIP {v.key}: backend {sorted(dup)[0]} appears twice")
        if v.table_size <= len(v.backends):
            raise ConfigError(f"VIP {v.key}: table_size {v.table_size} is not larger than its "
                              f"{len(v.backends)} backends", hint=f"use {next_prime(100 * len(v.backends))}")
    return cfg


def parse_dict(d: dict) -> LbConfig:
    if not isinstance(d, dict):
        raise ConfigError("the config must be a table")
    _unknown(d, _TOP_KEYS, "config")
    mac = str(d.get("gateway_mac", "")).lower()
    if mac and not _MAC_RE.match(mac):
        raise ConfigError(f"gateway_mac {mac!r} is not a MAC address like 02:00:00:00:00:01")
    redirect = d.get("redirect", "")
    if not isinstance(redirect, str):
        raise ConfigError(f"redirect must be an interface name, not {redirect!r}")
    vips = d.get("vip", [])
    if not isinstance(vips, list):
        raise ConfigError("vip must be an array of tables ([[vip]])")
    cfg = LbConfig(seed=_int(d.get("seed", 0), "seed", 0, 2**32 - 1),
                   encap_source_v4=_prefix(d.get("encap_source_v4", ""), 4, "encap_source_v4"),
                   encap_source_v6=_prefix(d.get("encap_source_v6", ""), 6, "encap_source_v6"),
                   mtu=_int(d.get("mtu", 0), "mtu", 0, 65535), gateway_mac=mac, redirect=redirect,
                   vips=tuple(parse_vip(v, f"vip #{i + 1}") for i, v in enumerate(vips)))
    if cfg.mtu and cfg.mtu < 1280:
        raise ConfigError(f"mtu {cfg.mtu} is below 1280, the IPv6 minimum")
    return validate(cfg)


def parse_config(text: str, *, source: str = "config") -> LbConfig:
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return parse_dict(d)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}", hint=exc.hint) from None


def load_config_file(path: str) -> LbConfig:
    return parse_config(read_text(path), source=path)


__all__ = ["BackendConfig", "HealthCheck", "LbConfig", "VipConfig", "load_config_file",
           "parse_config", "parse_dict", "parse_vip_key", "validate"]
