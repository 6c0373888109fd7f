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


#: Headers that stand in for the few C library headers kernel uapi headers include
#: (<linux/if.h>, pulled in by <linux/icmp.h>, wants <sys/socket.h> for struct sockaddr).
SHIM_DIR = Path(__file__).parent / "bpf" / "shim"


def uapi_dirs() -> dict[str, Path]:
    """The top-level header folders a BPF program may include, and where they live.

    Nothing else of /usr/include is visible: glibc's headers do not work for -target bpf (they
    ask for the 32-bit stubs of libc6-dev-i386), and a program that compiled only where those
    happen to be installed fails on the next machine.
    """
    multiarch, _ = _arch()
    candidates = {
        "linux": [Path("/usr/include/linux")],                 # linux-libc-dev
        "asm-generic": [Path("/usr/include/asm-generic")],     # linux-libc-dev
        "asm": [Path(f"/usr/include/{multiarch}/asm"), Path("/usr/include/asm")],
        "bpf": [Path("/usr/include/bpf")],                     # libbpf-dev
    }
    found = {}
    for name, paths in candidates.items():
        for path in paths:
            if path.is_dir():
                found[name] = path
                break
    return found


def _arch() -> tuple[str, str]:
    return _ARCH.get(platform.machine(), (f"{platform.machine()}-linux-gnu", "x86"))


def default_cflags() -> list[str]:
    """Flags every compile gets, before the uapi include tree (see ``uapi_include_tree``)."""
    _, target_arch = _arch()
    return ["-O2", "-g", "-target", "bpf", f"-D__TARGET_ARCH_{target_arch}",
            "-Wall", "-Wno-unused-value", "-Wno-pointer-sign", "-Wno-compare-distinct-pointer-types",
            # a call to an undeclared function would otherwise become an extern that only
            # fails at load ("failed to find BTF for extern"); clang 16 and later refuse it too
            "-Werror=implicit-function-declaration",
            "-fno-stack-protector",
            # no host C library headers: only clang's own (stddef.h, stdint.h, stdbool.h, ...)
            # and the folders below
            "-nostdlibinc", f"-isystem{SHIM_DIR}", f"-I{INCLUDE_DIR}"]


def uapi_include_tree(root: Path) -> Path:
    """Make ``root`` a folder of links to the kernel uapi and libbpf header folders only.

    clang cannot be given /usr/include without also being given glibc's headers, so the
    folders BPF C may use are linked into one place of their own and that goes on the path.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name, path in uapi_dirs().items():
        (root / name).symlink_to(path, target_is_directory=True)
    return root


def cache_dir() -> Path:
    """Where compiled objects are cached: $XDPKIT_CACHE_DIR, else $XDG_CACHE_HOME/xdpkit/objects
    (~/.cache/...), else, when that cannot be made (no or read-only HOME), a folder of this
    user's own under the temp dir."""
    base = os.environ.get("XDPKIT_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    preferred = Path(xdg) / "xdpkit" / "objects"
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    return _private_temp_dir()


def _private_temp_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"xdpkit-{os.getuid()}" / "objects"
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path.parent)
        if st.st_uid != os.getuid() or not os.path.isdir(path.parent) or os.path.islink(path.parent):
            raise NotSupportedError(f"a compile cache of this user's own ({path.parent} belongs to uid {st.st_uid})",
                                    hint="set XDPKIT_CACHE_DIR to a folder you own")
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise NotSupportedError(f"a compile cache ({path}: {exc.strerror})",
                                hint="set XDPKIT_CACHE_DIR to a writable folder") from None
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_depfile(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    _, _, deps = text.partition(":")
    return [d for d in re.split(r"(?<!\\)\s+", deps) if d]


def file_sha256(path: str | os.PathLike) -> str:
    return _sha256(Path(path).read_bytes())


def files_unchanged(recorded: dict[str, str], root: Path | None = None) -> bool:
    """True while every recorded file (a path, relative to ``root`` if given) still has its
    recorded sha256: what decides whether a cached or shipped object is current."""
    try:
        return all(file_sha256(root / p if root else p) == h for p, h in recorded.items())
    except OSError:
        return False


def _deps_current(manifest: Path) -> bool:
    try:
        return files_unchanged(json.loads(manifest.read_text())["deps"])
    except (OSError, ValueError, KeyError):
        return False


_MISSING_HEADER = re.compile(r"fatal error: '([^']+)' file not found")


def _hint_for(stderr: str) -> str | None:
    missing = _MISSING_HEADER.search(stderr)
    if not missing:
        return None
    header = missing.group(1)
    top = header.split("/", 1)[0]
    if top in ("linux", "asm", "asm-generic") or header == "asm/types.h":
        return "install the kernel uapi headers: apt-get install linux-libc-dev"
    if top == "bpf":
        return "install the libbpf headers: apt-get install libbpf-dev"
    if top == "xdpkit" or f"<{header}>" not in stderr:
        return None  # one of the program's own headers ("..."): -I DIR says where it is
    return (f"<{header}> is a C library header, and BPF C is compiled without those "
            "(-nostdlibinc): use kernel uapi headers (<linux/...>), libbpf's (<bpf/...>), "
            "clang's <stddef.h>/<stdint.h>/<stdbool.h>, and __builtin_memcpy/__builtin_memset "
            "instead of <string.h>")


def _run_clang(clang: str, flags: list[str], src: Path, obj: Path, tmp: Path) -> dict[str, str]:
    """Compile ``src`` to ``obj``; return every file it included (resolved) with its sha256."""
    uapi = uapi_include_tree(tmp / "uapi")
    depfile = tmp / "out.d"
    cmd = [clang, *flags, f"-isystem{uapi}", "-MD", "-MF", str(depfile), "-c", str(src), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        diagnostics = proc.stderr
        for name, real in uapi_dirs().items():  # name the real header, not our link to it
            diagnostics = diagnostics.replace(f"{uapi}/{name}/", f"{real}/")
        raise CompileError(str(src), diagnostics, hint=_hint_for(diagnostics))
    return {str(Path(d).resolve()): file_sha256(d) for d in _read_depfile(depfile) if Path(d).is_file()}


def compile_with_deps(source: str | os.PathLike, output: str | os.PathLike,
                      *, cflags: list[str] | None = None,
                      include_dirs: list[str] | None = None) -> dict[str, str]:
    """Compile ``source`` to ``output`` (no cache); return the included files and their sha256."""
    src, clang, flags = _prepare(source, cflags, include_dirs)
    return _compile_to(clang, flags, src, Path(output))


def _prepare(source, cflags, include_dirs) -> tuple[Path, str, list[str]]:
    src = Path(source)
    if not src.is_file():
        raise NotFoundError(f"no such source file: {src}")
    return src, find_clang(), _flags(src, cflags, include_dirs)


def _compile_to(clang: str, flags: list[str], src: Path, dest: Path) -> dict[str, str]:
    with tempfile.TemporaryDirectory(prefix="xdpkit-cc-") as tmp:
        obj = Path(tmp) / "out.o"
        deps = _run_clang(clang, flags, src, obj, Path(tmp))
        _publish(obj, dest)
    return deps


def _flags(src: Path, cflags: list[str] | None, include_dirs: list[str] | None) -> list[str]:
    return (default_cflags() + [f"-I{d}" for d in (include_dirs or [])] + list(cflags or [])
            + [f"-I{src.resolve().parent}"])


def _publish(obj: Path, dest: Path) -> None:
    # Copy then rename, so a concurrent reader never sees a half-written object.
    tmp_dest = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(obj, tmp_dest)
    os.replace(tmp_dest, dest)


def compile_file(source: str | os.PathLike, output: str | os.PathLike | None = None,
                 *, cflags: list[str] | None = None, include_dirs: list[str] | None = None,
                 use_cache: bool = True) -> Path:
    """Compile ``source`` to a BPF object and return its path.

    Without ``output`` the object goes to the content-addressed cache. Raises CompileError with
    clang's diagnostics (file:line: error: message) when clang fails.
    """
    src, clang, flags = _prepare(source, cflags, include_dirs)
    text = src.read_bytes()
    uapi = " ".join(f"{name}={path}" for name, path in sorted(uapi_dirs().items()))
    key = _sha256(b"\0".join([text, " ".join(flags).encode(), uapi.encode(),
                              clang_version(clang).encode(), str(src.resolve()).encode()]))
    cached = cache_dir() / f"{key[:32]}.o"
    manifest = cached.with_suffix(".json")
    if use_cache and cached.is_file() and _deps_current(manifest):
        if output is None:
            return cached
        shutil.copyfile(cached, output)
        return Path(output)

    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NotSupportedError(f"a compile cache ({cached.parent}: {exc.strerror})",
                                hint="set XDPKIT_CACHE_DIR to a writable folder") from None
    deps = _compile_to(clang, flags, src, cached)
    manifest.write_text(json.dumps({"source": str(src.resolve()), "deps": deps}))
    if output is None:
        return cached
    shutil.copyfile(cached, output)
    return Path(output)


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
