"""Network namespaces: create, remove, list, and run code inside one (per thread).

setns(CLONE_NEWNET) switches only the calling thread, so ``inside(name)`` is safe to use from
tests and from worker threads; it always returns to the namespace the thread came from.
"""
from __future__ import annotations

import contextlib
import os

from pyroute2 import netns as _netns

from xdpkit.errors import NotFoundError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


def list_namespaces() -> list[str]:
    return sorted(_netns.listnetns())


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def create(name: str) -> None:
    if not exists(name):
        _netns.create(name)


def remove(name: str) -> None:
    if exists(name):
        _netns.remove(name)


def _setns(fd: int) -> None:
    from xdpkit._sys.libbpf import ffi, libc

    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ffi.errno
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(name: str):
    """Run the block with this thread in network namespace ``name``."""
    path = os.path.join(NETNS_RUN_DIR, name)
    if not os.path.exists(path):
        raise NotFoundError(f"no network namespace named {name!r}", hint="see `ip netns list`")
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def current_id() -> int:
    """Inode of this thread's network namespace (to tell namespaces apart)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def id_of(name: str) -> int:
    """Inode of a named network namespace (compare with current_id)."""
    return os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino
