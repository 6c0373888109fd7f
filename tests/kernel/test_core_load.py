"""Compile, load, custom sections, rodata, verifier and compile errors (real kernel)."""
import subprocess
from pathlib import Path
import sys

import pytest

import xdpkit
from xdpkit import CompileError, LoadError, NotFoundError, ObjectSpec, VerifierError
from xdpkit.kernel import program_ids
from tests.packets import tcp4, udp4, udp6

pytestmark = pytest.mark.kernel

EX = Path(xdpkit.__file__).parent / "examples"

BAD_VERIFIER = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp")
int unchecked(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	return *(unsigned char *)data == 1 ? XDP_DROP : XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


def test_compile_writes_object_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XDPKIT_CACHE_DIR", str(tmp_path / "cache"))
    out = xdpkit.compile_file(EX / "xdp_pass.bpf.c", tmp_path / "p.o")
    assert out.read_bytes()[:4] == b"\x7fELF"
    first = xdpkit.compile_file(EX / "xdp_pass.bpf.c")
    mtime = first.stat().st_mtime_ns
    again = xdpkit.compile_file(EX / "xdp_pass.bpf.c")
    assert again == first and again.stat().st_mtime_ns == mtime  # served from cache


def test_cache_invalidated_when_included_header_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDPKIT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "v.h").write_text("#define VERDICT XDP_PASS\n")
    src = tmp_path / "p.bpf.c"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n#include "v.h"\n'
                   'SEC("xdp") int p(struct xdp_md *c) { return VERDICT; }\n'
                   'char _license[] SEC("license") = "GPL";\n')
    with xdpkit.Object.from_file(src) as obj:
        assert obj.program().run(udp4()).verdict == xdpkit.Verdict.XDP_PASS
    (tmp_path / "v.h").write_text("#define VERDICT XDP_DROP\n")
    with xdpkit.Object.from_file(src) as obj:
        assert obj.program().run(udp4()).verdict == xdpkit.Verdict.XDP_DROP


def test_compile_error_has_file_line(tmp_path):
    src = tmp_path / "broken.bpf.c"
    src.write_text("#include <linux/bpf.h>\nint x(void) { return undefined_thing; }\n")
    with pytest.raises(CompileError) as exc:
        xdpkit.compile_file(src)
    assert f"{src}:2:" in str(exc.value) and "undefined_thing" in str(exc.value)


def test_call_to_undeclared_function_fails_at_compile_not_at_load(tmp_path):
    src = tmp_path / "undeclared.bpf.c"
    src.write_text("#include <linux/bpf.h>\nint x(void) { return helper_nobody_declared(1); }\n")
    with pytest.raises(CompileError) as exc:
        xdpkit.compile_file(src, use_cache=False)
    assert f"{src}:2:" in str(exc.value) and "helper_nobody_declared" in str(exc.value)


def test_verifier_error_summary_and_full_log(tmp_path):
    src = tmp_path / "unchecked.bpf.c"
    src.write_text(BAD_VERIFIER)
    before = set(program_ids())
    with pytest.raises(VerifierError) as exc:
        ObjectSpec.from_file(src).load()
    err = exc.value
    assert "outside of the packet" in str(err)
    assert "unchecked.bpf.c:8" in str(err)          # source line from BTF line info
    assert "processed" in err.log and len(err.log) > len(str(err))
    assert not (set(program_ids()) - before)        # nothing left loaded


def test_custom_section_loads_as_xdp_like_ip_link():
    spec = ObjectSpec.from_file(EX / "xdp_drop_udp.bpf.c")
    prog = spec.select(section="xdp_drop_udp")
    assert prog.section == "xdp_drop_udp"
    with spec.load() as obj:
        p = obj.program()
        assert p.info().type_name == "xdp"
        assert p.run(udp4()).verdict == xdpkit.Verdict.XDP_DROP
        assert p.run(tcp4()).verdict == xdpkit.Verdict.XDP_PASS


def test_rodata_selects_drop_port_variant():
    spec = ObjectSpec.from_file(EX / "xdp_drop_udp.bpf.c")
    spec.rodata["drop_port"] = 53
    assert spec.rodata["drop_port"] == 53
    with spec.load() as obj:
        p = obj.program()
        assert p.run(udp4(dport=53)).verdict == xdpkit.Verdict.XDP_DROP
        assert p.run(udp6(dport=53)).verdict == xdpkit.Verdict.XDP_DROP
        assert p.run(udp4(dport=54)).verdict == xdpkit.Verdict.XDP_PASS


def test_unknown_section_and_rodata_name_are_clear():
    spec = ObjectSpec.from_file(EX / "xdp_drop_udp.bpf.c")
    with pytest.raises(NotFoundError, match="sections: xdp_drop_udp"):
        spec.select(section="nope")
    with pytest.raises(NotFoundError, match="known: drop_port"):
        spec.rodata["dorp_port"] = 1
    spec.close()


def test_not_an_elf_file(tmp_path):
    junk = tmp_path / "junk.o"
    junk.write_bytes(b"not an elf")
    with pytest.raises(LoadError, match="cannot open"):
        ObjectSpec.from_file(junk)


def test_object_close_is_idempotent_and_invalidates_handles():
    obj = xdpkit.Object.from_file(EX / "xdp_ethertype_count.bpf.c")
    m = obj.maps["ethertype_count"]
    obj.close()
    obj.close()
    with pytest.raises(xdpkit.XdpkitError, match="closed"):
        m[0x800]


def test_cli_verifier_error_one_line_and_verbose_log(tmp_path):
    src = tmp_path / "unchecked.bpf.c"
    src.write_text(BAD_VERIFIER)
    cmd = [sys.executable, "-m", "xdpkit", "run", str(src), "--packet", "00" * 20]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: verifier rejected program 'unchecked'")
    assert lines[1] == "hint: run with -v to see the full verifier log"
    verbose = subprocess.run(cmd[:3] + ["-v"] + cmd[3:], capture_output=True, text=True)
    assert "processed" in verbose.stderr and "Traceback" not in verbose.stderr


PINNED_SRC = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} xdpkit_t_pinned SEC(".maps");
SEC("xdp")
int pinned_user(struct xdp_md *ctx)
{
	__u32 k = 0;
	return bpf_map_lookup_elem(&xdpkit_t_pinned, &k) ? XDP_PASS : XDP_DROP;
}
char _license[] SEC("license") = "GPL";
"""


def test_map_pinning_can_be_switched_off_before_load(tmp_path):
    src = tmp_path / "pinned.bpf.c"
    src.write_text(PINNED_SRC)
    spec = ObjectSpec.from_file(src)
    m = spec.maps["xdpkit_t_pinned"]
    assert m.pin_path == "/sys/fs/bpf/xdpkit_t_pinned"  # what LIBBPF_PIN_BY_NAME asks for
    m.pin_path = None
    assert m.pin_path is None
    with spec.load() as obj:
        assert obj.program().run(b"\0" * 64).verdict is xdpkit.Verdict.XDP_PASS
    assert not Path("/sys/fs/bpf/xdpkit_t_pinned").exists()
