"""Records the database refuses for what they hold: kept aside with the reason, never retried.

A database that is *unavailable* (down, locked, read-only, unreachable) gets the same records
again later, from the spool. A database that *refuses a record* — a value longer than its
column, a broken constraint, a value it cannot take — would refuse it forever, and a batch
holding it would never land. :func:`write_or_dead_letter` tells the two apart: on a refusal it
halves the batch until the refused records stand alone, writes the rest, and appends each
refused record with its reason to ``dead-letter.jsonl`` in the spool folder (never replayed; a
person decides what to do with it).
"""
from __future__ import annotations

import json
import logging
import sqlite3
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import sqlalchemy as sa

from perflib.store.spool import append_lines, json_default

log = logging.getLogger(__name__)

DEAD_LETTER_FILE = "dead-letter.jsonl"
# What a database (or building the row for it) raises about the values of a record.
_REFUSALS = (sa.exc.DataError, sa.exc.IntegrityError, sqlite3.DataError, sqlite3.IntegrityError,
             ValueError, TypeError, KeyError)


class Landed(NamedTuple):
    """What became of a batch: new rows stored, and records refused into the dead letter."""

    stored: int
    dead_lettered: int


def refuses_record(exc: BaseException) -> bool:
    """True when `exc` says the database refused the records themselves, not that it was
    unavailable (which a later retry may cure)."""
    if isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError):
        return True  # SQLAlchemy could not turn a value into a parameter
    psycopg = sys.modules.get("psycopg")  # loaded where PostgreSQL is in use
    driver_refusals = (psycopg.DataError, psycopg.IntegrityError) if psycopg else ()
    return isinstance(exc, _REFUSALS + driver_refusals)


class DeadLetter:
    """The dead-letter file of one spool folder."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.taken = 0  # records this object kept
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.directory / DEAD_LETTER_FILE

    def append(self, record: Mapping[str, Any], exc: BaseException) -> None:
        """Keep `record` with why it was refused, and say so at WARNING."""
        reason = _reason(exc)
        entry = {"failed_at": datetime.now(timezone.utc).isoformat(), "reason": reason,
                 "record": record}
        with self._lock:
            append_lines(self.path, [json.dumps(entry, default=json_default) + "\n"])
            self.taken += 1
        log.warning("the database refused job record %r (%s); kept in %s",
                    record.get("job_id"), reason, self.path)

    def count(self) -> int:
        if not self.path.is_file():
            return 0
        with open(self.path, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())


def write_or_dead_letter(write: Callable[[Sequence[Mapping[str, Any]]], int],
                         records: Sequence[Mapping[str, Any]],
                         dead_letter: DeadLetter) -> Landed:
    """Write `records` with `write`; records the database refuses go to `dead_letter` and the
    others land. Any other failure (the database is unavailable) propagates; what was written
    before it is written again later, harmlessly (writes are idempotent on job_id)."""
    if not records:
        return Landed(0, 0)
    try:
        return Landed(write(records), 0)
    except Exception as exc:
        if not refuses_record(exc):
            raise
        if len(records) == 1:
            dead_letter.append(records[0], exc)
            return Landed(0, 1)
    middle = len(records) // 2
    first = write_or_dead_letter(write, records[:middle], dead_letter)
    second = write_or_dead_letter(write, records[middle:], dead_letter)
    return Landed(first.stored + second.stored, first.dead_lettered + second.dead_lettered)


def _reason(exc: BaseException) -> str:
    """The refusal in one line: the driver's message, not SQLAlchemy's statement dump."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    return f"{type(exc).__name__}: {lines[0][:300]}"
