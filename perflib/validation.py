"""Shared checks for job parameters: one place that says what a valid value is."""
from __future__ import annotations

import re
from typing import Any

PIPELINE_TYPES = ("image", "video")
STATUSES = ("success", "failed", "cancelled")
MAX_SIDE_PX = 8192
MAX_FRAMES = 10_000
MAX_STEPS = 1_000

_STATUS_ALIASES = {"completed": "success", "succeeded": "success", "ok": "success",
                   "error": "failed", "failure": "failed", "canceled": "cancelled"}
_RESOLUTION = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_resolution(value: Any) -> tuple[int, int]:
    """``"768x512"`` → ``(768, 512)``; raises ValueError for anything else."""
    match = _RESOLUTION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not WIDTHxHEIGHT")
    width, height = int(match.group(1)), int(match.group(2))
    if not (0 < width <= MAX_SIDE_PX and 0 < height <= MAX_SIDE_PX):
        raise ValueError(f"{value!r}: each side must be between 1 and {MAX_SIDE_PX}")
    return width, height


def normalise_status(value: Any) -> str:
    """One of STATUSES, accepting common spellings (``completed``, ``error``)."""
    status = str(value).strip().lower()
    status = _STATUS_ALIASES.get(status, status)
    if status not in STATUSES:
        raise ValueError(f"{value!r} is not one of {', '.join(STATUSES)}")
    return status


def positive_int(value: Any, name: str, maximum: int | None = None) -> int:
    """A whole number ≥ 1 (and ≤ maximum when given)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer() or number < 1:
        raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return int(number)
