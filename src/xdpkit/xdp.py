"""Where XDP programs are attached: attach, replace, detach and query, in every mode.

Two ways to attach, both exposed as links:

* :class:`BpfXdpLink` (BPF_LINK_CREATE): held by an fd, detached when the last reference
  goes (process exit) unless pinned in bpffs. The kernel refuses it on a busy interface.
* :class:`NetlinkXdpLink` (IFLA_XDP, like ``ip link set dev X xdp``): lives with the
  interface. Replacing is atomic (XDP_FLAGS_REPLACE with the expected program's fd).

xdpkit marks every program it attaches by binding a small map named ``xdpkit_owner`` to it
(BPF_PROG_BIND_MAP). Any later process can tell an xdpkit program from someone else's by the
program's map list alone, without files or pins; foreign programs are never replaced or
detached without ``force``.
"""
from __future__ import annotations

import enum
import errno as E
import os
import warnings
from dataclasses import dataclass, field

from xdpkit._sys import netlink as nl
from xdpkit._sys.libbpf import ffi, require
from xdpkit.errors import AttachError, ConfigError, KernelError, NotFoundError
from xdpkit.kernel import (BPF_XDP_ATTACH_TYPE, MapType, OwnedFd, link_ids, map_fd_by_id, map_info,
                           obj_get, obj_pin, program_fd_by_id, program_info)

OWNER_MAP_NAME = "xdpkit_owner"
BPF_LINK_TYPE_XDP = 6


class XdpMode(enum.Enum):
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
        return {XdpMode.NATIVE: nl.XDP_FLAGS_DRV_MODE, XdpMode.GENERIC: nl.XDP_FLAGS_SKB_MODE,
                XdpMode.OFFLOAD: nl.XDP_FLAGS_HW_MODE, XdpMode.AUTO: 0}[self]


@dataclass
class Attachment:
    """One XDP program attached to one interface, as the kernel reports it."""

    ifname: str
    ifindex: int
    mode: str
    id: int
    name: str = ""
    tag: str = ""
    maps: list[dict] = field(default_factory=list)
    owner: str | None = None
    link_id: int | None = None

    @property
    def ours(self) -> bool:
        return self.owner == "xdpkit"

    def to_dict(self) -> dict:
        return {"ifname": self.ifname, "ifindex": self.ifindex, "mode": self.mode, "id": self.id,
                "name": self.name, "tag": self.tag, "maps": self.maps, "owner": self.owner,
                "link_id": self.link_id, "attach_type": "bpf_link" if self.link_id else "netlink"}

    def describe(self) -> str:
        who = "xdpkit" if self.ours else "not attached by xdpkit"
        return f"program '{self.name}' (id {self.id}, {self.mode} mode, {who})"


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


def _describe(ifname: str, ifindex: int, mode: str, prog_id: int, links: dict) -> Attachment:
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
        att.maps.append({"id": mi.id, "name": mi.name, "type": mi.type_name})
    att.link_id = links.get((prog_id, ifindex))
    return att


def _attachments_of(link: nl.LinkXdp, links: dict | None = None) -> list[Attachment]:
    ids = [(mode, pid) for mode, pid in (("native", link.drv_prog_id), ("generic", link.skb_prog_id),
                                         ("offload", link.hw_prog_id)) if pid]
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

class NetlinkXdpLink:
    """A netlink (IFLA_XDP) attachment. It holds no fd: ``close()`` does nothing, and the program
    stays until :meth:`detach` (or leaving a ``with`` block, which detaches)."""

    kind = "netlink"

    def __init__(self, ifindex: int, ifname: str, mode: XdpMode, prog_id: int, note: str = ""):
        self.ifindex, self.ifname, self.mode, self.prog_id = ifindex, ifname, mode, prog_id
        self.note = note  # e.g. why AUTO fell back to generic
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()


class BpfXdpLink:
    """A bpf_link attachment, held by our fd. ``close()`` releases the fd (the kernel detaches
    an unpinned link then); ``detach()`` detaches explicitly, pinned or not."""

    kind = "bpf_link"

    def __init__(self, fd: int, ifindex: int, ifname: str, mode: XdpMode, prog_id: int,
                 pin_path: str | None = None, note: str = ""):
        self._fd = fd
        self.ifindex, self.ifname, self.mode, self.prog_id = ifindex, ifname, mode, prog_id
        self.pin_path = pin_path
        self.note = note

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

    def __enter__(self):
        return self

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


def _current(ifindex: int, ifname: str) -> Attachment | None:
    atts = _attachments_of(nl.get_link(ifindex))
    return atts[0] if atts else None


def _modes_to_try(mode: XdpMode) -> list[XdpMode]:
    return [XdpMode.NATIVE, XdpMode.GENERIC] if mode == XdpMode.AUTO else [mode]


def attach_netlink(program, iface, *, mode=None, force: bool = False) -> NetlinkXdpLink:
    """Attach like ``ip link set dev IFACE xdp``: persistent; replaces xdpkit's own program
    atomically; refuses to replace anyone else's unless ``force``."""
    mode = XdpMode.parse(mode)
    ifindex = nl.ifindex_of(iface)
    ifname = nl.ifname_of(ifindex)
    current = _current(ifindex, ifname)
    if current is not None:
        if current.link_id:
            raise AttachError(f"{ifname} has {current.describe()} attached through bpf_link {current.link_id}",
                              errno=E.EBUSY, hint=f"detach it first: xdpkit unload {ifname} --force")
        if not current.ours and not force:
            raise _attach_error(E.EBUSY, ifname, mode, current=current)
        cur_mode = XdpMode(current.mode)
        if mode not in (XdpMode.AUTO, cur_mode):
            raise AttachError(f"{ifname} has {current.describe()}; the kernel cannot replace it with a "
                              f"{mode.value}-mode program in one step", errno=E.EEXIST,
                              hint=f"unload it first (xdpkit unload {ifname}) or use --mode {cur_mode.value}")
        mode = cur_mode  # replace in place, in the mode already in use
    mark_owned(program.fd)
    notes = []
    for m in _modes_to_try(mode):
        try:
            if current is not None:
                with program_fd_by_id(current.id) as old:
                    nl.set_xdp(ifindex, program.fd, m.flag | nl.XDP_FLAGS_REPLACE, expected_fd=old.fd)
            else:
                nl.set_xdp(ifindex, program.fd, m.flag | nl.XDP_FLAGS_UPDATE_IF_NOEXIST)
        except nl.NetlinkCallError as exc:
            if mode == XdpMode.AUTO and m == XdpMode.NATIVE and exc.errno in (E.EOPNOTSUPP, E.EINVAL, E.ERANGE):
                notes.append(f"native mode unavailable on {ifname} ({exc.extack or os.strerror(exc.errno)}); "
                             f"fell back to generic")
                continue
            if exc.errno == E.EBUSY:
                current = _current(ifindex, ifname)
            raise _attach_error(exc.errno, ifname, m, exc.extack, current) from None
        except NotFoundError:
            raise AttachError(f"{ifname}: the program being replaced vanished; try again") from None
        return NetlinkXdpLink(ifindex, ifname, m, program.id, note="; ".join(notes))
    raise AssertionError("unreachable")


def _netlink_detach(ifindex: int, mode: XdpMode, prog_id: int) -> None:
    try:
        with program_fd_by_id(prog_id) as fd:
            nl.set_xdp(ifindex, -1, mode.flag | nl.XDP_FLAGS_REPLACE, expected_fd=fd.fd)
    except NotFoundError:
        return  # our program is gone already (interface deleted, or detached by someone)
    except nl.NetlinkCallError as exc:
        if exc.errno == E.EEXIST:
            raise AttachError(f"the program on ifindex {ifindex} is no longer {prog_id}; left it alone",
                              errno=exc.errno) from None
        if exc.errno == E.ENODEV:
            return
        raise AttachError(f"cannot detach from ifindex {ifindex}: {exc}", errno=exc.errno) from None


def attach_link(program, iface, *, mode=None, pin: str | None = None) -> BpfXdpLink:
    """Attach with BPF_LINK_CREATE; the link is ours alone and pinnable."""
    mode = XdpMode.parse(mode)
    ifindex = nl.ifindex_of(iface)
    ifname = nl.ifname_of(ifindex)
    lib = require()
    mark_owned(program.fd)
    notes = []
    for m in _modes_to_try(mode):
        opts = ffi.new("struct bpf_link_create_opts *")
        opts.sz = ffi.sizeof("struct bpf_link_create_opts")
        opts.flags = m.flag
        fd = lib.bpf_link_create(program.fd, ifindex, BPF_XDP_ATTACH_TYPE, opts)
        if fd < 0:
            err = -fd
            if mode == XdpMode.AUTO and m == XdpMode.NATIVE and err in (E.EOPNOTSUPP, E.EINVAL, E.ERANGE):
                notes.append(f"native mode unavailable on {ifname}; fell back to generic")
                continue
            raise _attach_error(err, ifname, m, current=_current(ifindex, ifname) if err == E.EBUSY else None)
        link = BpfXdpLink(fd, ifindex, ifname, m, program.id, note="; ".join(notes))
        if pin:
            try:
                link.pin(pin)
            except BaseException:
                link.detach()
                raise
        return link
    raise AssertionError("unreachable")


def detach(iface, *, force: bool = False, mode=None) -> Attachment:
    """Detach the XDP program on ``iface`` (CLI ``unload``). Foreign programs need ``force``.

    Returns what was detached. Raises NotFoundError when nothing is attached.
    """
    ifindex = nl.ifindex_of(iface)
    ifname = nl.ifname_of(ifindex)
    atts = _attachments_of(nl.get_link(ifindex))
    if mode is not None:
        want = XdpMode.parse(mode)
        atts = [a for a in atts if want == XdpMode.AUTO or a.mode == want.value]
    if not atts:
        raise NotFoundError(f"no XDP program attached to {ifname}")
    att = atts[0]
    if not att.ours and not force:
        raise AttachError(f"{ifname} has {att.describe()}; refusing to detach it",
                          hint=f"pass --force to detach it anyway")
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
        return att
    _netlink_detach(ifindex, XdpMode(att.mode), att.id)
    return att
