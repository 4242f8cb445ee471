"""The autoscaling signal per pool of GPUs (pipeline × GPU type): predicted seconds of live work,
and the fewest GPUs that start every queued job within the target wait.

perflib starts no machines; KEDA or a Kubernetes HPA read these numbers from ``/metrics``
(``deploy/autoscaling``). Pools are labelled by ``pipeline_type`` and ``gpu_name``. A live job
that names no GPU (a queued job rarely knows its GPU yet) counts in its pipeline's main pool:
the GPU type with the most GPUs that ran the pipeline's jobs recently (ties by name), else
``gpu_name="unassigned"`` — so the pool that takes most of a pipeline's work scales for its
shared queue, and a job pinned to a GPU type counts only there.

A pool is reported while it has live work; then its series go. At most POOL_LABEL_CAP pools
are reported by name (:func:`fold_pools`), so a flood of distinct GPU names cannot grow
``/metrics`` without bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa

from perflib.analysis.gpus import count_gpus
from perflib.queue.fifo import queue_starts
from perflib.queue.search import smallest_gpus
from perflib.queue.snapshot import LiveQueue
from perflib.store import Store
from perflib.store.schema import generation_performance as jobs

UNASSIGNED = "unassigned"  # the pool of a pipeline whose jobs have run on no known GPU lately
# The most pools /metrics names (each is three series); the pools beyond them, fewest GPUs and
# least work first, are summed into one pool per pipeline named OTHER.
POOL_LABEL_CAP = 20
OTHER = "other"
RECENT_SECONDS = 900.0  # a GPU that started a pool's job this recently belongs to the pool
MAX_SIMULATED_JOBS = 10_000  # above this many queued jobs, the closed-form bound answers
SLACK_SECONDS = 1e-6  # float rounding in the simulated starts


@dataclass(frozen=True)
class PoolSignal:
    """What one pool needs now."""

    pipeline_type: str
    gpu_name: str
    backlog_seconds: float  # predicted seconds queued, plus what running jobs have left
    desired_gpus: int  # fewest GPUs starting every queued job within the target wait
    gpus: int  # GPUs that ran one of the pool's jobs lately or run one now


def desired_gpus(running_seconds_left: Sequence[float], queued_seconds: Sequence[float],
                 target_wait_seconds: float) -> int:
    """The fewest GPUs on which every queued job starts within `target_wait_seconds` from now
    (FIFO, :func:`perflib.queue.fifo.queue_starts`): 0 with no live work, else at least 1 and never
    fewer than the jobs running (a running job is not stopped to shrink the pool).

    Searched (:func:`perflib.queue.search.smallest_gpus`) down from ``ceil(backlog ÷ target)``,
    which always suffices: under FIFO a job starts only once every GPU has been busy since now,
    so it starts by backlog ÷ GPUs. Above MAX_SIMULATED_JOBS queued jobs that bound is the answer.
    """
    if not target_wait_seconds > 0:
        raise ValueError(f"target_wait_seconds must be positive, got {target_wait_seconds!r}")
    running = [max(0.0, seconds) for seconds in running_seconds_left]
    queued = [max(0.0, seconds) for seconds in queued_seconds]
    if not running and not queued:
        return 0
    low = max(1, len(running))
    high = max(low, math.ceil((sum(running) + sum(queued)) / target_wait_seconds))
    if not queued:
        return low
    if len(queued) > MAX_SIMULATED_JOBS:
        return high

    def starts_all_in_time(gpus: int) -> bool:
        return queue_starts(running, queued, gpus)[-2] <= target_wait_seconds + SLACK_SECONDS

    return smallest_gpus(starts_all_in_time, guess=high, least=low)


def recent_pool_gpus(store: Store, since: datetime) -> pd.DataFrame:
    """The GPUs that started a job since `since`: distinct pipeline_type, gpu_name, hostname
    and gpu_index (an index range on ``started_at``, so its cost follows the arrival rate, not
    the history's size)."""
    query = (sa.select(jobs.c.pipeline_type, jobs.c.gpu_name, jobs.c.hostname,
                       jobs.c.gpu_index).distinct()
             .where(jobs.c.started_at >= since, jobs.c.gpu_name.is_not(None)))
    return store.frame(query)


def pool_signals(live: pd.DataFrame, seconds_left: np.ndarray, recent_gpus: pd.DataFrame,
                 target_wait_seconds: float) -> list[PoolSignal]:
    """One signal per pool with live work; a pool whose work is done has none (its series
    leave /metrics), whatever GPUs it had.

    `live` holds the queued and running jobs in submission order (``pipeline_type``,
    ``gpu_name``, ``status``, ``hostname``, ``gpu_index``), `seconds_left` each one's predicted
    seconds still to run (:meth:`perflib.queue.live_jobs.LiveJob.seconds_left`); `recent_gpus`
    is :func:`recent_pool_gpus`.
    """
    running = (live.status == "running").to_numpy()
    gpu_rows = pd.concat([recent_gpus, live.loc[running & live.gpu_name.notna().to_numpy(),
                                                list(recent_gpus.columns)]])
    gpus = gpus_per_pool(gpu_rows)
    pools = live.gpu_name.fillna(live.pipeline_type.map(main_pools(gpus))).fillna(UNASSIGNED)
    work = pd.DataFrame({"pipeline_type": live.pipeline_type.to_numpy(),
                         "gpu_name": pools.to_numpy(), "running": running,
                         "seconds": seconds_left})
    signals = []
    for (pipeline, gpu_name), rows in work.groupby(["pipeline_type", "gpu_name"]):
        busy = rows.running.to_numpy()
        signals.append(PoolSignal(
            pipeline_type=str(pipeline), gpu_name=str(gpu_name),
            backlog_seconds=float(rows.seconds.sum()),
            desired_gpus=desired_gpus(rows.seconds[busy].tolist(), rows.seconds[~busy].tolist(),
                                      target_wait_seconds),
            gpus=gpus.get((pipeline, gpu_name), 0)))
    return signals  # sorted by pipeline, then GPU name


def snapshot_signals(live_queue: LiveQueue, target_wait_seconds: float) -> list[PoolSignal]:
    """:func:`pool_signals` of a fresh snapshot of `live_queue` and the GPUs seen lately."""
    snapshot = live_queue.snapshot()
    recent = recent_pool_gpus(live_queue.store,
                              snapshot.taken_at - timedelta(seconds=RECENT_SECONDS))
    live = snapshot.frame()
    return pool_signals(live, live.seconds_left.to_numpy(), recent, target_wait_seconds)


def fold_pools(signals: Sequence[PoolSignal], cap: int = POOL_LABEL_CAP
               ) -> list[PoolSignal]:
    """At most `cap` pools by name — those with the most GPUs lately, then the most work — and
    the rest summed per pipeline into its OTHER pool (desired GPUs add up: the pools share no
    GPU), sorted as :func:`pool_signals` sorts."""
    ranked = sorted(signals, key=lambda s: (-s.gpus, -s.backlog_seconds, -s.desired_gpus,
                                            s.pipeline_type, s.gpu_name))
    folded: dict[str, list[PoolSignal]] = {}
    for signal in ranked[cap:]:
        folded.setdefault(signal.pipeline_type, []).append(signal)
    others = [PoolSignal(pipeline_type=pipeline, gpu_name=OTHER,
                         backlog_seconds=sum(s.backlog_seconds for s in pools),
                         desired_gpus=sum(s.desired_gpus for s in pools),
                         gpus=sum(s.gpus for s in pools))
              for pipeline, pools in folded.items()]
    return sorted([*ranked[:cap], *others], key=lambda s: (s.pipeline_type, s.gpu_name))


def gpus_per_pool(gpu_rows: pd.DataFrame) -> dict[tuple[str, str], int]:
    """GPUs per (pipeline_type, gpu_name), counted by the fleet's rule
    (:func:`perflib.analysis.gpus.count_gpus`)."""
    columns = ["hostname", "gpu_name", "gpu_index"]
    return {(str(pipeline), str(gpu_name)): count_gpus(rows[columns].itertuples(index=False))
            for (pipeline, gpu_name), rows in gpu_rows.groupby(["pipeline_type", "gpu_name"])}


def main_pools(gpus: dict[tuple[str, str], int]) -> dict[str, str]:
    """Each pipeline's GPU type with the most GPUs (ties: the first name)."""
    ranked = sorted(gpus.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))
    main: dict[str, str] = {}
    for (pipeline, gpu_name), _count in ranked:
        main.setdefault(pipeline, gpu_name)
    return main
