"""A loaded BPF program: identity, test runs (BPF_PROG_TEST_RUN) and attaching."""
from __future__ import annotations

import errno as E
import os
from dataclasses import dataclass

from xdpkit._sys.libbpf import ffi, require
from xdpkit.errors import ConfigError, KernelError, XdpkitError
from xdpkit.kernel import (BPF_F_TEST_XDP_LIVE_FRAMES, ETH_HLEN, ProgramInfo, Verdict, obj_get, obj_pin,
                           program_fd_by_id, program_info)

#: BPF_PROG_TEST_RUN refuses XDP frames shorter than an Ethernet header.
MIN_FRAME = ETH_HLEN
# Verdict (imported above, public as xdpkit.Verdict and xdpkit.program.Verdict) lives in kernel.py.


@dataclass
class RunResult:
    """Outcome of one BPF_PROG_TEST_RUN: the verdict, the output packet, mean ns per run."""

    verdict: Verdict | int
    data: bytes
    duration_ns: int
    retval: int

    def to_dict(self) -> dict:
        verdict = self.verdict.name if isinstance(self.verdict, Verdict) else self.verdict
        return {"verdict": verdict, "duration_ns": self.duration_ns, "data": self.data.hex()}


def _test_run_opts(packet: bytes, repeat: int, ingress_ifindex: int | None, rx_queue_index: int):
    """Options for BPF_PROG_TEST_RUN; ``keep`` holds the cffi buffers alive for the call."""
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    data_in = ffi.from_buffer(packet)
    opts.data_in = data_in
    opts.data_size_in = len(packet)
    opts.repeat = repeat
    keep = [data_in]
    if ingress_ifindex is not None or rx_queue_index:
        # struct xdp_md {data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress}
        ctx = ffi.new("uint32_t[6]", [0, len(packet), 0, ingress_ifindex or 0, rx_queue_index, 0])
        opts.ctx_in = ctx
        opts.ctx_size_in = ffi.sizeof(ctx)
        keep.append(ctx)
    return opts, keep


class Program:
    """A BPF program in the kernel, held by an fd (owned by its Object, or by us)."""

    def __init__(self, fd: int, *, name: str = "", section: str = "", owner=None):
        self._fd = fd
        self._owner = owner  # the Object whose fd this is; None when we own the fd
        self._info: ProgramInfo | None = None
        self.section = section
        self._name = name

    # ---- identity -------------------------------------------------------------------------
    @classmethod
    def from_id(cls, prog_id: int) -> "Program":
        fd = program_fd_by_id(prog_id)
        fd_num, fd.fd = fd.fd, -1
        return cls(fd_num)

    @classmethod
    def from_pin(cls, path: str) -> "Program":
        fd = obj_get(path)
        fd_num, fd.fd = fd.fd, -1
        prog = cls(fd_num)
        try:
            prog.info()
        except KernelError:
            prog.close()
            raise ConfigError(f"{path} is pinned but is not a BPF program") from None
        return prog

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise XdpkitError(f"program '{self.name}' is closed")
        return self._fd

    def info(self, refresh: bool = False) -> ProgramInfo:
        if self._info is None or refresh:
            self._info = program_info(self.fd)
        return self._info

    @property
    def id(self) -> int:
        return self.info().id

    @property
    def tag(self) -> str:
        return self.info().tag

    @property
    def name(self) -> str:
        return self._name or (self.info().name if self._fd >= 0 else "?")

    def __repr__(self) -> str:
        state = f"id={self.id}" if self._fd >= 0 else "closed"
        return f"<Program {self.name!r} {state}>"

    def _invalidate(self) -> None:
        self._fd = -1

    def close(self) -> None:
        """Release our fd (idempotent). Programs owned by an Object close with it."""
        fd, self._fd = self._fd, -1
        if fd >= 0 and self._owner is None:
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def pin(self, path: str) -> None:
        obj_pin(self.fd, path)

    # ---- BPF_PROG_TEST_RUN ----------------------------------------------------------------
    def run(self, packet: bytes, repeat: int = 1, ingress_ifindex: int | None = None,
            *, rx_queue_index: int = 0) -> RunResult:
        """Run the program on ``packet`` in the kernel and return verdict, output and time."""
        packet = bytes(packet)
        if len(packet) < MIN_FRAME:
            raise ConfigError(f"packet is {len(packet)} bytes; BPF_PROG_TEST_RUN needs at least "
                              f"{MIN_FRAME} (an Ethernet header)")
        if repeat < 1:
            raise ConfigError(f"repeat must be at least 1, got {repeat}")
        out_size = len(packet) + 4096  # room for bpf_xdp_adjust_head/tail growth
        data_out = ffi.new("char[]", out_size)
        opts, keep = _test_run_opts(packet, repeat, ingress_ifindex, rx_queue_index)
        opts.data_out = data_out
        opts.data_size_out = out_size
        ret = require().bpf_prog_test_run_opts(self.fd, opts)
        if ret < 0:
            hint = None
            if -ret == E.ENODEV:
                hint = "ingress_ifindex must name an interface in the current network namespace"
            elif -ret == E.EINVAL and ingress_ifindex is not None:
                hint = "the interface must exist here; frames must fit one page"
            raise KernelError("BPF_PROG_TEST_RUN", -ret, f"running program '{self.name}'", hint=hint)
        try:
            verdict: Verdict | int = Verdict(opts.retval)
        except ValueError:
            verdict = opts.retval
        data = bytes(ffi.buffer(data_out, opts.data_size_out))
        return RunResult(verdict=verdict, data=data, duration_ns=opts.duration, retval=opts.retval)

    def run_live(self, packet: bytes, *, repeat: int, batch_size: int = 64,
                 ingress_ifindex: int | None = None) -> int:
        """Run in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES): XDP_TX/REDIRECT really send.

        Returns the mean ns per run. Frames are recycled: the program's edits persist.
        """
        opts, keep = _test_run_opts(bytes(packet), repeat, ingress_ifindex or 0, 0)
        opts.flags = BPF_F_TEST_XDP_LIVE_FRAMES
        opts.batch_size = batch_size
        ret = require().bpf_prog_test_run_opts(self.fd, opts)
        if ret < 0:
            raise KernelError("BPF_PROG_TEST_RUN", -ret, f"live-frames run of '{self.name}'")
        return opts.duration

    # ---- attaching ----------------------------------------------------------------------
    def attach(self, iface, mode=None, *, pin: str | None = None, netlink: bool = False,
               force: bool = False):
        """Attach to an interface's XDP hook and return the link: an :class:`xdpkit.xdp.XdpLink`
        either way (``ifname``, ``ifindex``, ``mode``, ``prog_id``, ``note``, ``detach()``,
        ``close()``, a context manager that detaches).

        Default: a :class:`~xdpkit.xdp.BpfXdpLink` held by this process (it detaches when closed
        or when the process exits). ``pin=path`` pins the link so it survives the process.
        ``netlink=True`` returns a :class:`~xdpkit.xdp.NetlinkXdpLink`, attached like ``ip link
        set dev IFACE xdp``: persistent, lives with the interface, and replaces an xdpkit program
        atomically. Either way someone else's program is left alone unless ``force``; where the
        kernel cannot swap programs in one step (a bpf_link never replaces a program), ``force``
        detaches what is there first and the link's ``note`` says so.
        """
        from xdpkit import xdp

        if netlink:
            if pin:
                raise ConfigError("a netlink attachment cannot be pinned; use pin= without netlink=True")
            return xdp.attach_netlink(self, iface, mode=mode, force=force)
        return xdp.attach_link(self, iface, mode=mode, pin=pin, force=force)
