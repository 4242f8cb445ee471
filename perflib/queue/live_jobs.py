"""The live jobs (queued or running), read one way and priced through one cache.

- :func:`read_live_jobs`: one query, one column list, submission order;
- :class:`LivePricer`: each job's duration is the estimate it was reported with, else the active
  model's, computed once per job and remembered for PRICE_TTL_S (a live job's parameters do not
  change), so estimate-time, the dashboard and ``/metrics`` price it alike;
- :meth:`LiveJob.seconds_left`: the one rule for what a running job has left.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from perflib.cache import TtlCache
from perflib.prediction.predictor import PerformancePredictor
from perflib.record import LIVE_STATUSES
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs

LIVE_COLUMNS = ("job_id", "pipeline_type", "job_type", "status", "hostname", "gpu_name",
                "gpu_index", "submitted_at", "started_at", "predicted_seconds")
PRICE_TTL_S = 300.0  # a live job the model priced is not priced again for a few minutes
PRICE_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class LiveJob:
    """A queued or running job as the live queue sees it (timestamps UTC-aware)."""

    job_id: str
    pipeline_type: str
    job_type: str | None
    status: str
    hostname: str | None
    gpu_name: str | None
    gpu_index: int | None
    submitted_at: datetime | None
    started_at: datetime | None
    predicted_seconds: float | None  # as reported; None: the model prices it

    @property
    def running(self) -> bool:
        return self.status == "running"

    def seconds_left(self, seconds: float, now: datetime) -> float:
        """The one rule for time left: all of a queued job's `seconds`, what a running job has
        left of them (never negative; one that did not say when it started has all of it)."""
        if not self.running or self.started_at is None:
            return seconds
        return max(0.0, seconds - (now - self.started_at).total_seconds())


def read_live_jobs(store: Store) -> list[LiveJob]:
    """Queued and running jobs in submission order, only LIVE_COLUMNS (whole rows take about
    twice as long to read), as plain rows (a DataFrame would cost more than the query)."""
    query = (sa.select(*(jobs.c[name] for name in LIVE_COLUMNS))
             .where(jobs.c.status.in_(LIVE_STATUSES))
             .order_by(jobs.c.submitted_at, jobs.c.id))
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [LiveJob(*row) for row in rows]


def read_unpriced_live_jobs(store: Store, job_ids: Iterable[str]) -> pd.DataFrame:
    """Whole rows of the live jobs `job_ids` reported without an estimate, for the model (all
    such rows are read, then picked: a list of ids could pass the database's bind limit)."""
    rows = store.frame(sa.select(jobs).where(jobs.c.status.in_(LIVE_STATUSES),
                                             jobs.c.predicted_seconds.is_(None)))
    return rows[rows.job_id.isin(set(job_ids))].reset_index(drop=True)


def model_seconds(rows: pd.DataFrame, predictor: PerformancePredictor) -> np.ndarray:
    """The active model's duration of each of `rows` (whole job rows), per pipeline; a row
    written without its parameters (not through the API) counts as instant."""
    seconds = np.full(len(rows), np.nan)
    for pipeline, group in rows.groupby("pipeline_type"):
        estimated = predictor.estimate_batch(group, str(pipeline)).predicted_time_seconds
        seconds[rows.index.get_indexer(group.index)] = estimated.to_numpy(dtype=float)
    return np.nan_to_num(seconds, nan=0.0)


class LivePricer:
    """Each live job's duration: its reported estimate, else the model's, remembered per job
    (one cache for every face of the live queue; thread-safe)."""

    def __init__(self, store: Store, predictor: PerformancePredictor):
        self.store = store
        self.predictor = predictor
        self._prices = TtlCache(PRICE_TTL_S, PRICE_CACHE_SIZE)

    def seconds(self, live: list[LiveJob]) -> list[float]:
        """Each live job's predicted duration."""
        priced = {job.job_id: self._prices.get(job.job_id) for job in live
                  if job.predicted_seconds is None}
        unpriced = [job_id for job_id, price in priced.items() if price is None]
        if unpriced:
            rows = read_unpriced_live_jobs(self.store, unpriced)
            for job_id, price in zip(rows.job_id, model_seconds(rows, self.predictor)):
                self._prices.put(job_id, float(price))
                priced[job_id] = float(price)
        return [job.predicted_seconds if job.predicted_seconds is not None
                else priced.get(job.job_id) or 0.0 for job in live]
