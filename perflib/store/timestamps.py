"""Timestamps: the one conversion to UTC, and the column type that applies it on the way in and out.

Every timestamp column is a :class:`UtcDateTime`: it takes an aware datetime (or ISO text, or a
naive one meaning UTC) and stores it as UTC, and reads back an aware UTC datetime on SQLite
(which keeps no zone) as on PostgreSQL (which answers in the session's zone). Code reading
through SQLAlchemy needs no conversion of its own; text from elsewhere (JSON, raw SQL on SQLite,
a model's metadata) goes through :func:`parse_timestamp`.
"""
from __future__ import annotations

import sys
from datetime import date, datetime, timezone
from typing import Any

import sqlalchemy as sa

MIN_YEAR, MAX_YEAR = 1970, 2200


def parse_timestamp(value: Any) -> datetime:
    """A UTC-aware datetime from a datetime or ISO 8601 text (naive means UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    elif "pandas" in sys.modules and isinstance(value, sys.modules["pandas"].Timestamp):
        value = value.to_pydatetime()
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise ValueError(f"not a timestamp: {value!r}")
    if not MIN_YEAR <= value.year <= MAX_YEAR:  # pandas cannot hold dates far outside this
        raise ValueError(f"timestamp {value.isoformat()} is outside {MIN_YEAR}–{MAX_YEAR}")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UtcDateTime(sa.TypeDecorator):
    """``TIMESTAMP WITH TIME ZONE`` (the same DDL as ``DateTime(timezone=True)``) that stores
    UTC and reads back aware UTC datetimes on every database."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect) -> datetime | None:
        if value is None:
            return None
        value = parse_timestamp(value)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
