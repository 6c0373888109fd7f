"""xdpkit: compile, load, attach, inspect and test XDP programs from Python.

The public names are imported on first use, so that ``import xdpkit.compile`` (as the wheel
build does to compile the built-in programs) needs neither cffi nor libbpf.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "compile_file": "xdpkit.compile",
    "Object": "xdpkit.object", "ObjectSpec": "xdpkit.object",
    "Program": "xdpkit.program", "RunResult": "xdpkit.program", "Verdict": "xdpkit.program",
    "Attachment": "xdpkit.xdp", "XdpLink": "xdpkit.xdp", "BpfXdpLink": "xdpkit.xdp",
    "NetlinkXdpLink": "xdpkit.xdp",
    "XdpMode": "xdpkit.xdp", "query": "xdpkit.xdp",
    **{name: "xdpkit.errors" for name in (
        "XdpkitError", "KernelError", "LoadError", "VerifierError", "CompileError", "AttachError",
        "ConfigError", "NotFoundError", "NotSupportedError")},
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        try:  # a submodule: xdpkit.maps, xdpkit.kernel, ...
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
