import subprocess
import sys

import pytest

from xdpkit.cli.main import main
from xdpkit.errors import CompileError, ConfigError, summarize_verifier_log
from xdpkit.program import Verdict
from xdpkit.xdp import XdpMode

LOG = """func#0 @0
0: R1=ctx() R10=fp0
; void *data = (void *)(long)ctx->data; @ bad.bpf.c:8
0: (61) r2 = *(u32 *)(r1 +0)          ; R1=ctx() R2_w=pkt(r=0)
; return *(unsigned char *)data == 1 ? XDP_DROP : XDP_PASS; @ bad.bpf.c:9
1: (71) r1 = *(u8 *)(r2 +0)
invalid access to packet, off=0 size=1, R2(id=0,off=0,r=0)
R2 offset is outside of the packet
processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
"""


def test_verifier_summary_names_complaint_insn_and_source():
    s = summarize_verifier_log(LOG)
    assert s.startswith("R2 offset is outside of the packet")
    assert "insn 1: r1 = *(u8 *)(r2 +0)" in s
    assert "bad.bpf.c:9" in s


def test_compile_error_shows_first_error():
    e = CompileError("x.c", "x.c:3:5: error: use of undeclared identifier 'foo'\n1 error generated.\n")
    assert "x.c:3:5: error: use of undeclared identifier 'foo'" in str(e)


def test_config_error_names_line_and_field():
    assert str(ConfigError("bad port", line=3, field="dport")) == "line 3, dport: bad port"


def test_mode_and_verdict_parsing():
    assert XdpMode.parse("skb") is XdpMode.GENERIC
    assert XdpMode.parse("native") is XdpMode.NATIVE
    with pytest.raises(ConfigError):
        XdpMode.parse("turbo")
    assert Verdict.parse("drop") is Verdict.XDP_DROP
    assert Verdict(4).name == "XDP_REDIRECT"


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["load"])
    assert exc.value.code == 2


def test_missing_file_is_one_line_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "xdpkit", "run", "/nonexistent.o", "--packet", "00" * 14],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == "error: no such object file: /nonexistent.o"


def test_bad_packet_hex_is_config_error():
    proc = subprocess.run([sys.executable, "-m", "xdpkit", "run", "/nonexistent.o", "--packet", "zz"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
