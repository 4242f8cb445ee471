"""The pre-start queue ETA: when a job submitted now would start, behind the live jobs.

Live jobs (queued or running) come from the store; each one's duration is the estimate given
when it was reported (``predicted_seconds``), else the active model's. Running jobs keep their
GPU until their estimate runs out; queued jobs then take the first free GPU in submission order
(FIFO), as the render farm's scheduler does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from perflib.analysis.gpus import gpus_seen
from perflib.prediction.predictor import PerformancePredictor
from perflib.queue.fifo import queue_starts
from perflib.store import Store

FLEET_DAYS = 7  # GPUs seen in this many days make up the fleet


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
class QueueSnapshot:
    """The live queue at one moment; running jobs are kept as predicted end times, so the
    snapshot stays right as time passes."""

    running_ends_at: tuple[float, ...]  # epoch seconds
    queued_seconds: tuple[float, ...]  # in submission order
    gpus: int
    taken_at: float  # time.monotonic()

    @property
    def jobs_ahead(self) -> int:
        return len(self.running_ends_at) + len(self.queued_seconds)

    def eta(self, predicted_seconds: float, now: float | None = None) -> QueueEta:
        """Start and finish of a job predicted to take `predicted_seconds`, submitted `now`."""
        now = time.time() if now is None else now
        start = expected_start([end - now for end in self.running_ends_at],
                               self.queued_seconds, self.gpus)
        return QueueEta(jobs_ahead=self.jobs_ahead, gpus=self.gpus,
                        expected_start_seconds=round(start, 3),
                        expected_finish_seconds=round(start + predicted_seconds, 3))


def take_snapshot(store: Store, predictor: PerformancePredictor, gpus: int) -> QueueSnapshot:
    """Read the live jobs and predict how long each one takes."""
    live = store.live_jobs()
    seconds = live_predicted_seconds(live, predictor)
    running = (live.status == "running").to_numpy()
    now = time.time()
    ends = [(now if pd.isna(start) else start.timestamp()) + s
            for start, s in zip(live.started_at[running], seconds[running])]
    return QueueSnapshot(running_ends_at=tuple(ends),
                         queued_seconds=tuple(seconds[~running].tolist()),
                         gpus=max(gpus, int(running.sum()), 1), taken_at=time.monotonic())


def live_predicted_seconds(live: pd.DataFrame, predictor: PerformancePredictor) -> np.ndarray:
    """Each live job's duration: the estimate it was reported with, else the model's."""
    seconds = live.predicted_seconds.to_numpy(dtype=float, na_value=np.nan, copy=True)
    for pipeline, rows in live[np.isnan(seconds)].groupby("pipeline_type"):
        estimated = predictor.estimate_batch(rows, str(pipeline)).predicted_time_seconds
        seconds[live.index.get_indexer(rows.index)] = estimated.to_numpy(dtype=float)
    # A live row written without its parameters (not through the API) counts as instant.
    return np.nan_to_num(seconds, nan=0.0)


def fleet_size(store: Store, days: int = FLEET_DAYS) -> int:
    """GPUs that started jobs in the last `days`, at least 1 (the rule of
    :func:`perflib.analysis.gpus.gpus_seen`)."""
    now = datetime.now(timezone.utc)
    return gpus_seen(store, now - timedelta(days=days), now + timedelta(seconds=1))
