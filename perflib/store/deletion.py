"""Deleting jobs: a job's phases and resource samples go with it, on every backend.

PostgreSQL's partitioned job tables have no foreign key to cascade, so the children are deleted
explicitly, first, in the caller's transaction.
"""
from __future__ import annotations

import sqlalchemy as sa

from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases, resource_samples


def delete_jobs(conn: sa.Connection, condition, narrow=None) -> int:
    """Delete the jobs matching `condition` with their phases and resource samples; return how
    many jobs went. `narrow(table)`, where given, limits where phases and samples are looked for
    (to the partitions that hold them)."""
    ids = sa.select(jobs.c.job_id).where(condition)
    for child in (generation_phases, resource_samples):
        extra = [narrow(child)] if narrow is not None else []
        conn.execute(sa.delete(child).where(child.c.job_id.in_(ids), *extra))
    return conn.execute(sa.delete(jobs).where(condition)).rowcount
