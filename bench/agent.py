#!/usr/bin/env python3
"""Node agent benchmarks (part of `make bench`; also runnable alone, as root).

One load-balancer lab with five LB nodes (LbLab nodes=5), one `xdpkit agent` process per node
(its own --state-dir, interval 1 s), all reading one config directory updated the way kubelet
updates a ConfigMap volume (one [[lb]] on eth0, health checks off). Measured:

- a config change until the KERNEL of every node holds it, with the directory watch and, after a
  restart of the agents with --no-watch (they adopt the running LBs), without it. The clock
  starts just before the directory update and stops when the node's LB handle, opened once by
  this process, reads back the new config (``LoadBalancer.config()`` reads the kernel's map on
  every call). The nodes are polled round-robin with a 1 ms sleep between rounds. Changes
  alternate the backends' weights, so each one is real, and are spaced by a random fraction of
  the interval, so they land at every phase of the agents' interval timers. Target: every node
  within two intervals.
- the reference, in the same run with the agents stopped: the same change applied in process on
  each node (open the LB, apply, close): the kernel-side floor the agent adds its detection,
  config reading and process overhead to.
- restarts: kill -9 of one agent and a new process with the same state dir (it adopts the LB and
  must write nothing: no loaded/applied/... event in its log) vs a first start on a node whose LB
  was unloaded and whose state dir was removed (the agent loads it); time from the process's
  start to /readyz 200, split at the agent's `started` log line (interpreter, imports, listening).
- footprint: RSS and CPU time of an idle agent (interval 1 s, watch on) over 10 seconds.
"""
from __future__ import annotations

import calendar
import os
import random
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from xdpkit import netns as xns
from xdpkit.agent.node import SETTLE
from xdpkit.apps.lb.config import parse_config
from xdpkit.apps.lb.control import LoadBalancer
from xdpkit.errors import LabError, XdpkitError
from xdpkit.lab.bench import standalone
from xdpkit.lab.fleet import AgentProcess, ConfigMapDir
from xdpkit.lab.lb_topology import LbLab

NODES = 5
BACKENDS = 3
INTERVAL = 1.0
WATCH_CHANGES = 20
NOWATCH_CHANGES = 10
REF_CHANGES = 10
RESTART_ROUNDS = 3
IDLE_SECONDS = 10.0
POLL_SLEEP = 0.001         # between polling rounds over all nodes
CHANGE_TIMEOUT = 10.0      # a node that has not got a change by then counts as missed
SEED = 7                   # the spacing of the changes: the same run to run
WEIGHTS = ((1, 1, 2), (1, 2, 1), (2, 1, 1))   # cycled; consecutive entries differ
ACTIONS = ("loaded", "adopted", "applied", "repaired", "reloaded", "unloaded", "forgotten")

MAIN = """version = 1

[[lb]]
interfaces = ["eth0"]
config = "lb.toml"
health = false
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def lb_toml(lab: LbLab, weights=(1, 1, 1)) -> str:
    """The fleet test's LB config (tests/apps/test_agent_fleet.py)."""
    return lab.lb_config(weights, seed=11, table_size=1009)


def _log_time(e: dict) -> float:
    """A log line's time (UTC, milliseconds) as seconds since the epoch."""
    t = e["time"]
    return calendar.timegm(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) + int(t[20:23]) / 1000


def _pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, linear between order statistics."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    i = q * (len(s) - 1)
    lo = int(i)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (i - lo)


def _after(weights: tuple) -> tuple:
    """The next weights of the cycle (a change from ``weights``)."""
    return WEIGHTS[(WEIGHTS.index(weights) + 1) % len(WEIGHTS)] if weights in WEIGHTS else WEIGHTS[0]


def summary(values: list[float]) -> dict:
    return {"n": len(values), "min": min(values), "p50": statistics.median(values), "p90": _pct(values, 0.9),
            "max": max(values)}


class Fleet:
    """The lab, the config directory, one agent per LB node and this process's LB handles."""

    def __init__(self, base: Path):
        self.base = base
        self.lab = LbLab("ba" + secrets.token_hex(3), backends=BACKENDS, nodes=NODES)
        self.nodes = self.lab.lb_nodes
        self.agents: dict[str, AgentProcess] = {}
        self.handles: dict[str, LoadBalancer] = {}
        self.cm: ConfigMapDir | None = None
        self.weights = (1, 1, 1)
        self._starts = 0

    def files(self, weights) -> dict:
        return {"xdpkit.toml": MAIN, "lb.toml": lb_toml(self.lab, weights)}

    def up(self) -> None:
        self.lab.up()
        self.cm = ConfigMapDir(self.base / "config", self.files(self.weights))

    def state_dir(self, role: str) -> Path:
        return self.base / f"state-{role}"

    def agent(self, role: str, extra=()) -> AgentProcess:
        """A new (not yet started) agent for node ``role``, with a log file of its own."""
        self._starts += 1
        return AgentProcess(self.lab.ns(role), self.base / "config", self.state_dir(role),
                            self.base / f"{role}-{self._starts}.log", interval=INTERVAL, extra=tuple(extra))

    def start_all(self, extra=()) -> None:
        for role in self.nodes:
            self.agents[role] = self.agent(role, extra).start()
        for role in self.nodes:
            self.agents[role].wait_ready(timeout=30)

    def stop_all(self) -> None:
        for role in list(self.agents):
            self.agents.pop(role).stop()

    def open_handles(self) -> None:
        for role in self.nodes:
            with xns.inside(self.lab.ns(role)):
                self.handles[role] = LoadBalancer.open("eth0")

    def close_handles(self) -> None:
        while self.handles:
            self.handles.popitem()[1].close()

    def close(self) -> None:
        """Stop every agent (SIGTERM; killed if it does not stop) and remove the lab. Runs in a
        finally: problems are logged, not raised over the error that may have brought us here."""
        self.close_handles()
        while self.agents:
            role, a = self.agents.popitem()
            try:
                a.stop()
            except (LabError, OSError) as exc:
                log(f"  stopping the agent of {role}: {exc}")
        if self.lab.exists():
            self.lab.down()


def propagate(fleet: Fleet, changes: int, rng: random.Random, label: str) -> dict:
    """``changes`` config changes; per node, seconds from the directory update to the kernel
    holding the new config (None: not within CHANGE_TIMEOUT)."""
    lat: dict[str, list] = {role: [] for role in fleet.nodes}
    writes: list[float] = []   # wall-clock time of each directory update (for the agents' logs)
    before = {role: _stamps(fleet.agents[role]) for role in fleet.nodes}
    bad_reads = 0
    polls = 0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t_phase = time.perf_counter()
    for k in range(changes):
        weights = _after(fleet.weights)
        files = fleet.files(weights)
        want = parse_config(files["lb.toml"])
        pending = list(fleet.nodes)
        writes.append(time.time())
        t0 = time.perf_counter()
        fleet.cm.update(files)
        fleet.weights = weights
        while pending:
            for role in list(pending):
                polls += 1
                try:
                    held = fleet.handles[role].config()
                except (ValueError, XdpkitError):  # a read across the agent's write of the state
                    bad_reads += 1
                    continue
                if held == want:
                    lat[role].append(time.perf_counter() - t0)
                    pending.remove(role)
            if not pending:
                break
            if time.perf_counter() - t0 > CHANGE_TIMEOUT:
                for role in pending:
                    lat[role].append(None)
                    a = fleet.agents[role]
                    if a.proc.poll() is not None:
                        raise LabError(f"the agent of {role} exited with {a.proc.returncode}:\n{a.log()[-2000:]}")
                break
            time.sleep(POLL_SLEEP)
        got = [lat[r][-1] for r in fleet.nodes if lat[r][-1] is not None]
        log(f"  {label} change {k + 1}/{changes} {weights}: "
            + ", ".join(f"{r} {_ms(lat[r][-1]) if lat[r][-1] is not None else 'MISSED'}" for r in fleet.nodes)
            + (f" ms (max {_ms(max(got))})" if got else ""))
        time.sleep(rng.uniform(0.0, INTERVAL))  # the next change lands at another phase of the timers
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - t_phase
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    # The agents' own view, from their logs (millisecond stamps): the update to the config read
    # and accepted, from there to the `applied` line (the pass; logged once it ends), and how
    # much later than that line this process saw the kernel hold the change.
    parts: dict[str, list] = {"accepted": [], "pass": [], "applied": [], "seen_after": []}
    for role in fleet.nodes:
        now = _stamps(fleet.agents[role])
        acc, app = (now[k][len(before[role][k]):] for k in ("accepted", "applied"))
        if len(acc) != changes or len(app) != changes:
            log(f"  {role}: {len(acc)} config_accepted and {len(app)} applied lines in its log for {changes} changes")
            continue
        for t_write, t_acc, t_app, seen in zip(writes, acc, app, lat[role]):
            parts["accepted"].append(t_acc - t_write)
            parts["pass"].append(t_app - t_acc)
            parts["applied"].append(t_app - t_write)
            if seen is not None:
                parts["seen_after"].append(seen - (t_app - t_write))
    values = [x for v in lat.values() for x in v if x is not None]
    if not values:
        raise LabError(f"{label}: no node got any of the {changes} changes")
    missed = sum(1 for v in lat.values() for x in v if x is None)
    out = summary(values)
    out.update(changes=changes, missed=missed, bad_reads=bad_reads, polls=polls,
               within_1=sum(1 for x in values if x <= INTERVAL) / (len(values) + missed),
               within_2=sum(1 for x in values if x <= 2 * INTERVAL) / (len(values) + missed),
               per_node={r: {"p50": statistics.median([x for x in v if x is not None]),
                             "max": max(x for x in v if x is not None)} for r, v in lat.items()
                         if any(x is not None for x in v)},
               logs={k: summary(v) for k, v in parts.items() if v},
               poller_cpu_share=cpu / wall, samples={r: [None if x is None else round(x, 4) for x in v]
                                                     for r, v in lat.items()})
    return out


def _stamps(a: AgentProcess) -> dict[str, list[float]]:
    """The times of the agent's config_accepted lines and of its `applied` lines of the LB."""
    events = a.events()
    return {"accepted": [_log_time(e) for e in events if e.get("event") == "config_accepted"],
            "applied": [_log_time(e) for e in events if e.get("event") == "applied" and e.get("app") == "lb"]}


def check_no_actions(fleet: Fleet, what: str) -> int:
    """The change events in the current agents' logs (after an adopting start: there must be none)."""
    n = 0
    for role in fleet.nodes:
        acts = [e for e in fleet.agents[role].events() if e.get("event") in ACTIONS]
        if acts:
            log(f"  UNEXPECTED: {what}: the agent of {role} logged {[e['event'] for e in acts]}")
        n += len(acts)
    return n


def reference(fleet: Fleet, changes: int) -> dict:
    """The same kind of change applied in this process on every node (agents stopped), timed per
    node: open the LB, apply, close (what the agent's apply does to the kernel); and apply alone.
    Ends on the config directory's config, so restarted agents find nothing to do."""
    total: list[float] = []
    apply_only: list[float] = []
    seq, w = [], fleet.weights
    for _ in range(changes):
        w = _after(w)
        seq.append(w)
    for w in seq:
        cfg = parse_config(lb_toml(fleet.lab, w))
        for role in fleet.nodes:
            t0 = time.perf_counter()
            with xns.inside(fleet.lab.ns(role)), LoadBalancer.open("eth0") as lb:
                t1 = time.perf_counter()
                lb.apply(cfg)
                t2 = time.perf_counter()
            total.append(time.perf_counter() - t0)
            apply_only.append(t2 - t1)
    if seq and seq[-1] != fleet.weights:  # back to the directory's config (untimed)
        cfg = parse_config(lb_toml(fleet.lab, fleet.weights))
        for role in fleet.nodes:
            with xns.inside(fleet.lab.ns(role)), LoadBalancer.open("eth0") as lb:
                lb.apply(cfg)
    out = summary(total)
    out["apply_only"] = summary(apply_only)
    return out


def _wait_ready_timed(a: AgentProcess, t0: float, timeout: float = 30.0) -> float:
    while True:
        if a.proc.poll() is not None:
            raise LabError(f"agent in {a.ns} exited with {a.proc.returncode}:\n{a.log()[-3000:]}")
        try:
            code, _body = a.get("/readyz", timeout=2.0)
        except OSError:
            code = None  # not listening yet
        if code == 200:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise LabError(f"agent in {a.ns} not ready within {timeout} s:\n{a.log()[-3000:]}")
        time.sleep(0.01)


def _start_timed(fleet: Fleet, role: str) -> dict:
    a = fleet.agent(role)
    wall0, t0 = time.time(), time.perf_counter()
    fleet.agents[role] = a.start()  # in the fleet at once: stopped at the end whatever happens
    ready = _wait_ready_timed(a, t0)
    started = a.events("started")
    events = [e["event"] for e in a.events() if e.get("event") in ACTIONS]
    return {"ready_s": ready, "started_s": _log_time(started[0]) - wall0 if started else None,
            "actions": events}


def restarts(fleet: Fleet, role: str, rounds: int) -> dict:
    """kill -9 and a new agent that adopts, vs a first start that loads; alternated rounds."""
    adopt, fresh = [], []
    ns = fleet.lab.ns(role)
    for r in range(rounds):
        fleet.agents.pop(role).kill9()
        adopt.append(_start_timed(fleet, role))
        log(f"  restart {r + 1}: adopting, ready in {adopt[-1]['ready_s'] * 1e3:.0f} ms, "
            f"actions {adopt[-1]['actions'] or 'none'}")
        fleet.agents.pop(role).kill9()
        with xns.inside(ns):
            LoadBalancer.unload("eth0")
        shutil.rmtree(fleet.state_dir(role))
        fresh.append(_start_timed(fleet, role))
        log(f"  restart {r + 1}: first start, ready in {fresh[-1]['ready_s'] * 1e3:.0f} ms, "
            f"actions {fresh[-1]['actions'] or 'none'}")
    with xns.inside(ns), LoadBalancer.open("eth0") as lb:
        loaded_ok = lb.config() == parse_config(lb_toml(fleet.lab, fleet.weights))

    def med(rows, key):
        vals = [x[key] for x in rows if x[key] is not None]
        return statistics.median(vals) if vals else None

    return {"rounds": rounds, "node": role, "config_in_kernel": loaded_ok,
            "adopt": {"ready_s": med(adopt, "ready_s"), "started_s": med(adopt, "started_s"),
                      "rows": adopt, "wrote": sum(len(x["actions"]) for x in adopt)},
            "fresh": {"ready_s": med(fresh, "ready_s"), "started_s": med(fresh, "started_s"),
                      "rows": fresh, "loaded": all(x["actions"] == ["loaded"] for x in fresh)}}


def _agent_pid(a: AgentProcess) -> int:
    """The agent's python process: `ip netns exec` execs it (same pid); else its child."""
    pid = a.proc.pid
    if b"xdpkit" in Path(f"/proc/{pid}/cmdline").read_bytes():
        return pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    if len(children) != 1:
        raise LabError(f"cannot tell the agent's process under pid {pid}")
    return int(children[0])


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise LabError(f"no {key} in /proc/{pid}/status")


def footprint(fleet: Fleet, role: str, seconds: float) -> dict:
    """RSS and CPU of the idle agents over ``seconds`` (``role``'s is the reported one)."""
    pids = {r: _agent_pid(a) for r, a in fleet.agents.items()}
    cpu0 = {r: _cpu_s(p) for r, p in pids.items()}
    t0 = time.perf_counter()
    time.sleep(seconds)
    wall = time.perf_counter() - t0
    rows = {r: {"cpu_s": _cpu_s(p) - cpu0[r], "rss_kb": _status_kb(p, "VmRSS"), "hwm_kb": _status_kb(p, "VmHWM"),
                "watch": "--no-watch" not in fleet.agents[r].argv} for r, p in pids.items()}
    for r in rows:
        rows[r]["cpu_share"] = rows[r]["cpu_s"] / wall
    return {"node": role, "seconds": wall, "interval_s": INTERVAL, **rows[role], "all": rows}


def run() -> dict:
    rng = random.Random(SEED)
    t_run = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xdpkit-bench-agent-") as tmp:
        fleet = Fleet(Path(tmp))
        res: dict = {"nodes": NODES, "interval_s": INTERVAL, "settle_s": SETTLE}
        try:
            log(f" lab {fleet.lab.name}: {NODES} LB nodes, one agent each")
            fleet.up()
            fleet.start_all()
            fleet.open_handles()
            log(" config change -> kernel, directory watch")
            res["watch"] = propagate(fleet, WATCH_CHANGES, rng, "watch")
            fleet.close_handles()
            fleet.stop_all()
            log(" reference: apply in process on each node (agents stopped)")
            res["reference"] = reference(fleet, REF_CHANGES)
            log(" config change -> kernel, --no-watch (agents restarted, adopting)")
            fleet.start_all(extra=("--no-watch",))
            res["nowatch_restart_writes"] = check_no_actions(fleet, "--no-watch restart")
            fleet.open_handles()
            res["nowatch"] = propagate(fleet, NOWATCH_CHANGES, rng, "no-watch")
            fleet.close_handles()
            log(" restarts")
            res["restart"] = restarts(fleet, fleet.nodes[0], RESTART_ROUNDS)
            log(f" footprint, {IDLE_SECONDS:.0f} idle seconds")
            time.sleep(1.0)  # past the new agent's first passes
            res["footprint"] = footprint(fleet, fleet.nodes[0], IDLE_SECONDS)
        finally:
            fleet.close()
    res["run_seconds"] = time.perf_counter() - t_run
    res["agent_over_reference"] = {m: res[m]["p50"] / res["reference"]["p50"] for m in ("watch", "nowatch")}
    return res


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}"


def markdown(r: dict) -> str:
    iv = r["interval_s"]
    ref = r["reference"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    def row(label: str, s: dict, within: bool = True, target: str = "", ok=None) -> str:
        w = (f"{100 * s['within_1']:.0f}% | {100 * s['within_2']:.0f}%" if within else " | ")
        n = f"{s['n']}" + (f" (+{s['missed']} missed)" if s.get("missed") else "")
        return (f"| {label} | {n} | {_ms(s['min'])} | {_ms(s['p50'])} | {_ms(s['p90'])} | {_ms(s['max'])} | {w} | "
                f"{target} | {'' if ok is None else verdict(ok)} |")

    def ok(s):
        return not s["missed"] and s["max"] < 2 * iv

    lines = [
        "## Node agent (`xdpkit agent`)", "",
        f"{r['nodes']} LB nodes on one machine (LbLab), one agent process each, interval {iv:.0f} s, one config "
        "directory updated like a ConfigMap volume. Config change: from just before the directory update to "
        "the node's kernel holding the new LB config (read back from the LB's state map by this process, "
        "all nodes polled round-robin every ~1 ms); changes alternate the backends' weights and are spaced "
        "by a random fraction of the interval. Reference: the same change applied in process on each node "
        "(open, apply, close), agents stopped.", "",
        "| config change -> kernel, per node | node updates | min ms | p50 ms | p90 ms | max ms | "
        "<= 1 interval | <= 2 intervals | target | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        row(f"agent, directory watch ({r['watch']['changes']} changes)", r["watch"], target="max < 2 intervals",
            ok=ok(r["watch"])),
        row(f"agent, `--no-watch` ({r['nowatch']['changes']} changes)", r["nowatch"], target="max < 2 intervals",
            ok=ok(r["nowatch"])),
        row("reference: in-process open + apply", ref, within=False),
        row("reference: apply alone", ref["apply_only"], within=False), "",
        f"Agent median over the reference's: {r['agent_over_reference']['watch']:.1f}x with the watch, "
        f"{r['agent_over_reference']['nowatch']:.1f}x without. Per node, p50/max ms: with the watch "
        + ", ".join(f"{n} {_ms(v['p50'])}/{_ms(v['max'])}" for n, v in r["watch"]["per_node"].items())
        + "; without " + ", ".join(f"{n} {_ms(v['p50'])}/{_ms(v['max'])}" for n, v in r["nowatch"]["per_node"].items())
        + f". The poller used {100 * r['watch']['poller_cpu_share']:.0f}% / "
        f"{100 * r['nowatch']['poller_cpu_share']:.0f}% of one CPU. Writes by the agents restarted with "
        f"`--no-watch` (adopting): {r['nowatch_restart_writes']}. With the watch, {r['settle_s'] * 1e3:.0f} ms of "
        "each change is the agent's settle time (gathering one update's events); without it, a change waits for "
        "the next pass, and passes start every interval.",
    ]
    if r["watch"].get("logs") and r["nowatch"].get("logs"):
        def pm(s):
            return f"{_ms(s['p50'])} / {_ms(s['max'])}"

        lines += ["", "Where the time goes, from the agents' own logs (millisecond stamps; p50 / max ms). "
                  "The pass is the reconcile of the new config, five agents at once on "
                  f"{os.cpu_count()} CPUs; the last column is when this process saw the kernel hold the change, "
                  "relative to the agent's `applied` line (which is written after the pass):", "",
                  "| mode | update -> config accepted | accepted -> `applied` (the pass) | update -> `applied` | "
                  "kernel seen here - `applied` |", "|---|---:|---:|---:|---:|"]
        for m, label in (("watch", "directory watch"), ("nowatch", "`--no-watch`")):
            lg = r[m]["logs"]
            sa = lg["seen_after"]
            lines.append(f"| {label} | {pm(lg['accepted'])} | {pm(lg['pass'])} | {pm(lg['applied'])} | "
                         f"{sa['p50'] * 1e3:+.1f} ({sa['min'] * 1e3:+.1f} to {sa['max'] * 1e3:+.1f}) |")
    rs = r["restart"]
    a, f = rs["adopt"], rs["fresh"]
    lines += [
        "", f"Restart of the agent on node {rs['node']} ({rs['rounds']} alternated rounds, medians): process start "
        "to /readyz 200; \"to started\" is the agent's `started` log line (interpreter, imports, listening).", "",
        "| start | ready ms | to started ms | rounds (ready ms) | data-plane writes |", "|---|---:|---:|---:|---|",
        f"| after kill -9, same state dir (adopts) | {_ms(a['ready_s'])} | {_ms(a['started_s'])} | "
        f"{', '.join(_ms(x['ready_s']) for x in a['rows'])} | {a['wrote'] or 'none'} |",
        f"| first start, LB unloaded, no state dir (loads) | {_ms(f['ready_s'])} | {_ms(f['started_s'])} | "
        f"{', '.join(_ms(x['ready_s']) for x in f['rows'])} | "
        f"{'loaded, each round' if f['loaded'] else [x['actions'] for x in f['rows']]} |",
    ]
    fp = r["footprint"]
    others = [v for n, v in fp["all"].items() if n != fp["node"]]
    lines += [
        "", f"Footprint of the idle agent on {fp['node']} (interval {fp['interval_s']:.0f} s, watch on) over "
        f"{fp['seconds']:.0f} s: RSS {fp['rss_kb'] / 1024:.1f} MiB (peak {fp['hwm_kb'] / 1024:.1f} MiB), "
        f"CPU {fp['cpu_s'] * 1e3:.0f} ms ({100 * fp['cpu_share']:.2f}% of one CPU; /proc counts in "
        f"{1e3 / os.sysconf('SC_CLK_TCK'):.0f} ms ticks)."
        + (f" The other {len(others)} agents (`--no-watch`): RSS {min(v['rss_kb'] for v in others) / 1024:.1f}-"
           f"{max(v['rss_kb'] for v in others) / 1024:.1f} MiB, CPU {min(v['cpu_s'] for v in others) * 1e3:.0f}-"
           f"{max(v['cpu_s'] for v in others) * 1e3:.0f} ms." if others else ""),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    standalone(run, markdown)
