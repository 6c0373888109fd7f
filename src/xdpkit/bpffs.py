"""Where xdpkit pins BPF objects: a bpffs directory that every process can see.

Why not always /sys/fs/bpf?  ``ip netns exec NS`` mounts a fresh /sys for the command it runs,
and that /sys has no bpffs: a pin made under /sys/fs/bpf there goes into a private, throw-away
mount (or fails), and a pin made outside is invisible inside.  A bpffs mounted at a path
outside /sys in the *root mount namespace* (/run/xdpkit/bpffs) is visible from every
``ip netns exec`` and outlives the process that mounted it.

So :func:`pin_root` prefers the system bpffs at /sys/fs/bpf when it is really mounted there (as
seen by this process), and otherwise mounts, or reuses, the bpffs at /run/xdpkit/bpffs.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno as E
import os

from xdpkit.errors import XdpkitError
from xdpkit.kernel import BPF_FS_MAGIC

SYS_BPFFS = "/sys/fs/bpf"
RUN_BPFFS = "/run/xdpkit/bpffs"
SUBDIR = "xdpkit"


class _Statfs(ctypes.Structure):
    # struct statfs on 64-bit Linux: only f_type (the first field) is read; the padding covers
    # the rest of the structure generously so the kernel never writes past our buffer.
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 256)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Statfs)]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]


def is_bpffs(path: str) -> bool:
    """True if ``path`` (a mount point or anything below one) lives on a bpf filesystem.

    statfs() is used rather than parsing /proc/self/mounts: /sys/fs/bpf is listed there twice
    (the sysfs directory and the bpffs stacked on it), and a path below a mount point has no
    line of its own.
    """
    buf = _Statfs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) != 0:
        return False  # missing or unreadable: certainly not a usable bpffs
    return (buf.f_type & 0xFFFFFFFF) == BPF_FS_MAGIC


#: Who may change pins: root only. A bpffs is mounted mode 1777 by default, which would let any
#: user create xdpkit's pin root (and then delete root's pins in it).
MODE = 0o755


def _mount_bpffs(target: str) -> None:
    if _libc.mount(b"bpf", os.fsencode(target), b"bpf", 0, f"mode={MODE:o}".encode()) != 0:
        err = ctypes.get_errno()
        hint = f"mount it yourself: `mkdir -p {target} && mount -t bpf bpf {target}`"
        if err == E.EPERM:
            hint = f"run as root (CAP_SYS_ADMIN), or as root: `mount -t bpf bpf {target}`"
        raise XdpkitError(f"cannot mount a bpffs at {target}: {os.strerror(err)}", hint=hint)


def _makedirs(path: str, hint: str) -> None:
    try:
        os.makedirs(path, mode=MODE, exist_ok=True)
    except OSError as exc:
        raise XdpkitError(f"cannot create {path}: {exc.strerror}", hint=hint) from None


def _owned_by_root(path: str) -> None:
    """Pins go only where no other user can write: a directory an ordinary user made (or a
    bpffs mounted world-writable by an older xdpkit) is refused, or made safe when we are root."""
    st = os.stat(path)
    if st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022:
        return
    if os.geteuid() != 0:
        raise XdpkitError(f"{path} is writable by other users (owner uid {st.st_uid}, mode {st.st_mode & 0o7777:o})",
                          hint="as root: `chown root: {0} && chmod 755 {0}`".format(path))
    os.chown(path, 0, 0)
    os.chmod(path, MODE)


def existing_pin_roots() -> set[str]:
    """xdpkit's pin roots (either place pin_root() may use) that exist now."""
    return {p for p in (os.path.join(SYS_BPFFS, SUBDIR), os.path.join(RUN_BPFFS, SUBDIR)) if os.path.isdir(p)}


def remove_empty_pin_roots(keep: set[str]) -> None:
    """Remove the pin roots made since ``keep`` was taken (existing_pin_roots()) if they are
    empty: a run that pinned nothing for later leaves no directory behind."""
    for root in existing_pin_roots() - keep:
        with contextlib.suppress(OSError):  # not empty: someone pinned something there
            os.rmdir(root)


def pin_root(*, shared: bool = False) -> str:
    """A directory on a bpffs for xdpkit's pins; created (and its bpffs mounted) if needed.

    Returns /sys/fs/bpf/xdpkit when /sys/fs/bpf is a bpffs, else /run/xdpkit/bpffs/xdpkit
    (mounting a bpffs at /run/xdpkit/bpffs the first time, reusing it afterwards).
    ``shared=True`` always picks the latter: pins there are also visible to commands run
    through `ip netns exec`, which hides /sys/fs/bpf behind a fresh sysfs.
    """
    if not shared and is_bpffs(SYS_BPFFS):
        root = os.path.join(SYS_BPFFS, SUBDIR)
        _makedirs(root, hint=f"run as root, or `mkdir -p {root}`")
        _owned_by_root(root)
        return root
    _makedirs(RUN_BPFFS, hint=f"run as root, or `mkdir -p {RUN_BPFFS}`")
    if not is_bpffs(RUN_BPFFS):
        _mount_bpffs(RUN_BPFFS)
        if not is_bpffs(RUN_BPFFS):  # e.g. a read-only overlay swallowed the mount
            raise XdpkitError(f"{RUN_BPFFS} is not a bpffs after mounting one there",
                              hint=f"check `findmnt {RUN_BPFFS}`; or `mount -t bpf bpf /sys/fs/bpf`")
    _owned_by_root(RUN_BPFFS)
    root = os.path.join(RUN_BPFFS, SUBDIR)
    _makedirs(root, hint=f"check `findmnt {RUN_BPFFS}`")
    _owned_by_root(root)
    return root
