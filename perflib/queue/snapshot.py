"""The live queue at one moment, the one source of estimate-time's queue ETA, the live
dashboard's timeline and ``/metrics``' autoscaling signal.

:class:`LiveQueue` reads the live jobs (:func:`perflib.queue.live_jobs.read_live_jobs`), prices
them through its one :class:`~perflib.queue.live_jobs.LivePricer`, counts the fleet by the one
rule (:func:`perflib.analysis.gpus.gpus_seen`) and returns a :class:`LiveSnapshot`. Running jobs
keep their GPU until their estimate runs out; queued jobs then take the first free GPU in
submission order (FIFO, :func:`perflib.queue.fifo.queue_starts`), as the render farm's
scheduler does.
"""
from __future__ import annotations

import time
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import pandas as pd
from pydantic import BaseModel, Field

from perflib.analysis.gpus import gpus_seen
from perflib.cache import TtlCache
from perflib.prediction.predictor import PerformancePredictor
from perflib.queue.fifo import queue_starts
from perflib.queue.live_jobs import LIVE_COLUMNS, LiveJob, LivePricer, read_live_jobs
from perflib.record import PIPELINE_TYPES
from perflib.store import Store

FLEET_DAYS = 7  # GPUs seen in this many days make up the fleet
FLEET_TTL_S = 60.0  # the fleet is counted again after a minute, or once jobs are recorded


class QueueEta(BaseModel):
    """When a job submitted now would start and finish, behind the live queue."""

    jobs_ahead: int = Field(description="jobs queued or running now")
    gpus: int = Field(description="GPUs the queue is spread over")
    expected_start_seconds: float = Field(description="seconds from now until it starts")
    expected_finish_seconds: float = Field(description="seconds from now until it finishes")
    unestimated_seconds_each: float | None = Field(
        None, description="what a live job of this pipeline that nothing can estimate counts "
                          "(the median of its latest 100 successful jobs): the ComfyUI node "
                          "prices the prompts ahead that have no estimate with it")


def expected_start(running_seconds_left: Sequence[float], queued_seconds: Sequence[float],
                   gpus: int) -> float:
    """Seconds until a new job starts behind the running and queued jobs (FIFO)."""
    return queue_starts(running_seconds_left, queued_seconds, gpus)[-1]


@dataclass(frozen=True)
class LiveSnapshot:
    """The live jobs at `taken_at` in submission order, each one's predicted ``seconds`` and
    ``seconds_left`` (all of a queued job's, what a running job has left), and the GPUs the
    queue is spread over."""

    taken_at: datetime
    jobs: tuple[LiveJob, ...]
    seconds: tuple[float, ...]
    seconds_left: tuple[float, ...]
    gpus: int  # the fleet, never fewer than the running jobs, at least 1
    read_at: float  # time.monotonic(), for the readers' freshness checks
    fallbacks: tuple[tuple[str, float], ...] = ()  # per pipeline, an unpriced job's seconds

    @property
    def jobs_ahead(self) -> int:
        return len(self.jobs)

    def starts(self, now: datetime | None = None) -> list[float]:
        """Seconds from `now` until each queued job starts, and last until a job submitted
        `now` would (running jobs' time left counts down from `taken_at`)."""
        elapsed = ((now or self.taken_at) - self.taken_at).total_seconds()
        running = [left - elapsed for job, left in zip(self.jobs, self.seconds_left)
                   if job.running]
        queued = [left for job, left in zip(self.jobs, self.seconds_left) if not job.running]
        return queue_starts(running, queued, self.gpus)

    def eta(self, predicted_seconds: float, now: datetime | None = None,
            pipeline_type: str | None = None) -> QueueEta:
        """Start and finish of a job predicted to take `predicted_seconds`, submitted `now`
        (and, given its pipeline, what an unestimated job of it counts)."""
        start = self.starts(now or datetime.now(timezone.utc))[-1]
        fallback = dict(self.fallbacks).get(pipeline_type)
        return QueueEta(jobs_ahead=self.jobs_ahead, gpus=self.gpus,
                        expected_start_seconds=round(start, 3),
                        expected_finish_seconds=round(start + predicted_seconds, 3),
                        unestimated_seconds_each=None if fallback is None
                        else round(fallback, 3))

    def frame(self) -> pd.DataFrame:
        """The jobs as a DataFrame (LIVE_COLUMNS), plus ``seconds_left``."""
        frame = pd.DataFrame([astuple(job) for job in self.jobs], columns=list(LIVE_COLUMNS))
        return frame.assign(seconds_left=list(self.seconds_left))


class LiveQueue:
    """The live queue of one store: every face (estimate-time, the dashboard, ``/metrics``)
    takes its snapshots here, so they share one reader, one price cache and one fleet count.
    Thread-safe."""

    def __init__(self, store: Store, predictor: PerformancePredictor):
        self.store = store
        self.pricer = LivePricer(store, predictor)
        self._fleet = TtlCache(FLEET_TTL_S, 1)
        self._recorded = 0  # times jobs were recorded: a count begun before is not kept

    def snapshot(self, now: datetime | None = None) -> LiveSnapshot:
        """Read and price the live jobs as of `now`."""
        now = now or datetime.now(timezone.utc)
        live = read_live_jobs(self.store)
        seconds = self.pricer.seconds(live)
        running = sum(job.running for job in live)
        return LiveSnapshot(
            taken_at=now, jobs=tuple(live), seconds=tuple(seconds),
            seconds_left=tuple(job.seconds_left(s, now) for job, s in zip(live, seconds)),
            gpus=max(self.fleet_size(), running, 1), read_at=time.monotonic(),
            fallbacks=tuple((name, self.pricer.fallback(name)) for name in PIPELINE_TYPES))

    def fleet_size(self) -> int:
        """GPUs that started jobs in the last FLEET_DAYS, at least 1 (remembered FLEET_TTL_S)."""
        gpus = self._fleet.get("gpus")
        if gpus is None:
            recorded = self._recorded
            gpus = fleet_size(self.store)
            if recorded == self._recorded:
                self._fleet.put("gpus", gpus)
        return gpus

    def jobs_recorded(self) -> None:
        """Jobs were recorded: count the fleet again at the next snapshot."""
        self._recorded += 1
        self._fleet.clear()


def fleet_size(store: Store, days: int = FLEET_DAYS) -> int:
    """GPUs that started jobs in the last `days`, at least 1 (the rule of
    :func:`perflib.analysis.gpus.gpus_seen`)."""
    now = datetime.now(timezone.utc)
    return gpus_seen(store, now - timedelta(days=days), now + timedelta(seconds=1))
