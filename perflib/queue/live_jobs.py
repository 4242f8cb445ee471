"""The live jobs (queued or running), read one way and priced through one cache.

- :func:`read_live_jobs`: one query, one column list, submission order;
- :class:`LivePricer`: each job's duration is the estimate it was reported with, else the active
  model's, computed once per job and remembered for PRICE_TTL_S (a live job's parameters do not
  change), so estimate-time, the dashboard and ``/metrics`` price it alike;
- :meth:`LiveJob.seconds_left`: the one rule for what a running job has left;
- :func:`fallback_seconds`: the one price of a job nothing can estimate (a row without its
  parameters): the median of its pipeline's latest FALLBACK_JOBS successful jobs, never 0 s
  while the pipeline has any, so the ETA of the jobs behind it is not short by its whole time.
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
FALLBACK_JOBS = 100  # latest successful jobs of a pipeline whose median prices an unpriced job
FALLBACK_TTL_S = 60.0


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


def fallback_seconds(store: Store, pipeline_type: str, limit: int = FALLBACK_JOBS) -> float:
    """What a live job of `pipeline_type` that nothing can estimate counts: the median
    processing time of the pipeline's latest `limit` successful jobs (0 s without any)."""
    query = (sa.select(jobs.c.processing_seconds)
             .where(jobs.c.pipeline_type == pipeline_type, jobs.c.status == "success",
                    jobs.c.processing_seconds.is_not(None))
             .order_by(jobs.c.finished_at.desc()).limit(limit))
    with store.engine.connect() as conn:
        seconds = [row[0] for row in conn.execute(query)]
    return float(np.median(seconds)) if seconds else 0.0


def model_seconds(rows: pd.DataFrame, predictor: PerformancePredictor) -> np.ndarray:
    """The active model's duration of each of `rows` (whole job rows), per pipeline; NaN for a
    row written without its parameters (not through the API)."""
    seconds = np.full(len(rows), np.nan)
    for pipeline, group in rows.groupby("pipeline_type"):
        estimated = predictor.estimate_batch(group, str(pipeline)).predicted_time_seconds
        seconds[rows.index.get_indexer(group.index)] = estimated.to_numpy(dtype=float)
    return seconds


class LivePricer:
    """Each live job's duration: its reported estimate, else the model's, remembered per job
    (one cache for every face of the live queue; thread-safe)."""

    def __init__(self, store: Store, predictor: PerformancePredictor):
        self.store = store
        self.predictor = predictor
        self._prices = TtlCache(PRICE_TTL_S, PRICE_CACHE_SIZE)
        self._fallbacks = TtlCache(FALLBACK_TTL_S, 16)

    def seconds(self, live: list[LiveJob]) -> list[float]:
        """Each live job's predicted duration (the pipeline's fallback where the model has
        none)."""
        priced = {job.job_id: self._prices.get(job.job_id) for job in live
                  if job.predicted_seconds is None}
        unpriced = [job_id for job_id, price in priced.items() if price is None]
        if unpriced:
            rows = read_unpriced_live_jobs(self.store, unpriced)
            prices = model_seconds(rows, self.predictor)
            for job_id, pipeline, price in zip(rows.job_id, rows.pipeline_type, prices):
                price = float(price) if np.isfinite(price) else self.fallback(str(pipeline))
                self._prices.put(job_id, price)
                priced[job_id] = price
        return [job.predicted_seconds if job.predicted_seconds is not None
                else priced.get(job.job_id) or self.fallback(job.pipeline_type)
                for job in live]

    def fallback(self, pipeline_type: str) -> float:
        """:func:`fallback_seconds`, remembered for FALLBACK_TTL_S."""
        seconds = self._fallbacks.get(pipeline_type)
        if seconds is None:
            seconds = fallback_seconds(self.store, pipeline_type)
            self._fallbacks.put(pipeline_type, seconds)
        return seconds
