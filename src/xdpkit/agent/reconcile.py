"""One reconcile pass: make this node's XDP programs what the desired state asks for.

For each interface the config wants, from what the kernel reports:

* nothing attached: load the app;
* the app, put there by this agent (or a previous one: the record) and holding what the config
  asks for: leave it alone (a restarted agent adopts it without touching traffic);
* the app holding something else: apply the config atomically. Config changed since the last
  pass: ``applied``; the kernel changed while the config did not: ``repaired`` (drift);
* the app, loaded by someone else: ``adopted``, then applied;
* another program: not touched; the interface is reported as an error.

Interfaces the config no longer wants lose the program the agent put there, if it is still
exactly that program; nothing else is ever removed. A failure on one interface is reported and
does not stop the others.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from xdpkit import interfaces, xdp
from xdpkit.agent.config import Desired, Entry
from xdpkit.agent.planes import PLANES
from xdpkit.agent.record import Owned, Record
from xdpkit.apps import transaction
from xdpkit.apps.transaction import checkpoint
from xdpkit.errors import XdpkitError
from xdpkit.program import Program


@dataclass(frozen=True)
class Action:
    ifname: str
    app: str
    action: str          # loaded | adopted | applied | repaired | reloaded | unloaded | forgotten
    program_id: int
    detail: str = ""


@dataclass
class PassResult:
    actions: list[Action] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    managed: dict[str, Owned] = field(default_factory=dict)   # what the agent runs after the pass
    seconds: float = 0.0
    digest: str = ""      # of the config the pass reconciled to


def _attached(ifname: str):
    atts = xdp.query(ifname)
    return atts[0] if atts else None


def _app_of(att) -> str | None:
    if att is None or not att.ours:
        return None
    return next((app for app, plane in PLANES.items() if plane.PROGRAM == att.name), None)


def _replace(ifname: str, att, old_app: str, entry: Entry, on_wait) -> int:
    """The agent's program ``att`` replaced by ``entry``'s app; the new program's id. In the same
    mode the kernel swaps them in one step. Across modes it cannot: the old program is held
    while it is detached, and attached again if the new one fails or a signal stops it."""
    plane = PLANES[entry.app]
    if entry.mode in ("auto", att.mode.value):
        new_id = plane.load(ifname, entry)   # netlink replaces our program atomically
    else:
        old = Program.from_id(att.id)
        try:
            PLANES[old_app].unload(ifname, att.id, on_wait)
            try:
                new_id = plane.load(ifname, entry)
            except BaseException:
                old.attach(ifname, mode=att.mode, netlink=True)
                raise
        finally:
            old.close()
    transaction.remove_lock(att.id)
    return new_id


def _one(ifname: str, entry: Entry, record: Record, out: PassResult, on_wait) -> None:
    plane = PLANES[entry.app]
    att = _attached(ifname)
    if att is not None:
        was = next((k for k, o in record.owned.items() if o.program_id == att.id), None)
        if was is not None and was != ifname:
            record.move(was, ifname)   # the interface was renamed: the program is still ours
    owned = record.get(ifname)
    mine = owned is not None and att is not None and owned.program_id == att.id

    def done(action: str, prog_id: int, detail: str = "") -> None:
        record.set(ifname, Owned(entry.app, prog_id, entry.digest))
        out.actions.append(Action(ifname, entry.app, action, prog_id, detail))

    if att is not None and _app_of(att) != entry.app:
        if not mine:
            raise XdpkitError(f"{ifname} runs {att.describe()}, which the agent did not put there; "
                              f"it is left alone, so {entry.where} cannot run there")
        done("reloaded", _replace(ifname, att, owned.app, entry, on_wait), f"was {owned.app}")
        return
    if att is None:
        detail = "the agent's program was gone" if owned is not None else ""
        done("loaded", plane.load(ifname, entry), detail)
        return
    if entry.mode != "auto" and att.mode.value != entry.mode:
        if not mine:
            raise XdpkitError(f"{ifname} runs the {entry.app} in {att.mode.value} mode, not put there by the "
                              f"agent; {entry.where} asks for {entry.mode} mode, and the agent reloads only "
                              "its own programs")
        done("reloaded", _replace(ifname, att, owned.app, entry, on_wait), f"mode {att.mode.value} -> {entry.mode}")
        return
    if not mine:
        plane.apply(att, entry, on_wait)   # whatever it held, it now holds the config
        done("adopted", att.id, "loaded by someone else" if owned is None else "replaced since the last pass")
        return
    if owned.digest != entry.digest:
        plane.apply(att, entry, on_wait)
        done("applied", att.id, "the config changed")
    elif not plane.in_sync(att, entry):
        plane.apply(att, entry, on_wait)
        done("repaired", att.id, "changed by hand since the agent applied it")


def _remove(ifname: str, owned: Owned, present: set[str], record: Record, out: PassResult, on_wait) -> None:
    if ifname not in present:
        record.forget(ifname)   # the interface went, and its program with it
        transaction.remove_lock(owned.program_id)
        out.actions.append(Action(ifname, owned.app, "forgotten", owned.program_id, "the interface is gone"))
        return
    if PLANES[owned.app].unload(ifname, owned.program_id, on_wait):
        out.actions.append(Action(ifname, owned.app, "unloaded", owned.program_id, "no longer in the config"))
    else:
        out.actions.append(Action(ifname, owned.app, "forgotten", owned.program_id,
                                  "replaced by someone else; left alone"))
    record.forget(ifname)


def reconcile(desired: Desired, record: Record, on_wait=None) -> PassResult:
    """``on_wait(message)`` is told when a change waits for another writer's (an operator's)."""
    t0 = time.monotonic()
    out = PassResult(digest=desired.digest)
    present = {link.ifname for link in interfaces.list_links()}
    wanted, out.errors = desired.wanted(present)
    for ifname, entry in wanted.items():
        checkpoint()  # SIGTERM between interfaces: stop here (inside agent's interruptible block)
        try:
            _one(ifname, entry, record, out, on_wait)
        except XdpkitError as exc:
            out.errors[ifname] = str(exc)
        except Exception as exc:  # one interface's surprise must not stop the others
            out.errors[ifname] = f"unexpected {exc!r}"
    for ifname, owned in list(record.owned.items()):
        if ifname in wanted or ifname in out.errors:
            continue   # wanted, or in doubt: an interface with an error keeps what it has
        try:
            _remove(ifname, owned, present, record, out, on_wait)
        except XdpkitError as exc:
            out.errors[ifname] = str(exc)
        except Exception as exc:
            out.errors[ifname] = f"unexpected {exc!r}"
    out.managed = dict(record.owned)
    out.seconds = time.monotonic() - t0
    return out


def remove_all(record: Record, on_wait=None) -> PassResult:
    """Unload everything the agent put on this node (``--cleanup-on-exit``)."""
    return reconcile(Desired(), record, on_wait)
