"""Health checks wired to a load balancer: failing backends are drained, recovered ones restored.

    with HealthLoop("eth0") as loop:       # the LB attached to eth0 (by any process)
        loop.run(duration=None)            # until Ctrl-C; or loop.run_once() per round

The targets are the backends of every VIP that has a ``health`` table in its config, probed at
their real address. The config is re-read from the kernel every ``refresh`` seconds, so
backends added with ``xdpkit lb backend add`` are picked up without a restart. A down backend is
drained (no new flows; its open flows stay, which is all a dead server can ask for) and its state
is kept in the kernel, so ``xdpkit lb stats`` shows it and a restarted loop starts from it.
"""
from __future__ import annotations

import json
import logging
import sys
import time

from xdpkit.apps.lb.control import LoadBalancer, backend_id
from xdpkit.apps.lb.health import HealthChecker, Target

log = logging.getLogger("xdpkit.lb.health")


class HealthLoop:
    def __init__(self, iface, *, netns: str | None = None, refresh: float = 5.0, on_event=None):
        self.lb = LoadBalancer.open(iface)
        self.refresh_interval = refresh
        self.on_event = on_event
        try:
            down = self.lb.down()
            self.checker = HealthChecker(self._targets(), self._changed, netns=netns,
                                         initial_up=lambda key: key not in down)
        except BaseException:
            self.lb.close()
            raise

    def _targets(self) -> list[Target]:
        out = []
        for v in self.lb.config().vips:
            if v.health is not None:
                out += [Target(key=backend_id(v, b.address), address=b.address, port=v.port, check=v.health)
                        for b in v.backends]
        return out

    def _changed(self, target: Target, up: bool, detail: str) -> None:
        vip, address = target.key.rsplit(" ", 1)  # backend_id's two parts
        self.lb.set_health(vip, address, up)
        if self.on_event:
            self.on_event({"time": time.time(), "vip": vip, "backend": address,
                           "state": "up" if up else "down", "detail": detail})

    def refresh(self) -> None:
        self.checker.set_targets(self._targets())

    def run_once(self):
        """Re-read the config, probe every target once, apply the transitions; returns them."""
        self.refresh()
        return self.checker.run_once()

    def run(self, duration: float | None = None) -> None:
        """Probe in the background until ``duration`` seconds pass (None: until Ctrl-C)."""
        end = None if duration is None else time.monotonic() + duration
        self.checker.start()
        try:
            while end is None or time.monotonic() < end:
                left = self.refresh_interval if end is None else end - time.monotonic()
                time.sleep(max(0.0, min(self.refresh_interval, left)))
                self.refresh()
        except KeyboardInterrupt:
            pass
        finally:
            self.checker.stop()

    def close(self) -> None:
        self.checker.close()
        self.lb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_health(iface, *, once: bool = False, duration: float | None = None, as_json: bool = False) -> int:
    """`xdpkit lb health`: print state changes as they happen (JSON lines with --json)."""
    def show(event: dict) -> None:
        if as_json:
            print(json.dumps(event), flush=True)
        else:
            print(f"{time.strftime('%H:%M:%S')} {event['vip']} {event['backend']} is {event['state']}: "
                  f"{event['detail']}", flush=True)

    with HealthLoop(iface, on_event=show) as loop:
        if not loop.checker.status():
            print("no VIP has a health check (add `health = {...}` to a VIP)", file=sys.stderr)
            return 1
        if once:
            loop.run_once()
            for s in loop.checker.status():
                if as_json:
                    print(json.dumps(s))
                else:
                    print(f"{s['key']}: {'up' if s['up'] else 'down'} ({s['detail']})")
            return 0
        loop.run(duration)
    return 0
