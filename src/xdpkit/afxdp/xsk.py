"""AF_XDP sockets from Python: a UMEM, a socket bound to an interface queue, batched rings.

    with XskSocket("eth0", queue=0, steer=Steer(proto="udp", port=9000)) as xsk:
        batch = xsk.recv_batch(256)      # up to 256 frames, no copy: views into the UMEM
        for frame in batch:              # memoryview of each frame
            ...
        xsk.recycle(batch)               # the frames go back to the fill ring
        xsk.send_batch([b"...", b"..."])  # copied into free TX frames
        for frame in xsk: ...            # or simply: every frame as bytes, waiting for them

The UMEM is split in two pools: RX frames (the fill ring's, recycled straight back) and TX
frames (a free list, refilled from the completion ring). ``forward(batch)`` sends received frames
without copying them (their descriptors go to the TX ring; their completions go back to fill).

The steering program (steer.bpf.c) is attached with a bpf_link this object holds, so it leaves
with the socket, or with the process.
"""
from __future__ import annotations

import errno as E
import platform
import time
from dataclasses import dataclass

from xdpkit._sys import xsk as sys_xsk
from xdpkit.afxdp.rings import ConsumerRing, ProducerRing
from xdpkit.errors import ConfigError, KernelError, NotSupportedError, XdpkitError

MODES = ("auto", "copy", "zerocopy")
MIN_FRAME, DEFAULT_FRAME = 2048, 4096
DEFAULT_FRAMES = 4096
DEFAULT_RING = 2048
BUSY_WAIT = 1.0   # seconds a bind retries EBUSY: the kernel releases a closed socket's queue asynchronously
_DESC_WORDS, _ADDR_WORDS = 2, 1
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def queues_of(iface) -> int:
    """How many RX queues the interface has, in the caller's namespace."""
    from xdpkit import interfaces as nl

    return nl.rx_queues(iface)


@dataclass(frozen=True)
class Steer:
    """What the steering program sends to the socket: everything, or one protocol (and
    destination port, for TCP and UDP)."""

    proto: str | None = None
    port: int = 0

    def consts(self) -> dict[str, int]:
        if self.proto is None:
            if self.port:
                raise ConfigError("a steering port needs a protocol (tcp or udp)", field="port")
            return {"match_proto": 0, "match_port": 0}
        if self.proto not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.proto!r}; use {', '.join(PROTOCOLS)}", field="proto")
        if not 0 <= self.port <= 65535 or (self.port and self.proto not in ("tcp", "udp")):
            raise ConfigError(f"port {self.port}: use 1..65535 with tcp or udp", field="port")
        return {"match_proto": PROTOCOLS[self.proto], "match_port": self.port}


class RxBatch:
    """Received frames: ``addrs`` and ``lens`` are views of the RX ring (valid until recycled)."""

    def __init__(self, xsk: "XskSocket", first: int, n: int):
        self._xsk = xsk
        self.first, self.n = first, n
        rx = xsk.rx
        self.addrs = rx.words[2 * first:2 * (first + n):2]
        self.lens = rx.halves[4 * first + 2:4 * (first + n):4]

    def __len__(self) -> int:
        return self.n

    def frame(self, i: int) -> memoryview:
        a = self.addrs[i]
        return self._xsk.umem[a:a + self.lens[i]]

    def __iter__(self):
        umem, addrs, lens = self._xsk.umem, self.addrs, self.lens
        for i in range(self.n):
            a = addrs[i]
            yield umem[a:a + lens[i]]

    def release_views(self) -> None:
        self.addrs.release()
        self.lens.release()


class _Umem:
    """The packet buffer a socket registers, its frames handed out in contiguous pools, and which
    socket's fill ring each RX pool belongs to (completions are routed back by address)."""

    def __init__(self, frames: int, frame_size: int):
        self.frames, self.frame_size = frames, frame_size
        self.buffer = sys_xsk.anonymous(frames * frame_size)
        self.view = memoryview(self.buffer)
        self.next = 0
        self.rx_pools: list[tuple[int, int, "XskSocket"]] = []

    def take(self, n: int, what: str) -> int:
        if self.next + n > self.frames:
            raise ConfigError(f"the UMEM has {self.frames - self.next} free frames; {what} needs {n}: "
                              f"create the first socket with more frames (each socket takes 2 x its ring size)",
                              field="frames")
        start = self.next * self.frame_size
        self.next += n
        return start

    def owner_of(self, addr: int):
        for start, end, xsk in self.rx_pools:
            if start <= addr < end:
                return xsk
        return None

    def close(self) -> None:
        try:
            self.view.release()
            self.buffer.close()
        except BufferError:
            pass  # a frame view is still held: the mapping goes when the last view does


class XskSocket:
    """An AF_XDP socket bound to ``iface`` queue ``queue``, with its own UMEM or, with
    ``share=other``, other's (for another interface or queue: frames move between the two
    without copies)."""

    def __init__(self, iface: str, queue: int = 0, *, mode: str = "auto", frames: int = DEFAULT_FRAMES,
                 frame_size: int = DEFAULT_FRAME, headroom: int = 0, ring_size: int = DEFAULT_RING,
                 need_wakeup: bool = True, steer: Steer | None = Steer(), xdp_mode: str = "auto",
                 share: "XskSocket | None" = None):
        from xdpkit import interfaces as nl

        if platform.machine() not in ("x86_64", "AMD64"):
            raise NotSupportedError(f"AF_XDP rings from Python on {platform.machine()}",
                                    hint="the rings rely on x86-64's store and load ordering")
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}; use {', '.join(MODES)}", field="mode")
        if not _power_of_two(frame_size) or not MIN_FRAME <= frame_size <= sys_xsk.page_size():
            raise ConfigError(f"frame size {frame_size} must be a power of two from {MIN_FRAME} to "
                              f"{sys_xsk.page_size()} (the page size)", field="frame_size")
        if not _power_of_two(ring_size) or ring_size < 64:
            raise ConfigError(f"ring size {ring_size} must be a power of two, at least 64", field="ring_size")
        if frames < 2 * ring_size:
            raise ConfigError(f"{frames} frames cannot fill a ring of {ring_size} and leave as many to "
                              f"send; use at least {2 * ring_size}", field="frames")
        if not 0 <= headroom <= frame_size - 256:
            raise ConfigError(f"headroom {headroom} leaves too little of a {frame_size}-byte frame",
                              field="headroom")
        if steer is not None:
            steer.consts()   # checked before anything is made
        self.ifindex = nl.ifindex_of(iface)
        self.ifname = nl.ifname_of(self.ifindex)
        self.queues = nq = queues_of(self.ifname)
        if not 0 <= queue < nq:
            raise ConfigError(f"{self.ifname} has {nq} receive queue{'s' if nq != 1 else ''} (0..{nq - 1}); "
                              f"there is no queue {queue}", field="queue")
        if share is not None:
            if share._sock is None:
                raise ConfigError("the socket to share a UMEM with is closed", field="share")
            if (share.ifindex, share.queue) == (self.ifindex, queue):
                raise ConfigError(f"{self.ifname} queue {queue} already has that socket; share a UMEM "
                                  "with a socket on another interface or queue", field="share")
            frame_size = share.frame_size
        self.queue, self.frame_size, self.ring_size = queue, frame_size, ring_size
        self.need_wakeup = share.need_wakeup if share is not None else need_wakeup
        self._sock = self._umem = self.umem = None
        self._owns_umem = share is None
        self.rx = self.tx = self.fill_ring = self.comp = None
        self._steer_obj = self._steer_link = self._steer_map = self._steer_from = None
        try:
            self._open(frames, headroom, mode, xdp_mode, steer, share)
        except BaseException:
            self.close()
            raise

    # ---- set-up ------------------------------------------------------------------------
    def _open(self, frames: int, headroom: int, mode: str, xdp_mode: str, steer: Steer | None,
              share: "XskSocket | None") -> None:
        n = self.ring_size
        self._sock = sys_xsk.open_socket()
        if share is None:
            self._umem = _Umem(frames, self.frame_size)
            sys_xsk.register_umem(self._sock, sys_xsk.buffer_address(self._umem.buffer),
                                  frames * self.frame_size, self.frame_size, headroom)
        else:
            self._umem = share._umem
        self.umem = self._umem.view
        rx_start = self._umem.take(n, f"{self.ifname} queue {self.queue}'s fill ring")
        tx_start = self._umem.take(n, f"{self.ifname} queue {self.queue}'s TX frames")
        for ring in sys_xsk.RING_NAMES:
            sys_xsk.set_ring_size(self._sock, ring, n)
        off = sys_xsk.mmap_offsets(self._sock)
        self.rx = ConsumerRing(sys_xsk.map_ring(self._sock, sys_xsk.PGOFF_RX, off["rx"][2] + n * 16),
                               off["rx"], n, _DESC_WORDS)
        self.tx = ProducerRing(sys_xsk.map_ring(self._sock, sys_xsk.PGOFF_TX, off["tx"][2] + n * 16),
                               off["tx"], n, _DESC_WORDS)
        self.fill_ring = ProducerRing(sys_xsk.map_ring(self._sock, sys_xsk.PGOFF_FILL, off["fill"][2] + n * 8),
                                 off["fill"], n, _ADDR_WORDS)
        self.comp = ConsumerRing(sys_xsk.map_ring(self._sock, sys_xsk.PGOFF_COMPLETION,
                                                  off["completion"][2] + n * 8), off["completion"], n, _ADDR_WORDS)
        # RX pool: ring_size frames, all on the fill ring; TX pool: as many on a free list.
        fs = self.frame_size
        first, k = self.fill_ring.reserve(n)
        for i in range(k):
            self.fill_ring.words[first + i] = rx_start + i * fs
        self.fill_ring.publish(k)
        self._umem.rx_pools.append((rx_start, rx_start + n * fs, self))
        self._tx_pool = (tx_start, tx_start + n * fs)
        self._tx_free = list(range(tx_start, tx_start + n * fs, fs))
        if share is None:
            self._bind(mode)
        else:
            self._bind_shared(share)
        if steer is not None:
            if share is not None and share.ifindex == self.ifindex and share._steer_obj is not None:
                self._join_steering(share)
            else:
                self._attach_steering(steer, xdp_mode)

    def _join_steering(self, share: "XskSocket") -> None:
        """Another queue of an interface whose steering program a sharing socket attached: this
        socket goes into that program's XSKMAP at its queue (one program per interface)."""
        self._steer_map = share._steer_obj.maps["xsk_sockets"]
        self._steer_map.update_raw(self.queue.to_bytes(4, "little"), self._sock.fileno().to_bytes(4, "little"))
        self._steer_from = share

    def _bind(self, mode: str) -> None:
        wake = sys_xsk.XDP_USE_NEED_WAKEUP if self.need_wakeup else 0
        tries = {"auto": (sys_xsk.XDP_ZEROCOPY, sys_xsk.XDP_COPY), "copy": (sys_xsk.XDP_COPY,),
                 "zerocopy": (sys_xsk.XDP_ZEROCOPY,)}[mode]
        deadline = time.monotonic() + BUSY_WAIT
        i = 0
        while True:
            flag = tries[i]
            try:
                sys_xsk.bind(self._sock, self.ifindex, self.queue, flag | wake)
                self.zerocopy = flag == sys_xsk.XDP_ZEROCOPY
                return
            except KernelError as exc:
                if exc.errno in (E.EOPNOTSUPP, E.ENOTSUP, 524) and i + 1 < len(tries):
                    i += 1    # no zero-copy in this driver: copy mode
                    continue
                if exc.errno == E.EBUSY and time.monotonic() < deadline:
                    time.sleep(0.01)   # a socket closed a moment ago: the kernel frees its queue in a work item
                    continue
                raise self._bind_error(exc, flag) from None

    def _bind_shared(self, share: "XskSocket") -> None:
        # A socket sharing a UMEM takes no mode flags: it works the way the UMEM's first socket does.
        try:
            sys_xsk.bind(self._sock, self.ifindex, self.queue, sys_xsk.XDP_SHARED_UMEM, share.fileno())
        except KernelError as exc:
            raise self._bind_error(exc, 0) from None
        self.zerocopy = sys_xsk.zerocopy(self._sock)

    def _bind_error(self, exc: KernelError, flag: int) -> XdpkitError:
        where = f"{self.ifname} queue {self.queue}"
        if exc.errno == E.EBUSY:
            return KernelError("bind(AF_XDP)", E.EBUSY, f"{where} is busy: another AF_XDP socket holds it"
                               + self._holder_hint(), hint="close the other socket, or bind another queue")
        if exc.errno in (E.EOPNOTSUPP, E.ENOTSUP, 524) and flag == sys_xsk.XDP_ZEROCOPY:
            return NotSupportedError(f"zero-copy AF_XDP on {self.ifname} (its driver has no zero-copy support)",
                                     hint="use --mode copy (or auto, which falls back to copy)")
        return KernelError("bind(AF_XDP)", exc.errno, f"binding to {where}")

    def _holder_hint(self) -> str:
        """Who the holder may be: the XDP program on the interface, which feeds its socket (the
        kernel lists AF_XDP sockets only with XDP socket diagnostics, which kernels may lack)."""
        from xdpkit.xdp import query

        try:
            progs = [f"'{a.name}' (id {a.id}{', attached by xdpkit' if a.ours else ''})" for a in query(self.ifname)]
        except XdpkitError:
            return ""
        return f"; the XDP program on {self.ifname} is {', '.join(progs)}" if progs else ""

    def _attach_steering(self, steer: Steer, xdp_mode: str) -> None:
        from xdpkit.builtin import builtin_object
        from xdpkit.object import ObjectSpec

        spec = ObjectSpec.from_file(builtin_object("afxdp_steer"))
        try:
            for name, value in steer.consts().items():
                spec.rodata[name] = value
            spec.maps["xsk_sockets"].max_entries = self.queues
            self._steer_obj = spec.load()
        finally:
            spec.close()
        self._steer_obj.maps["xsk_sockets"].update_raw(self.queue.to_bytes(4, "little"),
                                                       self._sock.fileno().to_bytes(4, "little"))
        prog = self._steer_obj.programs["xdpkit_xsk_steer"]
        self._steer_link = prog.attach(self.ifname, mode=xdp_mode)

    # ---- receiving ---------------------------------------------------------------------
    def recv(self, max_frames: int = 64) -> RxBatch:
        """Up to ``max_frames`` received frames (no waiting; an empty batch when none)."""
        first, n = self.rx.peek(max_frames)
        if n == 0 and self.need_wakeup and self.fill_ring.needs_wakeup():
            sys_xsk.kick_rx(self._sock)
        return RxBatch(self, first, n)

    recv_batch = recv

    def __iter__(self):
        """Each received frame as bytes (a copy), waiting for frames as long as it takes: the
        simple way in, at a fraction of the batch API's rate. Stop with break (or Ctrl-C)."""
        return self.frames()

    def frames(self, idle_timeout: float | None = None):
        """Like iterating the socket; ends when no frame has come for ``idle_timeout`` seconds."""
        import select

        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        idle_since = time.monotonic()
        while True:
            batch = self.recv(64)
            if not batch.n:
                batch.release_views()
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    return
                poller.poll(100)
                continue
            idle_since = time.monotonic()
            frames = [bytes(f) for f in batch]
            self.recycle(batch)
            yield from frames

    def recycle(self, batch: RxBatch) -> None:
        """Give a batch's frames back to the kernel (fill ring) and free its RX entries."""
        if batch.n:
            self.fill_ring.put_words(batch.addrs)
            self.rx.release(batch.n)
        batch.release_views()

    fill = recycle   # the name: a batch's frames onto the fill ring

    # ---- sending -----------------------------------------------------------------------
    def complete(self) -> int:
        """Take back the frames the kernel has sent: RX-pool frames to their socket's fill ring
        (this one's, or the socket sharing the UMEM that received them), TX-pool frames to the
        free list. Returns how many."""
        total = 0
        if self.tx.free() < self.ring_size:
            self._kick_tx()   # copy mode sends at most 32 frames a kick: keep the rest moving
        while True:
            first, n = self.comp.peek(self.ring_size)
            if n == 0:
                return total
            addrs = self.comp.words[first:first + n]
            lo, hi = min(addrs), max(addrs)
            owner = self._umem.owner_of(lo)
            if owner is not None and owner is self._umem.owner_of(hi):
                owner.fill_ring.put_words(addrs)       # one pool: one copy (an echo, a forward)
            else:
                self._route_back(addrs)
            addrs.release()
            self.comp.release(n)
            total += n

    def _route_back(self, addrs) -> None:
        fs = self.frame_size
        start, end = self._tx_pool
        for a in addrs:
            if start <= a < end:
                self._tx_free.append(a - a % fs)
            else:
                owner = self._umem.owner_of(a)
                if owner is not None:
                    owner.fill_ring.put_words(memoryview(a.to_bytes(8, "little")).cast("Q"))

    def send(self, frames) -> int:
        """Copy ``frames`` (bytes-like) into free TX frames and send them; returns how many were
        queued (fewer when the TX ring or the free frames run out: call ``complete()``)."""
        self.complete()
        umem, fs, tx = self.umem, self.frame_size, self.tx
        frames = list(frames)
        sent = 0
        while sent < len(frames) and self._tx_free:
            first, n = tx.reserve(min(len(frames) - sent, len(self._tx_free)))
            if n == 0:
                break
            for i in range(n):
                data = frames[sent + i]
                if len(data) > fs:
                    raise ConfigError(f"a frame of {len(data)} bytes does not fit a {fs}-byte UMEM frame")
                a = self._tx_free.pop()
                umem[a:a + len(data)] = data
                tx.words[2 * (first + i)] = a
                tx.halves[4 * (first + i) + 2] = len(data)
                tx.halves[4 * (first + i) + 3] = 0
            tx.publish(n)
            sent += n
        if sent:
            self._kick_tx()
        return sent

    send_batch = send

    def forward(self, batch: RxBatch, to: "XskSocket | None" = None) -> int:
        """Send a received batch's frames as they are now (edited in place or not), without
        copying, out of this socket or ``to`` (a socket sharing the UMEM); they return to this
        socket's fill ring once sent. Frees the batch's RX entries."""
        out = self if to is None else to
        if out._umem is not self._umem:
            raise ConfigError("forwarding without a copy needs a socket that shares this one's UMEM")
        tx = out.tx
        done = 0
        while done < batch.n:
            first, n = tx.reserve(batch.n - done)
            if n == 0:
                out._kick_tx()
                if not out.complete():
                    break
                continue
            tx.words[2 * first:2 * (first + n):2] = batch.addrs[done:done + n]
            tx.halves[4 * first + 2:4 * (first + n):4] = batch.lens[done:done + n]
            tx.publish(n)
            done += n
        if done < batch.n:  # the TX ring stayed full: the rest go straight back to fill
            self.fill_ring.put_words(batch.addrs[done:])
        if batch.n:
            self.rx.release(batch.n)
        batch.release_views()
        if done:
            out._kick_tx()
        return done

    def _kick_tx(self) -> None:
        if not self.need_wakeup or self.tx.needs_wakeup():
            sys_xsk.kick_tx(self._sock)

    # ---- state -------------------------------------------------------------------------
    def fileno(self) -> int:
        return self._sock.fileno()

    def statistics(self) -> dict[str, int]:
        """The kernel's XDP_STATISTICS (rx_dropped, rx_ring_full, rx_fill_ring_empty_descs, ...)."""
        return sys_xsk.statistics(self._sock)

    def steering(self) -> dict[str, int]:
        """The steering program's counts: to the socket, passed (no match), passed (no socket)."""
        if self._steer_from is not None:
            return self._steer_from.steering()
        if self._steer_obj is None:
            return {}
        m = self._steer_obj.maps["xsk_events"]
        from xdpkit.maps.percpu import summed_counters

        sums = summed_counters(m)
        return {name: sums.get(i, (0, 0))[0] for i, name in enumerate(("to_socket", "no_match", "no_socket"))}

    def close(self) -> None:
        """Detach the steering program, unmap the rings, close the socket and release the UMEM
        (idempotent). A frame view still held keeps the UMEM's memory until it is dropped."""
        if self._steer_map is not None:
            m, self._steer_map = self._steer_map, None
            if self._steer_from._steer_obj is not None:   # its queue's entry, not the program
                m.delete_raw(self.queue.to_bytes(4, "little"))
        if self._steer_link is not None:
            link, self._steer_link = self._steer_link, None
            link.detach()
        if self._steer_obj is not None:
            obj, self._steer_obj = self._steer_obj, None
            obj.close()
        for name in ("rx", "tx", "fill_ring", "comp"):
            ring = getattr(self, name)
            if ring is not None:
                setattr(self, name, None)
                ring.close()
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()
        umem, self._umem, self.umem = self._umem, None, None
        if umem is not None:
            umem.rx_pools = [p for p in umem.rx_pools if p[2] is not self]
            if self._owns_umem:
                umem.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
