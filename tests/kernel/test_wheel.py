"""The wheel runs the built-in programs without clang: built from a clean copy of the sources
(the build compiles the objects), installed into a fresh virtualenv where every file has its
install time, and used to load the firewall, the load balancer, the forwarding plane and the stats program with no
clang on PATH."""
import json
import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]

LB_TOML = """
encap_source_v4 = "198.18.99.0/24"
[[vip]]
address = "198.18.200.1"
port = 80
table_size = 1009
backends = ["198.18.21.2"]
"""


def _run(argv, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{argv}: {proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"   # a clean copy: no objects, no build leftovers, nothing written to REPO
    shutil.copytree(REPO / "src", tree / "src",
                    ignore=shutil.ignore_patterns("*.o", "*.bpf.json", "__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, tree / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(tmp / "dist"), str(tree)])
    wheel = next((tmp / "dist").glob("xdpkit-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    _run([sys.executable, "-m", "pip", "-q", "--python", str(venv / "bin" / "python"), "install",
          "--no-deps", "--no-index", str(wheel)])
    # The dependencies (cffi, pyroute2, ...) come from this interpreter's site-packages, added
    # after the new venv's own, so xdpkit itself is the wheel's.
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "xdpkit_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    package = Path(purelib) / "xdpkit"
    # Sources newer than objects, as an install that unpacked them later would leave them.
    now = time.time()
    for path in package.rglob("*"):
        stamp = now - 3600 if path.suffix == ".o" else now + 3600
        os.utime(path, (stamp, stamp))
    bindir = tmp / "bin"   # PATH holds `ip` and nothing else: no clang
    bindir.mkdir()
    (bindir / "ip").symlink_to(shutil.which("ip"))
    env = {"PATH": f"{venv / 'bin'}:{bindir}", "HOME": str(tmp / "home"),
           "XDPKIT_CACHE_DIR": str(tmp / "cache")}
    return venv, package, env, tmp


def test_wheel_ships_current_objects(wheel_venv):
    venv, package, env, _ = wheel_venv
    names = {p.name for p in package.rglob("*.bpf.o")}
    assert {"firewall.bpf.o", "lb.bpf.o", "decap.bpf.o", "stats.bpf.o", "trafficgen.bpf.o", "forward.bpf.o",
            "steer.bpf.o"} <= names
    check = ("import xdpkit, xdpkit.builtin as b; "
             "print(xdpkit.__file__); print(all(b.prebuilt_current(s) for s in b.SOURCES.values()))")
    proc = _run([str(venv / "bin" / "python"), "-c", check], env=env)
    where, current = proc.stdout.split()
    assert Path(where).is_relative_to(package) and current == "True"
    no_clang = subprocess.run([str(venv / "bin" / "python"), "-c", "from xdpkit.compile import find_clang; find_clang()"],
                              capture_output=True, text=True, env=env)
    assert no_clang.returncode != 0 and "clang" in no_clang.stderr


def test_apps_load_from_the_wheel_without_clang(wheel_venv, make_netns):
    venv, _, env, tmp = wheel_venv
    ns = make_netns(ipv6=False)
    ns.veth("fw0", "fw1")
    ns.veth("lb0", "lb1")
    ns.veth("st0", "st1")
    ns.veth("fo0", "fo1")
    (tmp / "fw.conf").write_text("policy allow\ndeny udp dport 53\n")
    (tmp / "lb.toml").write_text(LB_TOML)
    xdpkit = str(venv / "bin" / "xdpkit")

    def cli(*args):
        proc = subprocess.run([shutil.which("ip"), "netns", "exec", ns.name, xdpkit, *args],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, f"xdpkit {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr
        return proc.stdout

    try:
        cli("firewall", "load", "fw0", "--config", str(tmp / "fw.conf"), "--mode", "generic")
        cli("lb", "load", "lb0", "--config", str(tmp / "lb.toml"), "--mode", "generic")
        cli("forward", "load", "fo0", "fo1", "--mode", "generic")
        sample = json.loads(cli("stats", "st0", "--once", "--json", "--interval", "0.2").splitlines()[-1])
        assert sample["source"] == "attached" and sample["program"]["name"] == "xdpkit_stats"
        attached = {a["ifname"]: a for a in json.loads(cli("status", "--json"))}
        assert attached["fw0"]["name"] == "xdpkit_firewall" and attached["lb0"]["name"] == "xdpkit_lb"
        assert attached["fo0"]["name"] == attached["fo1"]["name"] == "xdpkit_forward"
        assert "st0" not in attached              # stats detached the program it attached
    finally:
        for app, iface in (("firewall", "fw0"), ("lb", "lb0"), ("forward", "fo0")):
            subprocess.run([shutil.which("ip"), "netns", "exec", ns.name, xdpkit, app, "unload", iface],
                           capture_output=True, timeout=60, env=env)
    assert not list((tmp / "cache").rglob("*.o"))   # nothing was compiled
