"""What every subcommand shares: opening the store, usage errors and bounded numeric
options."""
from __future__ import annotations

import argparse
import os
import sqlite3
from typing import Callable

import psycopg
import sqlalchemy as sa

from perflib.store import Store
from perflib.store.errors import DATABASE_DOWN

# The database cannot be reached: the service is down, the file cannot be opened, no driver.
UNREACHABLE = (*DATABASE_DOWN, sa.exc.NoSuchModuleError, psycopg.OperationalError,
               sqlite3.OperationalError)
DATABASE_FAILED = (sa.exc.DBAPIError, psycopg.Error, sqlite3.Error)


class UsageError(Exception):
    """What was asked cannot be done as given (an input that is not what it should be): one
    line naming the problem, exit 2."""


def open_store(args) -> Store:
    return Store(args.database_url)


def input_file(path: str) -> str:
    """`path`, refused when it names something other than a file (a folder, a device)."""
    if os.path.exists(path) and not os.path.isfile(path):
        kind = "a folder" if os.path.isdir(path) else "not a regular file"
        raise UsageError(f"{path} is {kind}: give a file")
    return path


def _share(text: str) -> float:
    """'70%' or '0.7' as a share (0.7)."""
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def bounded(parse: Callable[[str], float], low: float, high: float, noun: str = "number",
             exclusive: bool = False) -> Callable[[str], float]:
    """An argparse type: `parse(text)` from `low` to `high` (both excluded when `exclusive`);
    anything else (not a number, nan, inf, out of range) is refused naming the range."""
    shown = [f"{bound:,}" if isinstance(bound, int) else f"{bound:g}" for bound in (low, high)]
    wanted = (f"> {shown[0]} and < {shown[1]}" if exclusive
              else f"from {shown[0]} to {shown[1]}")

    def value(text: str) -> float:
        try:
            number = parse(text.strip())
        except (ValueError, OverflowError):
            number = float("nan")
        inside = low < number < high if exclusive else low <= number <= high
        if not inside:  # nan is inside no range
            raise argparse.ArgumentTypeError(f"{text!r} is not a {noun} {wanted}")
        return number
    return value


# Every numeric option's range: wide enough for any real use, small enough that no value runs
# for hours, allocates gigabytes or overflows a date.
SEED = bounded(int, 0, 2**32 - 1, "whole number")
SECONDS = bounded(float, 0, 86400, "number of seconds", exclusive=True)
DAYS = bounded(float, 0, 3660, "number of days", exclusive=True)
SHARE = bounded(_share, 0, 1, "share (0.7 or 70%)", exclusive=True)


def whole(low: int, high: int) -> Callable[[str], float]:
    """An argparse type: a whole number from `low` to `high`."""
    return bounded(int, low, high, "whole number")


ESTIMATE_FIELDS = ("pipeline_type", "resolution", "frame_count", "steps", "job_type",
                   "guidance_scale", "batch_size", "sampler", "model_name", "gpu_name")
