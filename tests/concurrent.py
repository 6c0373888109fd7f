"""Two writers at once, each a process of its own that opens an app on an interface and applies
its config again and again (the transaction tests of every app use it)."""
import subprocess
import sys

WRITER = """
import sys
from importlib import import_module
module, name, parser, iface, path, times = sys.argv[1:7]
app = getattr(import_module(module), name)
parse_config = import_module(parser).parse_config
text = open(path).read()
with app.open(iface) as handle:
    for _ in range(int(times)):
        handle.apply(parse_config(text))
"""


def apply_at_once(ns, app: str, parser: str, iface: str, configs, times: int) -> None:
    """Start one writer per config file in namespace ``ns`` at the same time and wait for all;
    each must exit 0. ``app`` is "module:Class", ``parser`` the module with parse_config."""
    module, name = app.split(":")
    procs = [subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", WRITER, module, name,
                               parser, iface, str(path), str(times)], stderr=subprocess.PIPE, text=True)
             for path in configs]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
