"""Read bpf_printk() output from the kernel trace pipe.

``bpf_printk`` (``bpf_trace_printk``) writes into the global ftrace ring buffer; user space reads
it from ``<tracefs>/trace_pipe``. Reading trace_pipe *consumes* what it returns: two readers
(``xdpkit trace`` and ``cat trace_pipe`` at the same time) each see only part of the lines, and
lines read once are gone. Lines printed while nobody reads stay buffered (up to the buffer size)
and are returned by the next reader.

Inside ``ip netns exec`` the fresh /sys has no tracefs mounted; :func:`ensure_tracefs` mounts
it (the mount is private to that process's mount namespace).

Filtering by program (``stream(program=NAME)``): a printk line does not say which program
printed it, but its kernel stack does (JIT images are in kallsyms as ``bpf_prog_<tag>_<name>``,
the full BTF function name). So the filtered stream reads a private tracefs instance of its
own with the bpf_trace_printk event and the ``stacktrace`` option on, pairs each line with the
stack recorded right after it on the same CPU, and keeps the lines whose stack holds a program
of that name (or id). It does not consume the global trace_pipe and leaves no global option
changed; the instance is removed at the end. Unlike trace_pipe, it sees only what is printed
after it starts (an instance has no backlog).
"""
from __future__ import annotations

import errno as E
import os
import re
import select
import time
from dataclasses import asdict, dataclass
from typing import Iterator

from xdpkit.errors import NotFoundError, XdpkitError
from xdpkit.tracefs import ensure_tracefs  # noqa: F401 (also part of this module's API)


@dataclass
class TraceLine:
    """One line of trace_pipe. ``message`` is the bpf_printk text (or the event's payload)."""

    task: str
    pid: int
    cpu: int
    timestamp: float
    message: str
    raw: str
    function: str = ""
    program: str = ""  # innermost BPF program in the stack (filtered streams only)

    def to_dict(self) -> dict:
        return asdict(self)


# "            ping-1234    [001] d.s21  1234.567890: bpf_trace_printk: hello world"
# Optional parts: "(  123)" tgid column (options/record-tgid), the irq-info flags column.
_LINE_RE = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*[-\d]+\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\[\]]{4,6})\s+)?"
    r"(?P<ts>\d+\.\d+):\s+"
    r"(?P<rest>.*)$"
)
_FUNC_RE = re.compile(r"^(?P<func>[\w.$]+):\s?(?P<msg>.*)$", re.S)


def parse_line(raw: str) -> TraceLine:
    """Parse one ftrace text line. Never raises: unparsable text comes back as the message.

    For ``bpf_trace_printk`` lines (and the old ``0:`` marker) ``message`` is what the program
    printed; for other events it is the text after the ``event_name:`` part.
    """
    raw = raw.rstrip("\n")
    m = _LINE_RE.match(raw)
    if not m:
        return TraceLine(task="", pid=0, cpu=-1, timestamp=0.0, message=raw.strip(), raw=raw)
    rest = m.group("rest")
    func = ""
    message = rest
    fm = _FUNC_RE.match(rest)
    if fm:
        func = fm.group("func")
        message = fm.group("msg")
    return TraceLine(task=m.group("task").strip(), pid=int(m.group("pid")), cpu=int(m.group("cpu")),
                     timestamp=float(m.group("ts")), message=message, raw=raw, function=func)


def _read_pipe(path: str, deadline: float | None) -> Iterator[str | None]:
    """Lines of a trace_pipe as text; ``None`` when nothing arrived for a while (idle tick).

    Polled, so the deadline holds even when nothing is printed. Returns at the deadline.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise XdpkitError(f"cannot open {path}: {exc.strerror}", hint="run as root") from None
    pending = b""
    try:
        while True:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return
            # Wake at least every 0.5 s so a closed generator or a deadline is noticed promptly.
            wait = 0.5 if timeout is None else min(timeout, 0.5)
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                yield None
                continue
            try:
                chunk = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                continue
            if not chunk:
                # trace_pipe never returns EOF while open; avoid a busy loop if it does.
                time.sleep(0.05)
                continue
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                if raw.strip():
                    yield raw.decode(errors="replace")
    finally:
        os.close(fd)


def stream(*, duration: float | None = None, count: int | None = None,
           match: str | None = None, program: str | int | None = None) -> Iterator[TraceLine]:
    """Yield lines from trace_pipe as they arrive (bpf_printk output of every program).

    Stops after ``count`` lines (after filtering) or ``duration`` seconds, whichever comes first;
    with neither it runs until the caller stops iterating. ``match`` keeps only lines whose text
    contains that substring. The pipe is polled, so ``duration`` holds even when nothing is
    printed. Reading consumes the lines: other trace_pipe readers will not see them.

    ``program`` (a name, or an id as int or digits) keeps only what that program printed,
    read from a private tracefs instance instead (see the module docstring); each line's
    ``program`` field names the program.
    """
    if count is not None and count <= 0:
        return
    deadline = None if duration is None else time.monotonic() + duration
    if program is None:
        raw = _read_pipe(os.path.join(ensure_tracefs(), "trace_pipe"), deadline)
        try:
            yield from _limit((parse_line(t) for t in raw if t is not None), count, match)
        finally:
            raw.close()
        return
    want = ProgramFilter(program)
    want.require_loaded()
    with _PrintkInstance() as inst:
        raw = _read_pipe(inst.pipe, deadline)
        try:
            lines = (ln for ln in attribute_stacks(raw) if want.matches(ln))
            yield from _limit(lines, count, match)
        finally:
            raw.close()  # closes the pipe now, so the instance can be removed


def _limit(lines: Iterator[TraceLine], count: int | None, match: str | None) -> Iterator[TraceLine]:
    seen = 0
    for line in lines:
        if match is not None and match not in line.raw:
            continue
        yield line
        seen += 1
        if count is not None and seen >= count:
            return


# ---- attributing printk lines to programs --------------------------------------------------

# JIT images in kallsyms: bpf_prog_<tag>_<name>, or bpf_prog_<tag> for a program without a name.
_KSYM_RE = re.compile(r"^bpf_prog_(?P<tag>[0-9a-f]{16})(?:_(?P<name>\S*?))?"
                      r"(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?:\s.*)?$")
STACK_MARKER = "<stack trace>"


def stack_programs(frames: list[str]) -> list[tuple[str, str]]:
    """(tag, name) of each BPF program frame in a stack, innermost first."""
    out = []
    for f in frames:
        m = _KSYM_RE.match(f.strip().removeprefix("=>").strip())
        if m:
            out.append((m.group("tag"), m.group("name") or ""))
    return out


def attribute_stacks(raw_lines) -> Iterator[TraceLine]:
    """Pair bpf_trace_printk lines with the ``<stack trace>`` entry that follows on the same CPU.

    ``raw_lines`` are text lines, or None for "nothing arrived for a while" (a stack's frame
    lines are complete then). Yields each printk line with ``program`` set and
    ``stack_programs`` (private attribute ``_progs``) for filtering; lines whose stack never
    came are dropped, since they cannot be attributed.
    """
    pending: dict[int, TraceLine] = {}  # cpu -> printk line waiting for its stack
    stack_cpu: int | None = None
    frames: list[str] = []

    def finish():
        nonlocal stack_cpu, frames
        if stack_cpu is None:
            return None
        line = pending.pop(stack_cpu, None)
        progs = stack_programs(frames)
        stack_cpu, frames = None, []
        if line is None:
            return None
        line.program = progs[0][1] if progs else ""
        line._progs = progs  # type: ignore[attr-defined]
        return line

    for raw in raw_lines:
        if raw is not None and raw.lstrip().startswith("=>"):
            if stack_cpu is not None:
                frames.append(raw)
            continue
        done = finish()
        if done is not None:
            yield done
        if raw is None:
            continue
        line = parse_line(raw)
        if line.message == STACK_MARKER and not line.function:
            stack_cpu, frames = line.cpu, []
        elif line.function == "bpf_trace_printk":
            pending[line.cpu] = line
    done = finish()
    if done is not None:
        yield done


class ProgramFilter:
    """Match a program by name (full BTF name, or the kernel's 15-character one) or by id."""

    def __init__(self, program: str | int):
        self.name = self.tag = None
        text = str(program).strip()
        if not text:
            raise XdpkitError("empty program name", hint="give a program name or id (xdpkit status)")
        if text.isdigit():
            from xdpkit.kernel import program_info_by_id

            info = program_info_by_id(int(text))  # NotFoundError names the id
            self.tag = info.tag
            self.name = info.name
        else:
            self.name = text

    def require_loaded(self) -> None:
        """NotFoundError unless a loaded program has this name (a typo would stream nothing)."""
        if self.tag is not None:
            return  # found by id already
        from xdpkit.kernel import program_ids, program_info_by_id

        for pid in program_ids():
            try:
                if self._name_ok(program_info_by_id(pid).name):
                    return
            except NotFoundError:
                continue  # unloaded meanwhile
        raise NotFoundError(f"no loaded BPF program is named {self.name!r}",
                            hint="see the names with `xdpkit status`, or give a program id")

    def _name_ok(self, name: str) -> bool:
        from xdpkit.kernel import OBJ_NAME_LEN, kernel_name

        # the kernel's name is the first OBJ_NAME_LEN characters of the full (BTF) one
        return name == self.name or (len(self.name) >= OBJ_NAME_LEN and kernel_name(name) == kernel_name(self.name)) \
            or (len(name) == OBJ_NAME_LEN and kernel_name(self.name) == name)

    def matches(self, line: TraceLine) -> bool:
        for tag, name in getattr(line, "_progs", []):
            if self.tag is None:
                if self._name_ok(name):
                    return True
            elif tag == self.tag and (not name or self._name_ok(name)):  # by id: the tag decides
                return True
        return False


class _PrintkInstance:
    """A private tracefs instance recording bpf_trace_printk with kernel stacks."""

    def __init__(self):
        root = ensure_tracefs()
        self.path = os.path.join(root, "instances", f"xdpkit-trace-{os.getpid()}-{id(self) & 0xffff:x}")
        self.pipe = os.path.join(self.path, "trace_pipe")

    def _write(self, rel: str, value: str) -> None:
        with open(os.path.join(self.path, rel), "w") as f:
            f.write(value)

    def __enter__(self):
        try:
            os.mkdir(self.path)
        except OSError as exc:
            raise XdpkitError(f"cannot create tracefs instance {self.path}: {exc.strerror}",
                              hint="run as root; filtering by program needs tracefs instances") from None
        try:
            self._write("events/bpf_trace/bpf_trace_printk/enable", "1")
            self._write("options/stacktrace", "1")
        except OSError as exc:
            self.__exit__()
            raise XdpkitError(f"cannot record bpf_trace_printk with stacks: {exc.strerror}",
                              hint="the kernel needs CONFIG_BPF_EVENTS and CONFIG_STACKTRACE") from None
        return self

    def __exit__(self, *exc):
        for _ in range(20):  # rmdir is EBUSY for a moment while the pipe reader goes away
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as err:
                if err.errno != E.EBUSY:
                    return
                time.sleep(0.05)
