#!/usr/bin/env python3
"""What the kernel really spends on a BPF map, beside what it says it spends.

A map's fdinfo "memlock" figure is the map's own estimate (``map_mem_usage``); for an LPM trie
it counts one node per stored prefix at its unrounded size, not the intermediate nodes, the
allocator's size classes or its caches. The rise of the kernel's unreclaimable memory
(slab, vmalloc, per-CPU) across creating and filling the map is what the host actually pays.

That rise is measured from /proc/meminfo without dropping caches (which would disturb
everything else on the host): readings are taken once they stop moving, and after a map is
closed we wait for the kernel's deferred frees (RCU, workqueues) before measuring the next.

Run as root: ``PYTHONPATH=src .venv/bin/python bench/memory.py``.
"""
from __future__ import annotations

import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

from xdpkit.kernel import MapType
from xdpkit.maps import BPF_F_NO_PREALLOC, create_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prefixsets  # noqa: E402  (bench/prefixsets.py)

_MEMINFO_FIELDS = ("SUnreclaim", "VmallocUsed", "Percpu")
#: Two readings this close are "settled", and a freed map is "back" this close to where it
#: started: a few slab pages. Idle hosts jump by a few hundred KiB at times (a retry, then).
SETTLE_TOLERANCE = 32 * 1024
SETTLE_INTERVAL_S = 0.2
SETTLE_TRIES = 15
RELEASE_TIMEOUT_S = 3.0
RELEASE_POLL_S = 0.1
FILL_CHUNK = 65536
MIB = 2**20


def kernel_memory_bytes() -> int:
    """SUnreclaim + VmallocUsed + Percpu: the kernel memory a BPF map can occupy and nothing
    can reclaim while the map lives (page cache and reclaimable slab are left out)."""
    found: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in _MEMINFO_FIELDS:
                found[name] = int(rest.split()[0]) * 1024  # always in kB
    missing = [name for name in _MEMINFO_FIELDS if name not in found]
    if missing:
        raise RuntimeError(f"/proc/meminfo has no {', '.join(missing)}")
    return sum(found.values())


def settled_memory_bytes() -> int:
    """A reading taken once two in a row, SETTLE_INTERVAL_S apart, agree within
    SETTLE_TOLERANCE: deferred frees and per-CPU cache refills finish first. After
    SETTLE_TRIES the last reading is taken as it is."""
    last = kernel_memory_bytes()
    for _ in range(SETTLE_TRIES):
        time.sleep(SETTLE_INTERVAL_S)
        now = kernel_memory_bytes()
        if abs(now - last) <= SETTLE_TOLERANCE:
            return now
        last = now
    return last


def wait_released(baseline: int, timeout: float = RELEASE_TIMEOUT_S) -> int:
    """Poll until kernel memory is back within SETTLE_TOLERANCE of ``baseline`` (a closed map is
    freed later, from RCU callbacks and a workqueue); returns the bytes still above it when
    it is, or when ``timeout`` runs out, so that a caller can say how much stayed."""
    deadline = time.monotonic() + timeout
    above = kernel_memory_bytes() - baseline
    for _ in range(int(timeout / RELEASE_POLL_S) + 1):
        if above <= SETTLE_TOLERANCE or time.monotonic() >= deadline:
            break
        time.sleep(RELEASE_POLL_S)
        above = kernel_memory_bytes() - baseline
    return max(above, 0)


def measured(fn: Callable[[], object]) -> tuple[int, object]:
    """(rise of settled kernel memory across ``fn()``, what fn returned). Whatever fn creates
    must still be alive when it returns: that is what is measured."""
    before = settled_memory_bytes()
    result = fn()
    return settled_memory_bytes() - before, result


def fdinfo_memlock(fd: int) -> int:
    """The "memlock:" line of the fd's fdinfo: the map's own estimate of its size, in bytes."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise RuntimeError(f"fd {fd} has no memlock line in its fdinfo (not a BPF map?)")


def _addr_bytes(family: int) -> int:
    if family not in (4, 6):
        raise ValueError(f"family is 4 or 6, not {family!r}")
    return 4 if family == 4 else 16


def lpm_keys(prefixes, family: int) -> tuple[bytes, int]:
    """The distinct prefixes as one packed buffer of bpf_lpm_trie_key (u32 prefix length in
    host order, then the address in network order), and their count. Duplicates would be
    overwrites, which add nothing to the trie but would inflate the count."""
    width = _addr_bytes(family)
    distinct = dict.fromkeys(prefixes)
    head = struct.Struct("=I").pack
    keys = b"".join(head(plen) + net.to_bytes(width, "big") for net, plen in distinct)
    return keys, len(distinct)


class TrieMeasurement(NamedTuple):
    kernel_bytes: int    # settled rise of kernel_memory_bytes() while the filled trie lives
    memlock_bytes: int   # the trie's fdinfo memlock figure
    distinct: int        # prefixes stored
    fill_seconds: float  # batch update of all of them
    residue_bytes: int   # still above the starting level when the wait after closing ended
    release_seconds: float  # that wait (RELEASE_TIMEOUT_S at most)


def measure_trie(prefixes, family: int, name: str = "xbench_lpm") -> TrieMeasurement:
    """Create an LPM trie holding exactly ``prefixes`` (value: u32 0), measure it, close it,
    and wait for the kernel to free it before returning. NO_PREALLOC: LPM tries require it."""
    keys, count = lpm_keys(prefixes, family)
    if count == 0:
        raise ValueError("no prefixes to store")
    values = bytes(4 * count)
    key_size = 4 + _addr_bytes(family)
    baseline = settled_memory_bytes()
    trie = None

    def create_and_fill():
        nonlocal trie
        trie = create_map(MapType.LPM_TRIE, name, key_size, 4, count, flags=BPF_F_NO_PREALLOC)
        t0 = time.perf_counter()
        trie.update_batch_buffers(keys, values, count, chunk=FILL_CHUNK)
        return time.perf_counter() - t0

    try:
        rise, fill_seconds = measured(create_and_fill)
        memlock = fdinfo_memlock(trie.fd)
    finally:
        if trie is not None:
            trie.close()
    t0 = time.monotonic()
    residue = wait_released(baseline)
    return TrieMeasurement(rise, memlock, count, fill_seconds, residue, time.monotonic() - t0)


def lpm_trie_bytes(prefixes, family: int) -> tuple[int, int, int]:
    """(measured kernel bytes, fdinfo memlock bytes, distinct prefixes) of an LPM trie holding
    ``prefixes``, an iterable of (network int, prefix length); family 4 or 6."""
    m = measure_trie(prefixes, family)
    return m.kernel_bytes, m.memlock_bytes, m.distinct


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


SIZES = (1000, 1_000_000)
REPEATS = 3
_SETS = {4: (prefixsets.write_mixed_v4, prefixsets.prefixes_v4),
         6: (prefixsets.write_mixed_v6, prefixsets.prefixes_v6)}


def _row(family: int, n: int, runs: list[TrieMeasurement]) -> str:
    """One table line: medians of the runs, with the spread of the measured rise."""
    kernel = [r.kernel_bytes / MIB for r in runs]
    med = statistics.median(kernel)
    memlock = runs[0].memlock_bytes / MIB
    ratio = med / memlock if memlock else float("nan")
    fill = statistics.median(r.fill_seconds for r in runs)
    residue = max(r.residue_bytes for r in runs) / MIB
    return (f"IPv{family}  {n:>9,}  {runs[0].distinct:>9,}  {med:>9.3f}  "
            f"{min(kernel):>7.3f}-{max(kernel):<7.3f}  {memlock:>9.3f}  {ratio:>5.2f}  "
            f"{fill:>6.2f}  {residue:>7.3f}")


def main() -> int:
    if os.geteuid() != 0:
        _log("memory.py needs root (BPF maps, and a host-wide memory reading)")
        return 1
    lines = []
    with tempfile.TemporaryDirectory(prefix="xbench-mem-") as tmp:
        for family, (write, read) in _SETS.items():
            for n in SIZES:
                path = Path(tmp) / f"mixed_v{family}_{n}.netset"
                t0 = time.perf_counter()
                write(path, n)
                t1 = time.perf_counter()
                prefixes = read(path)
                _log(f"IPv{family} n={n:,}: written in {t1 - t0:.2f} s, read back in "
                     f"{time.perf_counter() - t1:.2f} s")
                runs = []
                for i in range(REPEATS):
                    runs.append(measure_trie(prefixes, family))
                    r = runs[-1]
                    _log(f"  run {i + 1}: {r.kernel_bytes / MIB:.3f} MiB measured, "
                         f"{r.memlock_bytes / MIB:.3f} MiB memlock, fill {r.fill_seconds:.2f} s, "
                         f"{r.residue_bytes / MIB:.3f} MiB left {r.release_seconds:.1f} s after close")
                lines.append(_row(family, n, runs))
    print(f"LPM trie memory, medians of {REPEATS} runs (MiB; kernel = rise of "
          f"SUnreclaim+VmallocUsed+Percpu)")
    print("fam          n   distinct     kernel  kernel range     memlock  ratio  fill_s  residue")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
