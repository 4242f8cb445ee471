"""Maintenance: retention on every table that grows, pruning of model versions, fresh daily
aggregates (``perflib maintain`` then raises alerts and retrains the models that are due)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from perflib.ops.aggregates import drop_days_before, refresh_aggregates
from perflib.ops.retention import JobRetention, apply_retention, plan_retention
from perflib.store import Store
from perflib.store.model_registry import delete_versions, stale_versions
from perflib.store.schema import performance_alerts as alerts
from perflib.store.schema import performance_trends as trends


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
    retention: JobRetention | None = None  # how the jobs went (partitions, estimates)
    delivery: object | None = None  # DeliveryOutcome of the alerts sent to Alertmanager

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        about = "about " if self.retention and self.retention.estimated else ""
        text = (f"{verb} {about}{self.jobs} jobs started before {self.cutoff:%Y-%m-%d %H:%M} "
                f"UTC with {self.phases} phases and {self.samples} resource samples, "
                f"{self.alerts} alerts last seen and {self.daily_rows} daily aggregates dated "
                f"before it, and {self.model_versions} old model versions")
        if not self.dry_run:
            text += (f"; refreshed {self.trend_rows} daily aggregates and raised or refreshed "
                     f"{self.raised_alerts} alerts")
        if self.delivery is not None:
            text += f"\n{self.delivery.describe()}"
        return "\n".join([text, *self._retention_lines()]
                         + [outcome.describe() for outcome in self.retrained])

    def _retention_lines(self) -> list[str]:
        retention = self.retention
        if retention is None:
            return []
        lines = [retention.note] if retention.note else []
        if retention.whole_partitions:
            counted = " (rows counted from PostgreSQL's estimates)" if retention.estimated else ""
            lines.append(f"{retention.whole_partitions} day partitions go whole{counted}; the "
                         "day of the cut-off loses its older rows")
        if retention.partitions_left:
            lines.append(f"{retention.partitions_left} of them stayed locked by other "
                         "sessions: left for the next run")
        if retention.partitions_created:
            lines.append(f"created {retention.partitions_created} day partitions ahead")
        return lines


def maintain(store: Store, retention_days: int, dry_run: bool = False,
             now: datetime | None = None) -> MaintenancePlan:
    """Delete what is older than `retention_days` (never a row newer than the cut-off): jobs
    with their phases and samples, alerts last seen before it, daily aggregates of days before
    it; keep the newest model versions; refresh the daily aggregates of the days with new
    jobs (:func:`~perflib.ops.aggregates.refresh_aggregates`)."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=retention_days)
    retention = plan_retention(store, cutoff)
    old_alerts = alerts.c.last_seen < cutoff
    old_days = trends.c.day < cutoff.date()
    with store.engine.connect() as conn:
        stale_models = stale_versions(conn)

        def count(table, condition) -> int:
            return conn.execute(sa.select(sa.func.count()).select_from(table)
                                .where(condition)).scalar_one()

        plan = MaintenancePlan(
            cutoff, retention.jobs, retention.phases, retention.samples, len(stale_models),
            alerts=count(alerts, old_alerts), daily_rows=count(trends, old_days),
            dry_run=dry_run, retention=retention)
    if dry_run:
        return plan
    apply_retention(store, retention, cutoff, now)
    with store.writable_engine().begin() as conn:
        conn.execute(sa.delete(alerts).where(old_alerts))
        drop_days_before(conn, cutoff.date())
        delete_versions(conn, stale_models)
    plan.trend_rows = refresh_aggregates(store)
    return plan

