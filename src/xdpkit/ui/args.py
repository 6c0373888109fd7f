"""Argument types for the CLI: a value out of range is a usage error naming the range."""
from __future__ import annotations

import argparse
import math

U32_MAX = 0xFFFFFFFF


def int_range(lo: int, hi: int | None = None):
    """An integer in lo..hi (hi None: no upper bound)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(
                f"{value} is out of range {lo}..{hi}" if hi is not None else f"{value} is below {lo}")
        return value
    return parse


def positive_float(text: str) -> float:
    """A finite number greater than zero (seconds, intervals)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a number greater than 0")
    return value


positive_int = int_range(1)
#: BPF_PROG_TEST_RUN's repeat is a u32
repeat_count = int_range(1, U32_MAX)
