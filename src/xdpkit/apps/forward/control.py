"""The forwarding plane's control: one program on a set of interfaces, the kernel's tables as state.

    fwd = Forwarder.load(["in0", "out0"], fib="full", cpus=[1])   # attach to every member
    Forwarder.planes()                                           # what is loaded in this namespace
    Forwarder.open("in0").stats()                                # any later process
    Forwarder.unload()                                           # every plane here (or one member's)

There is nothing to apply: routes, rules and neighbours are the kernel's, and the program asks
the kernel (bpf_fib_lookup). What the plane owns is fixed at load: its members (fwd_ports, a
DEVMAP, and fwd_members with their MACs), the CPUs the stack's share goes to (fwd_cpus, a
CPUMAP), the per-CPU next-hop memory and three neighbour tracepoint programs, whose links are
pinned under the bpffs pin root so that they live as long as the plane.

Loading is all or nothing: a failure or an interrupt at any step detaches what was attached,
removes what was pinned and closes the object, so nothing stays behind.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time
from dataclasses import asdict, dataclass, field

from xdpkit import bpffs
from xdpkit import interfaces as nl
from xdpkit import netns as xns
from xdpkit.apps.handle import AppHandle
from xdpkit.apps import transaction
from xdpkit.builtin import builtin_object
from xdpkit.errors import ConfigError, KernelError, NotFoundError, XdpkitError
from xdpkit.kernel import bind_map, obj_pin, possible_cpus, program_info_by_id, raw_tracepoint_open
from xdpkit.maps.percpu import summed_counters
from xdpkit.object import ObjectSpec
from xdpkit.xdp import XdpMode, detach, query

PROGRAM = "xdpkit_forward"
LOCATE = "xdpkit_fwd_locate"
NEIGH_HOOKS = ("xdpkit_fwd_neigh_upd", "xdpkit_fwd_neigh_tmr", "xdpkit_fwd_neigh_del")
#: enum fwd_event in forward.h, in order
EVENTS = ("forwarded", "looked_up", "no_neigh", "ttl", "local", "too_big", "ip_options", "not_ip",
          "egress", "fwd_off", "unsupported", "blackhole", "unreachable", "prohibit", "malformed",
          "other_host", "multicast", "flooded", "to_cpu")
DROPS = ("blackhole", "unreachable", "prohibit")
FORWARDED = ("forwarded", "looked_up", "flooded")
FIB_FLAGS = {"full": 0, "direct": 1}       # BPF_FIB_LOOKUP_DIRECT skips policy rules
MAX_MEMBERS = 64                           # fwd_ports and fwd_members max_entries
MAX_CPUS = 64                              # fwd_cpus max_entries
DEFAULT_CACHE_SLOTS = 4096
MAX_CACHE_SLOTS = 1 << 20
DEFAULT_CPU_QUEUE = 2048
MAX_CPU_QUEUE = 16384                      # the kernel's own limit for a CPUMAP queue
PIN_PREFIX = "forward-"                    # + program id: the folder of a plane's hook links
STATE_SIZE = 4096                          # fwd_state value: the plane's settings as JSON
_KGENS = struct.Struct("<QQII")            # struct fwd_kernel_gens
_MEMBER = struct.Struct("<6s2x")           # struct fwd_member
_U32 = struct.Struct("<I")


@dataclass
class Settings:
    """How a plane was loaded (kept in the kernel, in fwd_state)."""

    members: list[str]
    mode: str = "auto"
    fib: str = "full"
    cpus: list[int] = field(default_factory=list)
    cpu_queue: int = DEFAULT_CPU_QUEUE
    flood: bool = False
    cache_slots: int = DEFAULT_CACHE_SLOTS
    pins: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# ---- checking what the user asked for (nothing is loaded before all of it passes) ------------

def _namespace_holding(ifname: str) -> str | None:
    """The named network namespace that has an interface ``ifname``, if any."""
    for ns in xns.list_namespaces():
        try:
            with xns.inside(ns):
                nl.ifindex_of(ifname)
            return ns
        except (NotFoundError, OSError, XdpkitError):
            continue
    return None


def resolve_members(ifaces) -> list[tuple[str, int, bytes]]:
    """(name, ifindex, MAC) of each interface, in this namespace; an unknown or repeated name,
    one that lives in another namespace or one without an Ethernet address is a ConfigError
    naming it."""
    ifaces = list(ifaces)
    if not ifaces:
        raise ConfigError("no interfaces: name the interfaces the plane forwards between")
    if len(ifaces) > MAX_MEMBERS:
        raise ConfigError(f"{len(ifaces)} interfaces; a plane has at most {MAX_MEMBERS}")
    out, seen = [], set()
    macs = {ln.ifindex: ln.mac for ln in nl.link_states()}
    for iface in ifaces:
        try:
            ifindex = nl.ifindex_of(iface)
        except NotFoundError:
            other = _namespace_holding(str(iface))
            if other:
                raise ConfigError(f"interface {iface} is in network namespace {other}, not this one",
                                  hint=f"run it there: ip netns exec {other} xdpkit forward load ...") from None
            raise ConfigError(f"no interface {iface!r} here", hint="see `ip link`") from None
        name = nl.ifname_of(ifindex)
        if ifindex in seen:
            raise ConfigError(f"interface {name} is named twice")
        seen.add(ifindex)
        mac = macs.get(ifindex) or ""
        if len(mac) != 17:
            raise ConfigError(f"interface {name} has no Ethernet address; the plane routes Ethernet frames")
        out.append((name, ifindex, bytes.fromhex(mac.replace(":", ""))))
    return out


def cpu_list(text: str) -> list[int]:
    """CPU numbers and ranges as the kernel writes them ("0-3,6"), in order; ValueError if not."""
    cpus = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    if not cpus or any(c < 0 for c in cpus):
        raise ValueError(text)
    return cpus


def online_cpus() -> set[int]:
    """CPUs the kernel has online (/sys/devices/system/cpu/online, e.g. "0-3,6")."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            return set(cpu_list(f.read().strip()))
    except OSError:
        return set(range(os.cpu_count() or 1))


def check_cpus(cpus, queue: int) -> list[int]:
    cpus = list(cpus or [])
    online = online_cpus()
    for cpu in cpus:
        if cpu not in online:
            raise ConfigError(f"CPU {cpu} is not online here (online: {_ranges(online)})", field="cpus")
    if len(set(cpus)) != len(cpus):
        raise ConfigError("a CPU is named twice in --cpus", field="cpus")
    if len(cpus) > MAX_CPUS:
        raise ConfigError(f"{len(cpus)} CPUs; at most {MAX_CPUS}", field="cpus")
    if not 1 <= queue <= MAX_CPU_QUEUE:
        raise ConfigError(f"CPU queue size {queue} is out of range 1..{MAX_CPU_QUEUE}", field="cpu_queue")
    return cpus


def _ranges(cpus) -> str:
    cpus = sorted(cpus)
    out, start = [], None
    for i, c in enumerate(cpus):
        if start is None:
            start = c
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ",".join(out)


def check_settings(s: Settings) -> None:
    if s.fib not in FIB_FLAGS:
        raise ConfigError(f"unknown FIB mode {s.fib!r}; use full (policy rules) or direct (main table)",
                          field="fib")
    if s.cache_slots and (s.cache_slots & (s.cache_slots - 1) or not 2 <= s.cache_slots <= MAX_CACHE_SLOTS):
        raise ConfigError(f"next-hop memory of {s.cache_slots} slots: use 0 (off) or a power of two "
                          f"from 2 to {MAX_CACHE_SLOTS} (two ways a set)", field="cache_slots")
    if s.flood and len(s.members) < 2:
        raise ConfigError("--flood needs at least two interfaces", field="flood")


# ---- the plane ---------------------------------------------------------------------------

class Forwarder(AppHandle):
    KIND = "forwarding plane"
    COMMAND = "forward"
    PROGRAM = PROGRAM
    CHANGE_HINT = "unload it first: xdpkit forward unload"

    @classmethod
    def load(cls, ifaces, *, mode=XdpMode.AUTO, fib: str = "full", cpus=(), cpu_queue: int = DEFAULT_CPU_QUEUE,
             flood: bool = False, cache_slots: int = DEFAULT_CACHE_SLOTS, force: bool = False) -> "Forwarder":
        """Load the program, fill its maps and attach it to every interface in ``ifaces``."""
        members = resolve_members(ifaces)
        settings = Settings([m[0] for m in members], str(getattr(mode, "value", mode)), fib,
                            check_cpus(cpus, cpu_queue), cpu_queue, bool(flood), int(cache_slots))
        check_settings(settings)
        for name, _, _ in members:
            cls._ifname_free(name)
        spec = ObjectSpec.from_file(builtin_object("forward"))
        try:
            spec.rodata["fib_flags"] = FIB_FLAGS[fib]
            spec.rodata["cache_mask"] = max(settings.cache_slots - 1, 0)
            spec.rodata["ncpus"] = len(settings.cpus)
            spec.rodata["flood"] = int(settings.flood)
            spec.rodata["locate_tid"] = threading.get_native_id()
            for name in ("fwd_cache4", "fwd_cache6"):   # a region of slots per possible CPU
                spec.maps[name].max_entries = max(settings.cache_slots, 2) * possible_cpus()
            spec.maps["fwd_cpus"].max_entries = max(settings.cpus, default=0) + 1
            spec.maps["fwd_ports"].max_entries = max(m[1] for m in members) + 1
            obj = spec.load()
        finally:
            spec.close()
        attached: list[str] = []
        try:
            prog = obj.programs[PROGRAM]
            bind_map(prog.fd, obj.maps["fwd_state"].fd)  # read by the control plane only
            fwd = cls._from_object(members[0][0], obj, prog)
            fwd._fill(members, settings)
            if settings.cache_slots:
                fwd._locate(obj)
                settings.pins = fwd._pin_hooks(obj)
            fwd._save(settings)
            for name, _, _ in members:
                prog.attach(name, mode=mode, netlink=True, force=force)
                attached.append(name)
            return fwd
        except BaseException:
            for name in attached:
                _detach_quietly(name)
            if settings.pins:
                shutil.rmtree(settings.pins, ignore_errors=True)
            obj.close()
            raise

    def _fill(self, members, s: Settings) -> None:
        ports, known = self._map("fwd_ports"), self._map("fwd_members")
        for name, ifindex, mac in members:
            ports.update_raw(_U32.pack(ifindex), _U32.pack(ifindex))
            known.update_raw(_U32.pack(ifindex), _MEMBER.pack(mac))
        # A CPUMAP's key is the CPU; the program picks fwd_cpu_list[hash % n].
        cpumap, chosen = self._map("fwd_cpus"), self._map("fwd_cpu_list")
        for i, cpu in enumerate(s.cpus):
            try:
                cpumap.update_raw(_U32.pack(cpu), struct.pack("<Ii", s.cpu_queue, 0))
            except KernelError as exc:
                raise XdpkitError(f"cannot start the CPUMAP queue on CPU {cpu}: {exc}") from None
            chosen.update_raw(_U32.pack(i), _U32.pack(cpu))

    def _locate(self, obj) -> None:
        """Find where this namespace keeps the kernel's routing generations (fwd_locate runs
        for one system call of this thread), and check it found this namespace."""
        link = raw_tracepoint_open(obj.programs[LOCATE].fd)
        try:
            own = os.stat("/proc/thread-self/ns/net").st_ino   # the one system call it sees
        finally:
            link.close()
        raw = self._map("fwd_where").lookup_raw(_U32.pack(0)) or bytes(_KGENS.size)
        net, _, inum, _ = _KGENS.unpack(raw)
        if not net or inum != own:
            raise XdpkitError("could not find this namespace's routing generations",
                              hint="run without next-hop memory: --cache-slots 0")

    def _pin_hooks(self, obj) -> str:
        """Attach the neighbour tracepoint programs and pin their links (they must live as long
        as the plane, not as this process)."""
        folder = os.path.join(bpffs.pin_root(), f"{PIN_PREFIX}{self.prog_id}")
        os.makedirs(folder, exist_ok=True)
        for name in NEIGH_HOOKS:
            link = raw_tracepoint_open(obj.programs[name].fd)
            try:
                obj_pin(link.fd, os.path.join(folder, name))
            finally:
                link.close()
        return folder

    def _save(self, s: Settings) -> None:
        doc = json.dumps(s.to_dict(), separators=(",", ":")).encode()
        if len(doc) + 4 > STATE_SIZE:
            raise ConfigError("too many interfaces or CPUs to record the plane's settings")
        self._map("fwd_state").update_raw(_U32.pack(0), _U32.pack(len(doc)) + doc.ljust(STATE_SIZE - 4, b"\0"))

    def settings(self) -> Settings:
        raw = self._map("fwd_state").lookup_raw(_U32.pack(0)) or b""
        n = _U32.unpack_from(raw)[0] if len(raw) >= 4 else 0
        if not n:
            raise XdpkitError(f"forwarding plane program {self.prog_id} has no recorded settings")
        return Settings(**json.loads(raw[4:4 + n]))

    # ---- finding and removing planes -----------------------------------------------------
    @classmethod
    def planes(cls) -> list[dict]:
        """Every forwarding plane in this namespace: program id, members, settings."""
        seen: dict[int, dict] = {}
        for att in query():
            if att.name != PROGRAM or not att.ours:
                continue
            if att.id not in seen:
                with cls.from_attachment(att) as fwd:
                    seen[att.id] = {"program": att.id, **fwd.settings().to_dict(), "attached": []}
            seen[att.id]["attached"].append({"ifname": att.ifname, "mode": att.mode.value})
        return list(seen.values())

    @classmethod
    def unload(cls, iface=None) -> list[dict]:  # type: ignore[override]
        """Detach the plane on ``iface`` (all its members), or every plane here; remove its pins.
        Returns what was removed."""
        if iface is not None:
            ifname = nl.ifname_of(nl.ifindex_of(iface))
            targets = [p for p in cls.planes() if any(a["ifname"] == ifname for a in p["attached"])]
            if not targets:
                raise NotFoundError(f"no xdpkit forwarding plane on {ifname}")
        else:
            targets = cls.planes()
        _remove_orphan_pins()
        for plane in targets:
            with transaction.exclusive(plane["program"]):
                for a in plane["attached"]:
                    detach(a["ifname"])
                if plane["pins"]:
                    shutil.rmtree(plane["pins"], ignore_errors=True)
            transaction.remove_lock(plane["program"])
        return targets

    def plane(self) -> dict:
        """This plane as ``planes()`` lists it."""
        for p in self.planes():
            if p["program"] == self.prog_id:
                return p
        raise NotFoundError(f"forwarding plane program {self.prog_id} is not attached any more")

    @classmethod
    def open_plane(cls, iface=None) -> "Forwarder":
        """The plane on member ``iface``, or the only plane in this namespace."""
        if iface is not None:
            return cls.open(iface)
        planes = cls.planes()
        if len(planes) != 1:
            raise ConfigError("no forwarding plane here" if not planes else
                              f"{len(planes)} forwarding planes here: name one of their interfaces",
                              hint="xdpkit forward status")
        return cls.open(planes[0]["attached"][0]["ifname"])

    # ---- counters ------------------------------------------------------------------------
    def event_packets(self) -> dict[str, int]:
        """Packets per event (EVENTS), for counted_since()."""
        return {k: v["packets"] for k, v in self.stats()["events"].items()}

    def stats(self) -> dict:
        sums = summed_counters(self._map("fwd_events"))
        events = {name: {"packets": sums.get(i, (0, 0))[0], "bytes": sums.get(i, (0, 0))[1]}
                  for i, name in enumerate(EVENTS)}
        to_stack = sum(v["packets"] for k, v in events.items()
                       if k not in FORWARDED and k not in DROPS and k != "to_cpu")
        return {"program": self.prog_id, "events": events,
                "forwarded": sum(events[k]["packets"] for k in FORWARDED),
                "to_stack": to_stack, "dropped": sum(events[k]["packets"] for k in DROPS)}


def counted_since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The events whose packet count changed between two ``event_packets()``, and by how much."""
    return {k: after[k] - before[k] for k in EVENTS if after[k] != before[k]}


def _remove_orphan_pins() -> None:
    """Hook pins of planes whose program is gone (its namespace was deleted with the plane on)."""
    root = bpffs.pin_root()
    for entry in os.listdir(root):
        if not entry.startswith(PIN_PREFIX) or not entry[len(PIN_PREFIX):].isdigit():
            continue
        try:
            program_info_by_id(int(entry[len(PIN_PREFIX):]))
        except XdpkitError:
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


def _detach_quietly(ifname: str) -> None:
    try:
        detach(ifname)
    except XdpkitError:
        pass


class StatsRates:
    """``read()`` gives ``stats()`` with each event's packets per second since the last read."""

    def __init__(self, stats):
        self._stats = stats
        self._last = None

    def read(self) -> dict:
        now, data = time.monotonic(), self._stats()
        if self._last is not None:
            then, before = self._last
            dt = max(now - then, 1e-9)
            for name, e in data["events"].items():
                e["pps"] = (e["packets"] - before["events"][name]["packets"]) / dt
        self._last = (now, data)
        return data
