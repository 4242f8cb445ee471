"""Daily aggregates kept incrementally (read back by :mod:`perflib.analysis.daily_aggregates`).

``perflib maintain`` (or ``PerformanceAnalyzer.aggregate_daily``) recomputes only the days that
have jobs recorded since the last refresh — the jobs above a high-water mark of ids — so a job
arriving late for an old day recomputes that day, and a refresh costs what the new days hold.
Each day is computed whole from its own rows (exact medians), as per-day sums and counts that
any run of days re-aggregates: ``performance_trends`` per pipeline, ``performance_daily_groups``
per pipeline, job type, model and GPU.

Readers never write: :mod:`perflib.analysis.daily_aggregates` reads a window from the stored
days and computes the days the aggregates do not hold yet from their raw rows.

Speed ratios are measured against a reference cost model per pipeline, fitted on a bounded
sample when the pipeline is first aggregated and kept with the high-water mark, so that every
stored day of a pipeline is measured with the same yardstick (a rebuild refits it).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pandas as pd
import sqlalchemy as sa

from perflib.analysis.daily import Ranges, daily_stats, fit_cost_models, group_sums
from perflib.analysis.daily_aggregates import (AggregateState, day_ranges, midnight, pending,
                                               read_state)
from perflib.record import LIVE_STATUSES
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


def refresh_aggregates(store: Store, rebuild: bool = False, settle: timedelta = SETTLE) -> int:
    """Recompute the days that have jobs recorded since the last refresh (all days, with a
    refitted reference cost model, when `rebuild`); return the rows written."""
    state = read_state(store) or AggregateState()
    if rebuild:
        state = AggregateState()
    with store.engine.connect() as conn:
        seen = conn.execute(sa.select(sa.func.max(jobs.c.id))).scalar() or 0
        _cap_marks(state, seen)
        mark = _next_high_water(conn, state.high_water_id, settle)
        new = pending(conn, store, state.high_water_id)
    days = sorted({day for day, _ in new})
    _fit_missing_models(store, state, day_ranges(days), {pipeline for _, pipeline in new})
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
        _fit_missing_models(store, state, day_ranges(days), None)
    written = 0
    for chunk in _chunks(sorted(set(days))):
        ranges = day_ranges(chunk)
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


# -- helpers ---------------------------------------------------------------------------------
def _next_high_water(conn: sa.Connection, mark: int, settle: timedelta) -> int:
    """The highest id the next refresh may treat as aggregated: jobs recorded at least
    `settle` ago, and below any recent queued or running job (SQLite may give a live job's id
    again to the row that replaces it)."""
    now = datetime.now(timezone.utc)
    settled = conn.execute(sa.select(sa.func.max(jobs.c.id)).where(
        jobs.c.id > mark, jobs.c.recorded_at <= now - settle)).scalar()
    live = conn.execute(sa.select(sa.func.min(jobs.c.id)).where(
        jobs.c.id > mark, jobs.c.status.in_(LIVE_STATUSES),
        jobs.c.recorded_at >= now - LIVE_HOLD)).scalar()
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


def _chunks(days: list[date]) -> list[list[date]]:
    return [days[i:i + CHUNK_DAYS] for i in range(0, len(days), CHUNK_DAYS)]


def aggregate_daily(store: Store, start: datetime, end: datetime) -> int:
    """Recompute the stored aggregates of every day in [start, end) — after jobs of those days
    were deleted or rewritten; return the rows written."""
    first, stop = parse_timestamp(start).date(), parse_timestamp(end)
    days = [first + timedelta(n) for n in range((stop.date() - first).days + 1)
            if midnight(first + timedelta(n)) < stop]
    return recompute_days(store, days)


def drop_days_before(conn: sa.Connection, day: date) -> None:
    """Delete the stored aggregates of the days before `day` (retention)."""
    conn.execute(sa.delete(trends).where(trends.c.day < day))
    conn.execute(sa.delete(groups).where(groups.c.day < day))
