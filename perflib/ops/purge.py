"""Purge simulated data: the jobs ``perflib simulate`` wrote and everything built from them.

Goes with a simulated job: its phases and resource samples; every model version trained after
simulated jobs were written on a period that holds them (a model trained on real jobs before the
simulation stays); the daily aggregates of the simulated days, recomputed from the real jobs left;
and the alerts last seen from the first simulated day on (the next alert detection raises again
whatever the real jobs still call for). A pipeline whose active model goes falls back to the
heuristic until ``perflib train``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from perflib.analysis.sql import SIMULATED
from perflib.ops.aggregates import aggregate_daily
from perflib.store import Store
from perflib.store.deletion import delete_jobs
from perflib.store.model_registry import delete_versions, versions_trained_between
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases as phases
from perflib.store.schema import performance_alerts as alerts
from perflib.store.schema import performance_trends as trends
from perflib.store.schema import resource_samples as samples

_JOB_TIME = sa.func.coalesce(jobs.c.started_at, jobs.c.submitted_at)


@dataclass
class PurgePlan:
    """What purging simulated data deletes (or would, in a dry run)."""

    jobs: int
    phases: int
    samples: int
    model_versions: int
    trend_rows: int
    alerts: int
    first_day: datetime | None = None  # the simulated jobs' period, when there are any
    last_day: datetime | None = None
    active_models_removed: tuple[str, ...] = ()  # pipelines left without an active model
    trend_rows_recomputed: int = 0
    dry_run: bool = True

    def describe(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        if not self.jobs:
            return "no simulated jobs: nothing to purge"
        text = (f"{verb} {self.jobs} simulated jobs ({self.first_day:%Y-%m-%d} to "
                f"{self.last_day:%Y-%m-%d}) with {self.phases} phases and {self.samples} "
                f"resource samples, {self.model_versions} model versions trained on them, "
                f"{self.trend_rows} daily aggregates and {self.alerts} alerts")
        if not self.dry_run:
            text += f"; recomputed {self.trend_rows_recomputed} daily aggregates from real jobs"
        if self.active_models_removed:
            text += (f"; no active model left for {', '.join(self.active_models_removed)}: "
                     "run `perflib train`")
        return text


def purge_simulated(store: Store, dry_run: bool = False) -> PurgePlan:
    """Delete simulated jobs and what was built from them (see the module docstring)."""
    simulated_ids = sa.select(jobs.c.job_id).where(SIMULATED)
    with store.engine.connect() as conn:
        period = conn.execute(sa.select(sa.func.count(), sa.func.min(_JOB_TIME),
                                        sa.func.max(_JOB_TIME),
                                        sa.func.min(jobs.c.recorded_at)).where(SIMULATED)).one()
        if not period[0]:
            return PurgePlan(0, 0, 0, 0, 0, 0, dry_run=dry_run)
        first, last = (_day_start(value) for value in period[1:3])
        after = last + timedelta(days=1)
        tainted_models = _models_trained_on(conn, first, after, period[3])
        trend_days = sa.and_(trends.c.day >= first.date(), trends.c.day < after.date())
        recent_alerts = alerts.c.last_seen >= first
        plan = PurgePlan(
            jobs=period[0],
            phases=_count(conn, phases, phases.c.job_id.in_(simulated_ids)),
            samples=_count(conn, samples, samples.c.job_id.in_(simulated_ids)),
            model_versions=len(tainted_models),
            trend_rows=_count(conn, trends, trend_days),
            alerts=_count(conn, alerts, recent_alerts),
            first_day=first, last_day=last,
            active_models_removed=tuple(sorted({row.pipeline_type for row in tainted_models
                                                if row.is_active})),
            dry_run=dry_run)
    if dry_run:
        return plan
    with store.writable_engine().begin() as conn:
        delete_jobs(conn, SIMULATED)
        delete_versions(conn, [row.id for row in tainted_models])
        conn.execute(sa.delete(trends).where(trend_days))
        conn.execute(sa.delete(alerts).where(recent_alerts))
    plan.trend_rows_recomputed = aggregate_daily(store, first, after)
    return plan


def _models_trained_on(conn: sa.Connection, first: datetime, after: datetime,
                       first_recorded: datetime | None) -> list:
    """Model versions whose training period overlaps [first, after) and that were created after
    the first simulated job was recorded (when the store knows that)."""
    rows = versions_trained_between(conn, first, after)
    if first_recorded is None:
        return rows
    # recorded_at has whole seconds on SQLite: a model of the same second counts as after.
    since = first_recorded.replace(microsecond=0)
    return [row for row in rows if row.created_at >= since]


def _count(conn: sa.Connection, table: sa.Table, condition) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(table).where(condition)
                        ).scalar_one()


def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)
