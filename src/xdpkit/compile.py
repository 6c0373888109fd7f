"""Compile restricted-C XDP programs to BPF objects with clang.

Objects are cached by content: the key covers the source, the flags and clang's version, and a
cached object is reused only while every header it included is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from xdpkit.errors import CompileError, NotFoundError, NotSupportedError

#: xdpkit's own BPF headers (parsing helpers), shipped inside the package.
INCLUDE_DIR = Path(__file__).parent / "bpf" / "include"

_ARCH = {
    "x86_64": ("x86_64-linux-gnu", "x86"),
    "aarch64": ("aarch64-linux-gnu", "arm64"),
    "armv7l": ("arm-linux-gnueabihf", "arm"),
    "ppc64le": ("powerpc64le-linux-gnu", "powerpc"),
    "s390x": ("s390x-linux-gnu", "s390"),
    "riscv64": ("riscv64-linux-gnu", "riscv"),
}


def find_clang() -> str:
    """Path of the clang to use: $XDPKIT_CLANG, then clang, then the newest clang-N."""
    env = os.environ.get("XDPKIT_CLANG")
    if env:
        return env
    for name in ["clang"] + [f"clang-{v}" for v in range(21, 13, -1)]:
        path = shutil.which(name)
        if path:
            return path
    raise NotSupportedError("clang (needed to compile BPF C)", hint="apt-get install clang")


@lru_cache(maxsize=None)
def clang_version(clang: str) -> str:
    out = subprocess.run([clang, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0] if first else "unknown"


def default_cflags() -> list[str]:
    multiarch, target_arch = _ARCH.get(platform.machine(), (f"{platform.machine()}-linux-gnu", "x86"))
    flags = ["-O2", "-g", "-target", "bpf", f"-D__TARGET_ARCH_{target_arch}",
             "-Wall", "-Wno-unused-value", "-Wno-pointer-sign", "-Wno-compare-distinct-pointer-types",
             # a call to an undeclared function would otherwise become an extern that only
             # fails at load ("failed to find BTF for extern"); clang 16 and later refuse it too
             "-Werror=implicit-function-declaration",
             "-fno-stack-protector", f"-I{INCLUDE_DIR}"]
    if Path(f"/usr/include/{multiarch}").is_dir():
        flags.append(f"-I/usr/include/{multiarch}")  # Debian keeps asm/types.h here
    return flags


def cache_dir() -> Path:
    base = os.environ.get("XDPKIT_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "xdpkit" / "objects"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_depfile(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    _, _, deps = text.partition(":")
    return [d for d in re.split(r"(?<!\\)\s+", deps) if d]


def _deps_current(manifest: Path) -> bool:
    try:
        recorded = json.loads(manifest.read_text())["deps"]
        return all(_sha256(Path(p).read_bytes()) == h for p, h in recorded.items())
    except (OSError, ValueError, KeyError):
        return False


def compile_file(source: str | os.PathLike, output: str | os.PathLike | None = None,
                 *, cflags: list[str] | None = None, include_dirs: list[str] | None = None,
                 use_cache: bool = True) -> Path:
    """Compile ``source`` to a BPF object and return its path.

    Without ``output`` the object goes to the content-addressed cache. Raises CompileError with
    clang's diagnostics (file:line: error: message) when clang fails.
    """
    src = Path(source)
    if not src.is_file():
        raise NotFoundError(f"no such source file: {src}")
    clang = find_clang()
    flags = default_cflags() + [f"-I{d}" for d in (include_dirs or [])] + list(cflags or [])
    flags.append(f"-I{src.resolve().parent}")
    text = src.read_bytes()
    key = _sha256(b"\0".join([text, " ".join(flags).encode(), clang_version(clang).encode(),
                              str(src.resolve()).encode()]))
    cached = cache_dir() / f"{key[:32]}.o"
    manifest = cached.with_suffix(".json")
    if use_cache and cached.is_file() and _deps_current(manifest):
        if output is None:
            return cached
        shutil.copyfile(cached, output)
        return Path(output)

    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="xdpkit-cc-") as tmp:
        obj = Path(tmp) / "out.o"
        depfile = Path(tmp) / "out.d"
        cmd = [clang, *flags, "-MD", "-MF", str(depfile), "-c", str(src), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            hint = None
            if "asm/types.h" in proc.stderr:
                hint = "install the kernel uapi headers: apt-get install linux-libc-dev"
            elif "bpf/bpf_helpers.h" in proc.stderr:
                hint = "install the libbpf headers: apt-get install libbpf-dev"
            raise CompileError(str(src), proc.stderr, hint=hint)
        deps = {str(Path(d).resolve()): _sha256(Path(d).read_bytes())
                for d in _read_depfile(depfile) if Path(d).is_file()}
        # Publish atomically so concurrent compiles never see half-written objects.
        tmp_obj = cached.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(obj, tmp_obj)
        os.replace(tmp_obj, cached)
        manifest.write_text(json.dumps({"source": str(src.resolve()), "deps": deps}))
        if output is not None:
            shutil.copyfile(obj, output)
            return Path(output)
    return cached


def is_source(path: str | os.PathLike) -> bool:
    return str(path).endswith(".c")


def object_path(path: str | os.PathLike) -> Path:
    """Accept an object or a C source (compiled on demand, cached) and return an object path."""
    if is_source(path):
        return compile_file(path)
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"no such object file: {p}")
    return p
