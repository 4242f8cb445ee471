"""The two arms of a comparison: which jobs each holds, by job field, recorded parameter, tag or
time.

A selector is ``FIELD=VALUE`` or ``tag:KEY=VALUE``, several joined by commas (all must hold):
``sampler=euler``, ``tag:ab=dpmpp``, ``model_name=sdxl-base,steps=30``, ``resolution=768x768``.
A name that is not a job field is looked up among the parameters the tracker kept in
``extra_params`` (``attention=sdpa``). An arm may also be limited in time: started from `after`
on, or before `before`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from perflib.store import parse_timestamp

TEXT_FIELDS = ("pipeline_type", "job_type", "sampler", "model_name", "gpu_name", "hostname")
NUMERIC_FIELDS = ("width", "height", "frame_count", "steps", "batch_size", "guidance_scale",
                  "gpu_index")
SELECTABLE_FIELDS = TEXT_FIELDS + NUMERIC_FIELDS + ("resolution",)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_RESOLUTION = re.compile(r"([0-9]+)x([0-9]+)")


class SelectionError(ValueError):
    """A comparison that cannot be made as asked, with the argument at fault (``a``, ``b``,
    ``before``, ``after``, ``end``, ``days``) and why."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TooFewJobs(SelectionError):
    """An arm holds too few successful jobs to compare (an empty database, a rare setting)."""


@dataclass(frozen=True)
class Condition:
    """One ``name=value``: a job field, a recorded parameter (``extra_params``), or a tag."""

    name: str
    value: str
    tag: bool = False

    def __str__(self) -> str:
        return f"{'tag:' if self.tag else ''}{self.name}={self.value}"


@dataclass(frozen=True)
class Selector:
    """Which jobs form an arm: every condition holds, and the job started in [after, before)."""

    conditions: tuple[Condition, ...] = ()
    after: datetime | None = None
    before: datetime | None = None

    @classmethod
    def parse(cls, text: str | None, argument: str, after: Any = None, before: Any = None
              ) -> "Selector":
        """``"sampler=euler,tag:ab=x"``; None selects every job (within the times given).
        Raises :class:`SelectionError` naming `argument` (or ``after``/``before``)."""
        conditions = ()
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise SelectionError(argument, "is empty; give FIELD=VALUE or tag:KEY=VALUE")
            conditions = tuple(_condition(part, argument) for part in text.split(","))
        return cls(conditions, instant(after, "after"), instant(before, "before"))

    @property
    def fields(self) -> set[str]:
        """The job fields the conditions constrain (``resolution`` is width and height)."""
        names = {c.name for c in self.conditions if not c.tag}
        return names | ({"width", "height"} if "resolution" in names else set())

    def label(self) -> str:
        parts = [str(c) for c in self.conditions]
        if self.after is not None:
            parts.append(f"from {self.after:%Y-%m-%d %H:%M}")
        if self.before is not None:
            parts.append(f"before {self.before:%Y-%m-%d %H:%M}")
        return ", ".join(parts) or "all jobs"

    def matches(self, jobs: pd.DataFrame, argument: str) -> np.ndarray:
        """Which rows of `jobs` (as the store returns them) this arm holds."""
        chosen = np.ones(len(jobs), dtype=bool)
        if not len(jobs):
            return chosen
        started = pd.to_datetime(jobs["started_at"], utc=True)
        if self.after is not None:
            chosen &= (started >= self.after).to_numpy()
        if self.before is not None:
            chosen &= (started < self.before).to_numpy()
        for condition in self.conditions:
            chosen &= _matches(jobs, condition, argument)
        return chosen


def instant(value: Any, argument: str) -> datetime | None:
    """An ISO date or time (naive means UTC) as an aware datetime; None for nothing."""
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(value)
    except (ValueError, TypeError) as exc:
        raise SelectionError(argument, f"{value!r} is not an ISO date or time ({exc})") from None


def _condition(part: str, argument: str) -> Condition:
    name, equals, value = part.strip().partition("=")
    name, value = name.strip(), value.strip()
    tag = name.startswith("tag:")
    if tag:
        name = name[len("tag:"):].strip()
    if not equals or not value or not _NAME.fullmatch(name):
        raise SelectionError(argument, f"{part.strip()!r} is not FIELD=VALUE or tag:KEY=VALUE "
                                       f"(fields: {', '.join(SELECTABLE_FIELDS)}, or a recorded "
                                       "parameter)")
    if not tag and name in NUMERIC_FIELDS:
        try:
            float(value)
        except ValueError:
            raise SelectionError(argument, f"{name}={value!r}: {name} is a number") from None
    if not tag and name == "resolution" and not _RESOLUTION.fullmatch(value):
        raise SelectionError(argument, f"resolution={value!r} is not WIDTHxHEIGHT")
    return Condition(name, value, tag)


def _matches(jobs: pd.DataFrame, condition: Condition, argument: str) -> np.ndarray:
    if condition.tag:
        return _mapping_matches(jobs.get("tags"), condition, len(jobs))
    if condition.name == "resolution":
        width, height = (float(side) for side in _RESOLUTION.fullmatch(condition.value).groups())
        return ((jobs["width"] == width) & (jobs["height"] == height)).to_numpy()
    if condition.name in NUMERIC_FIELDS:
        return (pd.to_numeric(jobs[condition.name], errors="coerce")
                == float(condition.value)).to_numpy()
    if condition.name in TEXT_FIELDS:
        return (jobs[condition.name] == condition.value).to_numpy()
    extra = jobs.get("extra_params")
    if extra is None or not any(isinstance(e, dict) and condition.name in e for e in extra):
        raise SelectionError(argument, f"{condition.name!r} is not a job field (one of "
                                       f"{', '.join(SELECTABLE_FIELDS)}) nor a parameter any job "
                                       "in the period recorded; tags are written tag:KEY=VALUE")
    return _mapping_matches(extra, condition, len(jobs))


def _mapping_matches(column, condition: Condition, rows: int) -> np.ndarray:
    """Rows whose mapping (tags, extra parameters) holds `condition` (values compared as text)."""
    if column is None:
        return np.zeros(rows, dtype=bool)
    return np.array([isinstance(m, dict) and condition.name in m
                     and _as_text(m[condition.name]) == condition.value for m in column],
                    dtype=bool)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
