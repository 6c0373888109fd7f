"""Where XDP programs are attached: attach, replace, detach and query, in every mode.

Two ways to attach, both returned as an :class:`XdpLink` (``ifname``, ``ifindex``, ``mode``,
``prog_id``, ``note``, ``detach()``, ``close()``, a context manager):

* :class:`BpfXdpLink` (BPF_LINK_CREATE): held by an fd, detached when the last reference
  goes (process exit) unless pinned in bpffs. The kernel never lets a link replace a program.
* :class:`NetlinkXdpLink` (IFLA_XDP, like ``ip link set dev X xdp``): lives with the
  interface. Replacing is atomic (XDP_FLAGS_REPLACE with the expected program's fd).

What to do on an interface (attach, replace atomically, refuse, or with ``force`` detach first)
is decided by :func:`decide_attach`, a pure function of what is there and what was asked; the
netlink and bpf_link calls only carry the decision out.

xdpkit marks every program it attaches by binding a small map named ``xdpkit_owner`` to it
(BPF_PROG_BIND_MAP). Any later process can tell an xdpkit program from someone else's by the
program's map list alone, without files or pins; foreign programs are never replaced or
detached without ``force``.
"""
from __future__ import annotations

import abc
import enum
import errno as E
import os
import warnings
from dataclasses import dataclass, field

from xdpkit._sys import netlink as nl
from xdpkit._sys.libbpf import ffi, require
from xdpkit.errors import AttachError, ConfigError, KernelError, NotFoundError
from xdpkit.kernel import (BPF_LINK_TYPE_XDP, BPF_XDP_ATTACH_TYPE, XDP_FLAGS_DRV_MODE, XDP_FLAGS_HW_MODE,
                           XDP_FLAGS_REPLACE, XDP_FLAGS_SKB_MODE, XDP_FLAGS_UPDATE_IF_NOEXIST, MapType,
                           link_ids, map_fd_by_id, map_info, obj_get, obj_pin, program_fd_by_id,
                           program_info)

OWNER_MAP_NAME = "xdpkit_owner"


class XdpMode(enum.StrEnum):
    """How a program sits on the hook. A str enum: ``XdpMode.NATIVE == "native"``, and it prints
    (and serialises to JSON) as its value."""

    NATIVE = "native"    # in the driver (XDP_FLAGS_DRV_MODE)
    GENERIC = "generic"  # after skb allocation (XDP_FLAGS_SKB_MODE), works on any device
    OFFLOAD = "offload"  # on the NIC (XDP_FLAGS_HW_MODE)
    AUTO = "auto"        # native, falling back to generic

    @classmethod
    def parse(cls, value) -> "XdpMode":
        if isinstance(value, cls):
            return value
        if value is None:
            return cls.AUTO
        aliases = {"drv": "native", "driver": "native", "skb": "generic", "hw": "offload"}
        text = aliases.get(str(value).lower(), str(value).lower())
        try:
            return cls(text)
        except ValueError:
            raise ConfigError(f"unknown XDP mode {value!r}; use native, generic, offload or auto") from None

    @property
    def flag(self) -> int:
        return {XdpMode.NATIVE: XDP_FLAGS_DRV_MODE, XdpMode.GENERIC: XDP_FLAGS_SKB_MODE,
                XdpMode.OFFLOAD: XDP_FLAGS_HW_MODE, XdpMode.AUTO: 0}[self]


@dataclass(frozen=True)
class MapRef:
    """A map of an attached program: its id, kernel name and type name ("percpu_array").

    ``m["id"]``, ``m["name"]``, ``m["type"]`` and ``m.get(...)`` still work, as when these were
    dicts; ``to_dict()`` is that dict (what ``status --json`` prints)."""

    id: int
    name: str
    type: str = ""

    _FIELDS = ("id", "name", "type")

    def __getitem__(self, key: str):
        if key not in self._FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self._FIELDS else default

    def keys(self):
        return self._FIELDS

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "type": self.type}

    @classmethod
    def of(cls, m) -> "MapRef":
        """A MapRef from a MapRef or a dict with the same keys."""
        return m if isinstance(m, cls) else cls(m["id"], m.get("name", ""), m.get("type", ""))


@dataclass
class Attachment:
    """One XDP program attached to one interface, as the kernel reports it."""

    ifname: str
    ifindex: int
    mode: XdpMode
    id: int
    name: str = ""
    tag: str = ""
    maps: list[MapRef] = field(default_factory=list)
    owner: str | None = None
    link_id: int | None = None

    def __post_init__(self):
        self.mode = XdpMode.parse(self.mode)  # a mode given as text ("native") becomes the enum

    @property
    def ours(self) -> bool:
        return self.owner == "xdpkit"

    def to_dict(self) -> dict:
        return {"ifname": self.ifname, "ifindex": self.ifindex, "mode": self.mode.value, "id": self.id,
                "name": self.name, "tag": self.tag, "maps": [MapRef.of(m).to_dict() for m in self.maps],
                "owner": self.owner, "link_id": self.link_id,
                "attach_type": "bpf_link" if self.link_id else "netlink"}

    def describe(self) -> str:
        who = "xdpkit" if self.ours else "not attached by xdpkit"
        return f"program '{self.name}' (id {self.id}, {self.mode.value} mode, {who})"


# ---- ownership marker -------------------------------------------------------------------

def _owner_map_ids(map_ids: list[int]) -> bool:
    for mid in map_ids:
        try:
            with map_fd_by_id(mid) as fd:
                if map_info(fd.fd).name == OWNER_MAP_NAME:
                    return True
        except (NotFoundError, KernelError):
            continue
    return False


def mark_owned(prog_fd: int) -> None:
    """Bind an ``xdpkit_owner`` map to the program (once); the kernel keeps it with the program."""
    if _owner_map_ids(program_info(prog_fd).map_ids):
        return
    lib = require()
    mfd = lib.bpf_map_create(MapType.ARRAY, OWNER_MAP_NAME.encode(), 4, 8, 1, ffi.NULL)
    if mfd < 0:
        raise KernelError("BPF_MAP_CREATE", -mfd, "creating the xdpkit owner marker")
    try:
        ret = lib.bpf_prog_bind_map(prog_fd, mfd, ffi.NULL)
        if ret < 0:
            raise KernelError("BPF_PROG_BIND_MAP", -ret, "marking the program as xdpkit's")
    finally:
        os.close(mfd)


# ---- query --------------------------------------------------------------------------------

def _xdp_links() -> dict[tuple[int, int], int]:
    """Every XDP bpf_link in the kernel: (program id, ifindex) -> link id.

    Link info has an ifindex but no namespace; a program attached twice under the same ifindex
    in two namespaces is rare enough that the pair identifies the link.
    """
    lib = require()
    out = {}
    for lid in link_ids():
        fd = lib.bpf_link_get_fd_by_id(lid)
        if fd < 0:
            continue
        try:
            info = ffi.new("struct bpf_link_info *")
            size = ffi.new("uint32_t *", ffi.sizeof("struct bpf_link_info"))
            if lib.bpf_obj_get_info_by_fd(fd, info, size) == 0 and info.type == BPF_LINK_TYPE_XDP:
                out[(info.prog_id, info.u32s[0])] = lid
        finally:
            os.close(fd)
    return out


def _describe(ifname: str, ifindex: int, mode: XdpMode, prog_id: int, links: dict) -> Attachment:
    att = Attachment(ifname=ifname, ifindex=ifindex, mode=mode, id=prog_id)
    try:
        with program_fd_by_id(prog_id) as fd:
            info = program_info(fd.fd)
    except (NotFoundError, KernelError):
        return att  # detached while we looked
    att.name, att.tag = info.name, info.tag
    for mid in info.map_ids:
        try:
            with map_fd_by_id(mid) as mfd:
                mi = map_info(mfd.fd)
        except (NotFoundError, KernelError):
            continue
        if mi.name == OWNER_MAP_NAME:
            att.owner = "xdpkit"
            continue
        att.maps.append(MapRef(mi.id, mi.name, mi.type_name))
    att.link_id = links.get((prog_id, ifindex))
    return att


def _attachments_of(link: nl.LinkXdp, links: dict | None = None) -> list[Attachment]:
    ids = [(mode, pid) for mode, pid in ((XdpMode.NATIVE, link.drv_prog_id), (XdpMode.GENERIC, link.skb_prog_id),
                                         (XdpMode.OFFLOAD, link.hw_prog_id)) if pid]
    if ids and links is None:
        links = _xdp_links()
    return [_describe(link.ifname, link.ifindex, mode, pid, links) for mode, pid in ids]


def query(iface=None) -> list[Attachment]:
    """XDP programs attached in the current network namespace (optionally on one interface)."""
    if iface is not None:
        return _attachments_of(nl.get_link(nl.ifindex_of(iface)))
    ifaces = [link for link in nl.list_links() if link.drv_prog_id or link.skb_prog_id or link.hw_prog_id]
    links = _xdp_links() if ifaces else {}  # one walk over the kernel's links for all of them
    out: list[Attachment] = []
    for link in ifaces:
        out.extend(_attachments_of(link, links))
    return out


# ---- links ----------------------------------------------------------------------------------

class XdpLink(abc.ABC):
    """What :meth:`xdpkit.Program.attach` returns, whichever way it attached.

    ``ifname``, ``ifindex``, ``mode`` (the :class:`XdpMode` really used, never AUTO after an
    attach), ``prog_id``, ``note`` (e.g. why AUTO fell back to generic, or that ``force``
    detached a program first) and ``kind`` ("netlink" or "bpf_link"). ``detach()`` removes our
    program from the hook; ``close()`` releases our handle (a netlink attachment has none).
    Leaving a ``with`` block detaches, except a pinned bpf_link, which outlives the block.
    """

    kind: str = ""

    def __init__(self, ifindex: int, ifname: str, mode: XdpMode, prog_id: int, note: str = ""):
        self.ifindex, self.ifname, self.mode, self.prog_id = ifindex, ifname, mode, prog_id
        self.note = note

    @abc.abstractmethod
    def detach(self) -> None:
        """Remove our program from the interface (idempotent)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release our handle (idempotent); see each kind for what that means for the program."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()


class NetlinkXdpLink(XdpLink):
    """A netlink (IFLA_XDP) attachment. It holds no fd: ``close()`` does nothing, and the program
    stays until :meth:`detach` (or leaving a ``with`` block, which detaches)."""

    kind = "netlink"

    def __init__(self, ifindex: int, ifname: str, mode: XdpMode, prog_id: int, note: str = ""):
        super().__init__(ifindex, ifname, mode, prog_id, note)
        self.attached = True

    def __repr__(self) -> str:
        return f"<NetlinkXdpLink {self.ifname} prog={self.prog_id} {self.mode.value}>"

    def detach(self) -> None:
        """Remove our program, and only ours: atomic compare-and-detach by expected fd."""
        if not self.attached:
            return
        _netlink_detach(self.ifindex, self.mode, self.prog_id)
        self.attached = False

    def close(self) -> None:
        """Nothing to release: a netlink attachment is not tied to a file descriptor."""


class BpfXdpLink(XdpLink):
    """A bpf_link attachment, held by our fd. ``close()`` releases the fd (the kernel detaches
    an unpinned link then); ``detach()`` detaches explicitly, pinned or not."""

    kind = "bpf_link"

    def __init__(self, fd: int, ifindex: int, ifname: str, mode: XdpMode, prog_id: int,
                 pin_path: str | None = None, note: str = ""):
        self._fd = fd
        super().__init__(ifindex, ifname, mode, prog_id, note)
        self.pin_path = pin_path

    def __repr__(self) -> str:
        return f"<BpfXdpLink {self.ifname} prog={self.prog_id} {self.mode.value} pin={self.pin_path}>"

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise AttachError("this link is closed")
        return self._fd

    @classmethod
    def open_pinned(cls, path: str) -> "BpfXdpLink":
        fd = obj_get(path)
        info = ffi.new("struct bpf_link_info *")
        size = ffi.new("uint32_t *", ffi.sizeof("struct bpf_link_info"))
        ret = require().bpf_obj_get_info_by_fd(fd.fd, info, size)
        if ret < 0 or info.type != BPF_LINK_TYPE_XDP:
            fd.close()
            raise ConfigError(f"{path} is not a pinned XDP link")
        ifindex = info.u32s[0]
        try:
            ifname = nl.ifname_of(ifindex)
        except NotFoundError:
            ifname = f"ifindex {ifindex}"
        mode = XdpMode.AUTO
        if ifindex:
            try:
                link = nl.get_link(ifindex)
                mode = XdpMode.NATIVE if link.drv_prog_id == info.prog_id else \
                    XdpMode.GENERIC if link.skb_prog_id == info.prog_id else XdpMode.AUTO
            except NotFoundError:
                pass
        num, fd.fd = fd.fd, -1
        return cls(num, ifindex, ifname, mode, info.prog_id, pin_path=path)

    def pin(self, path: str) -> None:
        obj_pin(self.fd, path)
        self.pin_path = path

    def unpin(self) -> None:
        if self.pin_path:
            try:
                os.unlink(self.pin_path)
            except FileNotFoundError:
                pass
            self.pin_path = None

    def update(self, program) -> None:
        """Atomically swap in another program (BPF_LINK_UPDATE)."""
        ret = require().bpf_link_update(self.fd, program.fd, ffi.NULL)
        if ret < 0:
            raise AttachError(f"cannot replace the program on {self.ifname}: {os.strerror(-ret)}", errno=-ret)
        mark_owned(program.fd)
        self.prog_id = program.id

    def detach(self) -> None:
        """Detach the program from the interface and remove our pin; then release the fd."""
        if self._fd >= 0:
            ret = require().bpf_link_detach(self._fd)
            if ret < 0 and -ret not in (E.ENOLINK, E.EINVAL):
                raise AttachError(f"cannot detach from {self.ifname}: {os.strerror(-ret)}", errno=-ret)
        self.unpin()
        self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __exit__(self, *exc):
        if self.pin_path:
            self.close()   # pinned: it outlives the block on purpose
        else:
            self.detach()

    def __del__(self):
        if getattr(self, "_fd", -1) >= 0:
            warnings.warn(f"xdpkit link on {self.ifname} was not closed", ResourceWarning, stacklevel=2)
            self.close()


def _attach_error(err: int, ifname: str, mode: XdpMode, extack: str = "", current=None) -> AttachError:
    why = f" ({extack})" if extack else ""
    if err == E.EBUSY or (err == E.EEXIST and current is not None):
        what = current.describe() if current else "another program"
        return AttachError(f"{ifname} is busy: {what} is attached{why}", errno=err,
                           hint=f"detach it first (xdpkit unload {ifname}) or pass --force to replace it")
    if err == E.EEXIST:
        return AttachError(f"{ifname}: the attached program changed while replacing it{why}", errno=err,
                           hint="check `xdpkit status` and try again")
    if err == E.EOPNOTSUPP or (mode == XdpMode.OFFLOAD and err == E.EINVAL):
        return AttachError(f"{ifname} does not support XDP in {mode.value} mode{why}", errno=err,
                           hint="use --mode generic (works on every device) or --mode auto")
    if err == E.ERANGE or "MTU" in extack:
        return AttachError(f"{ifname}: MTU too large for XDP in {mode.value} mode{why}", errno=err,
                           hint=f"lower it: ip link set dev {ifname} mtu 1500")
    if err == E.ENODEV:
        return AttachError(f"no such interface: {ifname}{why}", errno=err)
    if err == E.EPERM:
        return AttachError(f"permission denied attaching to {ifname}{why}", errno=err,
                           hint="run as root (CAP_NET_ADMIN and CAP_BPF)")
    return AttachError(f"cannot attach to {ifname} in {mode.value} mode: {os.strerror(err)}{why}", errno=err)


def _current(ifindex: int) -> Attachment | None:
    atts = _attachments_of(nl.get_link(ifindex))
    return atts[0] if atts else None


def _modes_to_try(mode: XdpMode) -> tuple[XdpMode, ...]:
    return (XdpMode.NATIVE, XdpMode.GENERIC) if mode == XdpMode.AUTO else (mode,)


# ---- the decision: pure, unit-tested without a kernel (tests/unit/test_attach_decisions.py) --

class Action(enum.Enum):
    ATTACH = "attach"              # nothing there: attach (IFLA_XDP UPDATE_IF_NOEXIST / link create)
    REPLACE = "replace"            # atomic swap: XDP_FLAGS_REPLACE with the expected program's fd
    DETACH_FIRST = "detach_first"  # force, where the kernel cannot swap in one step: detach, attach
    REFUSE = "refuse"              # ours, but the kernel cannot swap it in one step; force would
    NEED_FORCE = "need_force"      # someone else's program: only with force


@dataclass(frozen=True)
class AttachDecision:
    """What to do on an interface. ``modes``: the modes to try, in order (AUTO is native, then
    generic). ``expected_id``: the program that must still be there (REPLACE) or that is removed
    first (DETACH_FIRST). ``error``: what REFUSE and NEED_FORCE raise."""

    action: Action
    modes: tuple[XdpMode, ...] = ()
    expected_id: int | None = None
    error: AttachError | None = None

    def check(self) -> "AttachDecision":
        """Raise the refusal, or return self to carry out."""
        if self.error is not None:
            raise self.error
        return self


def decide_attach(current: Attachment | None, mode, *, force: bool, netlink: bool,
                  ifname: str) -> AttachDecision:
    """Given what is attached (``current``: None, xdpkit's, someone else's; through netlink or a
    bpf_link; in which mode), the requested mode, ``force`` and the way of attaching, decide.

    * Nothing there: attach.
    * Someone else's program without ``force``: refuse, naming it (NEED_FORCE).
    * The kernel can swap in one step (netlink over a netlink program, same mode or AUTO):
      replace atomically, in the mode already in use.
    * It cannot (a bpf_link never replaces a program; nothing replaces a bpf_link; native and
      generic never coexist): refuse with what to do, or with ``force`` detach first, then attach.
    """
    mode = XdpMode.parse(mode)
    if current is None:
        return AttachDecision(Action.ATTACH, _modes_to_try(mode))
    cur_mode = current.mode
    forced = AttachDecision(Action.DETACH_FIRST, _modes_to_try(mode), expected_id=current.id)
    detach_cmd = f"xdpkit unload {ifname}" + ("" if current.ours else " --force")
    if not current.ours and not force:
        if netlink and current.link_id:
            return AttachDecision(Action.NEED_FORCE, error=_link_in_the_way(ifname, current, detach_cmd))
        return AttachDecision(Action.NEED_FORCE, error=_attach_error(E.EBUSY, ifname, mode, current=current))
    if not netlink:
        if force:
            return forced
        return AttachDecision(Action.REFUSE, error=AttachError(
            f"{ifname} is busy: {current.describe()} is attached, and a bpf_link cannot replace a "
            f"program", errno=E.EBUSY,
            hint="attach with netlink=True to replace it atomically, detach it first, or pass "
                 "force=True to detach it and attach (not atomic)"))
    if current.link_id:
        return forced if force else AttachDecision(Action.REFUSE, error=_link_in_the_way(ifname, current, detach_cmd))
    if mode not in (XdpMode.AUTO, cur_mode):
        if force:
            return forced
        return AttachDecision(Action.REFUSE, error=AttachError(
            f"{ifname} has {current.describe()}; the kernel cannot replace it with a "
            f"{mode.value}-mode program in one step", errno=E.EEXIST,
            hint=f"unload it first ({detach_cmd}), use --mode {cur_mode.value}, or pass --force "
                 f"to detach it and attach (not atomic)"))
    return AttachDecision(Action.REPLACE, (cur_mode,), expected_id=current.id)


def _link_in_the_way(ifname: str, current: Attachment, detach_cmd: str) -> AttachError:
    return AttachError(f"{ifname} has {current.describe()} attached through bpf_link {current.link_id}",
                       errno=E.EBUSY, hint=f"detach it first: {detach_cmd} (or pass --force to detach "
                                           f"it and attach, not atomically)")


def falls_back(modes: tuple[XdpMode, ...], tried: XdpMode, err: int) -> bool:
    """Whether a refusal of ``tried`` moves on to the next of ``modes`` (AUTO: native, then
    generic): EOPNOTSUPP, EINVAL and ERANGE (MTU) mean "not in native mode here"."""
    later = modes[modes.index(tried) + 1:] if tried in modes else ()
    return tried == XdpMode.NATIVE and bool(later) and err in (E.EOPNOTSUPP, E.EINVAL, E.ERANGE)


def decide_detach(current: Attachment | None, *, force: bool, ifname: str) -> Attachment:
    """What ``detach`` removes: xdpkit's program, or someone else's only with ``force``."""
    if current is None:
        raise NotFoundError(f"no XDP program attached to {ifname}")
    if not current.ours and not force:
        raise AttachError(f"{ifname} has {current.describe()}; refusing to detach it",
                          hint="pass --force to detach it anyway")
    return current


def _forced_note(current: Attachment) -> str:
    return f"detached {current.describe()} first (not atomic: the kernel cannot replace it in one step)"


# ---- carrying it out ----------------------------------------------------------------------

def attach_netlink(program, iface, *, mode=None, force: bool = False) -> NetlinkXdpLink:
    """Attach like ``ip link set dev IFACE xdp``: persistent; replaces xdpkit's own program
    atomically; refuses anyone else's unless ``force`` (see :func:`decide_attach`)."""
    ifindex = nl.ifindex_of(iface)
    ifname = nl.ifname_of(ifindex)
    current = _current(ifindex)
    plan = decide_attach(current, mode, force=force, netlink=True, ifname=ifname).check()
    mark_owned(program.fd)
    notes = []
    if plan.action == Action.DETACH_FIRST:
        _detach_attachment(current, ifindex, ifname)
        notes.append(_forced_note(current))
    for m in plan.modes:
        try:
            if plan.action == Action.REPLACE:
                with program_fd_by_id(plan.expected_id) as old:
                    nl.set_xdp(ifindex, program.fd, m.flag | XDP_FLAGS_REPLACE, expected_fd=old.fd)
            else:
                nl.set_xdp(ifindex, program.fd, m.flag | XDP_FLAGS_UPDATE_IF_NOEXIST)
        except nl.NetlinkCallError as exc:
            if falls_back(plan.modes, m, exc.errno):
                notes.append(f"native mode unavailable on {ifname} ({exc.extack or os.strerror(exc.errno)}); "
                             f"fell back to generic")
                continue
            if exc.errno == E.EBUSY:
                current = _current(ifindex)
            raise _attach_error(exc.errno, ifname, m, exc.extack, current) from None
        except NotFoundError:
            raise AttachError(f"{ifname}: the program being replaced vanished; try again") from None
        return NetlinkXdpLink(ifindex, ifname, m, program.id, note="; ".join(notes))
    raise AssertionError("unreachable")


def _netlink_detach(ifindex: int, mode: XdpMode, prog_id: int) -> None:
    try:
        with program_fd_by_id(prog_id) as fd:
            nl.set_xdp(ifindex, -1, mode.flag | XDP_FLAGS_REPLACE, expected_fd=fd.fd)
    except NotFoundError:
        return  # our program is gone already (interface deleted, or detached by someone)
    except nl.NetlinkCallError as exc:
        if exc.errno == E.EEXIST:
            raise AttachError(f"the program on ifindex {ifindex} is no longer {prog_id}; left it alone",
                              errno=exc.errno) from None
        if exc.errno == E.ENODEV:
            return
        raise AttachError(f"cannot detach from ifindex {ifindex}: {exc}", errno=exc.errno) from None


def attach_link(program, iface, *, mode=None, pin: str | None = None, force: bool = False) -> BpfXdpLink:
    """Attach with BPF_LINK_CREATE; the link is ours alone and pinnable. The kernel never lets a
    link replace a program, so a busy interface is refused, or with ``force`` emptied first."""
    ifindex = nl.ifindex_of(iface)
    ifname = nl.ifname_of(ifindex)
    current = _current(ifindex)
    plan = decide_attach(current, mode, force=force, netlink=False, ifname=ifname).check()
    lib = require()
    mark_owned(program.fd)
    notes = []
    if plan.action == Action.DETACH_FIRST:
        _detach_attachment(current, ifindex, ifname)
        notes.append(_forced_note(current))
    for m in plan.modes:
        opts = ffi.new("struct bpf_link_create_opts *")
        opts.sz = ffi.sizeof("struct bpf_link_create_opts")
        opts.flags = m.flag
        fd = lib.bpf_link_create(program.fd, ifindex, BPF_XDP_ATTACH_TYPE, opts)
        if fd < 0:
            err = -fd
            if falls_back(plan.modes, m, err):
                notes.append(f"native mode unavailable on {ifname}; fell back to generic")
                continue
            raise _attach_error(err, ifname, m, current=_current(ifindex) if err == E.EBUSY else None)
        link = BpfXdpLink(fd, ifindex, ifname, m, program.id, note="; ".join(notes))
        if pin:
            try:
                link.pin(pin)
            except BaseException:
                link.detach()
                raise
        return link
    raise AssertionError("unreachable")


def _detach_attachment(att: Attachment, ifindex: int, ifname: str) -> None:
    """Remove ``att`` from the interface: its bpf_link, or (netlink) exactly that program."""
    if att.link_id:
        lib = require()
        fd = lib.bpf_link_get_fd_by_id(att.link_id)
        if fd < 0:
            raise KernelError("BPF_LINK_GET_FD_BY_ID", -fd, f"link {att.link_id}")
        try:
            ret = lib.bpf_link_detach(fd)
            if ret < 0:
                raise AttachError(f"cannot detach link {att.link_id} from {ifname}: {os.strerror(-ret)}")
        finally:
            os.close(fd)
        return
    _netlink_detach(ifindex, att.mode, att.id)


def detach_program(iface, prog_id: int) -> Attachment | None:
    """Detach program ``prog_id`` from ``iface`` if it is still attached there (and only it: the
    kernel compares before it detaches). Returns what was detached, or None."""
    ifindex = nl.ifindex_of(iface)
    for att in _attachments_of(nl.get_link(ifindex)):
        if att.id == prog_id:
            _detach_attachment(att, ifindex, nl.ifname_of(ifindex))
            return att
    return None


def detach(iface, *, force: bool = False, mode=None) -> Attachment:
    """Detach the XDP program on ``iface`` (CLI ``unload``). Foreign programs need ``force``.

    Returns what was detached. Raises NotFoundError when nothing is attached.
    """
    ifindex = nl.ifindex_of(iface)
    ifname = nl.ifname_of(ifindex)
    atts = _attachments_of(nl.get_link(ifindex))
    if mode is not None:
        want = XdpMode.parse(mode)
        atts = [a for a in atts if want in (XdpMode.AUTO, a.mode)]
    att = decide_detach(atts[0] if atts else None, force=force, ifname=ifname)
    _detach_attachment(att, ifindex, ifname)
    return att
