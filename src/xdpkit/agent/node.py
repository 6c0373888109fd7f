"""The node agent: reads the desired state from a directory, reconciles this node to it on every
change and every interval, and serves /metrics, /healthz and /readyz.

    with Agent("/etc/xdpkit", interval=30, listen="0.0.0.0:9435") as agent:
        agent.run()          # until SIGTERM or Ctrl-C; the data plane stays unless cleanup_on_exit

A bad config changes nothing: the last good one stays in force (and is still reconciled, so
drift is repaired), the error is logged with its file and line, and /readyz says why it is not
ready. Reconciling runs in the main thread, so a SIGTERM in the middle of an apply rolls that
apply back (see apps.transaction) before the agent exits; one that came while the pass was
planning acts at its first write, and one between interfaces stops the pass there.
"""
from __future__ import annotations

import gc
import logging
import os
import select
import signal
import threading
import time

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from xdpkit.agent import config as agent_config
from xdpkit.agent.health import HealthLoops
from xdpkit.agent.logs import LOGGER, event
from xdpkit.agent.reconcile import PassResult, reconcile, remove_all
from xdpkit.agent.record import DEFAULT_STATE_DIR, Record
from xdpkit.agent.server import Server
from xdpkit.agent.single import NamespaceClaim
from xdpkit.apps import transaction
from xdpkit.dirwatch import DirWatch
from xdpkit.errors import ConfigError
from xdpkit.apps.firewall import metrics as firewall_metrics
from xdpkit.apps.forward import metrics as forward_metrics
from xdpkit.apps.lb import metrics as lb_metrics
from xdpkit.observe.exporter import XdpkitCollector, parse_listen, register_app_collector

DEFAULT_INTERVAL = 30.0
MIN_INTERVAL, MAX_INTERVAL = 0.01, 86400.0
DEFAULT_LISTEN = "127.0.0.1:9435"
SETTLE = 0.05        # events of one update (kubelet's writes, an editor's save) arrive together


class Agent:
    def __init__(self, config_dir: str, *, interval: float = DEFAULT_INTERVAL, listen: str | None = DEFAULT_LISTEN,
                 state_dir: str = DEFAULT_STATE_DIR, cleanup_on_exit: bool = False, watch: bool = True):
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ConfigError(f"interval {interval:g} s is out of range {MIN_INTERVAL:g}..{MAX_INTERVAL:g}",
                              field="--interval")
        self.config_dir = config_dir
        self.interval = interval
        self.listen = parse_listen(listen) if listen else None
        self.cleanup_on_exit = cleanup_on_exit
        self.watch_files = watch
        self.log = logging.getLogger(LOGGER)
        self.record = Record(state_dir)
        self.desired: agent_config.Desired | None = None
        self.generation = 0
        self.config_error = ""
        self.config_errors = 0
        self._signature: tuple = ()
        self.accepted_at = 0.0
        self.last: PassResult | None = None
        self.runs = {"ok": 0, "error": 0}
        self.run_seconds = 0.0
        self.actions: dict[tuple[str, str], int] = {}
        self.heartbeat = time.monotonic()
        self._lock = threading.Lock()
        self._stop = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._watch: DirWatch | None = None
        self._server: Server | None = None
        self._claim = NamespaceClaim()
        self.health_loops = HealthLoops(self._on_health)
        for app_metrics in (firewall_metrics, lb_metrics, forward_metrics):
            register_app_collector(app_metrics.collect)  # per-rule, per-VIP, per-backend series
        self.dataplane = XdpkitCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_AgentCollector(self))

    # ---- the loop -------------------------------------------------------------------------
    def start(self) -> "Agent":
        def waiting(pid):
            event(self.log, logging.WARNING, f"another xdpkit agent (pid {pid or '?'}) runs in this network "
                  "namespace; waiting for it to exit", event="waiting", holder=pid)
        self._claim.acquire(on_wait=waiting)
        try:
            self.record.load()  # only now: a previous agent may have written it while this one waited
            if self.watch_files:
                self._watch = DirWatch(self.config_dir)
            if self.listen is not None:
                self._server = Server(self, *self.listen)
        except BaseException:
            self.close()
            raise
        event(self.log, logging.INFO, "agent started", event="started", config_dir=self.config_dir,
              interval=self.interval, listen=self.url, pid=os.getpid())
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            return ""
        host = self.listen[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self._server.port}"

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self._stop = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def run(self, *, once: bool = False, duration: float | None = None) -> None:
        end = None if duration is None else time.monotonic() + duration
        old = {s: signal.signal(s, lambda *_: self.stop()) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)} \
            if threading.current_thread() is threading.main_thread() else {}
        try:
            began = time.monotonic()
            self.step()
            # what start-up made lives as long as the process: out of the collector's full
            # passes, which otherwise delayed a config change by 40-60 ms now and then
            gc.freeze()
            while not once and not self._stop and (end is None or time.monotonic() < end):
                # passes start every interval (not an interval after each one ends)
                due = began + self.interval
                wait = due - time.monotonic()
                if end is not None:
                    wait = min(wait, end - time.monotonic())
                if self._wait(max(0.0, wait)) or time.monotonic() >= due:
                    began = time.monotonic()
                if not self._stop:
                    self.step()
        except KeyboardInterrupt:  # a signal during an apply: it rolled back first
            event(self.log, logging.WARNING, "stopped during a change, which was rolled back", event="interrupted")
        try:
            if self.cleanup_on_exit:
                self._cleanup()   # with the handlers still ours: a second SIGTERM does not cut it short
            event(self.log, logging.INFO,
                  "agent stopped" + ("" if self.cleanup_on_exit else "; the data plane keeps running"),
                  event="stopped", cleanup=self.cleanup_on_exit)
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _wait(self, timeout: float) -> bool:
        """Until the directory changes, a stop is asked or ``timeout``; True if it changed."""
        if self._watch is not None and not self._watch.watching and self._watch.changes():
            return True   # the directory is back after it was removed or replaced
        fds = [self._wake_r] + ([self._watch] if self._watch is not None else [])
        ready, _, _ = select.select(fds, [], [], timeout)
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 64)
            except BlockingIOError:
                pass
        if self._watch is None or self._watch not in ready:
            return False
        time.sleep(SETTLE)
        changed = sorted(set(self._watch.changes()))
        event(self.log, logging.INFO, "config directory changed", event="config_changed",
              files=[c or "." for c in changed])
        return True

    def step(self) -> PassResult | None:
        """Read the directory; reconcile to the last good config (if there is one)."""
        self.heartbeat = time.monotonic()
        self._read_config()
        if self.desired is None or self._stop:  # a SIGTERM while reading: no pass
            return None
        try:
            with transaction.interruptible():  # a signal now rolls back the change under way
                result = reconcile(self.desired, self.record, on_wait=self._on_lock_wait)
            result.errors.update(self.health_loops.sync(self.desired, result.managed))
        except Exception as exc:  # a bug or an unforeseen kernel answer: report it, keep running
            self.log.error(f"the reconcile pass failed: {exc!r}", exc_info=True,
                           extra={"fields": {"event": "pass_failed"}})
            result = PassResult(errors={"(pass)": f"the reconcile pass failed: {exc!r}"}, digest=self.desired.digest)
        # logged before it is published: whoever sees the pass on /readyz finds it in the log
        self._log_actions(result, generation=self.generation, hash=self.desired.digest[:12])
        previous = self.last.errors if self.last else {}
        for ifname, err in sorted(result.errors.items()):
            if previous.get(ifname) != err:  # once, not every interval
                event(self.log, logging.ERROR, err, event="reconcile_error", ifname=ifname)
        for ifname in sorted(set(previous) - set(result.errors)):
            event(self.log, logging.INFO, f"{ifname}: resolved", event="reconcile_resolved", ifname=ifname)
        with self._lock:
            self.last = result
            self.runs["error" if result.errors else "ok"] += 1
            self.run_seconds += result.seconds
            for a in result.actions:
                self.actions[(a.action, a.app)] = self.actions.get((a.action, a.app), 0) + 1
        self.heartbeat = time.monotonic()
        return result

    def _read_config(self) -> None:
        sig = agent_config.signature(self.config_dir)
        if sig and sig == self._signature:
            return  # nothing the config is read from changed: the last result stands
        self._signature = sig
        try:
            desired = agent_config.load(self.config_dir)
        except ConfigError as exc:
            msg = str(exc)
            if msg != self.config_error:  # logged first, then shown on /readyz and /metrics
                kept = f"generation {self.generation} stays in force" if self.desired else "nothing is applied"
                event(self.log, logging.ERROR, f"config rejected: {msg}; {kept}", event="config_rejected",
                      error=msg, hint=exc.hint or "", generation=self.generation)
                with self._lock:
                    self.config_error = msg
                    self.config_errors += 1
            return
        if self.desired is not None and desired.digest == self.desired.digest:
            with self._lock:
                self.config_error = ""   # back to the config in force
            return
        event(self.log, logging.INFO, f"config generation {self.generation + 1} accepted", event="config_accepted",
              generation=self.generation + 1, hash=desired.digest, entries=len(desired.entries))
        with self._lock:
            self.config_error = ""
            self.desired = desired
            self.generation += 1
            self.accepted_at = time.time()

    def _cleanup(self) -> None:
        self.health_loops.close()
        result = remove_all(self.record, on_wait=self._on_lock_wait)
        self._log_actions(result)
        for ifname, err in sorted(result.errors.items()):
            event(self.log, logging.ERROR, err, event="cleanup_error", ifname=ifname)
        if not result.errors:
            self.record.remove()

    def _log_actions(self, result: PassResult, **fields) -> None:
        for a in result.actions:
            level = logging.WARNING if a.action == "repaired" else logging.INFO
            event(self.log, level, f"{a.action} {a.app} on {a.ifname}" + (f": {a.detail}" if a.detail else ""),
                  event=a.action, app=a.app, ifname=a.ifname, program_id=a.program_id, **fields)

    def _on_lock_wait(self, message: str) -> None:
        event(self.log, logging.WARNING, message, event="waiting_for_lock")

    def _on_health(self, change: dict) -> None:
        event(self.log, logging.WARNING if change["state"] == "down" else logging.INFO,
              f"backend {change['backend']} of {change['vip']} is {change['state']}: {change['detail']}",
              event="backend_" + change["state"], **change)

    # ---- what the endpoints report --------------------------------------------------------
    def health(self) -> tuple[bool, dict]:
        age = time.monotonic() - self.heartbeat
        limit = max(3 * self.interval, 60.0)
        return age < limit, {"alive": age < limit, "seconds_since_loop": round(age, 1)}

    def readiness(self) -> tuple[bool, dict]:
        with self._lock:
            reasons = []
            if self.config_error:
                reasons.append(f"config rejected: {self.config_error}")
            if self.desired is None:
                reasons.append("no valid config has been read yet")
            elif self.last is None:
                reasons.append("not reconciled yet")
            elif self.last.digest != self.desired.digest:
                reasons.append(f"config generation {self.generation} accepted, not applied yet")
            else:
                reasons += [f"{ifname}: {err}" for ifname, err in sorted(self.last.errors.items())]
            body = {"ready": not reasons, "reasons": reasons, "generation": self.generation,
                    "hash": self.desired.digest if self.desired else "",
                    "interfaces": {k: o.app for k, o in self.last.managed.items()} if self.last else {}}
        return not reasons, body

    # ---- resources ------------------------------------------------------------------------
    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.health_loops.close()
        self.dataplane.close()
        self._claim.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class _AgentCollector:
    """The agent's own metrics, and the data plane's (the exporter's) when the config says so."""

    def __init__(self, agent: Agent):
        self.agent = agent

    def describe(self):
        return []

    def collect(self):
        a = self.agent
        with a._lock:
            runs = CounterMetricFamily("xdpkit_agent_reconcile_runs", "Reconcile passes by result", labels=["result"])
            for result, n in sorted(a.runs.items()):
                runs.add_metric([result], n)
            yield runs
            n = sum(a.runs.values())
            yield SummaryMetricFamily("xdpkit_agent_reconcile_seconds", "Time reconcile passes took",
                                      count_value=n, sum_value=a.run_seconds)
            errors = GaugeMetricFamily("xdpkit_agent_reconcile_errors", "Interfaces the last pass could not reconcile")
            errors.add_metric([], len(a.last.errors) if a.last else 0)
            yield errors
            acts = CounterMetricFamily("xdpkit_agent_actions", "Changes the agent made to the data plane",
                                       labels=["action", "app"])
            for (action, app), count in sorted(a.actions.items()):
                acts.add_metric([action, app], count)
            yield acts
            managed = GaugeMetricFamily("xdpkit_agent_managed_interfaces", "Interfaces running an app for the agent",
                                        labels=["app"])
            counts: dict[str, int] = {}
            for owned in (a.last.managed.values() if a.last else ()):
                counts[owned.app] = counts.get(owned.app, 0) + 1
            for app in agent_config.APPS:
                managed.add_metric([app], counts.get(app, 0))
            yield managed
            gen = GaugeMetricFamily("xdpkit_agent_config_generation",
                                    "Configs this agent process accepted (the one in force is the last)")
            gen.add_metric([], a.generation)
            yield gen
            info = GaugeMetricFamily("xdpkit_agent_config_info", "The config in force", labels=["hash"])
            if a.desired is not None:
                info.add_metric([a.desired.digest], 1)
            yield info
            accepted = GaugeMetricFamily("xdpkit_agent_config_accepted_timestamp_seconds",
                                         "When the config in force was accepted")
            accepted.add_metric([], a.accepted_at)
            yield accepted
            errs = CounterMetricFamily("xdpkit_agent_config_errors", "Configs rejected (each distinct error once)")
            errs.add_metric([], a.config_errors)
            yield errs
            valid = GaugeMetricFamily("xdpkit_agent_config_valid", "1 if the directory's config is in force")
            valid.add_metric([], 0 if a.config_error else 1)
            yield valid
            exporter = a.desired.exporter if a.desired is not None else False
        if exporter:
            yield from a.dataplane.collect()
