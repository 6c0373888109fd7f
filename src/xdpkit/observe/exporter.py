"""Prometheus exporter: the counters of every xdpkit program attached in this network namespace.

A custom prometheus_client Collector reads the kernel at scrape time; nothing is polled in
between. A scrape is one netlink dump (what is attached), program/map info, and one batch
lookup per counter map. Map handles are kept between scrapes (opening a map by id means
loading its BTF) and dropped when the program behind them goes away.

Exported, per interface with an xdpkit program (attached by xdpkit, or carrying the
``<xdpkit/stats.h>`` counters):

* ``xdpkit_program_info{ifname,ifindex,id,name,tag,mode,attach}`` 1
* ``xdpkit_packets_total`` / ``xdpkit_bytes_total`` ``{ifname,verdict}``
* ``xdpkit_ethertype_packets_total`` / ``..._bytes_total`` ``{ifname,ethertype}``
* ``xdpkit_protocol_packets_total`` / ``..._bytes_total`` ``{ifname,protocol}``
* ``xdpkit_map_packets_total`` / ``..._bytes_total`` ``{ifname,map,key}``: any other per-CPU
  map of the program whose value is a counter struct (``struct xdpkit_counter``, or any struct
  of exactly ``__u64 packets; __u64 bytes;`` per its BTF): how apps expose per-rule, per-VIP or
  per-backend counters without exporter changes. Array slots that are all zero are left out
  (unused rule slots). At most ``max_series`` keys per map, the busiest; the rest are summed
  under ``key="_other"``.
* ``xdpkit_program_runs_total`` / ``xdpkit_program_run_seconds_total`` ``{ifname,id,name}``:
  kernel BPF stats, which only advance while they are enabled (``--bpf-stats`` or the sysctl).

Apps with richer metrics can add a function with :func:`register_app_collector`.
"""
from __future__ import annotations

import ipaddress
import threading
import time

from xdpkit.errors import ConfigError, XdpkitError
from xdpkit.observe.stats import has_stats, read_counters, stats_map_ids

DEFAULT_LISTEN = "127.0.0.1:9435"
COUNTER_TYPE = "struct xdpkit_counter"

_APP_COLLECTORS: list = []


def register_app_collector(fn) -> None:
    """``fn(attachment, open_map) -> iterable of prometheus_client metric families``.

    ``open_map(map_id)`` returns a cached :class:`xdpkit.maps.Map` (do not close it).
    Called at every scrape for every exported attachment; exceptions are counted in
    ``xdpkit_exporter_errors_total`` and do not fail the scrape.
    Registering the same function again changes nothing.
    """
    if fn not in _APP_COLLECTORS:
        _APP_COLLECTORS.append(fn)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` (all addresses) or ``PORT`` -> (host, port)."""
    host, port = "", text
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ConfigError(f"bad listen address {text!r}; use [ADDR]:PORT for IPv6", field="--listen")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    try:
        num = int(port)
        if not 0 <= num <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(f"bad port in listen address {text!r}", field="--listen") from None
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ConfigError(f"bad host in listen address {text!r}: give an IP address",
                                  field="--listen") from None
    return host or "0.0.0.0", num


def is_counter_value(codec) -> bool:
    """struct xdpkit_counter, or any struct laid out as {u64 packets; u64 bytes} (e.g. a
    program's own): the BTF says what it is, the name does not matter."""
    if getattr(codec, "type_name", "") == COUNTER_TYPE:
        return True
    members = getattr(codec, "members", None)
    return (getattr(codec, "size", 0) == 16 and members is not None
            and [(m.name, m.codec.size) for m in members] == [("packets", 8), ("bytes", 8)])


def _key_label(key) -> str:
    if isinstance(key, dict):
        return ",".join(f"{k}={_key_label(v)}" for k, v in key.items())
    if isinstance(key, (bytes, bytearray)):
        return key.hex()
    return str(key)


def _xdpkit_attachments() -> list:
    from xdpkit import xdp

    return [a for a in xdp.query() if a.ours or has_stats(a)]


class XdpkitCollector:
    """prometheus_client collector (``collect()`` yields metric families)."""

    def __init__(self, *, max_series: int = 1000):
        self.max_series = max_series
        self._maps: dict[int, object] = {}
        self._not_counters: set = set()  # map ids seen not to hold struct xdpkit_counter
        self._lock = threading.Lock()  # the HTTP server scrapes from several threads
        self.errors = 0

    def describe(self):
        return []  # no fixed set: families depend on what is attached

    def _open(self, map_id: int):
        m = self._maps.get(map_id)
        if m is None:
            from xdpkit.maps import open_map_by_id

            m = self._maps[map_id] = open_map_by_id(map_id)
        return m

    def _forget_except(self, keep: set) -> None:
        for mid in [m for m in self._maps if m not in keep]:
            self._maps.pop(mid).close()
        self._not_counters &= keep

    def collect(self):
        with self._lock:
            return list(self._collect())

    def _collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        t0 = time.monotonic()
        info = GaugeMetricFamily("xdpkit_program_info", "XDP program attached by xdpkit (value 1)",
                                 labels=["ifname", "ifindex", "id", "name", "tag", "mode", "attach"])
        fams = {}

        def fam(name, doc, labels):
            if name not in fams:
                fams[name] = CounterMetricFamily(name, doc, labels=labels)
            return fams[name]

        pkts = {"verdict": fam("xdpkit_packets", "Packets by XDP verdict", ["ifname", "verdict"]),
                "etype": fam("xdpkit_ethertype_packets", "Packets by EtherType", ["ifname", "ethertype"]),
                "proto": fam("xdpkit_protocol_packets", "Packets by IP protocol", ["ifname", "protocol"])}
        byts = {"verdict": fam("xdpkit_bytes", "Bytes by XDP verdict", ["ifname", "verdict"]),
                "etype": fam("xdpkit_ethertype_bytes", "Bytes by EtherType", ["ifname", "ethertype"]),
                "proto": fam("xdpkit_protocol_bytes", "Bytes by IP protocol", ["ifname", "protocol"])}
        runs = fam("xdpkit_program_runs", "Program runs (kernel BPF stats; advance only while enabled)",
                   ["ifname", "id", "name"])
        run_s = fam("xdpkit_program_run_seconds", "Program run time (kernel BPF stats)",
                    ["ifname", "id", "name"])
        map_p = fam("xdpkit_map_packets", "Per-key packets of app counter maps (rules, VIPs, backends)",
                    ["ifname", "map", "key"])
        map_b = fam("xdpkit_map_bytes", "Per-key bytes of app counter maps (rules, VIPs, backends)",
                    ["ifname", "map", "key"])
        extra = []
        keep: set = set()
        for att in _xdpkit_attachments():
            try:
                self._collect_one(att, info, pkts, byts, runs, run_s, map_p, map_b, extra, keep)
            except XdpkitError:
                self.errors += 1  # detached while we read it: skip it this time
        self._forget_except(keep)
        yield info
        yield from fams.values()
        yield from extra
        err = CounterMetricFamily("xdpkit_exporter_errors", "Programs or app collectors that failed")
        err.add_metric([], self.errors)
        yield err
        dur = GaugeMetricFamily("xdpkit_exporter_scrape_seconds", "Time spent reading the kernel")
        dur.add_metric([], time.monotonic() - t0)
        yield dur

    def _collect_one(self, att, info, pkts, byts, runs, run_s, map_p, map_b, extra, keep) -> None:
        from xdpkit.kernel import program_info_by_id

        pinfo = program_info_by_id(att.id)
        attach = "bpf_link" if att.link_id else "netlink"
        info.add_metric([att.ifname, str(att.ifindex), str(att.id), att.name, att.tag, att.mode.value, attach], 1)
        runs.add_metric([att.ifname, str(att.id), att.name], pinfo.run_cnt)
        run_s.add_metric([att.ifname, str(att.id), att.name], pinfo.run_time_ns / 1e9)
        st_ids = stats_map_ids(att.maps)
        for group, mid in st_ids.items():
            keep.add(mid)
            for slot, c in read_counters(self._open(mid), group).items():
                pkts[group].add_metric([att.ifname, slot], c.packets)
                byts[group].add_metric([att.ifname, slot], c.bytes)
        for m in att.maps:
            if m.id in st_ids.values() or m.type not in ("percpu_array", "percpu_hash", "lru_percpu_hash"):
                continue
            keep.add(m.id)
            if m.id in self._not_counters:
                continue
            mp = self._open(m.id)
            if not is_counter_value(mp.value_codec):
                self._maps.pop(m.id).close()
                self._not_counters.add(m.id)
                continue
            self._export_counter_map(att, mp, map_p, map_b)
        for fn in _APP_COLLECTORS:
            try:
                extra.extend(fn(att, self._open))
            except Exception:  # an app's bug must not break everyone's scrape
                self.errors += 1

    def _export_counter_map(self, att, mp, map_p, map_b) -> None:
        rows = []
        is_array = mp.info.type_name.endswith("array")
        for key, per_cpu in mp.items():  # one batch lookup
            v = per_cpu.sum()
            if is_array and not (v["packets"] or v["bytes"]):
                continue  # an unused slot, not a key anyone created
            rows.append((v["packets"], v["bytes"], _key_label(key)))
        rows.sort(key=lambda r: -r[0])
        shown, rest = rows[: self.max_series], rows[self.max_series:]
        for p, b, key in shown:
            map_p.add_metric([att.ifname, mp.name, key], p)
            map_b.add_metric([att.ifname, mp.name, key], b)
        if rest:
            map_p.add_metric([att.ifname, mp.name, "_other"], sum(r[0] for r in rest))
            map_b.add_metric([att.ifname, mp.name, "_other"], sum(r[1] for r in rest))

    def close(self) -> None:
        with self._lock:
            self._forget_except(set())


class Exporter:
    """The HTTP endpoint: ``with Exporter("127.0.0.1:0") as ex: ex.url``.

    Serves in background threads created by the caller's thread, so they act in the network
    namespace the caller is in (``ip netns exec NS xdpkit exporter`` exports NS).
    """

    def __init__(self, listen: str = DEFAULT_LISTEN, *, max_series: int = 1000, bpf_stats: bool = False):
        self.host, self.port = parse_listen(listen)
        self.collector = XdpkitCollector(max_series=max_series)
        self.bpf_stats = bpf_stats
        self._server = None
        self._thread = None
        self._stats_cm = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def registry(self):
        from prometheus_client import CollectorRegistry

        reg = CollectorRegistry(auto_describe=False)
        reg.register(self.collector)
        return reg

    def render(self) -> str:
        """One scrape as exposition text (for --once and tests)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry()).decode()

    def start(self) -> "Exporter":
        from prometheus_client import start_http_server

        if self.bpf_stats:
            from xdpkit.observe.stats import bpf_stats_enabled

            self._stats_cm = bpf_stats_enabled()
            self._stats_cm.__enter__()
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry())
        except OSError as exc:
            self.close()
            raise XdpkitError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}",
                              hint="pick another address with --listen HOST:PORT") from None
        self.port = self._server.server_port  # the real one when 0 was asked for
        return self

    def serve(self, duration: float | None = None) -> None:
        """Block until ``duration`` seconds passed (or forever; Ctrl-C stops)."""
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        cm, self._stats_cm = self._stats_cm, None
        if cm is not None:
            cm.__exit__(None, None, None)
        self.collector.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
