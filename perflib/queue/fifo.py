"""First come, first served over identical GPUs: when each queued job starts.

Pure, and low in the import order, so estimate-time's queue ETA (:mod:`perflib.queue.snapshot`),
the live dashboard and the autoscaling signal (:mod:`perflib.queue.autoscale`) share one simulation.
"""
from __future__ import annotations

import heapq
from typing import Sequence


def queue_starts(running_seconds_left: Sequence[float], queued_seconds: Sequence[float],
                 gpus: int) -> list[float]:
    """Seconds from now until each queued job starts, and last until a job submitted now
    would: running jobs hold their GPUs for the time they have left, then queued jobs take
    the first free GPU in order."""
    free_at = [0.0] * max(1, gpus)
    for seconds in running_seconds_left:
        heapq.heappush(free_at, heapq.heappop(free_at) + max(0.0, seconds))
    starts = []
    for seconds in queued_seconds:
        starts.append(heapq.heappop(free_at))
        heapq.heappush(free_at, starts[-1] + max(0.0, seconds))
    return [*starts, free_at[0]]
