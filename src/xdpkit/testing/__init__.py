"""Testing helpers for XDP programs: the pytest plugin (fixtures, markers, leak checks).

The plugin is registered through the ``pytest11`` entry point, so installing xdpkit is enough;
do not also list it in ``pytest_plugins`` (pytest would register it twice). The leak-check
functions are re-exported for use outside fixtures.
"""
from xdpkit.testing.plugin import NetnsHandle, Snapshot, check_leaks, diff, kernel_unavailable, snapshot

__all__ = ["NetnsHandle", "Snapshot", "check_leaks", "diff", "kernel_unavailable", "snapshot"]
