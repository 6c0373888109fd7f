"""pytest plugin for testing XDP programs (loaded through the ``pytest11`` entry point).

* marker ``kernel``: the test needs root and a kernel with BPF. Skipped otherwise, but under
  ``CI=true`` it fails instead, so CI cannot go green by skipping everything.
* marker ``allow_leaks``: turn the leak check off for one test.
* fixtures ``netns`` (a fresh namespace the test body runs inside), ``make_netns`` (more
  namespaces, not entered) and ``lab`` (a session-wide :class:`xdpkit.lab.Lab`).
* leak check (autouse, ``kernel`` tests only): network namespaces, XDP programs, bpffs pins and
  open fds are compared before and after the test, after its other fixtures are torn down.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import os
import socket
import secrets
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from xdpkit import bpffs
from xdpkit import lab as _lab
from xdpkit import netns as _netns

NETNS_PREFIX = "xdpkt-"
PIN_DIRS = ("/sys/fs/bpf", "/run/xdpkit/bpffs")
LEAK_TIMEOUT = 5.0  # netns teardown and program release happen in kernel workqueues, later


# ---- kernel marker ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def kernel_unavailable() -> str | None:
    """Why kernel tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF)"
    from xdpkit.kernel import bpf_usable

    return bpf_usable()


def _require_kernel() -> None:
    why = kernel_unavailable()
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"kernel tests must run under CI=true, but {why}", pytrace=False)
    pytest.skip(f"kernel test: {why}")


# Pin roots (bpffs directories) that tests may create through bpffs.pin_root(): removed again at
# the end of the session when the session made them and they are empty, so a test run leaves
# nothing under /sys/fs/bpf.
_pin_roots_before: set = set()


def pytest_configure(config):
    _pin_roots_before.update(bpffs.existing_pin_roots())
    config.addinivalue_line("markers", "kernel: needs root and a BPF-capable kernel "
                            "(skipped otherwise; fails instead under CI=true)")
    config.addinivalue_line("markers", "allow_leaks: do not check this test for leaked namespaces, "
                            "XDP programs, pins or fds")


def pytest_unconfigure(config):
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(CLAIMS_DIR, str(os.getpid())))
    bpffs.remove_empty_pin_roots(keep=_pin_roots_before)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # Before any fixture: a skipped kernel test must not start building namespaces.
    if item.get_closest_marker("kernel") is not None:
        _require_kernel()


# ---- leak check ------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """Kernel resources visible to this process at one moment."""

    netns: set = field(default_factory=set)        # names under /run/netns
    xdp_programs: dict = field(default_factory=dict)  # id -> name, BPF programs of type XDP
    pins: set = field(default_factory=set)         # files under the bpffs pin directories
    fds: dict = field(default_factory=dict)        # fd -> what it points to (this process)
    links: set = field(default_factory=set)        # interfaces in this thread's namespace


def _xdp_programs() -> dict:
    from xdpkit import kernel
    from xdpkit.errors import XdpkitError

    out = {}
    for pid in kernel.program_ids():
        try:
            info = kernel.program_info_by_id(pid)
        except XdpkitError:
            continue  # released while we looked
        if info.type == kernel.ProgType.XDP:
            out[pid] = info.name
    return out


def _pins() -> set:
    out = set()
    for top in PIN_DIRS:
        if not os.path.isdir(top):
            continue
        for root, _dirs, files in os.walk(top):
            out.update(os.path.join(root, f) for f in files)
    # The kernel puts these preloaded iterators in every new bpffs: not anybody's pins.
    return {p for p in out if os.path.basename(p) not in ("maps.debug", "progs.debug")}


def _fds() -> dict:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the directory fd used by listdir itself, already closed
    return out


def snapshot() -> Snapshot:
    ns = set(os.listdir(_netns.NETNS_RUN_DIR)) if os.path.isdir(_netns.NETNS_RUN_DIR) else set()
    links = {name for _idx, name in socket.if_nameindex()}
    return Snapshot(netns=ns, xdp_programs=_xdp_programs(), pins=_pins(), fds=_fds(), links=links)


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """What exists in ``after`` but not in ``before``, one line per leaked thing."""
    out = [f"network namespace {n!r}" for n in sorted(after.netns - before.netns)]
    out += [f"XDP program id {i} ({after.xdp_programs[i] or 'unnamed'})"
            for i in sorted(set(after.xdp_programs) - set(before.xdp_programs))]
    out += [f"pinned file {p}" for p in sorted(after.pins - before.pins)]
    out += [f"network interface {n!r} in the test's own namespace" for n in sorted(after.links - before.links)]
    if len(after.fds) > len(before.fds):
        new = {fd: t for fd, t in after.fds.items() if before.fds.get(fd) != t}
        detail = ", ".join(f"{fd} -> {t}" for fd, t in sorted(new.items())) or "unknown"
        out.append(f"{len(after.fds) - len(before.fds)} open file descriptor(s): {detail}")
    return out


# Other pytest sessions (and tools) on the same machine create namespaces and load programs
# while our test runs; a global before/after diff would blame us. What clearly belongs to another
# live process is left out: namespaces its fixtures claimed or its threads are in, and XDP
# programs it holds an fd to. Leaks of ours are held by nobody or by this process.
CLAIMS_DIR = "/run/xdpkit/pytest-claims"


def _claim(name: str) -> None:
    """Record that this process's fixtures own namespace ``name`` (for concurrent sessions)."""
    os.makedirs(CLAIMS_DIR, exist_ok=True)
    with open(os.path.join(CLAIMS_DIR, str(os.getpid())), "a") as f:
        f.write(name + "\n")


def _foreign_claims() -> set:
    out: set = set()
    if not os.path.isdir(CLAIMS_DIR):
        return out
    for entry in os.listdir(CLAIMS_DIR):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        path = os.path.join(CLAIMS_DIR, entry)
        if not os.path.exists(f"/proc/{entry}"):
            with contextlib.suppress(OSError):
                os.unlink(path)  # that session is gone
            continue
        with contextlib.suppress(OSError), open(path) as f:
            out.update(f.read().split())
    return out


def _other_pids():
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]


def _netns_occupied_by_others(names: set) -> set:
    inodes = {}
    for n in names:
        with contextlib.suppress(OSError):
            inodes[os.stat(os.path.join(_netns.NETNS_RUN_DIR, n)).st_ino] = n
    busy = set()
    for pid in _other_pids():
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    ino = os.stat(f"/proc/{pid}/task/{tid}/ns/net").st_ino
                    if ino in inodes:
                        busy.add(inodes[ino])
    return busy


def _programs_held_by_others(ids: set) -> set:
    held = set()
    for pid in _other_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    text = f.read()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("prog_id:") and int(line.split()[1]) in ids:
                    held.add(int(line.split()[1]))
    return held


def _ours(before: Snapshot, after: Snapshot) -> Snapshot:
    """``after`` without what appeared meanwhile but clearly belongs to another process."""
    new_ns = after.netns - before.netns
    foreign_ns = (new_ns & _foreign_claims()) | _netns_occupied_by_others(new_ns) if new_ns else set()
    new_progs = set(after.xdp_programs) - set(before.xdp_programs)
    foreign_progs = _programs_held_by_others(new_progs) if new_progs else set()
    return Snapshot(netns=after.netns - foreign_ns,
                    xdp_programs={i: n for i, n in after.xdp_programs.items() if i not in foreign_progs},
                    pins=after.pins, fds=after.fds)


def check_leaks(before: Snapshot, *, timeout: float = LEAK_TIMEOUT, interval: float = 0.05) -> list[str]:
    """Compare against ``before`` until nothing has leaked or ``timeout`` passes; the leaks left.

    Polls because the kernel frees namespaces and XDP programs asynchronously, and runs the
    garbage collector so fds held by unreachable Python objects are not counted.
    """
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        leaks = diff(before, snapshot())
        if leaks:
            leaks = diff(before, _ours(before, snapshot()))
        if not leaks or time.monotonic() >= deadline:
            return leaks
        time.sleep(interval)


@pytest.fixture(autouse=True)
def _xdpkit_leak_check(request):
    """Outermost function-scoped fixture of kernel tests: checks after everything else is gone.

    Autouse fixtures from plugins are set up before the test's other fixtures, and ``netns`` /
    ``make_netns`` request it explicitly, so its after-check runs last. Higher-scoped fixtures
    (``lab``) are set up before it, so what they create is part of the "before" snapshot.
    """
    node = request.node
    if node.get_closest_marker("kernel") is None or node.get_closest_marker("allow_leaks") is not None:
        yield
        return
    before = snapshot()
    yield
    leaks = check_leaks(before)
    if leaks:
        pytest.fail("test leaked kernel resources (mark it allow_leaks if intended):\n  - "
                    + "\n  - ".join(leaks), pytrace=False)


# ---- namespaces ------------------------------------------------------------------------------

class NetnsHandle:
    """A network namespace made for one test."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<NetnsHandle {self.name}>"

    def inside(self):
        """Context manager: run a block with this thread inside the namespace."""
        return _netns.inside(self.name)

    def veth(self, a: str, b: str, *, peer_ns: str | None = None, up: bool = True,
             gro: bool = True) -> tuple[int, int]:
        """Create veth pair a/b in this namespace (b in ``peer_ns`` if given): (ifindex_a, ifindex_b)."""
        peer = getattr(peer_ns, "name", peer_ns)  # accept a NetnsHandle too
        with self.inside():
            return _lab.add_veth(a, b, peer_ns=peer, up=up, gro=gro)

    def run(self, argv: list[str], timeout: float = 10.0, *,
            check: bool = False) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the namespace via ``ip netns exec`` (text output captured)."""
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True,
                              text=True, timeout=timeout, check=check)


def new_netns(*, ipv6: bool = True) -> NetnsHandle:
    name = f"{NETNS_PREFIX}{secrets.token_hex(4)}"
    _claim(name)
    _netns.create(name)
    try:
        with _netns.inside(name):
            _lab.lo_up()
            if not ipv6:
                _lab.disable_ipv6()
    except BaseException:
        _netns.remove(name)
        raise
    return NetnsHandle(name)


@pytest.fixture
def make_netns(_xdpkit_leak_check):
    """Factory: ``make_netns(ipv6=True)`` -> a new :class:`NetnsHandle`; all are removed at
    teardown. ``ipv6=False``: no router solicitations or MLD reports in exact counts."""
    made: list[NetnsHandle] = []

    def make(*, ipv6: bool = True) -> NetnsHandle:
        ns = new_netns(ipv6=ipv6)
        made.append(ns)
        return ns

    yield make
    for ns in reversed(made):
        _netns.remove(ns.name)


@pytest.fixture
def netns(_xdpkit_leak_check, make_netns):
    """A fresh namespace with lo up; the test body (and later fixtures) run inside it."""
    ns = make_netns()
    with ns.inside():
        yield ns


@pytest.fixture(scope="session")
def lab():
    """A complete :class:`xdpkit.lab.Lab` with a unique name for the whole session."""
    _require_kernel()
    the_lab = _lab.Lab("t" + secrets.token_hex(3))
    for name in the_lab.namespaces:
        _claim(name)
    the_lab.up()
    try:
        yield the_lab
    finally:
        the_lab.down()
