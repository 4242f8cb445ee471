"""Maintenance: retention on every table that grows, pruning of model versions, fresh daily
aggregates (``perflib maintain`` then raises alerts and retrains the models that are due)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from perflib.analysis.aggregates import drop_days_before, refresh_aggregates
from perflib.analysis.sql import bound, delete_jobs
from perflib.predictor import KEEP_VERSIONS
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases as phases
from perflib.store.schema import performance_alerts as alerts
from perflib.store.schema import performance_prediction_models as models
from perflib.store.schema import performance_trends as trends
from perflib.store.schema import resource_samples as samples


@dataclass
class MaintenancePlan:
    """What maintenance deletes (or would, in a dry run) and refreshes."""

    cutoff: datetime
    jobs: int
    phases: int
    samples: int
    model_versions: int
    alerts: int = 0
    daily_rows: int = 0
    trend_rows: int = 0  # daily aggregates refreshed
    raised_alerts: int = 0
    dry_run: bool = True
    retrained: list = field(default_factory=list)  # RetrainOutcome per stored pipeline

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        text = (f"{verb} {self.jobs} jobs started before {self.cutoff:%Y-%m-%d %H:%M} UTC with "
                f"{self.phases} phases and {self.samples} resource samples, {self.alerts} alerts "
                f"last seen and {self.daily_rows} daily aggregates dated before it, and "
                f"{self.model_versions} old model versions")
        if not self.dry_run:
            text += (f"; refreshed {self.trend_rows} daily aggregates and raised or refreshed "
                     f"{self.raised_alerts} alerts")
        return "\n".join([text] + [outcome.describe() for outcome in self.retrained])


def maintain(store: Store, retention_days: int, dry_run: bool = False,
             now: datetime | None = None) -> MaintenancePlan:
    """Delete what is older than `retention_days` (never a row newer than the cut-off): jobs
    with their phases and samples, alerts last seen before it, daily aggregates of days before
    it; keep the newest model versions; refresh the daily aggregates of the days with new
    jobs (:func:`~perflib.analysis.aggregates.refresh_aggregates`)."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=retention_days)
    old_jobs = _old_jobs(store, cutoff)
    old_ids = sa.select(jobs.c.job_id).where(old_jobs)
    old_alerts = alerts.c.last_seen < bound(store, cutoff)
    old_days = trends.c.day < cutoff.date()
    stale_models = _stale_model_ids(store)
    with store.engine.connect() as conn:
        def count(table, condition) -> int:
            return conn.execute(sa.select(sa.func.count()).select_from(table)
                                .where(condition)).scalar_one()

        plan = MaintenancePlan(
            cutoff, count(jobs, old_jobs), count(phases, phases.c.job_id.in_(old_ids)),
            count(samples, samples.c.job_id.in_(old_ids)), len(stale_models),
            alerts=count(alerts, old_alerts), daily_rows=count(trends, old_days),
            dry_run=dry_run)
    if dry_run:
        return plan
    with store.engine.begin() as conn:
        delete_jobs(conn, old_jobs)
        conn.execute(sa.delete(alerts).where(old_alerts))
        drop_days_before(conn, cutoff.date())
        if stale_models:
            conn.execute(sa.delete(models).where(models.c.id.in_(stale_models)))
    plan.trend_rows = refresh_aggregates(store)
    return plan


def _old_jobs(store: Store, cutoff: datetime):
    """Jobs started before `cutoff`, and jobs that never started (queued, then lost) submitted
    or recorded before it."""
    never_started = sa.and_(jobs.c.started_at.is_(None),
                            sa.func.coalesce(jobs.c.submitted_at, jobs.c.recorded_at)
                            < bound(store, cutoff))
    return sa.or_(jobs.c.started_at < bound(store, cutoff), never_started)


def _stale_model_ids(store: Store) -> list[int]:
    rank = sa.func.row_number().over(partition_by=[models.c.pipeline_type, models.c.family],
                                     order_by=models.c.version.desc()).label("rank")
    ranked = sa.select(models.c.id, models.c.is_active, rank).subquery()
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(ranked.c.id).where(
            ranked.c.rank > KEEP_VERSIONS, ranked.c.is_active.is_(False))).scalars())
