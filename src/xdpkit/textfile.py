"""Reading a text file a user named (a config, an address set): every failure is a ConfigError
that names the file, and the line for text that is not UTF-8."""
from __future__ import annotations

import os
from pathlib import Path

from xdpkit.errors import ConfigError


def read_text(path: str | os.PathLike, what: str = "config") -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if b"\0" in data:
        raise ConfigError(f"{what} {path} is not a text file (it holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{what} {path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x})",
                          hint="save the file as UTF-8") from None
