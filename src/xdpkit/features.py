"""Feature probes and the doctor: what this machine and its interfaces can do for XDP.

:func:`run_checks` returns a list of :class:`Check` (ok / warn / fail); every check that is not
ok carries a ``fix``: the command (or action) that resolves it. Probes create and destroy tiny
kernel objects (a 1-entry array map, a 2-instruction XDP program); they leave nothing behind.
"""
from __future__ import annotations

import errno as E
import fcntl
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
from dataclasses import asdict, dataclass

from xdpkit._sys import libbpf as _libbpf
from xdpkit._sys.libbpf import ffi
from xdpkit.errors import XdpkitError
from xdpkit.kernel import (BPF_ALU64_MOV_K, BPF_F_TEST_XDP_LIVE_FRAMES, BPF_JMP_EXIT, CAP_BPF, CAP_NET_ADMIN,
                           CAP_PERFMON, CAP_SYS_ADMIN, ETHTOOL_GDRVINFO, IFNAMSIZ, SIOCETHTOOL,
                           XDP_FLAGS_DRV_MODE, XDP_FLAGS_UPDATE_IF_NOEXIST, MapType, ProgType, Verdict)

OK, WARN, FAIL = "ok", "warn", "fail"

_CAP_NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN",
              CAP_PERFMON: "CAP_PERFMON", CAP_BPF: "CAP_BPF"}

MIN_KERNEL = (4, 18)        # XDP with BTF-less libbpf loading at all
RECOMMENDED_KERNEL = (5, 10)
MIN_CLANG = 11
MIN_LIBBPF = (1, 0)

#: Drivers with native (driver-mode) XDP support in mainline Linux.
NATIVE_XDP_DRIVERS = frozenset({
    "veth", "virtio_net", "tun", "tap", "mlx4_en", "mlx4_core", "mlx5_core", "i40e", "ice",
    "ixgbe", "ixgbevf", "igb", "igc", "bnxt_en", "nfp", "ena", "qede", "thunder", "nicvf",
    "sfc", "sfc_siena", "dpaa", "dpaa2", "dpaa2-eth", "fsl_dpaa2_eth", "stmmac", "netsec",
    "mvneta", "mvpp2", "cpsw", "lan966x", "lan966x-switch", "fec", "gve", "hv_netvsc",
    "bonding", "enetc", "ionic", "tsnep", "mtk_soc_eth", "mana", "octeontx2-nicpf",
    "octeontx2-nicvf", "xen-netfront", "atlantic", "bcmgenet", "am65-cpsw-nuss", "idpf",
    "fbnic", "ixgbe_vf", "qlcnic", "lan743x",
})

_RUN_AS_ROOT = "run as root (sudo xdpkit ...)"


@dataclass
class Check:
    """One doctor finding. ``status`` is "ok", "warn" or "fail"; ``fix`` says what to run."""

    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# ---- small parsers (unit-tested) ---------------------------------------------------------------
def parse_version(text: str) -> tuple[int, ...]:
    """Leading numeric dotted part of a version: "6.18.0-1-amd64" -> (6, 18, 0)."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    if not m:
        return ()
    return tuple(int(x) for x in m.group(1).split("."))


def version_at_least(version: tuple[int, ...], minimum: tuple[int, ...]) -> bool:
    """Compare versions of any length, missing parts count as 0."""
    n = max(len(version), len(minimum))
    pad = lambda v: tuple(v) + (0,) * (n - len(v))  # noqa: E731
    return pad(version) >= pad(minimum)


def parse_capeff(status_text: str) -> int:
    """The CapEff bitmask from the text of /proc/<pid>/status (0 if absent)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return 0


def has_cap(mask: int, cap: int) -> bool:
    return bool(mask >> cap & 1)


def clang_major(version_line: str) -> int | None:
    """Major version from ``clang --version``'s first line ("Debian clang version 14.0.6")."""
    m = re.search(r"version\s+(\d+)\.", version_line)
    return int(m.group(1)) if m else None


def fstype_at(mounts_text: str, mountpoint: str) -> str | None:
    """Filesystem type visible at ``mountpoint`` per /proc/self/mounts (the last mount wins)."""
    found = None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].replace("\\040", " ") == mountpoint:
            found = parts[2]
    return found


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


# ---- machine checks --------------------------------------------------------------------------
def _check_kernel() -> Check:
    release = platform.release()
    ver = parse_version(release)
    if not version_at_least(ver, MIN_KERNEL):
        return Check("kernel", FAIL, f"Linux {release}: XDP needs 4.18 or newer",
                     "upgrade the kernel (apt-get install linux-image-amd64) and reboot")
    if not version_at_least(ver, RECOMMENDED_KERNEL):
        return Check("kernel", WARN, f"Linux {release}: works, but 5.10+ is recommended "
                     "(bpf_link XDP, BTF, test_run features)",
                     "upgrade the kernel (apt-get install linux-image-amd64) and reboot")
    return Check("kernel", OK, f"Linux {release}")


def _check_libbpf() -> Check:
    lib = _libbpf.lib
    if lib is None:
        return Check("libbpf", FAIL, f"libbpf.so.1 not loadable: {_libbpf.load_error}",
                     "apt-get install libbpf1")
    try:
        ver = (lib.libbpf_major_version(), lib.libbpf_minor_version())
    except AttributeError:
        return Check("libbpf", FAIL, "libbpf too old (no libbpf_major_version): 1.0+ needed",
                     "apt-get install libbpf1")
    text = f"libbpf {ver[0]}.{ver[1]}"
    if not version_at_least(ver, MIN_LIBBPF):
        return Check("libbpf", FAIL, f"{text}: 1.0 or newer is needed", "apt-get install libbpf1")
    return Check("libbpf", OK, text)


def _check_bpf_syscall() -> Check:
    lib = _libbpf.lib
    if lib is None:
        return Check("bpf syscall", FAIL, "cannot test: libbpf missing", "apt-get install libbpf1")
    fd = lib.bpf_map_create(MapType.ARRAY, b"xdpkit_probe", 4, 4, 1, ffi.NULL)
    if fd < 0:
        err = -fd
        if err in (E.EPERM, E.EACCES):
            return Check("bpf syscall", FAIL, f"bpf(BPF_MAP_CREATE) refused: {os.strerror(err)}",
                         _RUN_AS_ROOT + "; or allow unprivileged BPF: sysctl -w kernel.unprivileged_bpf_disabled=0")
        if err == E.ENOSYS:
            return Check("bpf syscall", FAIL, "the kernel has no bpf() syscall (CONFIG_BPF_SYSCALL)",
                         "use a kernel built with CONFIG_BPF_SYSCALL=y")
        return Check("bpf syscall", FAIL, f"bpf(BPF_MAP_CREATE) failed: {os.strerror(err)}",
                     _RUN_AS_ROOT)
    os.close(fd)
    return Check("bpf syscall", OK, "bpf() works (created and closed an array map)")


def _check_jit() -> Check:
    fix = "sysctl -w net.core.bpf_jit_enable=1"
    text = _read("/proc/sys/net/core/bpf_jit_enable")
    if text is None:
        # The sysctl exists only in the initial network namespace (so not under `ip netns
        # exec`): ask the kernel whether a freshly loaded program got JIT-compiled instead.
        jited = _probe_jited()
        if jited:
            return Check("jit", OK, "BPF JIT enabled (a probe program was JIT-compiled)")
        if jited is False:
            return Check("jit", WARN, "BPF JIT disabled: programs are interpreted (slow)",
                         fix + "  # in the initial network namespace")
        return Check("jit", WARN, "cannot tell whether the BPF JIT is on "
                     "(no /proc/sys/net/core/bpf_jit_enable in this network namespace)",
                     "cat /proc/sys/net/core/bpf_jit_enable  # from the initial network namespace")
    val = text.strip()
    if val == "1":
        return Check("jit", OK, "BPF JIT enabled")
    if val == "2":
        return Check("jit", WARN, "BPF JIT enabled in debug mode (logs every image)", fix)
    return Check("jit", WARN, f"BPF JIT disabled (bpf_jit_enable={val}): programs run slowly", fix)


def _check_btf() -> Check:
    if os.path.exists("/sys/kernel/btf/vmlinux"):
        return Check("btf", OK, "/sys/kernel/btf/vmlinux present")
    if not os.path.isdir("/sys/kernel"):
        return Check("btf", WARN, "/sys is not mounted", "mount -t sysfs sysfs /sys")
    return Check("btf", WARN, "no kernel BTF (/sys/kernel/btf/vmlinux): CO-RE relocations unavailable",
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")


def _check_bpffs(mounts: str) -> Check:
    fs = fstype_at(mounts, "/sys/fs/bpf")
    if fs == "bpf":
        return Check("bpffs", OK, "bpffs mounted at /sys/fs/bpf")
    return Check("bpffs", WARN,
                 "bpffs is not mounted at /sys/fs/bpf (pinning there fails). Inside `ip netns exec` "
                 "this is expected: /sys is a fresh sysfs there, and xdpkit pins under "
                 "/run/xdpkit/bpffs instead",
                 "mount -t bpf bpf /sys/fs/bpf")


def _check_tracefs(mounts: str, caps: int) -> Check:
    for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        if fstype_at(mounts, d) == "tracefs":
            return Check("tracefs", OK, f"tracefs mounted at {d} (bpf_printk output readable)")
    fix = "mount -t tracefs tracefs /sys/kernel/tracing"
    filesystems = _read("/proc/filesystems") or ""
    if "tracefs" not in filesystems.split():
        return Check("tracefs", WARN, "this kernel has no tracefs: bpf_printk output cannot be read",
                     "use a kernel built with CONFIG_FTRACE=y, then " + fix)
    if not os.path.isdir("/sys/kernel/tracing"):
        return Check("tracefs", WARN, "tracefs not mounted and /sys/kernel/tracing missing",
                     "mount -t sysfs sysfs /sys && " + fix)
    how = ("`xdpkit trace` mounts it on demand" if has_cap(caps, CAP_SYS_ADMIN)
           else "mounting it needs CAP_SYS_ADMIN (root)")
    return Check("tracefs", WARN, f"tracefs not mounted (the kernel supports it; {how})", fix)


def _check_caps(caps: int) -> Check:
    have = [n for c, n in sorted(_CAP_NAMES.items()) if has_cap(caps, c)]
    detail = f"CapEff={caps:#x}: " + (", ".join(have) if have else "none of the BPF-relevant ones")
    if not (has_cap(caps, CAP_SYS_ADMIN) or has_cap(caps, CAP_BPF)):
        return Check("capabilities", FAIL, detail + " (loading BPF needs CAP_BPF or CAP_SYS_ADMIN)",
                     _RUN_AS_ROOT)
    if not has_cap(caps, CAP_NET_ADMIN):
        return Check("capabilities", WARN, detail + " (attaching XDP needs CAP_NET_ADMIN)", _RUN_AS_ROOT)
    if not (has_cap(caps, CAP_SYS_ADMIN) or has_cap(caps, CAP_PERFMON)):
        return Check("capabilities", WARN, detail + " (bpf_printk and pointer leaks need CAP_PERFMON)",
                     _RUN_AS_ROOT)
    return Check("capabilities", OK, detail)


def _check_clang() -> Check:
    from xdpkit.compile import clang_version, find_clang
    from xdpkit.errors import NotSupportedError

    fix = "apt-get install clang"
    try:
        clang = find_clang()
    except NotSupportedError:
        return Check("clang", WARN, "clang not found: needed only to compile BPF C "
                     "(prebuilt objects and built-in apps work without it)", fix)
    if not (os.path.isfile(clang) or shutil.which(clang)):
        return Check("clang", WARN, f"clang {clang!r} (from $XDPKIT_CLANG) not found", fix)
    try:
        line = clang_version(clang)
    except OSError as exc:
        return Check("clang", WARN, f"cannot run {clang}: {exc.strerror}", fix)
    major = clang_major(line)
    if major is None:
        return Check("clang", WARN, f"{clang}: unrecognised version {line!r}", fix)
    if major < MIN_CLANG:
        return Check("clang", WARN, f"{clang}: clang {major} is too old; BPF needs {MIN_CLANG}+", fix)
    return Check("clang", OK, f"{clang}: {line}")


# ---- the 2-instruction XDP program ----------------------------------------------------------
def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """struct bpf_insn {u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm} (little-endian host)."""
    return struct.pack("=BBhi", code, (src << 4) | dst, off, imm)


def xdp_pass_insns() -> bytes:
    """``r0 = XDP_PASS; exit`` as raw bytecode."""
    return _insn(BPF_ALU64_MOV_K, dst=0, imm=Verdict.XDP_PASS) + _insn(BPF_JMP_EXIT)


def load_pass_program() -> int:
    """Load the 2-insn XDP_PASS program and return its fd (caller closes). Raises OSError."""
    lib = _libbpf.require()
    insns = xdp_pass_insns()
    buf = ffi.from_buffer(insns)
    fd = lib.bpf_prog_load(ProgType.XDP, b"xdpkit_probe", b"GPL", buf, len(insns) // 8, ffi.NULL)
    if fd < 0:
        raise OSError(-fd, f"BPF_PROG_LOAD: {os.strerror(-fd)}")
    return fd


def _probe_jited() -> bool | None:
    """Load the probe program and report whether the kernel JIT-compiled it (None: unknown)."""
    try:
        fd = load_pass_program()
    except (OSError, XdpkitError):
        return None
    try:
        info = ffi.new("struct bpf_prog_info *")
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
        if _libbpf.require().bpf_obj_get_info_by_fd(fd, info, size) != 0:
            return None
        return info.jited_prog_len > 0
    finally:
        os.close(fd)


def _test_run(fd: int, data: bytes, *, flags: int = 0, ctx: bytes | None = None) -> tuple[int, int]:
    """BPF_PROG_TEST_RUN once: returns (syscall result, retval)."""
    lib = _libbpf.require()
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    data_in = ffi.from_buffer(data)
    opts.data_in = data_in
    opts.data_size_in = len(data)
    out = None
    if not flags & BPF_F_TEST_XDP_LIVE_FRAMES:
        out = ffi.new("char[]", len(data) + 256)
        opts.data_out = out
        opts.data_size_out = len(data) + 256
    ctx_buf = None
    if ctx is not None:
        ctx_buf = ffi.from_buffer(ctx)
        opts.ctx_in = ctx_buf
        opts.ctx_size_in = len(ctx)
    opts.repeat = 1
    opts.flags = flags
    ret = lib.bpf_prog_test_run_opts(fd, opts)
    return ret, opts.retval


# A 64-byte frame to a local-experimental EtherType (0x88b5): nothing in the stack consumes it.
_PROBE_FRAME = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(50)


def _check_test_run() -> list[Check]:
    lib = _libbpf.lib
    if lib is None:
        return [Check("test_run", FAIL, "cannot test: libbpf missing", "apt-get install libbpf1")]
    try:
        fd = load_pass_program()
    except OSError as exc:
        fix = _RUN_AS_ROOT if exc.errno in (E.EPERM, E.EACCES) else "upgrade the kernel to 5.10 or newer"
        return [Check("test_run", FAIL, f"cannot load an XDP program: {exc.strerror}", fix),
                Check("live_frames", WARN, "not tested: no XDP program could be loaded", fix)]
    try:
        ret, retval = _test_run(fd, _PROBE_FRAME)
        if ret < 0:
            c1 = Check("test_run", FAIL, f"BPF_PROG_TEST_RUN failed: {os.strerror(-ret)}",
                       "upgrade the kernel to 5.10 or newer")
        elif retval != Verdict.XDP_PASS:
            c1 = Check("test_run", FAIL, f"BPF_PROG_TEST_RUN returned {retval}, expected {int(Verdict.XDP_PASS)}",
                       "upgrade the kernel to 5.10 or newer")
        else:
            c1 = Check("test_run", OK, "BPF_PROG_TEST_RUN works (XDP_PASS on a 64-byte frame)")
        # struct xdp_md {data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex}
        ctx = struct.pack("=6I", 0, len(_PROBE_FRAME), 0, 1, 0, 0)  # lo is ifindex 1 in every netns
        ret, _ = _test_run(fd, _PROBE_FRAME, flags=BPF_F_TEST_XDP_LIVE_FRAMES, ctx=ctx)
        if ret == 0:
            c2 = Check("live_frames", OK, "BPF_F_TEST_XDP_LIVE_FRAMES works (traffic generation)")
        else:
            c2 = Check("live_frames", WARN,
                       f"BPF_F_TEST_XDP_LIVE_FRAMES unavailable ({os.strerror(-ret)}): "
                       "the live-frames traffic generator needs Linux 5.18+",
                       "upgrade the kernel to 5.18 or newer")
        return [c1, c2]
    finally:
        os.close(fd)


# ---- per-interface checks -------------------------------------------------------------------

def _driver_ioctl(ifname: str) -> str | None:
    """ETHTOOL_GDRVINFO through SIOCETHTOOL, in this thread's network namespace."""
    import ctypes

    buf = ctypes.create_string_buffer(196)
    struct.pack_into("=I", buf, 0, ETHTOOL_GDRVINFO)
    ifreq = struct.pack(f"{IFNAMSIZ}sP16x", ifname.encode()[:IFNAMSIZ - 1], ctypes.addressof(buf))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    except OSError:
        return None
    name = buf.raw[4:36].split(b"\0", 1)[0].decode(errors="replace")
    return name or None


def _driver_ethtool(ifname: str) -> str | None:
    exe = shutil.which("ethtool")
    if not exe:
        return None
    try:
        proc = subprocess.run([exe, "-i", ifname], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("driver:"):
            return line.split(":", 1)[1].strip() or None
    return None


def driver_of(ifname: str) -> str | None:
    """Kernel driver behind an interface (ethtool's ``driver:``), or None if unknown.

    veth has no /sys/class/net/IF/device link, so ethtool's GDRVINFO comes first; the sysfs
    link is the last resort (it only shows interfaces of the namespace /sys was mounted in).
    """
    drv = _driver_ioctl(ifname) or _driver_ethtool(ifname)
    if drv:
        return drv
    link = f"/sys/class/net/{ifname}/device/driver"
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def _native_probe(ifindex: int) -> tuple[bool, str]:
    """Attach the XDP_PASS program in driver mode and detach it at once."""
    from xdpkit._sys import netlink

    fd = load_pass_program()
    try:
        try:
            netlink.set_xdp(ifindex, fd, XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST)
        except OSError as exc:
            why = getattr(exc, "extack", "") or os.strerror(exc.errno or 0)
            return False, why
        netlink.set_xdp(ifindex, -1, XDP_FLAGS_DRV_MODE)
        return True, ""
    finally:
        os.close(fd)


def _iface_checks(link, probe: bool) -> list[Check]:
    name = link.ifname
    out: list[Check] = []
    drv = driver_of(name)
    if drv:
        out.append(Check(f"{name}: driver", OK, drv))
    else:
        out.append(Check(f"{name}: driver", WARN, "driver unknown (ethtool -i gave nothing)",
                         "apt-get install ethtool && ethtool -i " + name))
    attached = [(mode, pid) for mode, pid in (("native", link.drv_prog_id), ("generic", link.skb_prog_id),
                                              ("offload", link.hw_prog_id)) if pid]
    if attached:
        out.append(Check(f"{name}: xdp", OK, "attached: " + ", ".join(f"program {p} ({m})" for m, p in attached)))
    else:
        out.append(Check(f"{name}: xdp", OK, "no XDP program attached"))

    known = drv in NATIVE_XDP_DRIVERS if drv else False
    generic_fix = f"attach in generic mode: ip link set dev {name} xdpgeneric obj PROG.o sec xdp"
    if probe and not attached:
        try:
            ok, why = _native_probe(link.ifindex)
        except (OSError, XdpkitError) as exc:
            out.append(Check(f"{name}: native", WARN, f"native: probe failed ({exc})", generic_fix))
        else:
            if ok:
                out.append(Check(f"{name}: native", OK, f"native: yes (probed; driver {drv or 'unknown'})"))
            else:
                out.append(Check(f"{name}: native", WARN,
                                 f"native: no (driver {drv or 'unknown'} refused: {why}); "
                                 "generic mode works everywhere", generic_fix))
        return out
    suffix = " (not probed: a program is attached)" if probe and attached else ""
    if known:
        out.append(Check(f"{name}: native", OK, f"native: yes (driver {drv}){suffix}"))
    else:
        out.append(Check(f"{name}: native", WARN,
                         f"native: unknown (driver {drv or 'unknown'}), generic mode works everywhere"
                         + suffix, generic_fix))
    return out


def run_checks(ifaces: list[str] | None = None, probe: bool = False) -> list[Check]:
    """Check this machine (kernel, bpf(), JIT, BTF, bpffs, tracefs, capabilities, clang,
    libbpf, BPF_PROG_TEST_RUN, live frames) and interfaces for XDP.

    ``ifaces``: interfaces to check (default: every interface of the current network namespace
    except ``lo``). For each: its driver, whether an XDP program is attached, and whether native
    (driver-mode) XDP is supported, judged from a list of drivers known to support it.

    ``probe=True`` tests native XDP for real on interfaces with no program attached: it attaches a
    2-instruction XDP_PASS program in driver mode and detaches it right away. **Warning: on real
    NICs a native attach or detach may reconfigure the rings and reset the link (a short outage,
    dropped packets, a link flap).** Use it on veths, in a lab, or in a maintenance window.
    """
    from xdpkit._sys import netlink

    mounts = _read("/proc/self/mounts") or ""
    caps = parse_capeff(_read("/proc/self/status") or "")
    checks = [_check_kernel(), _check_libbpf(), _check_bpf_syscall(), _check_jit(), _check_btf(),
              _check_bpffs(mounts), _check_tracefs(mounts, caps), _check_caps(caps), _check_clang()]
    checks.extend(_check_test_run())

    links = {ln.ifname: ln for ln in netlink.list_links()}
    names = [n for n in links if n != "lo"] if ifaces is None else list(ifaces)
    for name in names:
        link = links.get(name)
        if link is None:
            checks.append(Check(f"{name}: interface", FAIL, "no such interface in this network namespace",
                                "ip link show  # pick an existing name; inside a namespace: ip netns exec NS ..."))
            continue
        checks.extend(_iface_checks(link, probe))
    return checks


def tracepoint_exists(category: str, name: str) -> bool:
    """Whether tracepoint ``category:name`` exists on this kernel (e.g. "xdp", "xdp_redirect_map_err").

    Looks in tracefs's events directory, mounting tracefs if needed; raises XdpkitError when
    tracefs cannot be mounted (the answer would be unknown, not "no").
    """
    from xdpkit.tracefs import ensure_tracefs

    if "/" in category or "/" in name or category in ("", ".", "..") or name in ("", ".", ".."):
        return False
    root = ensure_tracefs()
    return os.path.isdir(os.path.join(root, "events", category, name))
