"""Maintenance: retention of old jobs, pruning of model versions, fresh daily aggregates."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from perflib.analysis.daily import aggregate_daily
from perflib.analysis.sql import bound
from perflib.predictor import KEEP_VERSIONS
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases as phases
from perflib.store.schema import performance_prediction_models as models
from perflib.store.schema import resource_samples as samples

REFRESH_DAYS = 14


@dataclass
class MaintenancePlan:
    """What maintenance deletes (or would, in a dry run) and refreshes."""

    cutoff: datetime
    jobs: int
    phases: int
    samples: int
    model_versions: int
    trend_rows: int = 0
    dry_run: bool = True

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"{verb} {self.jobs} jobs started before {self.cutoff:%Y-%m-%d %H:%M} UTC with "
                f"{self.phases} phases and {self.samples} resource samples, and "
                f"{self.model_versions} old model versions"
                + ("" if self.dry_run else f"; refreshed {self.trend_rows} daily aggregates"))


def maintain(store: Store, retention_days: int, dry_run: bool = False,
             now: datetime | None = None) -> MaintenancePlan:
    """Delete jobs older than `retention_days` (never a row newer than the cut-off) with their
    phases and samples, keep the newest model versions, refresh recent daily aggregates."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=retention_days)
    old = jobs.c.started_at < bound(store, cutoff)
    old_ids = sa.select(jobs.c.job_id).where(old)
    stale_models = _stale_model_ids(store)
    with store.engine.connect() as conn:
        plan = MaintenancePlan(
            cutoff, conn.execute(sa.select(sa.func.count()).where(old)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(phases)
                         .where(phases.c.job_id.in_(old_ids))).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(samples)
                         .where(samples.c.job_id.in_(old_ids))).scalar_one(),
            len(stale_models), dry_run=dry_run)
    if dry_run:
        return plan
    with store.engine.begin() as conn:
        conn.execute(sa.delete(phases).where(phases.c.job_id.in_(old_ids)))
        conn.execute(sa.delete(samples).where(samples.c.job_id.in_(old_ids)))
        conn.execute(sa.delete(jobs).where(old))
        if stale_models:
            conn.execute(sa.delete(models).where(models.c.id.in_(stale_models)))
    plan.trend_rows = aggregate_daily(store, now - timedelta(days=REFRESH_DAYS), now)
    return plan


def _stale_model_ids(store: Store) -> list[int]:
    rank = sa.func.row_number().over(partition_by=[models.c.pipeline_type, models.c.family],
                                     order_by=models.c.version.desc()).label("rank")
    ranked = sa.select(models.c.id, rank).subquery()
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(ranked.c.id).where(
            ranked.c.rank > KEEP_VERSIONS)).scalars())
