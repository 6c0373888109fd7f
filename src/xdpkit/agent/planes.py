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

    def apply(self, att, entry: Entry, on_wait=None) -> None:
        """Make the app behind ``att`` hold ``entry``, atomically. ``on_wait(message)`` if another
        writer (an operator) holds the app's lock first."""

    def unload(self, ifname: str, prog_id: int, on_wait=None) -> bool:
        """Detach exactly ``prog_id`` (waiting for a change in progress); False if it is gone."""
        with transaction.exclusive(prog_id, on_wait=on_wait):
            gone = xdp.detach_program(ifname, prog_id) is not None
        transaction.remove_lock(prog_id)
        return gone


class AppPlane(Plane):
    """An app with a control-plane handle (AppHandle): its config goes in through load and
    apply, and what the kernel holds reads back comparable with what an entry wants."""

    HANDLE = None

    def config(self, entry: Entry):
        raise NotImplementedError

    def held(self, handle):
        """What the app in the kernel holds, comparable with ``wanted``."""
        raise NotImplementedError

    def wanted(self, entry: Entry):
        return self.config(entry)

    def load(self, ifname, entry):
        with self.HANDLE.load(ifname, self.config(entry), mode=XdpMode.parse(entry.mode)) as handle:
            return handle.prog_id

    def in_sync(self, att, entry):
        with self.HANDLE.from_attachment(att) as handle:
            return self.held(handle) == self.wanted(entry)

    def apply(self, att, entry, on_wait=None):
        with self.HANDLE.from_attachment(att) as handle:
            handle.on_wait = on_wait
            handle.apply(self.config(entry))


class FirewallPlane(AppPlane):
    PROGRAM = FIREWALL
    HANDLE = Firewall

    def config(self, entry):
        return entry.ruleset

    def held(self, handle):
        return handle.fingerprint()   # rule texts and settings: address files are not re-read

    def wanted(self, entry):
        return entry.ruleset.fingerprint()


class LbPlane(AppPlane):
    PROGRAM = LB
    HANDLE = LoadBalancer

    def config(self, entry):
        return entry.lb

    def held(self, handle):
        return handle.config()


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
