"""xdpkit: compile, load, attach, inspect and test XDP programs from Python."""
from xdpkit.compile import compile_file
from xdpkit.errors import (AttachError, CompileError, ConfigError, KernelError, LoadError,
                           NotFoundError, NotSupportedError, VerifierError, XdpkitError)
from xdpkit.object import Object, ObjectSpec
from xdpkit.program import Program, RunResult, Verdict
from xdpkit.xdp import Attachment, BpfXdpLink, NetlinkXdpLink, XdpMode, query

__version__ = "0.1.0"

__all__ = ["compile_file", "Object", "ObjectSpec", "Program", "RunResult", "Verdict", "XdpMode",
           "Attachment", "BpfXdpLink", "NetlinkXdpLink", "query", "XdpkitError", "KernelError",
           "LoadError", "VerifierError", "CompileError", "AttachError", "ConfigError",
           "NotFoundError", "NotSupportedError", "__version__"]
