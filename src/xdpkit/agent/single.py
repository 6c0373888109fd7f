"""One agent per network namespace. Two would undo each other's changes, so an agent first
binds an abstract unix socket: abstract names belong to the network namespace, and the kernel
frees the name when the process dies, kill -9 included, so no stale lock is ever left. An agent
that finds the name taken (a rolling update's old pod still stopping, say) waits for it.
"""
from __future__ import annotations

import errno
import socket
import struct
import time

from xdpkit.errors import XdpkitError

NAME = b"\0xdpkit-agent"
SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)


def _holder() -> int | None:
    """The pid of the agent holding the name (its listening socket's credentials)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(NAME)
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, 12))
        return pid
    except OSError:
        return None
    finally:
        s.close()


class NamespaceClaim:
    def __init__(self):
        self._sock: socket.socket | None = None

    def acquire(self, *, on_wait=None, stopping=lambda: False, poll: float = 0.2) -> bool:
        """Hold the name; ``on_wait(pid)`` once if another agent has it (then wait for it).
        False if ``stopping()`` became true while waiting."""
        told = False
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.bind(NAME)
                s.listen(16)
                self._sock = s
                return True
            except OSError as exc:
                s.close()
                if exc.errno != errno.EADDRINUSE:
                    raise XdpkitError(f"cannot claim this network namespace for the agent: {exc.strerror}") from None
            if not told and on_wait is not None:
                on_wait(_holder())
                told = True
            if stopping():
                return False
            time.sleep(poll)

    def close(self) -> None:
        s, self._sock = self._sock, None
        if s is not None:
            s.close()
