"""Retention of jobs with their phases and resource samples, the part of ``perflib maintain``
that grows with history.

On day-partitioned PostgreSQL tables (:mod:`perflib.store.partitions`) the days wholly before
the cut-off go as whole partitions (DETACH + DROP, no row is read), the day that straddles it
loses its rows before the cut-off, and the coming days' partitions are created ahead. Elsewhere
(SQLite, a PostgreSQL database not yet migrated) the old rows are deleted.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from perflib.store import Store, partitions
from perflib.store.deletion import delete_jobs
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases as phases
from perflib.store.schema import resource_samples as samples

MIGRATION_HINT = ("the job tables are not partitioned: `perflib migrate-partitions` moves them "
                  "to day partitions, so that retention drops whole days instead of deleting "
                  "rows")


@dataclass
class JobRetention:
    """Jobs, phases and samples older than the cut-off (deleted, or counted in a dry run)."""

    jobs: int
    phases: int
    samples: int
    whole_partitions: int = 0  # day partitions of the three tables that go whole
    estimated: bool = False  # some whole partitions counted from PostgreSQL's row estimates
    partitions_created: int = 0  # day partitions made ahead
    partitions_left: int = 0  # whole partitions whose table stayed locked: the next run's
    note: str = ""


def plan_retention(store: Store, cutoff: datetime) -> JobRetention:
    """Count what retention at `cutoff` removes, without reading a partition that goes whole."""
    if not store.is_partitioned:
        old = old_jobs(cutoff)
        with store.engine.connect() as conn:
            counts = _counts(conn, old, None)
        note = MIGRATION_HINT if store.is_postgres else ""
        return JobRetention(*counts, note=note)
    with store.engine.connect() as conn:
        whole = partitions.whole_partitions_before(conn, cutoff)
        estimates, estimated = partitions.estimated_rows(conn, whole)
        counts = _counts(conn, *_left_by_partitions(store, cutoff))
    totals = [estimates[table.name] + count for table, count in zip((jobs, phases, samples),
                                                                     counts)]
    return JobRetention(*totals, whole_partitions=len(whole), estimated=estimated)


def apply_retention(store: Store, retention: JobRetention, cutoff: datetime,
                    now: datetime) -> None:
    """Remove what is older than `cutoff`; on partitioned tables also create the next
    ``partitions.AHEAD_DAYS`` days' partitions (counted in `retention`, with the partitions
    that stayed locked: left for the next run)."""
    if not store.is_partitioned:
        with store.writable_engine().begin() as conn:
            delete_jobs(conn, old_jobs(cutoff))
        return
    _dropped, retention.partitions_left = partitions.drop_before(store.engine, cutoff)
    with store.writable_engine().begin() as conn:
        partitions.delete_strays_before(conn, _day_start(cutoff))
        delete_jobs(conn, *_left_by_partitions(store, cutoff))
        strays = partitions.stray_days(conn)  # days a write could not create: made now
    today = now.astimezone(timezone.utc).date()
    ahead = partitions.days_between(today, today + timedelta(days=partitions.AHEAD_DAYS))
    retention.partitions_created = partitions.ensure_partitions(
        store.engine, {*ahead, *strays}, attempts=partitions.LOCK_ATTEMPTS)


def _left_by_partitions(store: Store, cutoff: datetime):
    """The old jobs that no whole partition takes (those of the cut-off's day, and those never
    started), and the phases' and samples' partitions they can have rows in; conditions
    partition pruning understands, so no partition before that day is read."""
    day_start = _day_start(cutoff)
    straddling = sa.and_(jobs.c.started_at >= day_start, jobs.c.started_at < cutoff)

    def children(child: sa.Table):
        started = child.c.job_started_at
        return sa.or_(started.is_(None), sa.and_(started >= day_start, started < cutoff))

    return sa.or_(straddling, _never_started_before(cutoff)), children


def _day_start(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(timezone.utc).date(), datetime.min.time(),
                            timezone.utc)


def old_jobs(cutoff: datetime):
    """Jobs started before `cutoff`, and jobs that never started (queued, then lost) submitted
    or recorded before it."""
    return sa.or_(jobs.c.started_at < cutoff, _never_started_before(cutoff))


def _never_started_before(cutoff: datetime):
    return sa.and_(jobs.c.started_at.is_(None),
                   sa.func.coalesce(jobs.c.submitted_at, jobs.c.recorded_at)
                   < cutoff)


def _counts(conn: sa.Connection, condition, narrow) -> tuple[int, int, int]:
    """Jobs matching `condition`, and their phases and samples (`narrow(child)` limits where
    they are looked for)."""
    ids = sa.select(jobs.c.job_id).where(condition)

    def count(table, where) -> int:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(where)
                            ).scalar_one()

    children = [sa.and_(child.c.job_id.in_(ids), *([narrow(child)] if narrow else []))
                for child in (phases, samples)]
    return count(jobs, condition), count(phases, children[0]), count(samples, children[1])
