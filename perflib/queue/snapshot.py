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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from perflib.analysis.gpus import gpus_seen
from perflib.cache import TtlCache
from perflib.prediction.predictor import PerformancePredictor
from perflib.queue.fifo import queue_starts
from perflib.queue.live_jobs import LivePricer, read_live_jobs, seconds_left
from perflib.store import Store

FLEET_DAYS = 7  # GPUs seen in this many days make up the fleet
FLEET_TTL_S = 60.0  # the fleet is counted again after a minute, or once jobs are recorded


class QueueEta(BaseModel):
    """When a job submitted now would start and finish, behind the live queue."""

    jobs_ahead: int = Field(description="jobs queued or running now")
    gpus: int = Field(description="GPUs the queue is spread over")
    expected_start_seconds: float = Field(description="seconds from now until it starts")
    expected_finish_seconds: float = Field(description="seconds from now until it finishes")


def expected_start(running_seconds_left: Sequence[float], queued_seconds: Sequence[float],
                   gpus: int) -> float:
    """Seconds until a new job starts behind the running and queued jobs (FIFO)."""
    return queue_starts(running_seconds_left, queued_seconds, gpus)[-1]


@dataclass(frozen=True)
class LiveSnapshot:
    """The live jobs at `taken_at`: :func:`read_live_jobs`' columns plus ``seconds`` (the
    predicted duration) and ``seconds_left`` (all of a queued job's, what a running job has
    left), in submission order; and the GPUs the queue is spread over."""

    taken_at: datetime
    jobs: pd.DataFrame
    gpus: int  # the fleet, never fewer than the running jobs, at least 1
    read_at: float  # time.monotonic(), for the readers' freshness checks

    @property
    def running(self) -> np.ndarray:
        return (self.jobs.status == "running").to_numpy()

    @property
    def jobs_ahead(self) -> int:
        return len(self.jobs)

    def starts(self, now: datetime | None = None) -> list[float]:
        """Seconds from `now` until each queued job starts, and last until a job submitted
        `now` would (running jobs' time left counts down from `taken_at`)."""
        elapsed = ((now or self.taken_at) - self.taken_at).total_seconds()
        left = self.jobs.seconds_left.to_numpy()
        return queue_starts((left[self.running] - elapsed).tolist(),
                            left[~self.running].tolist(), self.gpus)

    def eta(self, predicted_seconds: float, now: datetime | None = None) -> QueueEta:
        """Start and finish of a job predicted to take `predicted_seconds`, submitted `now`."""
        start = self.starts(now or datetime.now(timezone.utc))[-1]
        return QueueEta(jobs_ahead=self.jobs_ahead, gpus=self.gpus,
                        expected_start_seconds=round(start, 3),
                        expected_finish_seconds=round(start + predicted_seconds, 3))

    def rows(self) -> list[dict[str, Any]]:
        """The jobs as dicts (nulls as None, timestamps as datetimes, GPU indices as ints)."""
        rows = self.jobs.astype(object).where(self.jobs.notna(), None).to_dict("records")
        for row in rows:
            row["gpu_index"] = None if row["gpu_index"] is None else int(row["gpu_index"])
            for name in ("submitted_at", "started_at"):
                row[name] = row[name] and row[name].to_pydatetime()
        return rows


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
        live = live.assign(seconds=seconds, seconds_left=seconds_left(live, seconds, now))
        running = int((live.status == "running").sum())
        return LiveSnapshot(taken_at=now, jobs=live, gpus=max(self.fleet_size(), running, 1),
                            read_at=time.monotonic())

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
