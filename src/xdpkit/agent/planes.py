"""What the agent does to one interface for each app it runs: load, check, apply, unload.

Every app keeps its whole state in the kernel (its program, maps and the config they came
from), so checking is reading the kernel, and adopting after a restart is opening what is
attached. Changes go through the apps' own atomic ``apply``.
"""
from __future__ import annotations

from xdpkit import xdp
from xdpkit.agent.config import Entry
from xdpkit.apps import transaction
from xdpkit.apps.firewall.control import PROGRAM as FIREWALL, Firewall
from xdpkit.apps.lb.control import DECAP_PROGRAM, PROGRAM as LB, LoadBalancer, decap_load
from xdpkit.builtin import builtin_object
from xdpkit.object import Object
from xdpkit.xdp import XdpMode

STATS = "xdpkit_stats"


class Plane:
    PROGRAM = ""

    def load(self, ifname: str, entry: Entry) -> int:
        """Attach the app to ``ifname`` made from ``entry`` (persistent); its program id."""
        raise NotImplementedError

    def in_sync(self, att, entry: Entry) -> bool:
        """Whether the app behind ``att`` holds what ``entry`` asks for."""
        return True

    def apply(self, att, entry: Entry) -> None:
        """Make the app behind ``att`` hold ``entry``, atomically."""

    def unload(self, ifname: str, prog_id: int) -> bool:
        """Detach exactly ``prog_id`` (waiting for a change in progress); False if it is gone."""
        with transaction.exclusive(prog_id):
            gone = xdp.detach_program(ifname, prog_id) is not None
        transaction.remove_lock(prog_id)
        return gone


class FirewallPlane(Plane):
    PROGRAM = FIREWALL

    def load(self, ifname, entry):
        with Firewall.load(ifname, entry.ruleset, mode=XdpMode.parse(entry.mode)) as fw:
            return fw.prog_id

    def in_sync(self, att, entry):
        with Firewall.from_attachment(att) as fw:
            return fw.fingerprint() == entry.ruleset.fingerprint()

    def apply(self, att, entry):
        with Firewall.from_attachment(att) as fw:
            fw.apply(entry.ruleset)


class LbPlane(Plane):
    PROGRAM = LB

    def load(self, ifname, entry):
        with LoadBalancer.load(ifname, entry.lb, mode=XdpMode.parse(entry.mode)) as lb:
            return lb.prog_id

    def in_sync(self, att, entry):
        with LoadBalancer.from_attachment(att) as lb:
            return lb.config() == entry.lb

    def apply(self, att, entry):
        with LoadBalancer.from_attachment(att) as lb:
            lb.apply(entry.lb)


class DecapPlane(Plane):
    PROGRAM = DECAP_PROGRAM

    def load(self, ifname, entry):
        return decap_load(ifname, mode=XdpMode.parse(entry.mode))


class StatsPlane(Plane):
    """The built-in counting program, attached through netlink so it outlives the agent (the
    counters live in its maps)."""

    PROGRAM = STATS

    def load(self, ifname, entry):
        with Object.from_file(builtin_object("stats"), program=STATS) as obj:
            prog = obj.programs[STATS]
            prog.attach(ifname, mode=XdpMode.parse(entry.mode), netlink=True)
            return prog.id


PLANES: dict[str, Plane] = {"firewall": FirewallPlane(), "lb": LbPlane(), "decap": DecapPlane(),
                            "stats": StatsPlane()}
