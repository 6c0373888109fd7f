"""`xdpkit agent`: the node agent (thin over xdpkit.agent)."""
from __future__ import annotations

from xdpkit.agent import config as agent_config
from xdpkit.agent.logs import setup as setup_logs
from xdpkit.agent.node import DEFAULT_INTERVAL, DEFAULT_LISTEN, Agent
from xdpkit.agent.record import DEFAULT_STATE_DIR
from xdpkit.errors import ConfigError
from xdpkit.ui.args import positive_float
from xdpkit.ui.output import emit_json


def register(sub) -> None:
    p = sub.add_parser("agent", help="keep this node's data plane as a config directory says (the fleet agent)",
                       description="Reconcile this node's XDP apps to DIR/xdpkit.toml on every change and "
                                   "every interval; serve /metrics, /healthz and /readyz. See docs/agent.md.")
    p.add_argument("--config-dir", metavar="DIR", help="the directory with xdpkit.toml (required but with --demo)")
    p.add_argument("--interval", type=positive_float, default=DEFAULT_INTERVAL, metavar="S",
                   help=f"re-read and re-check every S seconds, repairing drift (default {DEFAULT_INTERVAL:g})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"where /metrics, /healthz and /readyz are served (default {DEFAULT_LISTEN})")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR",
                   help=f"where the agent records what it put on the node (default {DEFAULT_STATE_DIR})")
    p.add_argument("--cleanup-on-exit", action="store_true",
                   help="unload what the agent put on the node when it stops (default: leave the data plane running)")
    p.add_argument("--no-watch", action="store_true", help="do not watch the directory; re-read every interval only")
    p.add_argument("--node", default=None, help="the node's name in logs (default $NODE_NAME, else the hostname)")
    p.add_argument("--log-format", choices=["json", "text"], default="json")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="check the directory's config and exit (no changes)")
    mode.add_argument("--once", action="store_true", help="reconcile once and exit")
    mode.add_argument("--demo", action="store_true",
                      help="a fleet of three nodes with an agent each, on a throwaway lab (fourth part of make demo)")
    p.add_argument("--name", default="xfleet", help="with --demo: the lab's name")
    p.add_argument("--json", action="store_true", help="with --check or --demo: the result as JSON")
    p.set_defaults(func=cmd_agent)


def cmd_agent(args) -> int:
    if args.demo:
        from xdpkit.agent.demo import run_demo

        result = run_demo(args.name, log=None if args.json else (lambda m: print(m, flush=True)))
        if args.json:
            emit_json(result)
        return 0
    if not args.config_dir:
        raise ConfigError("--config-dir is required: the directory with xdpkit.toml", field="--config-dir",
                          hint="or --demo for the fleet demo on a throwaway lab")
    if args.check:
        desired = agent_config.load(args.config_dir)
        summary = {"hash": desired.digest, "exporter": desired.exporter,
                   "entries": [{"app": e.app, "interfaces": list(e.interfaces), "mode": e.mode, "where": e.where}
                               for e in desired.entries]}
        if args.json:
            emit_json(summary)
        else:
            print(f"{args.config_dir}: ok, hash {desired.digest[:12]}")
            for e in summary["entries"]:
                print(f"  {e['app']:8} on {', '.join(e['interfaces']) or '(no interfaces)'}  ({e['where']})")
        return 0
    setup_logs(args.log_format, args.node)
    with Agent(args.config_dir, interval=args.interval, listen=None if args.once else args.listen,
               state_dir=args.state_dir, cleanup_on_exit=args.cleanup_on_exit,
               watch=not (args.no_watch or args.once)) as agent:
        agent.run(once=args.once)
        ok, _ = agent.readiness()
    return 0 if ok else 1
