"""Built-in BPF objects (generator, receivers, apps): prebuilt when possible, compiled if not.

`make build` (run by the set-up) compiles every built-in source next to itself as
``NAME.bpf.o``, so machines without clang can run them. A prebuilt object older than its
sources is ignored and the source is compiled (and cached) instead.
"""
from __future__ import annotations

from pathlib import Path

from xdpkit.compile import compile_file
from xdpkit.errors import NotFoundError

PACKAGE_DIR = Path(__file__).parent
SOURCES = {
    "trafficgen": PACKAGE_DIR / "tools" / "trafficgen.bpf.c",
    "receivers": PACKAGE_DIR / "tools" / "receivers.bpf.c",
    "firewall": PACKAGE_DIR / "apps" / "firewall" / "firewall.bpf.c",
    "stats": PACKAGE_DIR / "tools" / "stats.bpf.c",
    "monitor": PACKAGE_DIR / "tools" / "monitor.bpf.c",
    "lb": PACKAGE_DIR / "apps" / "lb" / "lb.bpf.c",
    "lb_decap": PACKAGE_DIR / "apps" / "lb" / "decap.bpf.c",
}
INCLUDE_DIR = PACKAGE_DIR / "bpf" / "include" / "xdpkit"


def _newest_input(src: Path) -> float:
    # Shared headers count too: stats.bpf.c is little more than <xdpkit/stats.h>.
    headers = [*src.parent.glob("*.h"), *INCLUDE_DIR.glob("*.h")]
    return max(p.stat().st_mtime for p in [src, *headers])


def builtin_object(name: str) -> Path:
    try:
        src = SOURCES[name]
    except KeyError:
        raise NotFoundError(f"no built-in BPF object {name!r} (have: {sorted(SOURCES)})") from None
    prebuilt = src.with_name(src.name.replace(".bpf.c", ".bpf.o"))
    if prebuilt.is_file() and prebuilt.stat().st_mtime >= _newest_input(src):
        return prebuilt
    return compile_file(src)


def build_all() -> list[Path]:
    """Compile every built-in source to its shipped location (needs clang)."""
    return [compile_file(src, src.with_name(src.name.replace(".bpf.c", ".bpf.o")), use_cache=False)
            for src in SOURCES.values()]
