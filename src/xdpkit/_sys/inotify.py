"""inotify(7), raw: an instance, a watch on a directory, its event records (<sys/inotify.h>).
Python's standard library has no binding, so the three calls go through libc."""
from __future__ import annotations

import ctypes
import os
import struct

from xdpkit.errors import KernelError

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # struct inotify_event {wd, mask, cookie, len} + name[len]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def init() -> int:
    """A new non-blocking, close-on-exec inotify instance (an fd the caller closes)."""
    fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        raise KernelError("inotify_init1", ctypes.get_errno())
    return fd


def add_watch(fd: int, path: str, mask: int) -> int:
    wd = _libc.inotify_add_watch(fd, os.fsencode(path), mask)
    if wd < 0:
        raise KernelError("inotify_add_watch", ctypes.get_errno(), path)
    return wd


def rm_watch(fd: int, wd: int) -> None:
    """Drop a watch; one the kernel dropped already (its directory was deleted) is no error."""
    _libc.inotify_rm_watch(fd, wd)


def read_events(fd: int) -> list[tuple[int, int, str]]:
    """The queued events as (wd, mask, name); [] when none is queued."""
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        return []
    out = []
    off = 0
    while off + _EVENT.size <= len(buf):
        wd, mask, _cookie, n = _EVENT.unpack_from(buf, off)
        name = buf[off + _EVENT.size: off + _EVENT.size + n].split(b"\0", 1)[0]
        out.append((wd, mask, os.fsdecode(name)))
        off += _EVENT.size + n
    return out
