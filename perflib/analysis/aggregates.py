"""Daily aggregates kept incrementally, and read back for any window without scanning history.

``perflib maintain`` (or ``PerformanceAnalyzer.aggregate_daily``) recomputes only the days that
have jobs recorded since the last refresh — the jobs above a high-water mark of ids — so a job
arriving late for an old day recomputes that day, and a refresh costs what the new days hold.
Each day is computed whole from its own rows (exact medians), as per-day sums and counts that
any run of days re-aggregates: ``performance_trends`` per pipeline, ``performance_daily_groups``
per pipeline, job type, model and GPU.

Readers never write: a window is read from the stored days, and the days the aggregates do not
hold yet (jobs above the highest id the last refresh read) or hold only in part (a window that starts or ends
within a day) are computed from their raw rows on the fly — a few days at most.

Speed ratios are measured against a reference cost model per pipeline, fitted on a bounded
sample when the pipeline is first aggregated and kept with the high-water mark, so that every
stored day of a pipeline is measured with the same yardstick (a rebuild refits it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import pandas as pd
import sqlalchemy as sa

from perflib.analysis.daily import (DAILY_COLUMNS, GROUP_KEYS, GROUP_SUMS, SUM_COLUMNS,
                                    CostModels, Ranges, daily_stats, fit_cost_models,
                                    group_sums)
from perflib.analysis.sql import bound, day_of
from perflib.record import FINAL_STATUSES, LIVE_STATUSES
from perflib.store import Store, parse_timestamp
from perflib.store.schema import aggregate_state
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import performance_daily_groups as groups
from perflib.store.schema import performance_trends as trends

# A job recorded less than this before a refresh is read again by the next one: a writer's
# transaction that took an id earlier but committed later is not skipped.
SETTLE = timedelta(minutes=2)
LIVE_HOLD = timedelta(days=1)  # a queued/running job younger than this holds the mark back
CHUNK_DAYS = 7  # days recomputed per query in a rebuild


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


def refresh_aggregates(store: Store, rebuild: bool = False, settle: timedelta = SETTLE) -> int:
    """Recompute the days that have jobs recorded since the last refresh (all days, with a
    refitted reference cost model, when `rebuild`); return the rows written."""
    state = read_state(store) or AggregateState()
    if rebuild:
        state = AggregateState()
    with store.engine.connect() as conn:
        seen = conn.execute(sa.select(sa.func.max(jobs.c.id))).scalar() or 0
        _cap_marks(state, seen)
        mark = _next_high_water(conn, store, state.high_water_id, settle)
        new = pending(conn, store, state.high_water_id)
    days = sorted({day for day, _ in new})
    _fit_missing_models(store, state, _day_ranges(days), {pipeline for _, pipeline in new})
    if rebuild:  # readers compute every day from the jobs until the rebuild is done
        _save_state(store, AggregateState(cost_models=state.cost_models))
        with store.writable_engine().begin() as conn:
            conn.execute(sa.delete(trends))
            conn.execute(sa.delete(groups))
    written = recompute_days(store, days, state, fitted=True)
    state.high_water_id = max(mark, state.high_water_id)
    state.seen_id = max(seen, state.high_water_id)
    _save_state(store, state)
    return written


def recompute_days(store: Store, days: list[date], state: AggregateState | None = None,
                   fitted: bool = False) -> int:
    """Recompute and replace the stored aggregates of `days` (a day without jobs loses its
    rows); the state's reference cost models are used, fitted first (on an even sample of
    the days) for pipelines without one unless `fitted`. Returns the rows written to
    ``performance_trends``."""
    if state is None:  # called after jobs were deleted: their ids may be given again
        state = read_state(store) or AggregateState()
        with store.engine.connect() as conn:
            _cap_marks(state, conn.execute(sa.select(sa.func.max(jobs.c.id))).scalar() or 0)
    if not fitted:
        _fit_missing_models(store, state, _day_ranges(days), None)
    written = 0
    for chunk in _chunks(sorted(set(days))):
        ranges = _day_ranges(chunk)
        daily = daily_stats(store, ranges[0][0], ranges[-1][1], ranges=ranges,
                            models=state.cost_models)
        by_group = group_sums(store, ranges)
        now = datetime.now(timezone.utc)
        with store.writable_engine().begin() as conn:
            conn.execute(sa.delete(trends).where(trends.c.day.in_(chunk)))
            conn.execute(sa.delete(groups).where(groups.c.day.in_(chunk)))
            if len(daily):
                conn.execute(sa.insert(trends), _rows(daily, now))
            if len(by_group):
                conn.execute(sa.insert(groups), _rows(by_group, now))
        written += len(daily)
    _save_state(store, state)
    return written


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


# -- reading ---------------------------------------------------------------------------------
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
    first = start.date() if _midnight(start.date()) == start else start.date() + timedelta(1)
    last = end.date() - timedelta(1)  # the last day ending by `end`
    if first > last:
        return _Plan(None, None, [], [(start, end)], dict(state.cost_models))
    with store.engine.connect() as conn:
        new = pending(conn, store, state.seen_id)
    skip = sorted({day for day, _ in new if first <= day <= last})
    raw = ([(start, _midnight(first))] if start < _midnight(first) else []) + _day_ranges(skip)
    if _midnight(last + timedelta(1)) < end:
        raw.append((_midnight(last + timedelta(1)), end))
    models = dict(state.cost_models)
    if {pipeline for _, pipeline in new} - set(models) and raw:
        models = {**fit_cost_models(store, None, raw), **models}
    return _Plan(first, last, skip, _merged(raw), models)


def _stored_days(table: sa.Table, plan: _Plan) -> list:
    conditions = [table.c.day >= plan.stored_first, table.c.day <= plan.stored_last]
    if plan.skip_days:
        conditions.append(table.c.day.notin_(plan.skip_days))
    return conditions


# -- helpers ---------------------------------------------------------------------------------
def _next_high_water(conn: sa.Connection, store: Store, mark: int, settle: timedelta) -> int:
    """The highest id the next refresh may treat as aggregated: jobs recorded at least
    `settle` ago, and below any recent queued or running job (SQLite may give a live job's id
    again to the row that replaces it)."""
    now = datetime.now(timezone.utc)
    settled = conn.execute(sa.select(sa.func.max(jobs.c.id)).where(
        jobs.c.id > mark, jobs.c.recorded_at <= bound(store, now - settle))).scalar()
    live = conn.execute(sa.select(sa.func.min(jobs.c.id)).where(
        jobs.c.id > mark, jobs.c.status.in_(LIVE_STATUSES),
        jobs.c.recorded_at >= bound(store, now - LIVE_HOLD))).scalar()
    highest = settled if settled is not None else mark
    return min(highest, live - 1) if live is not None else highest


def _cap_marks(state: AggregateState, top_id: int) -> None:
    """No mark above the highest id stored: after the newest jobs were deleted, SQLite gives
    their ids again, and the marks must not pass for having read the new jobs."""
    state.high_water_id = min(state.high_water_id, top_id)
    state.seen_id = min(state.seen_id, top_id)


def _fit_missing_models(store: Store, state: AggregateState, ranges: Ranges,
                        pipelines: set[str] | None) -> None:
    """Reference cost models for the pipelines (None: any) of the ranges that have none."""
    if not ranges or (pipelines is not None and pipelines <= set(state.cost_models)):
        return
    fitted = fit_cost_models(store, None, ranges)
    for pipeline, model in fitted.items():
        state.cost_models.setdefault(pipeline, model)


def _save_state(store: Store, state: AggregateState) -> None:
    values = {"high_water_id": state.high_water_id, "seen_id": state.seen_id,
              "cost_models": state.cost_models,
              "refreshed_at": datetime.now(timezone.utc)}
    with store.writable_engine().begin() as conn:
        updated = conn.execute(sa.update(aggregate_state).where(aggregate_state.c.id == 1)
                               .values(**values)).rowcount
        if not updated:
            conn.execute(sa.insert(aggregate_state).values(id=1, **values))


def _rows(frame: pd.DataFrame, now: datetime) -> list[dict]:
    return [{**{k: _plain(v) for k, v in row.items()}, "updated_at": now}
            for row in frame.to_dict("records")]


def _plain(value):
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value.item() if hasattr(value, "item") else value


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, timezone.utc)


def _day_ranges(days: list[date]) -> Ranges:
    """Contiguous runs of days as [midnight, midnight) ranges."""
    ranges: Ranges = []
    for day in sorted(days):
        if ranges and ranges[-1][1] == _midnight(day):
            ranges[-1] = (ranges[-1][0], _midnight(day + timedelta(1)))
        else:
            ranges.append((_midnight(day), _midnight(day + timedelta(1))))
    return ranges


def _merged(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for start, end in sorted(ranges):
        if merged and merged[-1][1] >= start:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _chunks(days: list[date]) -> list[list[date]]:
    return [days[i:i + CHUNK_DAYS] for i in range(0, len(days), CHUNK_DAYS)]


def aggregate_daily(store: Store, start: datetime, end: datetime) -> int:
    """Recompute the stored aggregates of every day in [start, end) — after jobs of those days
    were deleted or rewritten; return the rows written."""
    first, stop = parse_timestamp(start).date(), parse_timestamp(end)
    days = [first + timedelta(n) for n in range((stop.date() - first).days + 1)
            if _midnight(first + timedelta(n)) < stop]
    return recompute_days(store, days)


def drop_days_before(conn: sa.Connection, day: date) -> None:
    """Delete the stored aggregates of the days before `day` (retention)."""
    conn.execute(sa.delete(trends).where(trends.c.day < day))
    conn.execute(sa.delete(groups).where(groups.c.day < day))
