"""Reading the daily aggregates back for any window without scanning history; only reads.

:mod:`perflib.ops.aggregates` keeps them: it recomputes the days that have jobs above a high-water
mark of ids. A window is read from the stored days, and the days the aggregates do not hold yet
(jobs above the highest id the last refresh read) or hold only in part (a window that starts or
ends within a day) are computed from their raw rows on the fly — a few days at most.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import pandas as pd
import sqlalchemy as sa

from perflib.analysis.daily import (DAILY_COLUMNS, GROUP_KEYS, GROUP_SUMS, SUM_COLUMNS,
                                    CostModels, Ranges, daily_stats, fit_cost_models,
                                    group_sums)
from perflib.analysis.sql import day_of
from perflib.record import FINAL_STATUSES
from perflib.store import Store, parse_timestamp
from perflib.store.schema import aggregate_state
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import performance_daily_groups as groups
from perflib.store.schema import performance_trends as trends


@dataclass
class AggregateState:
    """How far the aggregates have read, and the reference cost model per pipeline."""

    high_water_id: int = 0  # every job up to it is aggregated: a refresh reads above it
    seen_id: int = 0  # the highest id the last refresh read: readers compute jobs above it
    cost_models: CostModels = field(default_factory=dict)


def read_state(store: Store) -> AggregateState | None:
    """The stored state; None before the first refresh."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(aggregate_state).where(aggregate_state.c.id == 1)).first()
    if row is None:
        return None
    return AggregateState(int(row.high_water_id), int(row.seen_id or row.high_water_id),
                          dict(row.cost_models or {}))


def pending(conn: sa.Connection, store: Store, high_water_id: int) -> set[tuple[date, str]]:
    """(day, pipeline) of the finished jobs above the high-water mark: what the aggregates do
    not hold yet."""
    day = day_of(jobs.c.started_at, store.engine.dialect.name)
    # status and start wrapped in expressions no index covers, so that the planner reads the
    # primary-key range above the mark (SQLite otherwise scans the status/started_at index)
    finished = sa.func.coalesce(jobs.c.status, "").in_(FINAL_STATUSES)
    rows = conn.execute(sa.select(day, jobs.c.pipeline_type).distinct().where(
        jobs.c.id > high_water_id, finished, day.isnot(None))).all()
    return {(date.fromisoformat(d), pipeline) for d, pipeline in rows}


@dataclass
class _Plan:
    """Where a window's aggregates come from: stored whole days, raw ranges, cost models."""

    stored_first: date | None
    stored_last: date | None
    skip_days: list[date]
    raw: Ranges
    models: CostModels | None


def daily_frame(store: Store, start: datetime, end: datetime, pipeline_type: str | None = None
                ) -> pd.DataFrame:
    """Per day and pipeline of [start, end): the ``performance_trends`` columns (see
    :func:`~perflib.analysis.daily.daily_stats`), from the stored days and the rest computed
    on the fly; only reads."""
    plan = _plan(store, start, end)
    frames = []
    if plan.stored_first is not None:
        query = sa.select(*(trends.c[c] for c in DAILY_COLUMNS + SUM_COLUMNS)).where(
            *_stored_days(trends, plan))
        if pipeline_type:
            query = query.where(trends.c.pipeline_type == pipeline_type)
        frames.append(store.frame(query))
    if plan.raw:
        frames.append(daily_stats(store, start, end, pipeline_type, times=False,
                                  ranges=plan.raw, models=plan.models))
    frame = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    if len(frame):
        frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame.sort_values(["day", "pipeline_type"]).reset_index(drop=True)


def group_frame(store: Store, start: datetime, end: datetime, pipeline_type: str | None = None
                ) -> pd.DataFrame:
    """Per pipeline, job type, model and GPU, summed over [start, end): the
    ``performance_daily_groups`` sums and the longest queue; only reads."""
    plan = _plan(store, start, end)
    frames = []
    if plan.stored_first is not None:
        keys = [groups.c[k] for k in GROUP_KEYS]
        query = (sa.select(*keys, *(sa.func.sum(groups.c[c]).label(c) for c in GROUP_SUMS),
                           sa.func.max(groups.c.queue_max).label("queue_max"))
                 .where(*_stored_days(groups, plan)).group_by(*keys))
        if pipeline_type:
            query = query.where(groups.c.pipeline_type == pipeline_type)
        frames.append(store.frame(query))
    if plan.raw:
        frames.append(group_sums(store, plan.raw, pipeline_type).drop(columns="day"))
    frame = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    if frame.empty:
        return frame
    totals = frame.groupby(GROUP_KEYS, dropna=False).agg(
        {**{c: "sum" for c in GROUP_SUMS}, "queue_max": "max"})
    return totals.reset_index()


def _plan(store: Store, start: datetime, end: datetime) -> _Plan:
    """Whole days inside the window that the aggregates hold are read stored; the partial
    days at either end and the days with jobs above the high-water mark are computed raw."""
    state = read_state(store)
    start, end = parse_timestamp(start), parse_timestamp(end)
    if state is None or end <= start:
        return _Plan(None, None, [], [(start, end)], None)
    first = start.date() if midnight(start.date()) == start else start.date() + timedelta(1)
    last = end.date() - timedelta(1)  # the last day ending by `end`
    if first > last:
        return _Plan(None, None, [], [(start, end)], dict(state.cost_models))
    with store.engine.connect() as conn:
        new = pending(conn, store, state.seen_id)
    skip = sorted({day for day, _ in new if first <= day <= last})
    raw = ([(start, midnight(first))] if start < midnight(first) else []) + day_ranges(skip)
    if midnight(last + timedelta(1)) < end:
        raw.append((midnight(last + timedelta(1)), end))
    models = dict(state.cost_models)
    if {pipeline for _, pipeline in new} - set(models) and raw:
        models = {**fit_cost_models(store, None, raw), **models}
    return _Plan(first, last, skip, _merged(raw), models)


def _stored_days(table: sa.Table, plan: _Plan) -> list:
    conditions = [table.c.day >= plan.stored_first, table.c.day <= plan.stored_last]
    if plan.skip_days:
        conditions.append(table.c.day.notin_(plan.skip_days))
    return conditions


def midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, timezone.utc)


def day_ranges(days: list[date]) -> Ranges:
    """Contiguous runs of days as [midnight, midnight) ranges."""
    ranges: Ranges = []
    for day in sorted(days):
        if ranges and ranges[-1][1] == midnight(day):
            ranges[-1] = (ranges[-1][0], midnight(day + timedelta(1)))
        else:
            ranges.append((midnight(day), midnight(day + timedelta(1))))
    return ranges


def _merged(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for start, end in sorted(ranges):
        if merged and merged[-1][1] >= start:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
