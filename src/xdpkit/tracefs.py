"""Where tracefs is: /sys/kernel/tracing (mounted there if needed), for bpf_printk output and
tracepoint probes. Core, because both `doctor` (features) and `trace` (observe) need it."""
from __future__ import annotations

import ctypes
import errno as E
import os

from xdpkit.errors import XdpkitError

TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
MOUNT_CMD = f"mount -t tracefs tracefs {TRACEFS}"


def _has_pipe(d: str) -> bool:
    return os.path.exists(os.path.join(d, "trace_pipe"))


def _mount_tracefs(target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                           ctypes.c_void_p]
    if libc.mount(b"tracefs", os.fsencode(target), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def ensure_tracefs() -> str:
    """Return the directory where tracefs is mounted, mounting it at /sys/kernel/tracing if needed.

    Order: /sys/kernel/tracing, then /sys/kernel/debug/tracing (whichever has ``trace_pipe``),
    else ``mount -t tracefs tracefs /sys/kernel/tracing``. Under ``ip netns exec`` /sys is a fresh
    sysfs, so the mount is needed there. Raises XdpkitError (with a hint) when it cannot.
    """
    if _has_pipe(TRACEFS):
        return TRACEFS
    try:
        if _has_pipe(DEBUGFS_TRACING):
            return DEBUGFS_TRACING
    except OSError:  # debugfs may refuse access entirely
        pass
    if not os.path.isdir(TRACEFS):
        raise XdpkitError(f"tracefs is not available: {TRACEFS} does not exist",
                          hint="the kernel needs CONFIG_FTRACE; or mount sysfs on /sys first: "
                               "mount -t sysfs sysfs /sys")
    try:
        _mount_tracefs(TRACEFS)
    except OSError as exc:
        hint = f"run as root, or mount it yourself: {MOUNT_CMD}"
        if exc.errno == E.ENODEV:
            hint = "this kernel has no tracefs (CONFIG_FTRACE); bpf_printk output cannot be read"
        raise XdpkitError(f"cannot mount tracefs at {TRACEFS}: {exc.strerror}", hint=hint) from None
    if not _has_pipe(TRACEFS):
        raise XdpkitError(f"tracefs mounted at {TRACEFS} but it has no trace_pipe", hint=MOUNT_CMD)
    return TRACEFS
