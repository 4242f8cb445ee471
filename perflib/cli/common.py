"""What every subcommand shares: opening the store, usage errors and bounded numeric
options."""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from typing import Callable

import sqlalchemy as sa

from perflib.store import Store
from perflib.store.errors import DATABASE_DOWN

# The extra that installs a module a subcommand may need (pip install 'perflib[extra]').
EXTRA_OF_MODULE = {
    "psycopg": "postgres", "pandas": "predict", "numpy": "predict", "scipy": "predict",
    "sklearn": "predict", "statsmodels": "predict", "skops": "predict", "tqdm": "predict",
    "fastapi": "serve", "starlette": "serve", "uvicorn": "serve", "prometheus_client": "serve",
    "papermill": "report", "nbconvert": "report", "nbformat": "report", "IPython": "report",
    "matplotlib": "report", "seaborn": "report",
}


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """What says the database cannot be reached: the service is down, the file cannot be
    opened, no driver (psycopg's own errors where it is loaded)."""
    psycopg = sys.modules.get("psycopg")
    return (*DATABASE_DOWN, sa.exc.NoSuchModuleError, sqlite3.OperationalError,
            *((psycopg.OperationalError,) if psycopg else ()))


def database_errors() -> tuple[type[BaseException], ...]:
    """What a database (through SQLAlchemy or its driver) raises when it fails."""
    psycopg = sys.modules.get("psycopg")
    return (sa.exc.DBAPIError, sqlite3.Error, *((psycopg.Error,) if psycopg else ()))


# Subcommands that need more than perflib[predict].
EXTRA_OF_COMMAND = {"report": "report", "serve": "serve"}


def missing_extra(exc: ModuleNotFoundError, command: str) -> str | None:
    """One line naming the extra that installs the missing module (the subcommand's own extra
    unless the module is the PostgreSQL driver); None if no extra does."""
    extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
    if extra is None:
        return None
    if extra != "postgres":
        extra = EXTRA_OF_COMMAND.get(command, extra)
    return f"needs perflib[{extra}] ({exc.name} is not installed): pip install 'perflib[{extra}]'"


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
