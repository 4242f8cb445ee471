"""Daily aggregates per pipeline, computed in SQL and kept in ``performance_trends``."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.linear_model import LinearRegression

from perflib.analysis.sql import (FINISHED, SUCCEEDED, attention_work, ceil_int, compute_seconds,
                                  day_of, in_window, work_units)
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import performance_trends

DAILY_COLUMNS = ["day", "pipeline_type", "job_count", "success_rate", "mean_total_seconds",
                 "median_total_seconds", "p95_total_seconds", "mean_queue_seconds",
                 "mean_gpu_util_pct", "work_units", "compute_seconds", "expected_seconds",
                 "median_speed_ratio"]
TIME_COLUMNS = ["median_total_seconds", "p95_total_seconds"]
SPEED_COLUMNS = ["compute_seconds", "expected_seconds", "median_speed_ratio"]
SAMPLE_JOBS = 20_000


def daily_stats(store: Store, start: datetime, end: datetime,
                pipeline_type: str | None = None, per_day: bool = True,
                times: bool = True, speed: bool = True) -> pd.DataFrame:
    """Per UTC day and pipeline: job count, success rate, mean queue seconds, mean GPU
    utilisation, work units of successful jobs, and

    - with `times`: mean/median/p95 total seconds of successful jobs;
    - with `speed`: their compute seconds (processing without model loading), the seconds a cost
      model fitted on the window expects for them, and the median of each job's compute ÷
      expected — a speed index that neither a change in job mix nor a few stragglers move.

    Medians and percentiles are exact, from window functions in SQL; each of `times` and `speed`
    costs one sort, so ask only for what is needed. With ``per_day=False`` the whole window is
    one row per pipeline (``day`` is then its first day)."""
    dialect = store.engine.dialect.name
    day = (day_of(jobs.c.started_at, dialect) if per_day
           else sa.literal(start.date().isoformat())).label("day")
    conditions = [FINISHED, in_window(store, start, end)]
    if pipeline_type:
        conditions.append(jobs.c.pipeline_type == pipeline_type)
    group = [day, jobs.c.pipeline_type, SUCCEEDED]
    columns = [day, jobs.c.pipeline_type, jobs.c.status, jobs.c.total_seconds,
               jobs.c.queue_seconds, jobs.c.gpu_util_avg_pct, work_units().label("work"),
               sa.func.count().over(partition_by=group).label("n")]
    if times:
        columns.append(sa.func.row_number().over(partition_by=group,
                                                 order_by=jobs.c.total_seconds).label("rank"))
    if speed:
        expected = expected_seconds(store, start, end, pipeline_type)
        ratio = compute_seconds() / expected
        columns += [compute_seconds().label("compute"), expected.label("expected"),
                    ratio.label("speed"),
                    sa.func.row_number().over(partition_by=group, order_by=ratio
                                              ).label("speed_rank")]
    ranked = sa.select(*columns).where(*conditions).subquery()
    ok = ranked.c.status == "success"

    def quantile(q: float, rank, value):
        position = ceil_int(ranked.c.n * q, dialect)
        return sa.func.max(sa.case((sa.and_(ok, rank == position), value)))

    measures = [
        sa.func.count().label("job_count"),
        (sa.func.sum(sa.case((ok, 1.0), else_=0.0)) / sa.func.count()).label("success_rate"),
        sa.func.avg(sa.case((ok, ranked.c.total_seconds))).label("mean_total_seconds"),
        sa.func.avg(ranked.c.queue_seconds).label("mean_queue_seconds"),
        sa.func.avg(ranked.c.gpu_util_avg_pct).label("mean_gpu_util_pct"),
        sa.func.sum(sa.case((ok, ranked.c.work))).label("work_units")]
    if times:
        measures += [quantile(0.5, ranked.c.rank, ranked.c.total_seconds
                              ).label("median_total_seconds"),
                     quantile(0.95, ranked.c.rank, ranked.c.total_seconds
                              ).label("p95_total_seconds")]
    if speed:
        measures += [
            sa.func.sum(sa.case((sa.and_(ok, ranked.c.expected.isnot(None)), ranked.c.compute))
                        ).label("compute_seconds"),
            sa.func.sum(sa.case((ok, ranked.c.expected))).label("expected_seconds"),
            quantile(0.5, ranked.c.speed_rank, ranked.c.speed).label("median_speed_ratio")]
    query = (sa.select(ranked.c.day, ranked.c.pipeline_type, *measures)
             .group_by(ranked.c.day, ranked.c.pipeline_type)
             .order_by(ranked.c.day, ranked.c.pipeline_type))
    wanted = [c for c in DAILY_COLUMNS if (times or c not in TIME_COLUMNS)
              and (speed or c not in SPEED_COLUMNS)]
    frame = store.frame(query, wanted)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def aggregate_daily(store: Store, start: datetime, end: datetime) -> int:
    """Recompute ``performance_trends`` for the days in [start, end); return rows written."""
    frame = daily_stats(store, start, end, speed=False)
    if frame.empty:
        return 0
    now = datetime.now(timezone.utc)
    rows = [{**{k: _plain(v) for k, v in row.items()}, "updated_at": now}
            for row in frame.to_dict("records")]
    table = performance_trends
    with store.engine.begin() as conn:
        conn.execute(sa.delete(table).where(table.c.day >= min(frame.day),
                                            table.c.day <= max(frame.day)))
        conn.execute(sa.insert(table), rows)
    return len(rows)


def expected_seconds(store: Store, start: datetime, end: datetime, pipeline_type: str | None):
    """An SQL expression for a job's expected compute seconds: ``a + b·work + c·attention`` per
    pipeline, fitted by non-negative least squares on relative error over an even sample of the
    window's successful jobs."""
    columns = [jobs.c.pipeline_type, compute_seconds().label("seconds"),
               work_units().label("work"), attention_work().label("attention")]
    conditions = [jobs.c.status == "success", in_window(store, start, end),
                  work_units().isnot(None), compute_seconds() > 0]
    if pipeline_type:
        conditions.append(jobs.c.pipeline_type == pipeline_type)
    with store.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).where(*conditions)).scalar_one()
        stride = max(1, count // SAMPLE_JOBS)  # an even spread of ids, cheaper than random()
        sample = pd.DataFrame(conn.execute(sa.select(*columns).where(
            *conditions, jobs.c.id % stride == 0)).mappings().all())
    cases = []
    for pipeline, group in sample.groupby("pipeline_type") if len(sample) else ():
        design = np.column_stack([np.ones(len(group)), group.work, group.attention])
        scale = design.max(axis=0)
        y = group.seconds.to_numpy(float)
        fit = LinearRegression(fit_intercept=False, positive=True).fit(
            design / scale, y, sample_weight=1.0 / y ** 2)
        a, b, c = (float(v) for v in fit.coef_ / scale)
        cases.append((jobs.c.pipeline_type == pipeline,
                      a + b * work_units() + c * attention_work()))
    nothing = sa.cast(sa.null(), sa.Float)  # typed, so SUM() over it works on PostgreSQL
    return sa.case(*cases, else_=nothing) if cases else nothing


def _plain(value):
    if isinstance(value, float) and value != value:
        return None
    return value.item() if hasattr(value, "item") else value
