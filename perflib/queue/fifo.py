"""First come, first served over identical GPUs: the one FIFO loop.

Pure, and low in the import order, so estimate-time's queue ETA, the live dashboard's timeline,
the autoscaling signal (:mod:`perflib.queue.snapshot`, :mod:`perflib.queue.autoscale`) and
capacity planning's simulation (:mod:`perflib.capacity.simulation`) share one simulation.
"""
from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np


def fifo(arrival_seconds: Sequence[float], service_seconds: Sequence[float], gpus: int
         ) -> tuple[list[float], list[float]]:
    """Jobs, in arrival order, each take the first free of `gpus` GPUs: each job's start, and
    when each GPU is free after the last (a heap: its first item is the earliest)."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    free_at = [0.0] * gpus
    starts: list[float] = []
    append, replace = starts.append, heapq.heapreplace
    for arrival, service in zip(arrival_seconds, service_seconds):
        start = free_at[0] if free_at[0] > arrival else arrival
        replace(free_at, start + service)
        append(start)
    return starts, free_at


def fifo_waits(arrival_seconds: np.ndarray, service_seconds: np.ndarray, gpus: int
               ) -> np.ndarray:
    """Each job's wait when jobs take the first free of `gpus` GPUs in arrival order."""
    arrivals = np.asarray(arrival_seconds, dtype=float)
    starts, _ = fifo(arrivals.tolist(), np.asarray(service_seconds, dtype=float).tolist(), gpus)
    return np.asarray(starts, dtype=float) - arrivals


def queue_starts(running_seconds_left: Sequence[float], queued_seconds: Sequence[float],
                 gpus: int) -> list[float]:
    """Seconds from now until each queued job starts, and last until a job submitted now
    would: running jobs hold their GPUs for the time they have left, then queued jobs take
    the first free GPU in order (all of them here now)."""
    work = [max(0.0, seconds) for seconds in (*running_seconds_left, *queued_seconds)]
    starts, free_at = fifo([0.0] * len(work), work, max(1, gpus))
    return [*starts[len(running_seconds_left):], free_at[0]]
