"""What the history can tell the planner: where it starts (a young database's window begins at
its first job, so the weeks before it do not read as quiet ones), and whether its jobs carry
submission times (without them an arrival is a start time, of jobs that may have run back to
back, and the simulated waits are ones nobody saw)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from perflib.capacity.arrivals import arrival_seconds
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs

MOSTLY = 0.5  # warn when more than this share of the window's jobs lacks a submission time


@dataclass(frozen=True)
class SubmissionTimes:
    """How many of the window's jobs say when they were submitted, and how many waited."""

    jobs: int
    missing: int  # neither submitted_at nor queued_at: the arrival is the start (or record)
    waited: int  # submitted or queued before they started

    def warning(self, p95_wait_now: float) -> str | None:
        """A sentence when arrivals are mostly start times, or when no job was seen waiting
        although the simulation makes them wait; None when the times look real."""
        if self.jobs and self.missing > MOSTLY * self.jobs:
            return (f"{self.missing} of {self.jobs} jobs carry no submission time (imported "
                    "history?): their arrivals are start times, so jobs that ran back to back "
                    "are simulated as if they had queued; the waits are likely overstated.")
        if self.jobs and not self.waited and p95_wait_now > 0:
            return (f"No job of the {self.jobs} waited (each submission time equals its start), "
                    f"yet the simulation makes them wait ({p95_wait_now:.0f} s at the p95): if "
                    "these are start times of jobs run back to back, that wait was never "
                    "observed.")
        return None


def history_start(store: Store, start: datetime, end: datetime,
                  pipeline_type: str | None = None) -> datetime | None:
    """Where the window [start, end) begins for the pool: at `start`, or at the whole hour its
    first job ever arrived where the history is younger (None: no job before `end`). Quiet
    hours inside the history stay in."""
    conditions = [jobs.c.started_at < end]
    if pipeline_type:
        conditions.append(jobs.c.pipeline_type == pipeline_type)
    with store.engine.connect() as conn:
        first_start = conn.execute(sa.select(sa.func.min(jobs.c.started_at))
                                   .where(*conditions)).scalar()
        if first_start is None:
            return None
        first_day = [*conditions, jobs.c.started_at < first_start + timedelta(days=1)]
        seconds = conn.execute(sa.select(sa.func.min(arrival_seconds(store.engine.dialect.name)))
                               .where(*first_day)).scalar()
    arrived = datetime.fromtimestamp(float(seconds), timezone.utc)
    return max(start, arrived.replace(minute=0, second=0, microsecond=0))


def submission_times(store: Store, start: datetime, end: datetime,
                     pipeline_type: str | None = None) -> SubmissionTimes:
    """Count the jobs started in [start, end) without a submission time, and those that
    waited."""
    missing = sa.and_(jobs.c.submitted_at.is_(None), jobs.c.queued_at.is_(None))
    waited = sa.or_(jobs.c.submitted_at < jobs.c.started_at,
                    jobs.c.queued_at < jobs.c.started_at)
    conditions = [jobs.c.started_at >= start, jobs.c.started_at < end]
    if pipeline_type:
        conditions.append(jobs.c.pipeline_type == pipeline_type)
    query = sa.select(sa.func.count(), sa.func.count(sa.case((missing, 1))),
                      sa.func.count(sa.case((waited, 1)))).where(*conditions)
    with store.engine.connect() as conn:
        total, without, waiting = conn.execute(query).one()
    return SubmissionTimes(int(total), int(without), int(waiting))
