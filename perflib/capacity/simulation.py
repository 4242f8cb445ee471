"""Discrete-event simulation of a FIFO queue in front of N GPUs, hour of the week by hour.

Arrivals are drawn minute by minute from the observed pattern (bursts included), service times
from the sampled jobs; jobs take the first free GPU in arrival order, as the render farm's
scheduler does (the one FIFO loop, :func:`perflib.queue.fifo.fifo`, that also prices the live
queue). The same drawn workload is replayed for every N (common random numbers), so a job's
wait never grows with more GPUs and the smallest sufficient N can be found by bisection.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perflib.capacity.arrivals import HOURS_IN_WEEK, ArrivalPattern
from perflib.queue.fifo import fifo_waits

SECONDS_IN_HOUR = 3600.0


@dataclass(frozen=True)
class Workload:
    """Simulated arrivals over whole weeks (seconds from Monday 00:00) and their service."""

    arrival_seconds: np.ndarray  # sorted
    service_seconds: np.ndarray
    weeks: int

    @property
    def hour_of_week(self) -> np.ndarray:
        return (self.arrival_seconds // SECONDS_IN_HOUR).astype(np.int64) % HOURS_IN_WEEK

    def week(self, number: int) -> "Workload":
        """The jobs arriving in one of the weeks, alone (from that week's Monday 00:00)."""
        length = HOURS_IN_WEEK * SECONDS_IN_HOUR
        inside = (self.arrival_seconds >= number * length) & (
            self.arrival_seconds < (number + 1) * length)
        return Workload(self.arrival_seconds[inside] - number * length,
                        self.service_seconds[inside], 1)


@dataclass(frozen=True)
class QueueResult:
    """What N GPUs give the workload: waits per hour of the week, and busy shares."""

    gpus: int
    p50_wait_seconds: np.ndarray  # (168,), NaN where no job arrived
    p95_wait_seconds: np.ndarray
    utilisation: np.ndarray  # (168,) busy share of the N GPUs
    overall_p50_wait_seconds: float
    overall_p95_wait_seconds: float
    arrivals_per_hour: np.ndarray  # (168,) simulated jobs arriving, mean over the weeks
    offered_load: np.ndarray  # (168,) their service seconds over the N GPUs' seconds
    busy_seconds: float  # GPU-seconds busy within the simulated weeks
    work_seconds: float  # service seconds of every simulated job

    def meets(self, target_seconds: float) -> np.ndarray:
        """Per hour of the week: p95 wait within the target (an hour with no job meets it)."""
        return ~(self.p95_wait_seconds > target_seconds)


def draw_workload(pattern: ArrivalPattern, service_seconds: np.ndarray, weeks: int,
                  seed: int = 0) -> Workload:
    """`weeks` weeks of arrivals drawn from `pattern`, each job given a sampled service time."""
    if weeks < 1:
        raise ValueError(f"weeks must be at least 1, got {weeks}")
    rng = np.random.default_rng(seed)
    hours = np.arange(weeks * HOURS_IN_WEEK)
    per_minute = pattern.draw_minutes(rng, hours % HOURS_IN_WEEK).ravel()
    minute_starts = np.arange(per_minute.size) * 60.0
    arrivals = np.repeat(minute_starts, per_minute) + rng.random(per_minute.sum()) * 60.0
    arrivals.sort()
    service = rng.choice(np.asarray(service_seconds, dtype=float), size=arrivals.size)
    return Workload(arrivals, service, weeks)


def run_queue(workload: Workload, gpus: int) -> QueueResult:
    """Simulate `workload` on `gpus` GPUs and summarise it per hour of the week."""
    waits = fifo_waits(workload.arrival_seconds, workload.service_seconds, gpus)
    p50, p95 = _quantiles_per_hour(waits, workload.hour_of_week)
    starts = workload.arrival_seconds + waits
    busy = _busy_seconds_per_hour(starts, starts + workload.service_seconds,
                                  workload.weeks * HOURS_IN_WEEK)
    utilisation = busy.reshape(workload.weeks, HOURS_IN_WEEK).mean(axis=0) / (
        gpus * SECONDS_IN_HOUR)
    overall = np.quantile(waits, [0.5, 0.95]) if waits.size else (np.nan, np.nan)
    hour = workload.hour_of_week
    arrivals = np.bincount(hour, minlength=HOURS_IN_WEEK) / workload.weeks
    work = np.bincount(hour, workload.service_seconds, HOURS_IN_WEEK) / workload.weeks
    return QueueResult(gpus, p50, p95, utilisation, float(overall[0]), float(overall[1]),
                       arrivals, work / (gpus * SECONDS_IN_HOUR), float(busy.sum()),
                       float(workload.service_seconds.sum()))


def _quantiles_per_hour(waits: np.ndarray, hour_of_week: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    p50 = np.full(HOURS_IN_WEEK, np.nan)
    p95 = np.full(HOURS_IN_WEEK, np.nan)
    order = np.argsort(hour_of_week, kind="stable")
    bounds = np.searchsorted(hour_of_week[order], np.arange(HOURS_IN_WEEK + 1))
    for how in range(HOURS_IN_WEEK):
        chunk = waits[order[bounds[how]:bounds[how + 1]]]
        if chunk.size:
            p50[how], p95[how] = np.quantile(chunk, [0.5, 0.95])
    return p50, p95


def _busy_seconds_per_hour(starts: np.ndarray, ends: np.ndarray, hours: int) -> np.ndarray:
    """GPU-seconds busy in each hour: busy(t) = Σ(t − start, started) − Σ(t − end, ended)."""
    edges = np.arange(hours + 1) * SECONDS_IN_HOUR
    return np.diff(_elapsed_before(np.sort(starts), edges)
                   - _elapsed_before(np.sort(ends), edges))


def _elapsed_before(times: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Σ over times before each edge of (edge − time)."""
    before = np.searchsorted(times, edges)
    prefix = np.concatenate([[0.0], np.cumsum(times)])
    return before * edges - prefix[before]
