"""Everything the weekly report shows, gathered in one call so the notebook stays a thin
template: the typed report (:class:`~perflib.analysis.performance_report.PerformanceReport`,
trends included), and the frames its figures draw —
narrowed to one pipeline when asked. It only reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from perflib.analysis import TREND_DAYS, PerformanceAnalyzer, PerformanceReport
from perflib.analysis.estimate_accuracy import EstimateCheck, estimate_check
from perflib.capacity import CapacityPlan, plan_capacity
from perflib.report.presentation import MAX_CATEGORIES, OTHER
from perflib.store import Store


@dataclass(frozen=True)
class WeeklyData:
    """One report period's numbers (`report`) and the frames behind its figures; the trends
    its charts draw are ``report.trends``."""

    report: PerformanceReport
    daily: pd.DataFrame  # per day and pipeline, this period
    previous_daily: pd.DataFrame  # the same for the period before
    jobs: pd.DataFrame  # a sample of the period's finished jobs
    queue: pd.DataFrame  # per hour of day and pipeline
    phases: pd.DataFrame  # share of phase time per job type
    gpus: pd.DataFrame  # per GPU, the busiest MAX_CATEGORIES and one row for the rest
    estimates: EstimateCheck
    capacity: CapacityPlan | None = None  # the GPUs the period's arrivals needed

    @property
    def empty(self) -> bool:
        """No job in the period."""
        return self.report.empty


def weekly_data(db: Any = None, weeks_back: int = 1, pipeline_type: str | None = None,
                end_date: str | None = None) -> WeeklyData:
    """Gather the report of the `weeks_back` weeks ending at `end_date` (default: the midnight
    after the newest job), for `pipeline_type` or every pipeline."""
    analyzer = PerformanceAnalyzer(db)
    days = 7 * weeks_back
    trends = analyzer.analyze_trends(max(days, TREND_DAYS), pipeline_type,
                                     analyzer.window(days, end_date)[1])
    report = analyzer.performance_report(days, end_date, pipeline_type, trends)
    start, end = report.start, report.end
    jobs = _narrowed(analyzer.job_sample(days, end), pipeline_type)
    return WeeklyData(
        report=report,
        daily=_narrowed(analyzer.daily(days, end), pipeline_type),
        previous_daily=_narrowed(analyzer.daily(days, start), pipeline_type),
        jobs=jobs,
        queue=_narrowed(analyzer.queue_by_hour(days, end), pipeline_type),
        phases=_narrowed(analyzer.phase_shares(days, end), pipeline_type),
        gpus=busiest_gpus(analyzer.gpu_usage(days, end, pipeline_type)),
        estimates=estimate_check(analyzer.store, jobs, start, {
            pipeline: analyzer.prediction_accuracy(days, end, pipeline)
            for pipeline in jobs.pipeline_type.dropna().unique()}),
        capacity=capacity_plan(analyzer.store, days, end, pipeline_type))


def busiest_gpus(gpus: pd.DataFrame, cap: int = MAX_CATEGORIES) -> pd.DataFrame:
    """The `cap` busiest GPUs of :func:`~perflib.analysis.gpus.gpu_usage`, in its order, and
    the rest summed into one row (host OTHER, model "<n> GPUs"; busy share the mean per GPU,
    utilisation and relative time weighted by busy time)."""
    if len(gpus) <= cap:
        return gpus
    busy = gpus.busy_seconds.astype(float).fillna(0)
    kept = busy.sort_values(ascending=False, kind="stable").index[:cap]
    rest = gpus.drop(index=kept)
    folded = pd.DataFrame([{
        "hostname": OTHER, "gpu_index": float("nan"), "gpu_name": f"{len(rest):,} GPUs",
        "jobs": rest.jobs.sum(), "failed": rest.failed.sum(),
        "busy_seconds": busy[rest.index].sum(), "busy_share": rest.busy_share.astype(float).mean(),
        "gpu_util_pct": _busy_weighted(rest.gpu_util_pct, busy[rest.index]),
        "relative_time": _busy_weighted(rest.relative_time, busy[rest.index])}])
    return pd.concat([gpus.loc[sorted(kept)], folded], ignore_index=True)[gpus.columns]


def _busy_weighted(values: pd.Series, busy: pd.Series) -> float:
    """The mean of `values` weighted by busy seconds, over the GPUs that recorded one."""
    values = values.astype(float)
    held = values.notna() & (busy > 0)
    return float((values[held] * busy[held]).sum() / busy[held].sum()) if held.any() \
        else float("nan")


def capacity_plan(store: Store, days: int, end: datetime, pipeline_type: str | None
                  ) -> CapacityPlan | None:
    """The period's capacity plan in its cheap form (one simulated week, no per-hour needs:
    a bounded sample and per-minute counts), or None when it has no job to plan from."""
    try:
        return plan_capacity(store, pipeline_type, days=max(days, 7), end=end, weeks=1,
                             per_hour=False)
    except ValueError:  # no arrival or no successful job in the period
        return None


def _narrowed(frame: pd.DataFrame, pipeline_type: str | None) -> pd.DataFrame:
    if not pipeline_type:
        return frame
    return frame[frame.pipeline_type == pipeline_type].reset_index(drop=True)
