"""Health checks of the load balancer's backends: TCP connect or HTTP GET, with rise/fall.

    hc = HealthChecker(targets, on_change, netns="lb0")   # on_change(target, up, detail)
    hc.run_once()                                          # one round, now; or:
    hc.start(); ...; hc.set_targets(new); hc.status(); hc.close()

A probe's socket lives in the namespace of the thread that creates it, and setns moves only
the calling thread, so with ``netns`` every worker thread enters that namespace itself. Without
it, probes run in the namespace of the thread that calls ``run_once`` or ``start``.
"""
from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from xdpkit import netns as _netns
from xdpkit.apps.lb.config import HealthCheck
from xdpkit.errors import ConfigError, NotFoundError

log = logging.getLogger("xdpkit.lb.health")

MAX_WORKERS = 32
STATUS_LINE_MAX = 1024  # a longer first line is not a status line worth waiting for
_REASONS = {errno.ECONNREFUSED: "connection refused", errno.ECONNRESET: "connection reset",
            errno.ENETUNREACH: "network unreachable", errno.EHOSTUNREACH: "host unreachable",
            errno.EADDRNOTAVAIL: "no usable source address"}


@dataclass(frozen=True)
class Target:
    """One thing to probe. ``key`` is the caller's id: state is kept per key."""

    key: str
    address: str
    port: int
    check: HealthCheck

    def __post_init__(self):
        c, where = self.check, f"health target {self.key}"
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ConfigError(f"{self.address!r} is not an IPv4 or IPv6 address", field=where) from None
        if c.kind not in ("tcp", "http"):
            raise ConfigError(f"kind {c.kind!r} is not tcp or http", field=where)
        if not 0 < self.probe_port < 65536:
            raise ConfigError(f"no port to probe ({self.probe_port})", field=where,
                              hint="set the health check's port when the VIP serves every port")
        if c.timeout <= 0 or c.interval <= 0 or min(c.rise, c.fall) < 1:
            raise ConfigError("timeout and interval must be > 0, rise and fall >= 1", field=where)

    @property
    def probe_port(self) -> int:
        return self.check.port or self.port


class Transition(NamedTuple):
    target: Target
    up: bool
    detail: str


def probe(target: Target) -> tuple[bool, str]:
    """Probe ``target`` once within its check's timeout: (ok, short reason)."""
    check = target.check
    v6 = ":" in target.address
    start = time.monotonic()
    deadline = start + check.timeout  # one budget for connect, send and the status line
    try:
        with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(check.timeout)
            sock.connect((target.address, target.probe_port))
            if check.kind == "tcp":
                return True, f"connected in {_ms(start)}"
            host = f"[{target.address}]" if v6 else target.address  # RFC 9110: IPv6 in brackets
            sock.settimeout(_left(deadline))
            sock.sendall(f"GET {check.path} HTTP/1.0\r\nHost: {host}\r\n"
                         "User-Agent: xdpkit-health\r\n\r\n".encode())
            head = b""
            while b"\n" not in head and len(head) < STATUS_LINE_MAX:
                sock.settimeout(_left(deadline))
                chunk = sock.recv(STATUS_LINE_MAX - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:  # TimeoutError since 3.10; an OSError subclass before
        return False, f"timed out after {check.timeout:g} s"
    except OSError as exc:
        return False, _REASONS.get(exc.errno) or (exc.strerror or str(exc)).lower()
    parts = head.split(b"\n", 1)[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, "connection closed before the HTTP status" if not head else "not an HTTP response"
    status = int(parts[1])
    if 200 <= status < 400:
        return True, f"HTTP {status} in {_ms(start)}"
    return False, f"HTTP {status}"


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:  # settimeout(0) would mean non-blocking, not "no time left"
        raise socket.timeout
    return left


def _ms(start: float) -> str:
    return f"{(time.monotonic() - start) * 1000:.1f} ms"


@dataclass
class _State:
    target: Target
    up: bool
    since: float
    due: float
    ok_streak: int = 0
    fail_streak: int = 0
    probes: int = 0
    failures: int = 0
    transitions: int = 0
    detail: str = "not probed yet"


class HealthChecker:
    """Probes targets (each at its check's interval) and reports up/down transitions.

    ``on_change(target, up, detail)`` runs in the thread doing the round (the checker's thread
    after ``start``); exceptions from it are logged, never raised. ``clock`` gives due times and
    the ``since`` of ``status()``. Use as a context manager to have ``close()`` called.
    """

    def __init__(self, targets, on_change, *, netns: str | None = None, clock=time.monotonic,
                 initial_up=True):
        if not callable(on_change):
            raise ConfigError(f"on_change must be callable, not {on_change!r}")
        if netns is not None and not _netns.exists(netns):
            raise NotFoundError(f"no network namespace named {netns!r}", hint="see `ip netns list`")
        self._on_change = on_change
        self._netns = netns
        self._clock = clock
        self._initial_up = initial_up
        self._lock = threading.Lock()    # guards _states
        self._rounds = threading.Lock()  # one round at a time, so callbacks arrive in order
        self._states: dict[str, _State] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()  # a new one per start(): a late old thread stays stopped
        self._thread: threading.Thread | None = None
        self.set_targets(targets)

    def set_targets(self, targets) -> None:
        """Replace the targets; those whose key stays keep their state."""
        targets = list(targets)
        dup = [k for k, n in collections.Counter(t.key for t in targets).items() if n > 1]
        if dup:
            raise ConfigError(f"health target {dup[0]} appears twice")
        now = self._clock()
        with self._lock:
            old, self._states = self._states, {}
            for t in targets:
                up = self._initial_up(t.key) if callable(self._initial_up) else bool(self._initial_up)
                st = old.get(t.key) or _State(t, up=up, since=now, due=now)
                st.target = t
                self._states[t.key] = st
        self._wake.set()  # new targets are due now: do not sleep through them

    def run_once(self) -> list[Transition]:
        """Probe every target once, now; the transitions (callbacks have been called)."""
        return self._round(due_only=False)

    def status(self) -> list[dict]:
        with self._lock:
            return [{"key": s.target.key, "address": s.target.address, "port": s.target.probe_port,
                     "kind": s.target.check.kind, "up": s.up, "probes": s.probes,
                     "failures": s.failures, "transitions": s.transitions, "detail": s.detail,
                     "since": s.since} for s in self._states.values()]

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(self._stopping,), name="xdpkit-health",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread; waits for its round (bounded by the longest probe timeout)."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return  # stop() from inside on_change: the loop ends after this round
        if timeout is None:
            with self._lock:
                timeout = 1.0 + max((s.target.check.timeout for s in self._states.values()), default=0)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("health checker thread did not stop within %.1f s", timeout)

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self._wake.clear()  # before the round: a set_targets during it still wakes us
            try:
                self._round(due_only=True)
            except Exception:  # keep checking: a dead checker would freeze every backend's state
                log.exception("health check round failed")
            with self._lock:
                next_due = min((s.due for s in self._states.values()), default=None)
            self._wake.wait(1.0 if next_due is None else min(max(next_due - self._clock(), 0), 1.0))

    def _round(self, *, due_only: bool) -> list[Transition]:
        with self._rounds:
            now = self._clock()
            with self._lock:
                batch = [s.target for s in self._states.values() if not due_only or s.due <= now]
                for t in batch:
                    self._states[t.key].due = now + t.check.interval
            if not batch:
                return []
            with ThreadPoolExecutor(min(MAX_WORKERS, len(batch)), "xdpkit-health-probe") as pool:
                results = list(pool.map(self._probe, batch))
            changes = self._apply(batch, results)
            for change in changes:
                self._notify(change)
            return changes

    def _probe(self, target: Target) -> tuple[bool, str]:
        try:
            with _netns.inside(self._netns) if self._netns else contextlib.nullcontext():
                return probe(target)
        except Exception as exc:  # e.g. the namespace is gone: that backend is unreachable
            return False, f"probe failed: {exc}"

    def _apply(self, batch: list[Target], results) -> list[Transition]:
        now = self._clock()
        changes = []
        with self._lock:
            for target, (ok, detail) in zip(batch, results):
                st = self._states.get(target.key)
                if st is None or st.target != target:
                    continue  # removed or changed by set_targets while we probed
                st.probes += 1
                st.detail = detail
                if ok:
                    st.ok_streak, st.fail_streak = st.ok_streak + 1, 0
                    flip = not st.up and st.ok_streak >= target.check.rise
                else:
                    st.ok_streak, st.fail_streak = 0, st.fail_streak + 1
                    st.failures += 1
                    flip = st.up and st.fail_streak >= target.check.fall
                if flip:
                    st.up, st.since = ok, now
                    st.transitions += 1
                    changes.append(Transition(target, ok, detail))
        return changes

    def _notify(self, change: Transition) -> None:
        target, up, detail = change
        (log.info if up else log.warning)("backend %s is %s: %s", target.key, "up" if up else "down", detail)
        try:
            self._on_change(target, up, detail)
        except Exception:
            log.exception("health on_change callback failed for %s", target.key)
