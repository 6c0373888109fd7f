"""Changes to the files of one directory, Kubernetes ConfigMap volumes included.

kubelet updates a ConfigMap volume by writing the new files into a fresh hidden directory and
renaming a ``..data`` symlink over the old one; the names users see are symlinks through
``..data``, so nothing happens to them. A watch on the directory itself sees that rename (a
``..data`` moved in), as well as plain edits, new and removed files and an editor's save by
rename. A directory that is removed or replaced is watched again once it is back.

    with DirWatch("/etc/xdpkit") as w:
        select([w, ...], [], [], timeout)     # readable: something changed
        w.changes()                           # the names, and the events are consumed
"""
from __future__ import annotations

from xdpkit._sys import inotify as ino
from xdpkit.errors import KernelError
from xdpkit.kernel import OwnedFd

_MASK = (ino.IN_CLOSE_WRITE | ino.IN_MOVED_TO | ino.IN_MOVED_FROM | ino.IN_CREATE | ino.IN_DELETE
         | ino.IN_ATTRIB | ino.IN_DELETE_SELF | ino.IN_MOVE_SELF | ino.IN_ONLYDIR)
_GONE = ino.IN_DELETE_SELF | ino.IN_MOVE_SELF | ino.IN_IGNORED


class DirWatch(OwnedFd):
    def __init__(self, path: str):
        super().__init__(ino.init())
        self.path = path
        self._wd: int | None = None
        self._rewatch()

    def _rewatch(self) -> bool:
        try:
            self._wd = ino.add_watch(self.fd, self.path, _MASK)
            return True
        except KernelError:
            self._wd = None  # not there (yet): changes() tries again
            return False

    @property
    def watching(self) -> bool:
        return self._wd is not None

    def fileno(self) -> int:
        return self.fd

    def changes(self) -> list[str]:
        """Names changed since the last call ("" for the directory itself); consumes the events."""
        names = []
        for wd, mask, name in ino.read_events(self.fd):
            if mask & _GONE:
                if self._wd is not None and wd == self._wd:
                    ino.rm_watch(self.fd, wd)   # a moved directory would go on reporting
                    self._wd = None
                names.append("")
            else:
                names.append(name)
        if self._wd is None and self._rewatch():
            names.append("")  # it is back: everything in it may be new
        return names
