"""Every command, given bad values and garbage files, ends with one clear line and a non-zero
exit: never a traceback. Table-driven: add a row for every new command and option."""
import os
import sys

import pytest

from tests.unprivileged import run_without_capabilities

pytestmark = pytest.mark.kernel

PASS = "examples/xdp_pass.bpf.c"
FRAME = "ff" * 14
LONG = "a" * 300


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "binary.conf").write_bytes(b"\x00\x01\xff\xfe")
    (d / "latin1.conf").write_bytes(b"# caf\xe9\npolicy allow\n")
    (d / "latin1.toml").write_bytes(b"# caf\xe9\nseed = 1\n")
    (d / "binary.toml").write_bytes(b"\x00\x01\xff\xfe")
    (d / "garbage.pcap").write_bytes(b"not a capture at all")
    (d / "set.netset").write_bytes(b"198.18.0.0/24\n\xff\xfe\n")
    (d / "uses_set.conf").write_text(f"deny src file:{d / 'set.netset'}\n")
    (d / "adir").mkdir()
    for name, main in (("agent-toml", "version = 1\n[[firewall]\n"), ("agent-nofile", '[[firewall]]\ninterfaces = ["lo"]\nrules = "nope.rules"\n'),
                       ("agent-key", '[[stats]]\ninterfaces = ["lo"]\nmod = "native"\n'),
                       ("agent-ok", '[[stats]]\ninterfaces = ["lo"]\n')):
        (d / name).mkdir()
        (d / name / "xdpkit.toml").write_text(main)
    (d / "agent-binary").mkdir()
    (d / "agent-binary" / "xdpkit.toml").write_bytes(b"\x00\x01\xff\xfe")
    return d


CASES = [
    # (argv with {d} for the files folder, the words the one-line error must contain)
    (["compile", PASS, "-o", "/nonexistent/dir/x.o"], "No such file or directory"),
    (["compile", PASS, "-o", "{d}/adir"], "Is a directory"),
    (["compile", f"/tmp/{LONG}.c"], "File name too long"),
    (["run", PASS, "--packet", ""], "--packet is empty"),
    (["run", PASS, "--packet", "zz"], "must be hex"),
    (["run", PASS, "--packet", FRAME, "--repeat", "99999999999"], "out of range"),
    (["run", PASS, "--packet", FRAME, "--repeat", "0"], "out of range"),
    (["run", PASS, "--pcap", "{d}/adir"], "Is a directory"),
    (["run", PASS, "--pcap", "{d}/garbage.pcap"], "not a pcap"),
    (["run", PASS, "--packet", FRAME, "-w", "/nonexistent/x.pcap"], "No such file or directory"),
    (["maps", "dump", "99999999999999999999"], "no BPF map with id"),
    (["maps", "dump", "0"], "no BPF map with id"),
    (["bench", "prog", PASS, "--packet", FRAME, "--rounds", "0"], "below 1"),
    (["bench", "prog", PASS, "--packet", FRAME, "--repeat", "-5"], "out of range"),
    (["bench", "prog", PASS, "--packet", FRAME, "--repeat", "1000", "--rounds", "1", "-o", "/nonexistent/x.json"],
     "No such file or directory"),
    (["firewall", "check", "{d}/binary.conf"], "not a text file"),
    (["firewall", "check", "{d}/latin1.conf"], "line 1 is not UTF-8"),
    (["firewall", "check", "{d}/uses_set.conf"], "line 2 is not UTF-8"),
    (["firewall", "check", "{d}/adir"], "cannot read config"),
    (["lb", "check", "{d}/binary.toml"], "not a text file"),
    (["lb", "check", "{d}/latin1.toml"], "line 1 is not UTF-8"),
    (["lb", "vip", "add", "lo", "tcp/198.18.200.1:70000", "--backend", "198.18.21.2"], "out of range"),
    (["lb", "lookup", "lo", "tcp/198.18.200.1:80", "198.18.10.2:99999"], "port 0..65535"),
    (["lb", "backend", "add", "lo", "tcp/198.18.200.1:80", "300.1.1.1"], "not an IPv4 or IPv6 address"),
    (["lb", "backend", "add", "lo", "tcp/198.18.200.1:80", "198.18.30.1", "--weight", "70000"], "out of range"),
    (["lb", "backend", "set-weight", "lo", "tcp/198.18.200.1:80", "198.18.30.1", "-1"], "out of range 0..65535"),
    (["stats", "lo", "--interval", "-1"], "greater than 0"),
    (["stats", "lo", "--count", "0"], "below 1"),
    (["status", "--stats", "--interval", "-1"], "greater than 0"),
    (["monitor", "--interval", "-1"], "greater than 0"),
    (["monitor", "--duration", "nan"], "greater than 0"),
    (["exporter", "--max-series", "-1"], "below 1"),
    (["trace", "--program", "nosuch_program_xyz", "--duration", "0.1"], "no loaded BPF program"),
    (["trafficgen", "lo", "--duration", "0"], "greater than 0"),
    (["firewall", "stats", "lo", "--count", "-3"], "below 1"),
    (["lb", "load", "lo", "--max-vips", "0"], "below 1"),
    (["forward", "load", "nosuch0"], "no interface 'nosuch0'"),
    (["forward", "load", "lo", "lo"], "named twice"),
    (["forward", "load", "lo", "--cpus", "1-x"], "use CPU numbers and ranges"),
    (["forward", "load", "lo", "--cpus", "999"], "CPU 999 is not online"),
    (["forward", "load", "lo", "--cpu-queue", "0"], "out of range"),
    (["forward", "load", "lo", "--cache-slots", "3"], "power of two"),
    (["forward", "load", "lo", "--flood"], "at least two"),
    (["forward", "stats"], "no forwarding plane here"),
    (["forward", "stats", "lo"], "no xdpkit forwarding plane on lo"),
    (["forward", "unload", "lo"], "no xdpkit forwarding plane on lo"),
    (["afxdp", "rxdrop", "nosuch0", "--count", "1"], "no such interface"),
    (["afxdp", "rxdrop", "lo", "--queue", "7", "--count", "1"], "lo has 1 receive queue"),
    (["afxdp", "rxdrop", "lo", "--port", "80", "--count", "1"], "a steering port needs a protocol"),
    (["afxdp", "rxdrop", "lo", "--batch", "0"], "out of range"),
    (["afxdp", "rxdrop", "lo", "--duration", "-1"], "greater than 0"),
    (["afxdp", "dump", "lo", "-w", "/nonexistent/x.pcap", "--count", "1"], "cannot write /nonexistent/x.pcap"),
    (["agent", "--check"], "--config-dir is required"),
    (["agent", "--config-dir", "/nonexistent/dir", "--check"], "config directory /nonexistent/dir does not exist"),
    (["agent", "--config-dir", "{d}/adir", "--check"], "has no xdpkit.toml"),
    (["agent", "--config-dir", "{d}/agent-binary", "--check"], "not a text file"),
    (["agent", "--config-dir", "{d}/agent-toml", "--check"], "xdpkit.toml:2:"),
    (["agent", "--config-dir", "{d}/agent-nofile", "--check"], "xdpkit.toml:3: [[firewall]] #1: rules names nope.rules"),
    (["agent", "--config-dir", "{d}/agent-key", "--check"], "xdpkit.toml:3: [[stats]] #1: unknown key 'mod'"),
    (["agent", "--config-dir", "{d}/agent-ok", "--listen", "198.18.0.1:99999"], "bad port"),
    (["agent", "--config-dir", "{d}/agent-ok", "--interval", "0"], "greater than 0"),
    (["agent", "--config-dir", "{d}/agent-ok", "--interval", "1e300"], "out of range 0.01..86400"),
    (["agent", "--config-dir", "{d}/agent-ok", "--state-dir", "/proc/no/such", "--once"], "cannot write the agent's record"),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_gets_one_clear_line(netns, files, argv, words):
    argv = [a.replace("{d}", str(files)) for a in argv]
    r = netns.run([sys.executable, "-m", "xdpkit", *argv], timeout=60)
    assert r.returncode in (1, 2), (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and words in errors[0], r.stderr


def test_compile_without_privileges_or_a_writable_home_uses_a_private_cache():
    env = {"XDG_CACHE_HOME": "/proc/xdpkit-no-cache", "XDPKIT_CACHE_DIR": ""}
    private = f"/tmp/xdpkit-{os.getuid()}"
    existed = os.path.exists(private)
    try:
        r = run_without_capabilities([sys.executable, "-m", "xdpkit", "compile", PASS, "--json"], env=env)
        assert r.returncode == 0, r.stderr
        assert f"{private}/objects/" in r.stdout
    finally:
        if not existed:
            __import__("shutil").rmtree(private, ignore_errors=True)


def test_maps_list_without_privileges_says_why_not_no_maps():
    r = run_without_capabilities([sys.executable, "-m", "xdpkit", "maps", "list"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "Operation not permitted" in r.stderr and "run as root" in r.stderr and "no maps" not in r.stdout
