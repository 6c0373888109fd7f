"""Built-in BPF objects (generator, receivers, apps): prebuilt when possible, compiled if not.

:func:`build_all` compiles every built-in source next to itself as ``NAME.bpf.o``, with
``NAME.bpf.json`` recording the sha256 of every package file the compile read and the flags it
used, so machines without clang can run them. Two things call it (there is no separate build
target): ``scripts/setup.sh`` (``make setup``, run by ``make test`` and ``make demo``) and the
wheel build (``setup.py``'s build_py), both with ``only_stale=True``. A prebuilt object is
current while those contents are unchanged; file times say nothing (pip gives every installed
file its install time). A stale object is recompiled (and cached) where clang exists; without
clang the shipped object is used, with a warning.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from xdpkit.compile import compile_file, compile_with_deps, default_cflags, files_unchanged, find_clang
from xdpkit.errors import NotFoundError, NotSupportedError

PACKAGE_DIR = Path(__file__).parent
SOURCES = {
    "trafficgen": PACKAGE_DIR / "lab" / "trafficgen.bpf.c",
    "receivers": PACKAGE_DIR / "lab" / "receivers.bpf.c",
    "firewall": PACKAGE_DIR / "apps" / "firewall" / "firewall.bpf.c",
    "stats": PACKAGE_DIR / "observe" / "stats.bpf.c",
    "monitor": PACKAGE_DIR / "observe" / "monitor.bpf.c",
    "lb": PACKAGE_DIR / "apps" / "lb" / "lb.bpf.c",
    "lb_decap": PACKAGE_DIR / "apps" / "lb" / "decap.bpf.c",
    "forward": PACKAGE_DIR / "apps" / "forward" / "forward.bpf.c",
    "afxdp_steer": PACKAGE_DIR / "afxdp" / "steer.bpf.c",
}


def prebuilt_path(src: Path) -> Path:
    return src.with_name(src.name.replace(".bpf.c", ".bpf.o"))


def _manifest_path(src: Path) -> Path:
    return src.with_name(src.name.replace(".bpf.c", ".bpf.json"))


def _flags_fingerprint() -> str:
    # The package's own folders differ between a checkout and an install; the flags do not.
    return " ".join(default_cflags()).replace(str(PACKAGE_DIR), "$PACKAGE")


def prebuilt_current(src: Path) -> bool:
    """True when the shipped object was built from exactly the package files there now."""
    if not prebuilt_path(src).is_file():
        return False
    try:
        manifest = json.loads(_manifest_path(src).read_text())
        inputs = manifest["inputs"]
        if manifest["flags"] != _flags_fingerprint() or src.relative_to(PACKAGE_DIR).as_posix() not in inputs:
            return False
        return files_unchanged(inputs, PACKAGE_DIR)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def builtin_object(name: str) -> Path:
    try:
        src = SOURCES[name]
    except KeyError:
        raise NotFoundError(f"no built-in BPF object {name!r} (have: {sorted(SOURCES)})") from None
    prebuilt = prebuilt_path(src)
    if prebuilt_current(src):
        return prebuilt
    try:
        find_clang()
    except NotSupportedError:
        if not prebuilt.is_file():
            raise NotSupportedError(f"clang (the built-in {name} program ships without its object)",
                                    hint="apt-get install clang, or install xdpkit from a wheel") from None
        warnings.warn(f"{prebuilt.name} was built from other sources than the ones installed and "
                      "clang is not here to rebuild it; using it as shipped", RuntimeWarning, stacklevel=2)
        return prebuilt
    return compile_file(src)


def build(src: Path) -> Path:
    """Compile one built-in source to its shipped place and record what it was built from."""
    out = prebuilt_path(src)
    deps = compile_with_deps(src, out)
    inputs = {}
    for path, digest in sorted(deps.items()):
        try:
            inputs[Path(path).relative_to(PACKAGE_DIR.resolve()).as_posix()] = digest
        except ValueError:
            continue  # a system header (uapi, libbpf): each machine has its own
    _manifest_path(src).write_text(json.dumps({"flags": _flags_fingerprint(), "inputs": inputs},
                                              indent=1, sort_keys=True) + "\n")
    return out


def build_all(*, only_stale: bool = False) -> list[Path]:
    """Compile every built-in source to its shipped location (needs clang)."""
    return [build(src) if not (only_stale and prebuilt_current(src)) else prebuilt_path(src)
            for src in SOURCES.values()]
