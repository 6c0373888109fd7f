"""The agent's loop without a kernel: a pass that fails unforeseen is reported (log, readiness,
metrics) and the agent keeps going; the log is one JSON object a line, the apps' loggers too."""
import io
import json
import logging

from xdpkit.agent import node as agent_node
from xdpkit.agent.logs import event, setup
from xdpkit.agent.node import Agent


def test_an_unforeseen_failure_is_reported_and_the_agent_goes_on(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "xdpkit.toml").write_text('[[stats]]\ninterfaces = ["x0"]\n')
    calls = []

    def broken(desired, record, on_wait=None):
        calls.append(desired)
        raise RuntimeError("netlink said something odd")

    monkeypatch.setattr(agent_node, "reconcile", broken)
    out = io.StringIO()
    setup("json", "node-1", stream=out)
    with Agent(str(cfg), listen=None, state_dir=str(tmp_path / "state"), interval=0.05, watch=False) as agent:
        agent.run(duration=0.2)
        ok, body = agent.readiness()
        metrics = {m.name: m for m in agent.registry.collect()}
    assert len(calls) >= 2   # it kept passing after the first failure
    assert not ok and body["reasons"] == ["(pass): the reconcile pass failed: RuntimeError('netlink said something odd')"]
    assert metrics["xdpkit_agent_reconcile_runs"].samples[0].labels == {"result": "error"}
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failed = [e for e in lines if e.get("event") == "pass_failed"]
    assert failed and failed[0]["level"] == "error" and "RuntimeError" in failed[0]["exception"]
    assert lines[-1]["event"] == "stopped" and lines[-1]["node"] == "node-1"


def test_every_xdpkit_logger_writes_one_json_object_a_line():
    out = io.StringIO()
    log = setup("json", "n", stream=out)
    event(log, logging.WARNING, "repaired firewall on eth0", event="repaired", app="firewall", ifname="eth0")
    logging.getLogger("xdpkit.lb.something").info("an app's own line with\na newline")
    logging.getLogger("xdpkit.lb.health").warning("quietened: the agent logs these itself")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert first["event"] == "repaired" and first["level"] == "warning" and first["ifname"] == "eth0"
    assert first["time"].endswith("Z") and second["msg"] == "an app's own line with\na newline"
