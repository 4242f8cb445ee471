"""Per-day aggregates computed from the raw job rows in SQL: the rows of ``performance_trends``
(per day and pipeline) and of ``performance_daily_groups`` (per day, pipeline, job type, model
and GPU). :mod:`perflib.ops.aggregates` stores them, :mod:`perflib.analysis.daily_aggregates`
reads them back."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.linear_model import LinearRegression

from perflib.analysis.sql import (FINISHED, SUCCEEDED, attention_work, ceil_int, compute_seconds,
                                  day_of, in_ranges, in_window, out_of_memory,
                                  work_units)
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs

Ranges = list[tuple[datetime, datetime]]  # [start, end) time ranges, read together
CostModels = dict[str, list[float]]  # pipeline → [a, b, c]: a + b·work + c·attention seconds

DAILY_COLUMNS = ["day", "pipeline_type", "job_count", "success_rate", "mean_total_seconds",
                 "median_total_seconds", "p95_total_seconds", "mean_queue_seconds",
                 "mean_gpu_util_pct", "work_units", "compute_seconds", "expected_seconds",
                 "median_speed_ratio"]
SUM_COLUMNS = ["success_count", "total_seconds_sum", "queue_seconds_sum", "queue_count",
               "gpu_util_sum", "gpu_util_count", "attention_work"]
TIME_COLUMNS = ["median_total_seconds", "p95_total_seconds"]
SPEED_COLUMNS = ["compute_seconds", "expected_seconds", "median_speed_ratio"]
GROUP_KEYS = ["pipeline_type", "job_type", "model_name", "gpu_name"]
GROUP_SUMS = ["jobs", "failed", "oom", "vram_ratio_sum", "vram_ratio_count", "gpu_util_sum",
              "gpu_util_count", "cpu_sum", "cpu_count", "queue_sum", "queue_count",
              "processing_sum", "processing_count", "init_total", "timed_seconds", "work"]
SAMPLE_JOBS = 20_000


def daily_stats(store: Store, start: datetime, end: datetime,
                pipeline_type: str | None = None, per_day: bool = True,
                times: bool = True, speed: bool = True, ranges: Ranges | None = None,
                models: CostModels | None = None) -> pd.DataFrame:
    """Per UTC day and pipeline: job count, success rate, mean queue seconds, mean GPU
    utilisation, work units of successful jobs, the sums and counts behind those means, and

    - with `times`: mean/median/p95 total seconds of successful jobs;
    - with `speed`: their compute seconds (processing without model loading), the seconds a cost
      model expects for them (`models`, else one fitted on the window), and the median of each
      job's compute ÷ expected — a speed index that neither a change in job mix nor a few
      stragglers move.

    Reads the jobs started in [start, end), or in the `ranges` when given. Medians and
    percentiles are exact, from window functions in SQL; each of `times` and `speed` costs one
    sort, so ask only for what is needed. With ``per_day=False`` the whole window is one row per
    pipeline (``day`` is then its first day)."""
    dialect = store.engine.dialect.name
    day = (day_of(jobs.c.started_at, dialect) if per_day
           else sa.literal(start.date().isoformat())).label("day")
    where = in_ranges(ranges) if ranges is not None else in_window(start, end)
    conditions = [FINISHED, where]
    if pipeline_type:
        conditions.append(jobs.c.pipeline_type == pipeline_type)
    group = [day, jobs.c.pipeline_type, SUCCEEDED]
    columns = [day, jobs.c.pipeline_type, jobs.c.status, jobs.c.total_seconds,
               jobs.c.queue_seconds, jobs.c.gpu_util_avg_pct, work_units().label("work"),
               attention_work().label("attention"),
               sa.func.count().over(partition_by=group).label("n")]
    if times:
        columns.append(sa.func.row_number().over(partition_by=group,
                                                 order_by=jobs.c.total_seconds).label("rank"))
    if speed:
        if models is None:
            models = fit_cost_models(store, pipeline_type, ranges or [(start, end)])
        expected = expected_expression(models)
        ratio = compute_seconds() / expected
        columns += [compute_seconds().label("compute"), expected.label("expected"),
                    ratio.label("speed"),
                    sa.func.row_number().over(partition_by=group, order_by=ratio
                                              ).label("speed_rank")]
    ranked = sa.select(*columns).where(*conditions).subquery()
    measures = _daily_measures(ranked, dialect, times, speed)
    query = (sa.select(ranked.c.day, ranked.c.pipeline_type, *measures)
             .group_by(ranked.c.day, ranked.c.pipeline_type)
             .order_by(ranked.c.day, ranked.c.pipeline_type))
    wanted = [c for c in DAILY_COLUMNS + SUM_COLUMNS if (times or c not in TIME_COLUMNS)
              and (speed or c not in SPEED_COLUMNS)]
    frame = store.frame(query, wanted)
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def _daily_measures(ranked, dialect: str, times: bool, speed: bool) -> list:
    """The per-day aggregates of :func:`daily_stats` over its ranked rows: counts, sums and
    means, and with `times` / `speed` the exact quantiles read off the ranks."""
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
        sa.func.sum(sa.case((ok, ranked.c.work))).label("work_units"),
        sa.func.sum(sa.case((ok, 1), else_=0)).label("success_count"),
        sa.func.sum(sa.case((ok, ranked.c.total_seconds))).label("total_seconds_sum"),
        sa.func.sum(ranked.c.queue_seconds).label("queue_seconds_sum"),
        sa.func.count(ranked.c.queue_seconds).label("queue_count"),
        sa.func.sum(ranked.c.gpu_util_avg_pct).label("gpu_util_sum"),
        sa.func.count(ranked.c.gpu_util_avg_pct).label("gpu_util_count"),
        sa.func.sum(sa.case((ok, ranked.c.attention))).label("attention_work")]
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
    return measures


def group_sums(store: Store, ranges: Ranges, pipeline_type: str | None = None
               ) -> pd.DataFrame:
    """Per UTC day, pipeline, job type, model and GPU: the sums and counts (``GROUP_SUMS``)
    that bottleneck detection re-aggregates over any window, of the finished jobs started in
    the `ranges`."""
    ok = jobs.c.status == "success"
    vram_ratio = jobs.c.vram_peak_mb / sa.func.nullif(jobs.c.vram_total_mb, 0)
    day = day_of(jobs.c.started_at, store.engine.dialect.name).label("day")
    keys = [day] + [jobs.c[name] for name in GROUP_KEYS]
    query = sa.select(
        *keys,
        sa.func.count().label("jobs"),
        sa.func.sum(sa.case((jobs.c.status == "failed", 1), else_=0)).label("failed"),
        sa.func.sum(sa.case((out_of_memory(), 1), else_=0)).label("oom"),
        sa.func.sum(vram_ratio).label("vram_ratio_sum"),
        sa.func.count(vram_ratio).label("vram_ratio_count"),
        sa.func.sum(jobs.c.gpu_util_avg_pct).label("gpu_util_sum"),
        sa.func.count(jobs.c.gpu_util_avg_pct).label("gpu_util_count"),
        sa.func.sum(jobs.c.cpu_avg_pct).label("cpu_sum"),
        sa.func.count(jobs.c.cpu_avg_pct).label("cpu_count"),
        sa.func.sum(jobs.c.queue_seconds).label("queue_sum"),
        sa.func.count(jobs.c.queue_seconds).label("queue_count"),
        sa.func.max(jobs.c.queue_seconds).label("queue_max"),
        sa.func.sum(sa.case((ok, jobs.c.processing_seconds))).label("processing_sum"),
        sa.func.count(sa.case((ok, jobs.c.processing_seconds))).label("processing_count"),
        sa.func.sum(sa.case((ok, jobs.c.init_seconds))).label("init_total"),
        sa.func.sum(sa.case((sa.and_(ok, work_units().isnot(None)), jobs.c.processing_seconds))
                    ).label("timed_seconds"),
        sa.func.sum(sa.case((ok, work_units()))).label("work"),
    ).where(FINISHED, in_ranges(ranges)).group_by(*keys)
    if pipeline_type:
        query = query.where(jobs.c.pipeline_type == pipeline_type)
    frame = store.frame(query, ["day", *GROUP_KEYS, *GROUP_SUMS, "queue_max"])
    frame["day"] = pd.to_datetime(frame["day"]).dt.date
    return frame


def fit_cost_models(store: Store, pipeline_type: str | None, ranges: Ranges) -> CostModels:
    """Per pipeline, ``a + b·work + c·attention`` compute seconds fitted by non-negative least
    squares on relative error over an even sample (at most ``SAMPLE_JOBS``) of the successful
    jobs started in the `ranges`."""
    columns = [jobs.c.pipeline_type, compute_seconds().label("seconds"),
               work_units().label("work"), attention_work().label("attention")]
    conditions = [jobs.c.status == "success", in_ranges(ranges),
                  work_units().isnot(None), compute_seconds() > 0]
    if pipeline_type:
        conditions.append(jobs.c.pipeline_type == pipeline_type)
    with store.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).where(*conditions)).scalar_one()
        stride = max(1, count // SAMPLE_JOBS)  # an even spread of ids, cheaper than random()
        sample = pd.DataFrame(conn.execute(sa.select(*columns).where(
            *conditions, jobs.c.id % stride == 0)).mappings().all())
    models = {}
    for pipeline, group in sample.groupby("pipeline_type") if len(sample) else ():
        design = np.column_stack([np.ones(len(group)), group.work, group.attention])
        scale = design.max(axis=0)
        scale[scale == 0] = 1.0
        y = group.seconds.to_numpy(float)
        fit = LinearRegression(fit_intercept=False, positive=True).fit(
            design / scale, y, sample_weight=1.0 / y ** 2)
        models[pipeline] = [float(v) for v in fit.coef_ / scale]
    return models


def expected_expression(models: CostModels):
    """An SQL expression for a job's expected compute seconds under per-pipeline cost models
    (NULL for a pipeline without one)."""
    cases = [(jobs.c.pipeline_type == pipeline, a + b * work_units() + c * attention_work())
             for pipeline, (a, b, c) in sorted(models.items())]
    nothing = sa.cast(sa.null(), sa.Float)  # typed, so SUM() over it works on PostgreSQL
    return sa.case(*cases, else_=nothing) if cases else nothing


def expected_seconds(store: Store, start: datetime, end: datetime, pipeline_type: str | None):
    """An SQL expression for a job's expected compute seconds: cost models fitted on the
    window's successful jobs (see :func:`fit_cost_models`)."""
    return expected_expression(fit_cost_models(store, pipeline_type, [(start, end)]))
