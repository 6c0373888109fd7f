"""Printing for the CLI: aligned tables for people, JSON for programs."""
from __future__ import annotations

import json
import sys

from xdpkit.btf import to_jsonable


def emit_json(data) -> None:
    json.dump(to_jsonable(data), sys.stdout, indent=2)
    sys.stdout.write("\n")


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def print_table(rows: list[list], headers: list[str], empty: str = "") -> None:
    if not rows and empty:
        print(empty)
        return
    print(table(rows, headers))


def info(msg: str) -> None:
    """Progress and notes go to stderr so stdout stays clean for data."""
    print(msg, file=sys.stderr)


def show_repeatedly(read, show, *, as_json: bool, watch: bool, count: int | None) -> int:
    """Print ``read()`` once, or every second with ``watch`` (``count`` times, or until Ctrl-C):
    as JSON, or through ``show`` with the screen cleared between refreshes on a terminal."""
    import time

    n = 0
    while True:
        data = read()
        if as_json:
            emit_json(data)
        else:
            if watch and sys.stdout.isatty():
                print("\033[2J\033[H", end="")
            show(data)
        n += 1
        if not watch or (count and n >= count):
            return 0
        time.sleep(1.0)
