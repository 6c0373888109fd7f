"""Health checks for the load balancers the agent runs: one HealthLoop per interface whose
``[[lb]]`` has ``health = true`` and a VIP with a ``health`` table, kept in step with the config.
A down backend's state lives in the kernel (see apps.lb.healthloop), so a restarted agent
starts from it."""
from __future__ import annotations

from xdpkit.apps.lb.healthloop import HealthLoop
from xdpkit.errors import XdpkitError


class HealthLoops:
    def __init__(self, on_event):
        self.on_event = on_event
        self._loops: dict[str, HealthLoop] = {}

    def sync(self, desired, managed: dict) -> dict[str, str]:
        """Run a loop for each load balancer that wants one, stop the rest; errors per interface.
        ``managed``: interface -> Owned (app, program id) after a reconcile pass."""
        wanted = {}
        for ifname, owned in managed.items():
            entry = next((e for e in desired.entries if e.app == "lb" and e.matches(ifname)), None) \
                if owned.app == "lb" else None
            if entry is not None and entry.health and any(v.health for v in entry.lb.vips):
                wanted[ifname] = owned.program_id
        errors = {}
        for ifname in sorted(self._loops):
            if wanted.get(ifname) != self._loops[ifname].lb.prog_id:  # not wanted, or reloaded
                self._loops.pop(ifname).close()
        for ifname in sorted(wanted):
            try:
                loop = self._loops.get(ifname)
                if loop is None:
                    loop = self._loops[ifname] = HealthLoop(ifname, on_event=self.on_event)
                    loop.checker.start()
                else:
                    loop.refresh()  # the VIPs and backends may have changed
            except XdpkitError as exc:
                errors[ifname] = f"health checks: {exc}"
        return errors

    def close(self) -> None:
        for loop in self._loops.values():
            loop.close()
        self._loops = {}
