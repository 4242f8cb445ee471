"""Intervals that hold online: adaptive conformal inference on top of the calibrated interval.

A split-conformal interval calibrated once cannot follow a machine that turns calm or noisy, nor
a model that meets jobs unlike its training window. Adaptive conformal inference (Gibbs &
Candès 2021) targets the long-run coverage directly: after each finished job, the interval
widens a little if the job fell outside it and narrows a little if it fell inside, in the
proportion that makes misses happen at the target rate. Here the tracked quantity is a
widening factor `k` of the calibrated half-width (in log seconds, which already scales with the
GPU and model's recent spread): ``log k += step · (miss − (1 − coverage))`` — online gradient
descent on the pinball loss of the normalised score, so over T jobs the miss rate is within
about ``(|log k| + step) / (step · T)`` of its target whatever the data do.

Each (GPU, model) group has its own `k` once it has seen `min_group_jobs` outcomes; until then
it uses the pooled `k`, updated by every group's jobs (and it starts from the pooled value).
The same `k` scales the spread behind ``confidence``, so the chance of landing within ±20%
follows the same correction.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

POOLED = "*"
STEP = 0.1  # log-widening per job: a run of misses doubles the interval in ~9 jobs
MIN_GROUP_JOBS = 30
MAX_LOG_WIDEN = math.log(20.0)  # an interval never widens or narrows beyond 20×


def normalised_scores(actual, predicted, high) -> np.ndarray:
    """How far each outcome lies from its estimate, in units of the calibrated (unwidened)
    log half-width ``log(high / predicted)``: above 1, outside the calibrated interval."""
    actual, predicted, high = (np.asarray(v, float) for v in (actual, predicted, high))
    half = np.maximum(np.log(high / predicted), 1e-9)
    return np.abs(np.log(actual / predicted)) / half


@dataclass
class _Tracker:
    log_widen: float = 0.0
    jobs: int = 0


class OnlineConformal:
    """Adaptive conformal widening per group with pooling; thread-safe (one lock guards the
    trackers, an update is a few float operations)."""

    def __init__(self, coverage: float = 0.8, step: float = STEP,
                 min_group_jobs: int = MIN_GROUP_JOBS):
        self.coverage = coverage
        self.step = step
        self.min_group_jobs = min_group_jobs
        self._trackers: dict[str, _Tracker] = {POOLED: _Tracker()}
        self._lock = threading.Lock()

    @classmethod
    def replayed(cls, groups, scores, coverage: float = 0.8) -> "OnlineConformal":
        """A fresh state fed these outcomes in order: each job's group and normalised score
        (how an estimate rebuilds the state from the latest finished jobs)."""
        conformal = cls(coverage)
        for group, score in zip(groups, scores):
            conformal.update(str(group), float(score))
        return conformal

    def widen(self, group: str) -> float:
        """The factor by which `group`'s next interval widens its calibrated half-width."""
        with self._lock:
            return math.exp(self._current(group).log_widen)

    def update(self, group: str, score: float) -> None:
        """Learn from one finished job of `group` whose normalised score (see
        :func:`normalised_scores`) is `score`; a non-finite score is ignored."""
        if not math.isfinite(score):
            return
        with self._lock:
            pooled = self._trackers[POOLED]
            own = self._trackers.setdefault(group, _Tracker(pooled.log_widen))
            for tracker in (pooled, own) if own is not pooled else (pooled,):
                miss = float(score > math.exp(tracker.log_widen))
                tracker.log_widen = float(np.clip(
                    tracker.log_widen + self.step * (miss - (1 - self.coverage)),
                    -MAX_LOG_WIDEN, MAX_LOG_WIDEN))
                tracker.jobs += 1

    def _current(self, group: str) -> _Tracker:
        own = self._trackers.get(group)
        return own if own is not None and own.jobs >= self.min_group_jobs \
            else self._trackers[POOLED]
