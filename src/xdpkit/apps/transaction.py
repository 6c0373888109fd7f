"""Control-plane transactions: one writer at a time per app instance, and a switch that a
signal cannot cut in half.

Every change an app makes to its kernel tables (apply, rule and backend edits, the health
loop) runs inside ``exclusive(prog_id)``: an flock on /run/xdpkit/locks/prog-ID.lock, so
writers in different processes (two operators, an operator and the node agent) take turns,
and a writer that dies releases it with its last fd. Within one process the lock is
re-entrant per thread and exclusive between threads.

Inside, an app writes only what packets do not read (the inactive generation), calling
``checkpoint()`` between writes, then switches with one write. A Ctrl-C, SIGTERM or SIGHUP
during the writes becomes KeyboardInterrupt at the next checkpoint, so the app rolls back; one
during the switch acts once the switch is done.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import threading
import time

from xdpkit.errors import XdpkitError

LOCK_DIR = "/run/xdpkit/locks"
_INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Held:
    """A lock file of this process: the thread holding it and how deeply."""

    def __init__(self):
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd = -1


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


def lock_path(prog_id: int) -> str:
    return os.path.join(LOCK_DIR, f"prog-{prog_id}.lock")


def _open_lock_file(path: str) -> int:
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        hint = "run as root: changing an XDP app's maps needs CAP_BPF and CAP_NET_ADMIN anyway" \
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else None
        raise XdpkitError(f"cannot open the apply lock {path}: {exc.strerror}", hint=hint) from None


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
        return f" (held by pid {pid})" if pid.isdigit() else ""
    except (OSError, UnicodeDecodeError):
        return ""


@contextlib.contextmanager
def exclusive(prog_id: int, *, on_wait=None):
    """Hold the apply lock of program ``prog_id`` for the block.

    ``on_wait(message)`` is called once if another writer holds it (then this one waits).
    """
    path = lock_path(prog_id)
    with _held_guard:
        held = _held.setdefault(path, _Held())
    with held.thread_lock:
        if held.depth == 0:
            fd = _open_lock_file(path)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if on_wait is not None:
                        on_wait(f"waiting for another change to program {prog_id} to finish{_holder(fd)}")
                    # polled, not blocking: a blocking flock is restarted after a signal that
                    # was only noted, so a SIGTERM could not stop a writer stuck behind another
                    while True:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            checkpoint()
                            time.sleep(0.02)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            held.fd = fd
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                os.close(held.fd)  # releases the flock
                held.fd = -1


def remove_lock(prog_id: int) -> None:
    """Forget the lock file of a program that is gone (after unload)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_path(prog_id))


def _not_ignored(signals) -> list:
    # a signal the process was started to ignore (nohup, a shell's background job) stays ignored
    return [s for s in signals if signal.getsignal(s) is not signal.SIG_IGN]


class _Signals:
    """Signals noted during a transaction: ``checkpoint()`` turns them into KeyboardInterrupt."""

    def __init__(self):
        self.pending: list[int] = []
        self.raised = False


_noted: _Signals | None = None


@contextlib.contextmanager
def interruptible():
    """SIGINT, SIGTERM and SIGHUP are noted instead of acting at once; ``checkpoint()`` raises
    KeyboardInterrupt at the writer's next safe point, so it can roll back. A signal that came
    after the last checkpoint (during the switch) acts when the block is over.

    Raising from the handler itself would be unsafe: Python may run it inside a weakref
    callback or a __del__, where the exception is printed and dropped.
    """
    global _noted
    if threading.current_thread() is not threading.main_thread() or _noted is not None:
        yield  # signals go to the main thread; a nested block shares the outer one
        return
    noted = _noted = _Signals()
    old = {s: signal.signal(s, lambda signum, frame: noted.pending.append(signum))
           for s in _not_ignored(_INTERRUPTING)}
    try:
        yield
    finally:
        _noted = None
        for s, h in old.items():
            signal.signal(s, h)
        if not noted.raised:
            for s in dict.fromkeys(noted.pending):
                signal.raise_signal(s)  # now the usual action: KeyboardInterrupt, or exit


def checkpoint() -> None:
    """Raise KeyboardInterrupt if a signal was noted: the writer stops here and rolls back."""
    noted = _noted
    if noted is not None and noted.pending and not noted.raised \
            and threading.current_thread() is threading.main_thread():
        noted.raised = True
        raise KeyboardInterrupt(signal.Signals(noted.pending[0]).name)
