"""Per-GPU view of a window: how busy each card was, how well it was used, and how long it took
for the same work as the rest of the fleet — so one slow or idle card stands out (SQL)."""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

import pandas as pd
import sqlalchemy as sa

from perflib.analysis.daily import expected_seconds
from perflib.analysis.sql import FINISHED, compute_seconds, in_window
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs

GPU_COLUMNS = ["hostname", "gpu_index", "gpu_name", "jobs", "failed", "busy_seconds",
               "busy_share", "gpu_util_pct", "relative_time"]


def gpu_usage(store: Store, start: datetime, end: datetime, pipeline_type: str | None = None
              ) -> pd.DataFrame:
    """Per host, GPU index and GPU model, over the finished jobs started in [start, end):

    - ``jobs``, ``failed``;
    - ``busy_seconds``: processing time (failed jobs held the card too), and ``busy_share`` of
      the window;
    - ``gpu_util_pct``: utilisation weighted by each job's processing time;
    - ``relative_time``: compute seconds of its successful jobs ÷ what the window's cost model
      expects for them (per pipeline) — 1.0 runs like the fleet, 1.3 takes 30% longer for the
      same work.
    """
    ok = jobs.c.status == "success"
    expected = expected_seconds(store, start, end, pipeline_type)
    timed = sa.and_(ok, expected.isnot(None))
    with_util = jobs.c.gpu_util_avg_pct.isnot(None)
    keys = [jobs.c.hostname, jobs.c.gpu_index, jobs.c.gpu_name]
    query = (sa.select(
        *keys, sa.func.count().label("jobs"),
        sa.func.sum(sa.case((jobs.c.status == "failed", 1), else_=0)).label("failed"),
        sa.func.sum(jobs.c.processing_seconds).label("busy_seconds"),
        (sa.func.sum(sa.case((with_util, jobs.c.gpu_util_avg_pct * jobs.c.processing_seconds)))
         / sa.func.nullif(sa.func.sum(sa.case((with_util, jobs.c.processing_seconds))), 0)
         ).label("gpu_util_pct"),
        (sa.func.sum(sa.case((timed, compute_seconds())))
         / sa.func.nullif(sa.func.sum(sa.case((timed, expected))), 0)).label("relative_time"))
        .where(FINISHED, in_window(start, end)).group_by(*keys)
        .order_by(jobs.c.hostname, jobs.c.gpu_index, jobs.c.gpu_name))
    if pipeline_type:
        query = query.where(jobs.c.pipeline_type == pipeline_type)
    frame = store.frame(query)
    if frame.empty:
        return pd.DataFrame(columns=GPU_COLUMNS)
    frame["busy_share"] = frame.busy_seconds / (end - start).total_seconds()
    return frame[GPU_COLUMNS]


def gpus_seen(store: Store, start: datetime, end: datetime,
              pipeline_type: str | None = None) -> int:
    """GPUs that started jobs in [start, end), at least 1, counted by :func:`count_gpus`:
    estimate-time's queue, the live dashboard and capacity planning all count the fleet so."""
    conditions = [jobs.c.gpu_name.is_not(None), in_window(start, end)]
    if pipeline_type:
        conditions.append(jobs.c.pipeline_type == pipeline_type)
    query = sa.select(jobs.c.hostname, jobs.c.gpu_name, jobs.c.gpu_index).distinct() \
        .where(*conditions)
    with store.engine.connect() as conn:
        return max(1, count_gpus(conn.execute(query)))


def count_gpus(gpus: Iterable[tuple[str | None, str | None, int | None]]) -> int:
    """The one rule for counting GPUs from (hostname, gpu_name, gpu_index) rows: per host and
    GPU model, the distinct ``gpu_index`` values, one GPU where no row said which."""
    indices: dict[tuple, set] = {}
    for hostname, gpu_name, gpu_index in gpus:
        known = indices.setdefault((_value(hostname), _value(gpu_name)), set())
        if _value(gpu_index) is not None:
            known.add(int(gpu_index))
    return sum(max(1, len(known)) for known in indices.values())


def _value(cell):
    """None for a null cell (pandas reads SQL NULL as None or NaN)."""
    return None if cell is None or cell != cell else cell
