"""The whole xdpkit exception tree.

Every error a user can cause or meet derives from XdpkitError and carries an optional ``hint``:
one line saying what to do about it. The CLI prints ``str(error)`` and the hint, nothing else.
"""
from __future__ import annotations

import errno as _errno
import os
import re


class XdpkitError(Exception):
    """Root of every error raised by xdpkit."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class KernelError(XdpkitError, OSError):
    """A system call failed. ``errno`` and the name of the ``syscall`` are kept."""

    def __init__(self, syscall: str, err: int, detail: str = "", *, hint: str | None = None):
        self.syscall = syscall
        name = _errno.errorcode.get(err, str(err))
        text = f"{syscall} failed: {os.strerror(err)} ({name})"
        if detail:
            text = f"{detail}: {text}"
        XdpkitError.__init__(self, text, hint=hint)
        self.errno = err
        self.strerror = os.strerror(err)

    def __str__(self) -> str:  # OSError would format its own way
        return self.args[0]


class NotFoundError(XdpkitError, LookupError):
    """A named thing (interface, program, section, map, pin) does not exist."""


class ConfigError(XdpkitError, ValueError):
    """Bad user input: a key, a value, an argument or a config line. Names what is wrong."""

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None,
                 hint: str | None = None):
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field:
            where.append(field)
        if where:
            message = f"{', '.join(where)}: {message}"
        super().__init__(message, hint=hint)
        self.field = field
        self.line = line


class CompileError(XdpkitError):
    """clang failed. ``diagnostics`` holds clang's full output."""

    def __init__(self, source: str, diagnostics: str, *, hint: str | None = None):
        self.source = source
        self.diagnostics = diagnostics
        errors = [ln for ln in diagnostics.splitlines()
                  if ": error:" in ln or "fatal error:" in ln or ln.startswith("error:")]
        first = errors[0] if errors else (diagnostics.strip().splitlines() or ["clang failed"])[-1]
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        super().__init__(f"compile failed: {first}{more}", hint=hint)


class LoadError(KernelError):
    """The kernel or libbpf refused to load an object (other than a verifier rejection)."""


class VerifierError(LoadError):
    """The verifier rejected a program.

    ``str()`` is a short summary: the program, the verifier's complaint, the failing instruction
    and, when the object has BTF line info, the source line. ``log`` is the full verifier log.
    """

    def __init__(self, program: str, err: int, log: str):
        self.program = program
        self.log = log
        self.summary = summarize_verifier_log(log)
        KernelError.__init__(self, "BPF_PROG_LOAD", err, hint="run with -v to see the full verifier log")
        self.args = (f"verifier rejected program '{program}': {self.summary}",)


class AttachError(XdpkitError):
    """Attaching or detaching failed: says why (busy, mode unsupported, no device) and what to do."""

    def __init__(self, message: str, *, errno: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.errno = errno


class NotSupportedError(XdpkitError):
    """A feature is missing on this kernel or machine."""

    def __init__(self, feature: str, min_kernel: str | None = None, *, hint: str | None = None):
        self.feature = feature
        self.min_kernel = min_kernel
        text = f"not supported here: {feature}"
        if min_kernel:
            text += f" (needs Linux {min_kernel} or newer)"
        super().__init__(text, hint=hint)


class LabError(XdpkitError):
    """Building or tearing down the virtual lab failed."""


_LINE_RE = re.compile(r"^; (.*?) @ (\S+):(\d+)$")
_INSN_RE = re.compile(r"^(\d+): \((\w\w)\) (.*)$")


def summarize_verifier_log(log: str) -> str:
    """Reduce a verifier log to the complaint, the failing instruction and its source line."""
    lines = [ln.rstrip() for ln in log.splitlines() if ln.strip()]
    # The verifier's last meaningful lines are "processed N insns ..." and the complaint above.
    tail = [ln for ln in lines if not ln.startswith(("processed ", "verification time"))]
    if not tail:
        return "no verifier log"
    idx = len(tail) - 1
    # Skip libbpf/kernel trailers such as "-- END PROG LOAD LOG --".
    while idx > 0 and tail[idx].startswith("--"):
        idx -= 1
    complaint = tail[idx]
    insn = source = None
    for ln in reversed(tail[:idx]):
        if insn is None:
            m = _INSN_RE.match(ln)
            if m:
                insn = f"insn {m.group(1)}: {m.group(3)}"
                continue
        if insn is not None and source is None:
            m = _LINE_RE.match(ln)
            if m:
                source = f"{m.group(2)}:{m.group(3)}: {m.group(1).strip()}"
                break
            if ln.startswith("; "):
                source = ln[2:].strip()
                break
    parts = [complaint]
    if insn:
        parts.append(f"at {insn}")
    if source:
        parts.append(f"(source {source})")
    return " ".join(parts)
