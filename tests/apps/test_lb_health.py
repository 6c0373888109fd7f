"""The LB health checker against real TCP and HTTP servers in throw-away network namespaces."""
import contextlib
import http.server
import logging
import socket
import threading
import time

import pytest

from xdpkit._sys import netns as xns
from xdpkit.apps.lb.config import HealthCheck
from xdpkit.apps.lb.health import HealthChecker, Target, probe
from xdpkit.errors import ConfigError, NotFoundError

pytestmark = pytest.mark.kernel

V4 = "198.18.50.1"
V6 = "2001:db8:50::1"
NO_ROUTE = "198.18.60.1"      # no route in a fresh namespace
BLACK_HOLE = "198.18.51.1"    # routed into a veth whose peer drops every frame (wrong MAC)
CLOSED_PORT = 9               # nothing listens in a fresh namespace
SERVE_LIMIT = 30.0            # no server thread outlives a test by more than this

TCP = HealthCheck(kind="tcp", timeout=0.3, interval=0.05, rise=1, fall=1)
HTTP = HealthCheck(kind="http", path="/healthz", timeout=0.5, interval=0.05, rise=2, fall=2)


def add_addresses(ns) -> None:
    ns.run(["ip", "addr", "add", f"{V4}/32", "dev", "lo"], check=True)
    ns.run(["ip", "addr", "add", f"{V6}/128", "dev", "lo", "nodad"], check=True)


@pytest.fixture
def addrs(netns):
    add_addresses(netns)
    return netns


@contextlib.contextmanager
def tcp_server(address):
    """Accepts and closes connections; yields the port. Created in this thread's namespace."""
    srv = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((address, 0))
    srv.listen(64)
    srv.settimeout(0.05)
    stop = threading.Event()

    def serve():
        end = time.monotonic() + SERVE_LIMIT
        while not stop.is_set() and time.monotonic() < end:
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        srv.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.requests.append((self.requestline, self.headers.get("Host"),
                                     self.headers.get("User-Agent")))
        self.send_response(self.server.code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class _Server4(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET


class _Server6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


@contextlib.contextmanager
def http_server(address, code=200):
    """Yields the server: set ``.code`` to change the answer; ``.requests`` records requests."""
    srv = (_Server6 if ":" in address else _Server4)((address, 0), _Handler)
    srv.code = code
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        thread.join(5)
        srv.server_close()


@contextlib.contextmanager
def silent_server(address):
    """Completes handshakes (the kernel does) but never accepts, so never answers: yields the port."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        srv.bind((address, 0))
        srv.listen(64)
        yield srv.getsockname()[1]
    finally:
        srv.close()


def target(address, port, check, key=None):
    return Target(key or f"{check.kind}/{address}:{port}", address, port, check)


class Recorder:
    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, t, up, detail):
        with self.lock:
            self.calls.append((t.key, up, detail))

    def ups(self):
        with self.lock:
            return [up for _key, up, _detail in self.calls]


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


# ---- probe -----------------------------------------------------------------------------------

def test_tcp_probe_connects(addrs):
    with tcp_server(V4) as port:
        ok, detail = probe(target(V4, port, TCP))
    assert ok, detail
    assert detail.startswith("connected in ") and detail.endswith(" ms")


def test_tcp_probe_ipv6(addrs):
    with tcp_server(V6) as port:
        assert probe(target(V6, port, TCP))[0]
    assert probe(target(V6, CLOSED_PORT, TCP)) == (False, "connection refused")


def test_tcp_probe_refused_and_unreachable(addrs):
    assert probe(target(V4, CLOSED_PORT, TCP)) == (False, "connection refused")
    assert probe(target(NO_ROUTE, 80, TCP)) == (False, "network unreachable")


def test_tcp_probe_times_out(addrs):
    addrs.veth("hcA", "hcB")
    addrs.run(["ip", "link", "set", "hcB", "up"], check=True)
    addrs.run(["ip", "route", "add", "198.18.51.0/24", "dev", "hcA"], check=True)
    addrs.run(["ip", "neigh", "add", BLACK_HOLE, "lladdr", "02:00:00:00:00:51", "dev", "hcA",
               "nud", "permanent"], check=True)
    start = time.monotonic()
    assert probe(target(BLACK_HOLE, 80, TCP)) == (False, "timed out after 0.3 s")
    assert time.monotonic() - start < 2.0


def test_check_port_overrides_target_port(addrs):
    with tcp_server(V4) as port:
        check = HealthCheck(kind="tcp", port=port, timeout=0.3)
        assert probe(Target("k", V4, CLOSED_PORT, check))[0]


@pytest.mark.parametrize("address", [V4, V6])
def test_http_probe_status(addrs, address):
    with http_server(address, 200) as srv:
        t = target(address, srv.server_address[1], HTTP)
        ok, detail = probe(t)
        assert ok and detail.startswith("HTTP 200 in "), detail
        srv.code = 503
        assert probe(t) == (False, "HTTP 503")
        srv.code = 302
        assert probe(t)[0]
        host = f"[{address}]" if ":" in address else address
        assert srv.requests[0] == ("GET /healthz HTTP/1.0", host, "xdpkit-health")


def test_http_probe_times_out_without_answer(addrs):
    with silent_server(V4) as port:
        check = HealthCheck(kind="http", timeout=0.2)
        start = time.monotonic()
        assert probe(target(V4, port, check)) == (False, "timed out after 0.2 s")
        assert time.monotonic() - start < 1.0


def test_target_validation():
    with pytest.raises(ConfigError, match="not an IPv4 or IPv6"):
        Target("k", "backend.example", 80, TCP)
    with pytest.raises(ConfigError, match="no port"):
        Target("k", V4, 0, HealthCheck())
    with pytest.raises(ConfigError, match="kind"):
        Target("k", V4, 80, HealthCheck(kind="udp"))
    t = Target("k", V4, 80, TCP)
    with pytest.raises(ConfigError, match="twice"):
        HealthChecker([t, t], lambda *a: None)
    with pytest.raises(NotFoundError):
        HealthChecker([t], lambda *a: None, netns="xdpkt-no-such-namespace")


# ---- checker ---------------------------------------------------------------------------------

def test_fall_and_rise_thresholds(addrs, caplog):
    caplog.set_level(logging.INFO, logger="xdpkit.lb.health")
    now = [100.0]
    rec = Recorder()
    with http_server(V4, 503) as srv:
        t = target(V4, srv.server_address[1], HTTP)
        hc = HealthChecker([t], rec, clock=lambda: now[0])
        assert hc.run_once() == []                      # one failure of fall=2: still up
        assert hc.status()[0]["up"] is True and rec.calls == []
        now[0] = 101.0
        (change,) = hc.run_once()                       # the second one: down
        assert (change.target, change.up, change.detail) == (t, False, "HTTP 503")
        assert rec.calls == [(t.key, False, "HTTP 503")]
        assert hc.run_once() == []                      # staying down is no transition
        srv.code = 200
        assert hc.run_once() == []                      # one success of rise=2: still down
        now[0] = 102.0
        (change,) = hc.run_once()
        assert change.up is True and change.detail.startswith("HTTP 200")
    assert rec.ups() == [False, True]
    (st,) = hc.status()
    assert st == {"key": t.key, "address": V4, "port": t.port, "kind": "http", "up": True,
                  "probes": 5, "failures": 3, "transitions": 2, "detail": st["detail"], "since": 102.0}
    levels = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "xdpkit.lb.health"]
    assert levels == [(logging.WARNING, f"backend {t.key} is down: HTTP 503"),
                      (logging.INFO, f"backend {t.key} is up: {st['detail']}")]


def test_initial_down_rises(addrs):
    rec = Recorder()
    with tcp_server(V4) as port:
        hc = HealthChecker([target(V4, port, TCP)], rec, initial_up=False)
        assert hc.status()[0]["up"] is False
        assert [c.up for c in hc.run_once()] == [True]
    assert rec.ups() == [True]


def test_probes_run_concurrently(addrs):
    check = HealthCheck(kind="http", timeout=0.3)
    with silent_server(V4) as port:
        targets = [Target(f"t{i}", V4, port, check) for i in range(10)]
        hc = HealthChecker(targets, lambda *a: None)
        start = time.monotonic()
        hc.run_once()
        assert time.monotonic() - start < 1.5   # serially it would take 3 s
    assert all(s["detail"] == "timed out after 0.3 s" for s in hc.status())


def test_netns_parameter_from_outside(netns, make_netns):
    other = make_netns()
    add_addresses(other)
    with contextlib.ExitStack() as stack:
        with other.inside():  # the listening sockets belong to the namespace they are made in
            tcp_port = stack.enter_context(tcp_server(V4))
            srv = stack.enter_context(http_server(V6, 200))
        targets = [target(V4, tcp_port, TCP), target(V6, srv.server_address[1], HTTP)]
        here = xns.current_id()
        # From this thread's namespace the addresses do not exist...
        unreached = HealthChecker(targets, lambda *a: None)
        unreached.run_once()
        assert [s["detail"] for s in unreached.status()] == ["network unreachable"] * 2
        # ...while netns= probes from the servers' namespace.
        hc = HealthChecker(targets, lambda *a: None, netns=other.name, initial_up=False)
        hc.run_once()
        assert hc.status()[0]["detail"].startswith("connected")
        assert hc.status()[1]["detail"].startswith("HTTP 200")
        assert xns.current_id() == here
        with hc:
            hc.start()
            assert wait_for(lambda: all(s["up"] for s in hc.status()))


def test_start_stop_sees_transitions(addrs):
    rec = Recorder()
    check = HealthCheck(kind="http", timeout=0.5, interval=0.05, rise=1, fall=1)
    with http_server(V4, 200) as srv:
        with HealthChecker([target(V4, srv.server_address[1], check)], rec) as hc:
            hc.start()
            hc.start()  # already running: no second thread
            assert wait_for(lambda: hc.status()[0]["probes"] >= 2)
            srv.code = 503
            assert wait_for(lambda: rec.ups() == [False])
            srv.code = 200
            assert wait_for(lambda: rec.ups() == [False, True])
        assert not any(t.name == "xdpkit-health" for t in threading.enumerate())
        probes = hc.status()[0]["probes"]
        time.sleep(0.2)
        assert hc.status()[0]["probes"] == probes      # stopped means stopped
        hc.close()                                     # idempotent


def test_callback_exception_is_survived(addrs, caplog):
    calls = []

    def explode(t, up, detail):
        calls.append(up)
        raise RuntimeError("callback bug")

    with http_server(V4, 503) as srv:
        check = HealthCheck(kind="http", timeout=0.5, interval=0.05, rise=1, fall=1)
        with HealthChecker([target(V4, srv.server_address[1], check)], explode) as hc:
            hc.start()
            assert wait_for(lambda: calls == [False])
            srv.code = 200
            assert wait_for(lambda: calls == [False, True])   # the thread lived on
        t = target(V4, srv.server_address[1], check, key="once")
        hc.set_targets([t])
        srv.code = 503
        assert [c.up for c in hc.run_once()] == [False]       # run_once does not raise either
    assert calls == [False, True, False]
    failed = [r for r in caplog.records if r.name == "xdpkit.lb.health" and r.levelno == logging.ERROR]
    assert len(failed) == 3
    assert all(r.getMessage().startswith("health on_change callback failed for ") for r in failed)
    assert all(r.exc_info[1].args == ("callback bug",) for r in failed)


def test_set_targets_keeps_state(addrs):
    rec = Recorder()
    with tcp_server(V4) as port:
        a = target(V4, CLOSED_PORT, TCP, key="a")
        b = target(V4, port, TCP, key="b")
        hc = HealthChecker([a, b], rec)
        hc.run_once()
        assert rec.calls == [("a", False, "connection refused")]
        c = target(V6, CLOSED_PORT, TCP, key="c")
        hc.set_targets([a, c])
        st = {s["key"]: s for s in hc.status()}
        assert set(st) == {"a", "c"}
        assert (st["a"]["up"], st["a"]["probes"], st["a"]["transitions"]) == (False, 1, 1)
        assert (st["c"]["up"], st["c"]["probes"], st["c"]["detail"]) == (True, 0, "not probed yet")
        a2 = target(V4, port, TCP, key="a")   # same key, now reachable: rises from its kept state
        hc.set_targets([a2, c])
        changes = hc.run_once()
        assert {(ch.target.key, ch.up) for ch in changes} == {("a", True), ("c", False)}
        st = {s["key"]: s for s in hc.status()}
        assert (st["a"]["probes"], st["a"]["transitions"]) == (2, 2)
