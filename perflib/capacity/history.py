"""What the history can tell the planner: where it starts (a young database's window begins at
its first job, so the weeks before it do not read as quiet ones)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from perflib.capacity.arrivals import arrival_seconds
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs



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

