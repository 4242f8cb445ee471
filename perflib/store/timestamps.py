"""Timestamps: the one conversion to UTC of a value written to a timestamp column."""
from __future__ import annotations

import sys
from datetime import date, datetime, timezone
from typing import Any

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
