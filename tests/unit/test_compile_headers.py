"""Every BPF source xdpkit ships or documents compiles with exactly the flags users get, and
reads no header outside the kernel uapi, libbpf, clang and xdpkit folders: a dependency on a
header that happens to be installed fails here, on every machine."""
import subprocess
import sys
from pathlib import Path

import pytest

import xdpkit
from xdpkit import CompileError
from xdpkit.compile import compile_with_deps, default_cflags, find_clang, uapi_dirs

PACKAGE = Path(xdpkit.__file__).parent
TUTORIAL = Path(__file__).parents[1] / "data" / "tutorial"
SHIPPED = sorted(PACKAGE.rglob("*.bpf.c"))
SOURCES = SHIPPED + sorted(TUTORIAL.glob("*.c"))


def allowed_roots() -> list[Path]:
    resource = subprocess.run([find_clang(), "-print-resource-dir"], capture_output=True, text=True,
                              check=True).stdout.strip()
    return [PACKAGE.resolve(), Path(resource).resolve(), *(p.resolve() for p in uapi_dirs().values())]


def test_every_shipped_program_is_covered():
    names = {p.name for p in SHIPPED}
    assert {"firewall.bpf.c", "lb.bpf.c", "decap.bpf.c", "stats.bpf.c", "trafficgen.bpf.c",
            "xdp_drop_udp.bpf.c", "xdp_ethertype_count.bpf.c"} <= names
    assert len(list(TUTORIAL.glob("*.c"))) >= 2


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_compiles_with_only_uapi_libbpf_clang_and_xdpkit_headers(source, tmp_path):
    deps = compile_with_deps(source, tmp_path / "out.o")
    assert (tmp_path / "out.o").read_bytes()[:4] == b"\x7fELF"
    roots = allowed_roots()
    outside = [d for d in deps if d != str(source.resolve()) and not any(Path(d).is_relative_to(r) for r in roots)]
    assert not outside, f"{source.name} reads headers outside the allowed folders: {outside}"
    assert not any("/usr/include/sys/" in d or "gnu/stubs" in d for d in deps)


def test_flags_keep_the_host_c_library_out():
    flags = default_cflags()
    assert "-nostdlibinc" in flags
    assert not any(f in ("-I/usr/include", "-isystem/usr/include") or "linux-gnu" in f for f in flags)


def test_c_library_header_gets_a_clear_error(tmp_path):
    src = tmp_path / "uses_libc.bpf.c"
    src.write_text('#include <linux/bpf.h>\n#include <string.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("xdp") int p(struct xdp_md *c) { char a[4]; memset(a, 0, 4); return XDP_PASS; }\n'
                   'char _license[] SEC("license") = "GPL";\n')
    with pytest.raises(CompileError) as exc:
        xdpkit.compile_file(src, use_cache=False)
    assert "'string.h' file not found" in str(exc.value) and f"{src}:2:" in str(exc.value)
    assert "C library header" in exc.value.hint and "__builtin_memset" in exc.value.hint


def test_missing_header_of_the_program_itself_is_not_blamed_on_libc(tmp_path):
    src = tmp_path / "own.bpf.c"
    src.write_text('#include "not_written_yet.h"\n')
    with pytest.raises(CompileError) as exc:
        xdpkit.compile_file(src, use_cache=False)
    assert "not_written_yet.h" in str(exc.value) and not exc.value.hint


def test_diagnostics_name_the_real_uapi_header(tmp_path):
    src = tmp_path / "clash.bpf.c"
    src.write_text("#include <linux/bpf.h>\nstruct bpf_insn { int x; };\n")   # redefinition
    with pytest.raises(CompileError) as exc:
        xdpkit.compile_file(src, use_cache=False)
    assert f"{uapi_dirs()['linux']}/bpf.h" in exc.value.diagnostics
    assert "xdpkit-cc-" not in exc.value.diagnostics


@pytest.mark.parametrize("example", sorted((PACKAGE / "examples").glob("*.bpf.c")), ids=lambda p: p.name)
def test_cli_compile_of_each_example(example, tmp_path):
    out = tmp_path / example.name.replace(".c", ".o")
    proc = subprocess.run([sys.executable, "-m", "xdpkit", "compile", str(example), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"\x7fELF"
