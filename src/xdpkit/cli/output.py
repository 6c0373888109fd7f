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
