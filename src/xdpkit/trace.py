"""Read bpf_printk() output from the kernel trace pipe.

``bpf_printk`` (``bpf_trace_printk``) writes into the global ftrace ring buffer; user space reads
it from ``<tracefs>/trace_pipe``. Reading trace_pipe *consumes* what it returns: two readers
(``xdpkit trace`` and ``cat trace_pipe`` at the same time) each see only part of the lines, and
lines read once are gone. Lines printed while nobody reads stay buffered (up to the buffer size)
and are returned by the next reader.

Inside ``ip netns exec`` the fresh /sys has no tracefs mounted; :func:`ensure_tracefs` mounts
it (the mount is private to that process's mount namespace).
"""
from __future__ import annotations

import ctypes
import errno as E
import os
import re
import select
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from xdpkit.errors import XdpkitError

TRACEFS = "/sys/kernel/tracing"
DEBUGFS_TRACING = "/sys/kernel/debug/tracing"
MOUNT_CMD = f"mount -t tracefs tracefs {TRACEFS}"


@dataclass
class TraceLine:
    """One line of trace_pipe. ``message`` is the bpf_printk text (or the event's payload)."""

    task: str
    pid: int
    cpu: int
    timestamp: float
    message: str
    raw: str
    function: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# "            ping-1234    [001] d.s21  1234.567890: bpf_trace_printk: hello world"
# Optional parts: "(  123)" tgid column (options/record-tgid), the irq-info flags column.
_LINE_RE = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*[-\d]+\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\[\]]{4,6})\s+)?"
    r"(?P<ts>\d+\.\d+):\s+"
    r"(?P<rest>.*)$"
)
_FUNC_RE = re.compile(r"^(?P<func>[\w.$]+):\s?(?P<msg>.*)$", re.S)


def parse_line(raw: str) -> TraceLine:
    """Parse one ftrace text line. Never raises: unparsable text comes back as the message.

    For ``bpf_trace_printk`` lines (and the old ``0:`` marker) ``message`` is what the program
    printed; for other events it is the text after the ``event_name:`` part.
    """
    raw = raw.rstrip("\n")
    m = _LINE_RE.match(raw)
    if not m:
        return TraceLine(task="", pid=0, cpu=-1, timestamp=0.0, message=raw.strip(), raw=raw)
    rest = m.group("rest")
    func = ""
    message = rest
    fm = _FUNC_RE.match(rest)
    if fm:
        func = fm.group("func")
        message = fm.group("msg")
    return TraceLine(task=m.group("task").strip(), pid=int(m.group("pid")), cpu=int(m.group("cpu")),
                     timestamp=float(m.group("ts")), message=message, raw=raw, function=func)


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


def stream(*, duration: float | None = None, count: int | None = None,
           match: str | None = None) -> Iterator[TraceLine]:
    """Yield lines from trace_pipe as they arrive (bpf_printk output of every program).

    Stops after ``count`` lines (after filtering) or ``duration`` seconds, whichever comes first;
    with neither it runs until the caller stops iterating. ``match`` keeps only lines whose text
    contains that substring. The pipe is polled, so ``duration`` holds even when nothing is
    printed. Reading consumes the lines: other trace_pipe readers will not see them.
    """
    if count is not None and count <= 0:
        return
    path = os.path.join(ensure_tracefs(), "trace_pipe")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise XdpkitError(f"cannot open {path}: {exc.strerror}", hint="run as root") from None
    deadline = None if duration is None else time.monotonic() + duration
    seen = 0
    pending = b""
    try:
        while True:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return
            # Wake at least every 0.5 s so a closed generator or a deadline is noticed promptly.
            wait = 0.5 if timeout is None else min(timeout, 0.5)
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except InterruptedError:
                continue
            if not chunk:
                # trace_pipe never returns EOF while open; avoid a busy loop if it does.
                time.sleep(0.05)
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                if not raw.strip():
                    continue
                text = raw.decode(errors="replace")
                if match is not None and match not in text:
                    continue
                yield parse_line(text)
                seen += 1
                if count is not None and seen >= count:
                    return
    finally:
        os.close(fd)
