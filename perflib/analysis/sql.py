"""SQL building blocks shared by the analyses: time windows, day buckets, work units.

Every aggregate is computed in the database (GROUP BY, window functions), so analyses scale with
the database, not with this machine's memory; the same expressions run on SQLite and PostgreSQL.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import sqlalchemy as sa

from perflib.record import FINAL_STATUSES
from perflib.store import Store, parse_timestamp
from perflib.store.schema import generation_performance as jobs
from perflib.store.schema import generation_phases

FINISHED = jobs.c.status.in_(FINAL_STATUSES)
SUCCEEDED = jobs.c.status == "success"
# Written by perflib.sim.simulate: flagged, or (rows from before the flag existed) a sim- job id.
SIMULATED = sa.or_(jobs.c.simulated.is_(True),
                   sa.and_(jobs.c.simulated.is_(None), jobs.c.job_id.like("sim-%")))


def out_of_memory(columns=jobs.c):
    """A failed job whose error says it ran out of GPU memory (`columns`: of the jobs table or
    of a sample of it)."""
    return sa.and_(columns.status == "failed",
                   sa.or_(columns.error_type.like("%OutOfMemory%"),
                          columns.error_message.like("%out of memory%")))


def work_units():
    """Token-steps of denoising work (summed over a job's sampling passes, following each
    model's latent geometry): the stored column the store computes at write time with
    :mod:`perflib.prediction.workload`, so SQL and Python share one definition."""
    return jobs.c.work_units


def attention_work():
    """Work units × the tokens each token attends to: the self-attention term (stored)."""
    return jobs.c.attention_work


def compute_seconds():
    """Processing seconds without model loading: the time the generation itself took."""
    return jobs.c.processing_seconds - sa.func.coalesce(jobs.c.init_seconds, 0.0)


def day_of(column, dialect: str):
    """The UTC calendar day of a timestamp column, as text ``YYYY-MM-DD``."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.substr(column, 1, 10)  # SQLite stores UTC text 'YYYY-MM-DD HH:MM:SS'


def hour_of(column, dialect: str):
    """The UTC hour (0–23) of a timestamp column."""
    if dialect == "postgresql":
        return sa.cast(sa.extract("hour", sa.func.timezone("UTC", column)), sa.Integer)
    return sa.cast(sa.func.substr(column, 12, 2), sa.Integer)


def window(store: Store, days_back: float, end: datetime | str | None = None
           ) -> tuple[datetime, datetime]:
    """[start, end) of an analysis: `end` defaults to the midnight (UTC) after the newest job
    started, so a report covers whole days."""
    if end is None:
        with store.engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(jobs.c.started_at))).scalar()
        newest = newest or datetime.now(timezone.utc)
        end = datetime.combine(newest.date() + timedelta(days=1), datetime.min.time(),
                               timezone.utc)
    end = parse_timestamp(end)
    return end - timedelta(days=days_back), end


def in_window(start: datetime, end: datetime):
    """Jobs started in [start, end)."""
    return sa.and_(jobs.c.started_at >= start, jobs.c.started_at < end)


def window_rows(store: Store, start: datetime, end: datetime) -> int:
    """How many jobs started in [start, end) (an index range count)."""
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(in_window(start, end))
                            ).scalar_one()


def sampled_phases(store: Store, sample: sa.Subquery):
    """The sampled jobs joined to their phases, as (from clause, phase columns ``name``,
    ``seconds``), at one index lookup per job whatever the history holds: on PostgreSQL a
    LATERAL subquery per job (its GROUP BY keeps the planner from turning it into a hash join
    over the phases of the whole window), matched on the job's start as well as its id so that
    each lookup reads one day partition (rows written before that column existed carry none
    and are matched on the id alone)."""
    s = sample.c
    if not store.is_postgres:
        return sample.join(generation_phases, generation_phases.c.job_id == s.job_id), \
            generation_phases.c
    started = generation_phases.c.job_started_at
    per_job = (sa.select(generation_phases.c.name,
                         sa.func.sum(generation_phases.c.seconds).label("seconds"))
               .where(generation_phases.c.job_id == s.job_id,
                      sa.or_(started == s.started_at, started.is_(None)))
               .group_by(generation_phases.c.name).lateral("job_phases"))
    return sample.join(per_job, sa.true()), per_job.c


def frame_without_jit(store: Store, query) -> pd.DataFrame:
    """Rows of a SELECT as a DataFrame, with PostgreSQL's JIT compiler off for it: the planner
    prices a per-job LATERAL lookup as if it read every day partition, and compiling that plan
    took 12 s of a 0.3 s query."""
    with store.engine.connect() as conn:
        if store.is_postgres:
            conn.execute(sa.text("SET LOCAL jit = off"))  # this transaction only
        result = conn.execute(query)
        return pd.DataFrame(result.mappings().all(), columns=list(result.keys()))


def time_percentiles(start: datetime, end: datetime, pipeline_type: str | None = None):
    """PostgreSQL: per pipeline, the median and p95 total seconds of the successful jobs started
    in [start, end) as ordered-set aggregates (``percentile_disc``: the same values as the
    ranks :func:`~perflib.analysis.daily.daily_stats` takes, at one sort per pipeline, no window
    function over the window's rows)."""
    seconds = jobs.c.total_seconds
    query = (sa.select(jobs.c.pipeline_type,
                       sa.func.percentile_disc(0.5).within_group(seconds)
                       .label("median_total_seconds"),
                       sa.func.percentile_disc(0.95).within_group(seconds)
                       .label("p95_total_seconds"))
             .where(SUCCEEDED, in_window(start, end)).group_by(jobs.c.pipeline_type))
    if pipeline_type:
        query = query.where(jobs.c.pipeline_type == pipeline_type)
    return query


def in_ranges(ranges):
    """Jobs started in any of the [start, end) `ranges` (none: no job)."""
    return sa.or_(sa.false(), *(in_window(start, end) for start, end in ranges))


def sampled_jobs(store: Store, start: datetime, end: datetime, window_rows: int, size: int):
    """A subquery of about `size` rows drawn evenly from the jobs started in [start, end),
    whose cost does not grow with history: ``TABLESAMPLE SYSTEM`` with the share that leaves
    `size` of `window_rows` on PostgreSQL, an id stride over the window's id range (one primary
    key lookup per row) on SQLite. Every job of the window when it holds no more than `size`.
    Returns (subquery, fraction sampled)."""
    if window_rows <= size:
        return sa.select(jobs).where(in_window(start, end)).subquery("sampled"), 1.0
    fraction = size / window_rows
    if store.is_postgres:
        # REPEATABLE (seed 0): the same window gives the same sample
        sample = sa.tablesample(jobs, sa.func.system(100.0 * fraction), name="sampled_rows",
                                seed=sa.literal(0))
        return (sa.select(sample).where(sample.c.started_at >= start,
                                        sample.c.started_at < end)
                .subquery("sampled"), fraction)
    low, high = _id_range(store, start, end)
    step = max(1, -(-(high - low + 1) // size))  # ceiling: at most `size` ids
    ids = sa.select(sa.literal(low).label("id")).cte("sample_ids", recursive=True)
    ids = ids.union_all(sa.select(ids.c.id + step).where(ids.c.id + step <= high))
    query = (sa.select(jobs).join(ids, jobs.c.id == ids.c.id)
             .where(in_window(start, end)))
    return query.subquery("sampled"), 1.0 / step


def spread_order(job_id):
    """An order of jobs by id that is the same on every run and spreads over the whole id
    range (a multiplicative hash): the first `n` in it are an even pick, unlike ORDER BY
    random(), which keeps other rows each time a sample holds more than the `n` wanted."""
    return job_id * 2654435761 % 4294967296


def _id_range(store: Store, start: datetime, end: datetime) -> tuple[int, int]:
    """The id of the first job started at or after `start`, and the id before the first job
    started at or after `end` (ids follow writing order: jobs of the window written late land
    just above it)."""
    def first_id_from(moment):
        return (sa.select(jobs.c.id).where(jobs.c.started_at >= moment)
                .order_by(jobs.c.started_at).limit(1))

    with store.engine.connect() as conn:
        low = conn.execute(first_id_from(start)).scalar() or 1
        after = conn.execute(first_id_from(end)).scalar()
        high = after - 1 if after else conn.execute(sa.select(sa.func.max(jobs.c.id))).scalar()
    return low, max(low, high or low)


def ceil_int(expression, dialect: str):
    """The smallest whole number ≥ a positive expression (SQLite's CAST truncates, PostgreSQL's
    rounds, so each gets its own form)."""
    if dialect == "postgresql":
        return sa.cast(sa.func.ceil(expression), sa.Integer)
    return sa.cast(expression + 0.999999, sa.Integer)
