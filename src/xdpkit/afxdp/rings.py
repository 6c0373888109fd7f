"""The four AF_XDP rings as Python sees them: views over the kernel's mappings, moved in batches.

A ring is a power-of-two array of entries plus a producer and a consumer index, each written by
one side only. Indexes run freely (u32, wrapping); an entry is at ``index & mask``. The fill and
TX rings are produced here and consumed by the kernel; RX and completion the other way round.

Ordering: the producer must write entries before it publishes the new producer index, and the
consumer must read the index before the entries. Python executes these in program order, and
x86-64 keeps stores in order and loads in order (TSO), which is what the kernel's
smp_load_acquire/smp_store_release pair needs on that side; xdpkit.afxdp refuses to run on
other architectures rather than run without barriers.

Batches never cross the end of a ring: a batch is one contiguous slice of entries (the next
call takes the rest), so it can be a plain memoryview, no copy.
"""
from __future__ import annotations

import mmap

MASK32 = 0xFFFFFFFF


class Ring:
    """One ring: ``words`` are its entries as u64 (2 per descriptor for RX/TX, 1 per address for
    fill/completion)."""

    def __init__(self, mm: mmap.mmap, offsets: tuple[int, int, int, int], size: int, words_per_entry: int):
        producer, consumer, desc, flags = offsets
        self._mm = mm
        view = memoryview(mm)
        self._views = [view]
        self.producer = view[producer:producer + 4].cast("I")
        self.consumer = view[consumer:consumer + 4].cast("I")
        self.flags = view[flags:flags + 4].cast("I")
        raw = view[desc:desc + size * 8 * words_per_entry]
        self.words = raw.cast("Q")
        self.halves = raw.cast("I")          # descriptors' len (and options) are u32
        self._views += [self.producer, self.consumer, self.flags, raw, self.words, self.halves]
        self.size = size
        self.mask = size - 1
        self.per = words_per_entry
        # the side this process owns, cached (the kernel never writes it)
        self.head = 0

    def close(self) -> None:
        views, self._views = self._views, []
        try:
            for v in reversed(views):
                v.release()
            self._mm.close()
        except BufferError:
            pass  # a batch still holds a view of the ring: the mapping goes with it


class ProducerRing(Ring):
    """Fill or TX: entries written here, consumed by the kernel."""

    def __init__(self, *args):
        super().__init__(*args)
        self.head = self.producer[0]

    def free(self) -> int:
        return self.size - ((self.head - self.consumer[0]) & MASK32)

    def reserve(self, n: int) -> tuple[int, int]:
        """(first slot, count): up to ``n`` free entries, contiguous, not yet published."""
        n = min(n, self.free())
        first = self.head & self.mask
        return first, min(n, self.size - first)

    def publish(self, n: int) -> None:
        self.head = (self.head + n) & MASK32
        self.producer[0] = self.head

    def put_words(self, src) -> int:
        """Copy u64 entries from ``src`` (a 'Q' memoryview, any stride) and publish them; returns
        how many went in (all unless the ring is full), in at most two contiguous copies."""
        done, total = 0, len(src)
        while done < total:
            first, n = self.reserve(total - done)
            if n == 0:
                break
            self.words[first:first + n] = src[done:done + n]
            done += n
            self.head = (self.head + n) & MASK32
        if done:
            self.producer[0] = self.head
        return done

    def needs_wakeup(self) -> bool:
        return bool(self.flags[0] & 1)


class ConsumerRing(Ring):
    """RX or completion: entries written by the kernel, consumed here."""

    def __init__(self, *args):
        super().__init__(*args)
        self.head = self.consumer[0]

    def available(self) -> int:
        return (self.producer[0] - self.head) & MASK32

    def peek(self, n: int) -> tuple[int, int]:
        """(first slot, count): up to ``n`` entries ready, contiguous."""
        n = min(n, self.available())
        first = self.head & self.mask
        return first, min(n, self.size - first)

    def release(self, n: int) -> None:
        self.head = (self.head + n) & MASK32
        self.consumer[0] = self.head
