"""What the live dashboard reads about the past, every few seconds: each is one small indexed
query or a read of stored aggregates, so a poll never reruns an analysis (and never writes).
Rows come back as plain dicts: at these sizes building DataFrames would cost more than the
queries.

- :func:`normalised_daily_seconds`: per pipeline and day, from the daily aggregates
  (``performance_trends``) that ``perflib maintain`` keeps;
- :func:`recent_estimates`: the latest successful jobs that carried an estimate;
- :func:`busy_seconds_today`: how long each GPU ran jobs since UTC midnight.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from perflib.prediction import metrics
from perflib.store import Store, parse_timestamp
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import performance_trends

GpuKey = tuple[str | None, int | None]  # (hostname, gpu_index)


def normalised_daily_seconds(store: Store, first_day: date, last_day: date
                             ) -> dict[str, list[dict]]:
    """Per pipeline, each stored day in [first_day, last_day] in order: ``day``, ``jobs`` and
    ``normalised_seconds`` — the day's seconds per work unit times the period's mean work per
    successful job, i.e. what the period's average job would have taken that day, so a change
    in job mix is not taken for a slowdown (None for a day without successful work)."""
    table = performance_trends
    query = (sa.select(table.c.day, table.c.pipeline_type, table.c.job_count,
                       table.c.success_rate, table.c.mean_total_seconds, table.c.work_units)
             .where(table.c.day >= first_day, table.c.day <= last_day)
             .order_by(table.c.pipeline_type, table.c.day))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    per_pipeline: dict[str, list] = defaultdict(list)
    for row in rows:
        successes = row.job_count * (row.success_rate or 0.0)
        usable = bool(row.work_units) and row.mean_total_seconds is not None and successes > 0
        per_pipeline[row.pipeline_type].append((row, successes if usable else 0.0))
    series = {}
    for pipeline, days in per_pipeline.items():
        work = sum(row.work_units for row, successes in days if successes)
        successes_total = sum(successes for _, successes in days)
        mean_work = work / successes_total if successes_total else None
        series[pipeline] = [
            {"day": row.day, "jobs": row.job_count,
             "normalised_seconds": row.mean_total_seconds * successes / row.work_units
             * mean_work if successes else None} for row, successes in days]
    return series


def recent_estimates(store: Store, since: datetime, limit: int = 100) -> list[dict]:
    """The latest `limit` successful jobs started since `since` that carried an estimate:
    ``job_id``, ``pipeline_type``, ``predicted_seconds`` and ``actual_seconds`` (processing
    time, what the estimate is of), newest first."""
    query = (sa.select(jobs.c.job_id, jobs.c.pipeline_type, jobs.c.predicted_seconds,
                       jobs.c.processing_seconds.label("actual_seconds"))
             .where(jobs.c.started_at >= since, jobs.c.status == "success",
                    jobs.c.predicted_seconds > 0, jobs.c.processing_seconds > 0)
             .order_by(jobs.c.started_at.desc()).limit(limit))
    with store.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def within_share(estimates: list[dict]) -> float | None:
    """Share of `estimates` whose prediction is within ±20% of the actual time."""
    if not estimates:
        return None
    return metrics.within_share([e["actual_seconds"] for e in estimates],
                                [e["predicted_seconds"] for e in estimates])


def busy_seconds_today(store: Store, now: datetime) -> dict[GpuKey, float]:
    """Per (hostname, gpu_index): seconds since UTC midnight during which at least one job ran
    on that GPU (jobs that overlap are counted once; a running job counts up to `now`)."""
    now = parse_timestamp(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    query = (sa.select(jobs.c.hostname, jobs.c.gpu_index, jobs.c.status, jobs.c.started_at,
                       jobs.c.finished_at)
             .where(jobs.c.started_at >= midnight - timedelta(days=1),
                    jobs.c.started_at < now, jobs.c.status != "queued"))
    runs: dict[GpuKey, list[tuple[datetime, datetime]]] = defaultdict(list)
    with store.engine.connect() as conn:
        for row in conn.execute(query):
            end = now if row.status == "running" else row.finished_at
            if end is None:
                continue
            start, end = max(row.started_at, midnight), min(end, now)
            if end > start:
                runs[(row.hostname, row.gpu_index)].append((start, end))
    return {key: _union_seconds(intervals) for key, intervals in runs.items()}


def _union_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Length of the union of the intervals, in seconds."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    return total + (current_end - current_start).total_seconds()

