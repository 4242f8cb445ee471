"""The observed arrival pattern: jobs per minute over the look-back window, counted in SQL.

The database returns one row per minute that saw an arrival (at most 40,320 for four weeks,
whatever the history holds). Simulated hours are stitched from observed blocks of
``BLOCK_MINUTES`` minutes of the same hour of the week, so the rate follows the week and the
bursts stay as they were: a script submitting 8 jobs over two minutes stays one burst, which a
Poisson rate (or minutes drawn one by one) would smooth out.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa

from perflib.store import Store
from perflib.store.schema import generation_performance as jobs

HOURS_IN_WEEK = 168
MINUTES_IN_HOUR = 60
BLOCK_MINUTES = 10  # observed arrivals are replayed in blocks this long
_EPOCH_THURSDAY_HOURS = 72  # 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of a week
_LATE_START = timedelta(days=1)  # jobs that arrived in the window may start this much after it


@dataclass(frozen=True)
class ArrivalPattern:
    """Jobs that arrived in each minute of the window's whole hours."""

    start: datetime  # the window, whole hours
    end: datetime
    pipeline_type: str | None
    per_minute: np.ndarray  # (hours in the window, 60)
    hour_of_week: np.ndarray  # (hours in the window,), 0 = Monday 00:00 UTC

    @property
    def arrivals(self) -> int:
        """Jobs that arrived in the window."""
        return int(self.per_minute.sum())

    @property
    def arrivals_per_hour(self) -> np.ndarray:
        """Mean jobs arriving in each hour of the week (168 values)."""
        jobs_seen = np.bincount(self.hour_of_week, self.per_minute.sum(axis=1),
                                minlength=HOURS_IN_WEEK)
        hours_seen = np.bincount(self.hour_of_week, minlength=HOURS_IN_WEEK)
        return np.divide(jobs_seen, hours_seen, out=np.zeros(HOURS_IN_WEEK),
                         where=hours_seen > 0)

    @property
    def dispersion(self) -> float:
        """Variance over mean of the jobs per minute within each hour of the week, weighted by
        arrivals: 1 for Poisson arrivals, more when jobs come in bursts."""
        minutes = np.bincount(self.hour_of_week, minlength=HOURS_IN_WEEK) * MINUTES_IN_HOUR
        first = np.bincount(self.hour_of_week, self.per_minute.sum(axis=1), HOURS_IN_WEEK)
        second = np.bincount(self.hour_of_week, (self.per_minute ** 2).sum(axis=1),
                             HOURS_IN_WEEK)
        busy = first > 0
        if not busy.any():
            return 1.0
        mean = first[busy] / minutes[busy]
        index = (second[busy] / minutes[busy] - mean ** 2) / mean
        return float(np.average(index, weights=mean))

    def draw_minutes(self, rng: np.random.Generator, hours_of_week: np.ndarray) -> np.ndarray:
        """Jobs arriving in each minute of the given hours (hours × 60): each block of
        ``BLOCK_MINUTES`` copied from the same block of a random observed hour of the same
        hour of the week (none where that hour was never observed)."""
        counts = np.zeros((len(hours_of_week), MINUTES_IN_HOUR), dtype=np.int64)
        blocks = MINUTES_IN_HOUR // BLOCK_MINUTES
        for how in np.unique(hours_of_week):
            rows = np.flatnonzero(hours_of_week == how)
            observed = np.flatnonzero(self.hour_of_week == how)
            if not observed.size:
                continue
            picked = observed[rng.integers(observed.size, size=(rows.size, blocks))]
            source = self.per_minute[picked].reshape(rows.size, blocks, blocks,
                                                     BLOCK_MINUTES)
            counts[rows] = source[:, np.arange(blocks), np.arange(blocks)].reshape(
                rows.size, MINUTES_IN_HOUR)
        return counts


def arrival_pattern(store: Store, start: datetime, end: datetime,
                    pipeline_type: str | None = None) -> ArrivalPattern:
    """Count the arrivals of [start, end) (cut to whole hours) per minute, in the database."""
    start = start.replace(minute=0, second=0, microsecond=0)
    end = end.replace(minute=0, second=0, microsecond=0)
    if end <= start:
        raise ValueError("the window must hold at least one whole hour")
    first_minute = int(start.timestamp()) // 60
    hours = (int(end.timestamp()) - int(start.timestamp())) // 3600
    dialect = store.engine.dialect.name
    minute = _floor_int(arrival_seconds(dialect) / 60.0, dialect).label("minute")
    conditions = [jobs.c.started_at >= start - _LATE_START,
                  jobs.c.started_at < end + _LATE_START]
    if pipeline_type:
        conditions.append(jobs.c.pipeline_type == pipeline_type)
    per_minute = (sa.select(minute, sa.func.count().label("jobs")).where(*conditions)
                  .group_by(minute).subquery())
    query = sa.select(per_minute).where(per_minute.c.minute >= first_minute,
                                        per_minute.c.minute < first_minute + hours * 60)
    counts = np.zeros(hours * MINUTES_IN_HOUR, dtype=np.int64)
    with store.engine.connect() as conn:
        for minute_number, jobs_in_minute in conn.execute(query):
            counts[int(minute_number) - first_minute] = int(jobs_in_minute)
    first_hour = int(start.timestamp()) // 3600
    hour_of_week = (np.arange(first_hour, first_hour + hours) + _EPOCH_THURSDAY_HOURS) \
        % HOURS_IN_WEEK
    return ArrivalPattern(start, end, pipeline_type, counts.reshape(hours, MINUTES_IN_HOUR),
                          hour_of_week)


def arrival_seconds(dialect: str):
    """When a job arrived, in epoch seconds: ``submitted_at``, else ``queued_at``, else
    ``started_at`` less its queue time (none recorded: the start itself, as for imported
    history; the plan warns), else when it was recorded."""
    return sa.func.coalesce(_epoch(jobs.c.submitted_at, dialect),
                            _epoch(jobs.c.queued_at, dialect),
                            _epoch(jobs.c.started_at, dialect)
                            - sa.func.coalesce(jobs.c.queue_seconds, 0.0),
                            _epoch(jobs.c.recorded_at, dialect))


def _epoch(column, dialect: str):
    if dialect == "postgresql":
        return sa.extract("epoch", column)
    return (sa.func.julianday(column) - 2440587.5) * 86400.0  # SQLite stores UTC text


def _floor_int(expression, dialect: str):
    """The whole number at or below a positive expression (SQLite's CAST truncates)."""
    if dialect == "postgresql":
        return sa.cast(sa.func.floor(expression), sa.BigInteger)
    return sa.cast(expression, sa.Integer)
