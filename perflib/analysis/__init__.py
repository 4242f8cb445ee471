"""Analytics over recorded jobs: daily aggregates, bottlenecks, trends, alerts, opportunities,
and the weekly report — behind the seed's ``PerformanceAnalyzer(db)`` facade.

Every method takes ``end`` (default: the midnight after the newest job) and a look-back in days, so
a report can be re-run for any past week.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pandas as pd
import sqlalchemy as sa

from perflib.analysis import alerts as alert_store
from perflib.analysis.bottlenecks import Bottleneck, BottleneckType, analyze_bottlenecks
from perflib.analysis.daily import daily_stats
from perflib.analysis.daily_aggregates import daily_frame
from perflib.analysis.gpus import gpu_usage
from perflib.analysis.opportunities import find_opportunities
from perflib.analysis.origin import DataOrigin, data_origin
from perflib.analysis.performance_report import (EstimateAccuracy, Opportunity, PerformanceReport,
                                                 PreviousPeriod, ReportedAlert, period_statistics,
                                                 reported_bottleneck)
from perflib.analysis.sql import (SIMULATED, frame_without_jit, hour_of, in_window,
                                  sampled_jobs, sampled_phases, spread_order, time_percentiles,
                                  window, window_rows)
from perflib.analysis.trends import ChangePoint, TrendResult, analyze_trends
from perflib.prediction.metrics import WITHIN
from perflib.record import FINAL_STATUSES
from perflib.store import UsesStore
from perflib.store.schema import generation_performance as jobs

if TYPE_CHECKING:  # ops writes: imported where maintain() runs it
    from perflib.ops.maintenance import MaintenancePlan

TREND_DAYS = 28  # trends look back at least four weeks, whatever the report's period
SAMPLE_ROWS = 20_000

__all__ = ["Bottleneck", "BottleneckType", "ChangePoint", "PerformanceAnalyzer", "PerformanceReport",
           "TrendResult"]


class PerformanceAnalyzer(UsesStore):
    """Answers about recorded jobs; `db` is a URL, the seed-style dict, a Store or None."""

    @property
    def thresholds(self):
        return self.config.thresholds

    def window(self, days_back: float, end: datetime | str | None = None):
        return window(self.store, days_back, end)

    def aggregate_daily(self, days_back: float | None = None, end=None,
                        rebuild: bool = False) -> int:
        """Refresh the daily aggregates (``performance_trends``, ``performance_daily_groups``)
        and return the rows written: the days with jobs recorded since the last refresh; also
        every day of the last `days_back` before `end`; with `rebuild`, all history, with the
        reference cost models refitted (see :mod:`perflib.ops.aggregates`)."""
        from perflib.ops.aggregates import aggregate_daily, refresh_aggregates  # ops writes

        written = refresh_aggregates(self.store, rebuild=rebuild)
        if days_back is not None:
            written += aggregate_daily(self.store, *self.window(days_back, end))
        return written

    def analyze_bottlenecks(self, days_back: float = 7, pipeline_type: str | None = None,
                            end=None) -> list[Bottleneck]:
        start, stop = self.window(days_back, end)
        return analyze_bottlenecks(self.store, start, stop, self.thresholds, pipeline_type)

    def analyze_trends(self, days_back: float = 30, pipeline_type: str | None = None,
                       end=None) -> dict[str, TrendResult]:
        start, stop = self.window(days_back, end)
        return analyze_trends(self.store, start, stop, pipeline_type)

    def detect_alerts(self, days_back: float = 7, end=None) -> list[dict]:
        """Write (or refresh) alerts for the window; returns them. The one analysis that writes:
        ``perflib maintain`` runs it; reports and the service only read alerts."""
        start, stop = self.window(days_back, end)
        candidates = alert_store.alert_candidates(
            self.store, start, stop, self.analyze_bottlenecks(days_back, end=stop),
            self.analyze_trends(max(days_back, TREND_DAYS), end=stop),
            self.thresholds.failure_rate)
        from perflib.ops.alerts import save_alerts  # ops writes

        return save_alerts(self.store, candidates, stop)

    def alerts(self, severity: str | None = None, acknowledged: bool | None = None) -> list[dict]:
        return alert_store.list_alerts(self.store, severity, acknowledged)

    def acknowledge_alert(self, alert_id: int) -> bool:
        return alert_store.acknowledge(self.store, alert_id)

    def find_optimization_opportunities(self, days_back: float = 7, end=None) -> list[dict]:
        start, stop = self.window(days_back, end)
        return find_opportunities(self.store, start, stop)

    def maintain(self, retention_days: int | None = None, dry_run: bool = False,
                 retrain: bool = True) -> MaintenancePlan:
        """Retention, model pruning and fresh daily aggregates, then the last week's alerts
        (delivered to Alertmanager when ``PERFLIB_ALERTMANAGER_URL`` is set), then retraining
        of the pipelines whose model is due (a dry run only says which; see
        :mod:`perflib.ops.auto_retrain`)."""
        from perflib.ops.auto_retrain import retrain_due  # ops writes
        from perflib.ops.maintenance import maintain

        days = retention_days or self.store.config.retention_days
        plan = maintain(self.store, days, dry_run)
        if not dry_run:
            raised = self.detect_alerts()
            plan.raised_alerts = len(raised)
            if self.config.alertmanager_url:
                from perflib.ops.alert_delivery import deliver_alerts  # ops sends

                plan.delivery = deliver_alerts(self.store, self.config, raised)
        if retrain:
            plan.retrained = retrain_due(self.store, dry_run=dry_run)
        return plan

    def overall_statistics(self, days_back: float = 7, end=None,
                           pipeline_type: str | None = None) -> dict:
        """Job counts, success rate and time statistics over the window, overall and per
        pipeline (computed in SQL); `pipeline_type` counts only that pipeline's jobs."""
        start, stop = self.window(days_back, end)
        ranked = not self.store.is_postgres  # PostgreSQL has ordered-set aggregates instead
        per_pipeline = daily_stats(self.store, start, stop, pipeline_type, per_day=False,
                                   speed=False, times=ranked)
        if not ranked:
            per_pipeline = per_pipeline.merge(
                self.store.frame(time_percentiles(start, stop, pipeline_type)),
                on="pipeline_type", how="left")
        result = {"per_pipeline": {}}
        total_jobs = int(per_pipeline.job_count.sum()) if len(per_pipeline) else 0
        for row in per_pipeline.itertuples():
            result["per_pipeline"][row.pipeline_type] = _statistics(row, days_back)
        if total_jobs:
            weights = per_pipeline.job_count / total_jobs
            successes = (per_pipeline.success_rate * per_pipeline.job_count).sum()
            result.update(
                total_jobs=total_jobs, successful_jobs=int(round(successes)),
                success_rate=round(float(successes / total_jobs), 4),
                avg_generation_time=_weighted(per_pipeline.mean_total_seconds,
                                              per_pipeline.job_count * per_pipeline.success_rate),
                avg_queue_time=_weighted(per_pipeline.mean_queue_seconds, weights),
                jobs_per_day=round(total_jobs / days_back, 1))
        else:
            result.update(total_jobs=0, successful_jobs=0, success_rate=None,
                          avg_generation_time=None, avg_queue_time=None, jobs_per_day=0.0)
        return result

    def prediction_accuracy(self, days_back: float = 7, end=None,
                            pipeline_type: str | None = None) -> EstimateAccuracy:
        """How the estimates given before jobs ran compare with their processing time."""
        start, stop = self.window(days_back, end)
        pipeline = jobs.c.pipeline_type == pipeline_type if pipeline_type else sa.true()
        error = sa.func.abs(jobs.c.processing_seconds - jobs.c.predicted_seconds)
        query = (sa.select(sa.func.count().label("jobs"),
                           sa.func.sum(sa.case((error <= WITHIN * jobs.c.processing_seconds, 1),
                                               else_=0)).label("within"),
                           sa.func.avg(error / jobs.c.processing_seconds).label("mape"))
                 .where(jobs.c.status == "success", jobs.c.predicted_seconds > 0,
                        jobs.c.processing_seconds > 0, pipeline,
                        in_window(start, stop)))
        with self.store.engine.connect() as conn:
            row = conn.execute(query).one()
        if not row.jobs:
            return EstimateAccuracy(0, None, None)
        return EstimateAccuracy(int(row.jobs), round(row.within / row.jobs, 4),
                                round(float(row.mape), 4))

    def daily(self, days_back: float = 7, end=None) -> pd.DataFrame:
        """Per day and pipeline aggregates of the window, from the stored daily aggregates
        (see :func:`~perflib.analysis.daily_aggregates.daily_frame`)."""
        start, stop = self.window(days_back, end)
        return daily_frame(self.store, start, stop)

    def job_sample(self, days_back: float = 7, end=None, limit: int = SAMPLE_ROWS
                   ) -> pd.DataFrame:
        """Up to `limit` finished jobs of the window, drawn evenly (TABLESAMPLE on PostgreSQL,
        an id stride on SQLite: see :func:`~perflib.analysis.sql.sampled_jobs`) — enough for a
        chart, at a cost that does not grow with the window."""
        start, stop = self.window(days_back, end)
        sample, _ = sampled_jobs(self.store, start, stop, window_rows(self.store, start, stop),
                                 limit)
        query = (sa.select(sample).where(sample.c.status.in_(FINAL_STATUSES))
                 .order_by(spread_order(sample.c.id)).limit(limit))
        frame = self.store.frame(query)
        return frame.sort_values("started_at").reset_index(drop=True)

    def queue_by_hour(self, days_back: float = 7, end=None) -> pd.DataFrame:
        """Jobs submitted and mean queue seconds per UTC hour of day and pipeline (SQL)."""
        start, stop = self.window(days_back, end)
        hour = hour_of(jobs.c.submitted_at, self.store.engine.dialect.name).label("hour")
        query = (sa.select(hour, jobs.c.pipeline_type, sa.func.count().label("jobs"),
                           sa.func.avg(jobs.c.queue_seconds).label("mean_queue_seconds"))
                 .where(in_window(start, stop)).group_by(hour, jobs.c.pipeline_type)
                 .order_by(hour))
        return self.store.frame(query)

    def phase_shares(self, days_back: float = 7, end=None, sample_jobs: int = SAMPLE_ROWS
                     ) -> pd.DataFrame:
        """Share of phase time per pipeline, job type and phase (SQL), over an even sample of
        the window's jobs (all of them up to `sample_jobs`; see
        :func:`~perflib.analysis.sql.sampled_jobs`): shares need no more, whatever the window
        holds. ``seconds`` is the sample's phase time scaled up to the window."""
        start, stop = self.window(days_back, end)
        sample, fraction = sampled_jobs(self.store, start, stop,
                                        window_rows(self.store, start, stop), sample_jobs)
        joined, phase = sampled_phases(self.store, sample)
        keys = [sample.c.pipeline_type, sample.c.job_type]
        query = (sa.select(*keys, phase.name.label("phase"),
                           (sa.func.sum(phase.seconds) / fraction).label("seconds"))
                 .select_from(joined).where(sample.c.status == "success")
                 .group_by(*keys, phase.name))
        frame = frame_without_jit(self.store, query)
        totals = frame.groupby(["pipeline_type", "job_type"]).seconds.transform("sum")
        return frame.assign(share=frame.seconds / totals)

    def is_simulated(self) -> bool:
        """True when the database holds jobs written by ``perflib simulate``."""
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(jobs.c.job_id).where(SIMULATED).limit(1)
                                ).first() is not None

    def data_origin(self, days_back: float | None = 7, end=None) -> DataOrigin:
        """Real and simulated job counts of the database and of the window (None: no window,
        the whole database)."""
        if days_back is None:
            return data_origin(self.store)
        return data_origin(self.store, *self.window(days_back, end))

    def generate_performance_report(self, days_back: float = 7, end=None,
                                    pipeline_type: str | None = None,
                                    trends: dict[str, TrendResult] | None = None) -> dict:
        """:meth:`performance_report` as JSON-ready values (see
        :meth:`PerformanceReport.as_dict`)."""
        return self.performance_report(days_back, end, pipeline_type, trends).as_dict()

    def performance_report(self, days_back: float = 7, end=None,
                           pipeline_type: str | None = None,
                           trends: dict[str, TrendResult] | None = None) -> PerformanceReport:
        """Everything the weekly report shows, with the previous period's statistics and
        estimate accuracy for comparison; `pipeline_type` narrows it to one pipeline
        (opportunities stay fleet-wide). `trends`: the period's, when the caller has them
        already. It only reads: its alerts are those the window calls for, with their stored
        state (see ``as_reported``)."""
        start, stop = self.window(days_back, end)
        bottlenecks = self.analyze_bottlenecks(days_back, pipeline_type, stop)
        if trends is None:
            trends = self.analyze_trends(max(days_back, TREND_DAYS), pipeline_type, stop)
        alerts = alert_store.alert_candidates(self.store, start, stop, bottlenecks, trends,
                                              self.thresholds.failure_rate)
        if pipeline_type:
            alerts = [a for a in alerts if a["pipeline_type"] == pipeline_type]
        statistics, per_pipeline = period_statistics(
            self.overall_statistics(days_back, stop, pipeline_type))
        previous, _ = period_statistics(self.overall_statistics(days_back, start, pipeline_type))
        return PerformanceReport(
            period_days=days_back, start=start, end=stop, pipeline_type=pipeline_type,
            generated_at=datetime.now(timezone.utc).replace(microsecond=0),
            origin=data_origin(self.store, start, stop),
            statistics=statistics, per_pipeline=per_pipeline,
            bottlenecks=tuple(map(reported_bottleneck, bottlenecks)),
            trends={p: t.rounded() for p, t in trends.items()},
            alerts=tuple(ReportedAlert(**a) for a in alert_store.as_reported(
                self.store, alerts, stop)),
            opportunities=tuple(Opportunity(**o) for o in
                                self.find_optimization_opportunities(days_back, stop)),
            accuracy=self.prediction_accuracy(days_back, stop, pipeline_type),
            previous=PreviousPeriod(start - timedelta(days=days_back), previous,
                                    self.prediction_accuracy(days_back, start, pipeline_type)))

    def gpu_usage(self, days_back: float = 7, end=None, pipeline_type: str | None = None
                  ) -> pd.DataFrame:
        """Per GPU: jobs, busy time, utilisation, time for the same work (see
        :func:`~perflib.analysis.gpus.gpu_usage`)."""
        start, stop = self.window(days_back, end)
        return gpu_usage(self.store, start, stop, pipeline_type)

    def dashboard(self, now: datetime | None = None) -> dict:
        """The live view: the last 24 hours' headline numbers, jobs per hour, what to fix."""
        now = now or datetime.now(timezone.utc)
        statistics = self.overall_statistics(1, now)
        start = now - timedelta(days=1)
        hour = hour_of(jobs.c.started_at, self.store.engine.dialect.name).label("hour")
        with self.store.engine.connect() as conn:
            per_hour = conn.execute(sa.select(hour, sa.func.count().label("jobs"))
                                    .where(in_window(start, now)).group_by(hour)
                                    ).all()
        return {
            "system_status": {
                "jobs_24h": statistics["total_jobs"],
                "avg_generation_time": statistics["avg_generation_time"],
                "success_rate_24h": statistics["success_rate"],
                "queued_jobs": len(self.store.live_jobs()),
            },
            "jobs_per_hour": [{"hour": int(r.hour), "jobs": int(r.jobs)}
                              for r in sorted(per_hour)],
            "bottlenecks": [b.as_dict() for b in analyze_bottlenecks(
                self.store, start, now, self.thresholds)],
            "optimization_opportunities": find_opportunities(self.store, start, now),
        }


def _statistics(row, days_back: float) -> dict:
    return {"jobs": int(row.job_count), "success_rate": round(float(row.success_rate), 4),
            "avg_generation_time": _number(row.mean_total_seconds),
            "median_generation_time": _number(row.median_total_seconds),
            "p95_generation_time": _number(row.p95_total_seconds),
            "avg_queue_time": _number(row.mean_queue_seconds),
            "avg_gpu_util_pct": _number(row.mean_gpu_util_pct),
            "jobs_per_day": round(row.job_count / days_back, 1)}


def _number(value) -> float | None:
    return None if value is None or value != value else round(float(value), 3)


def _weighted(values, weights) -> float | None:
    mask = values.notna() & (weights > 0)
    if not mask.any():
        return None
    return round(float((values[mask] * weights[mask]).sum() / weights[mask].sum()), 3)
