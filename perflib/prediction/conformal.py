"""Intervals and confidence that hold online: adaptive conformal inference on top of the
calibrated interval, each tail apart, and the stated confidence recalibrated on the same replay.

A split-conformal interval calibrated once cannot follow a machine that turns calm or noisy, nor
a model that meets jobs unlike its training window. Adaptive conformal inference (Gibbs &
Candès 2021) targets the long-run coverage directly: after each finished job, the interval
widens a little if the job fell outside it and narrows a little if it fell inside, in the
proportion that makes misses happen at the target rate. Misses are rarely even: a shared machine
makes jobs slower far more often than faster, and a model that lags a step change errs on one
side. So each tail has its own widening factor of its calibrated half-width (in log seconds,
already scaled by the GPU and model's recent spread), each targeting half the misses:
``log k_high += step · (above − (1 − coverage) / 2)``, and the same below — online gradient
descent on the pinball loss of each tail's normalised score, so over T jobs each tail's miss
rate is within about ``(|log k| + step) / (step · T)`` of its target whatever the data do.

The stated ``confidence`` (the calibrated chance of landing within ±20%) is recalibrated on the
same replay: a shift of its log-odds follows, by online logistic regression, whether the
finished jobs did land within ±20% (``log_odds += rate · (within − stated)``), so what is
stated matches what is observed.

Each (GPU, model) group has its own state once it has seen `min_group_jobs` outcomes; until then
it uses the pooled state, updated by every group's jobs (and it starts from the pooled value).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

POOLED = "*"
STEP = 0.2  # log-widening per job: a run of misses doubles a tail in ~5 jobs
CONFIDENCE_RATE = 0.3  # log-odds per unit of surprise (within minus the stated chance)
MAX_LOG_ODDS = 4.0  # the confidence shift stays within ±4 in log-odds
MIN_GROUP_JOBS = 30
MAX_LOG_WIDEN = math.log(20.0)  # an interval never widens or narrows beyond 20×


@dataclass(frozen=True)
class Adjustment:
    """How an estimate's calibrated interval and confidence are corrected online: the factor on
    the lower and on the upper half-width, and the shift of the confidence's log-odds."""

    low: float = 1.0
    high: float = 1.0
    log_odds: float = 0.0


UNADJUSTED = Adjustment()


def normalised_scores(actual, predicted, low, high) -> np.ndarray:
    """How far each outcome lies from its estimate, signed, in units of the calibrated
    (unadjusted) log half-width on its side: above 1, above the calibrated interval; below −1,
    under it."""
    actual, predicted, low, high = (np.asarray(v, float) for v in (actual, predicted, low, high))
    error = np.log(actual / predicted)
    upper = np.maximum(np.log(high / predicted), 1e-9)
    lower = np.maximum(np.log(predicted / low), 1e-9)
    return np.where(error >= 0, error / upper, error / lower)


def adjusted_confidence(confidence, log_odds) -> np.ndarray:
    """The stated chance of landing within ±20%, its log-odds shifted by `log_odds`."""
    chance = np.clip(np.asarray(confidence, float), 1e-4, 1 - 1e-4)
    return 1 / (1 + np.exp(-(np.log(chance / (1 - chance)) + np.asarray(log_odds, float))))


@dataclass
class _Tracker:
    log_low: float = 0.0
    log_high: float = 0.0
    log_odds: float = 0.0
    jobs: int = 0


class OnlineConformal:
    """Adaptive conformal widening of each tail, and the confidence's recalibration, per group
    with pooling; thread-safe (one lock guards the trackers, an update is a few float
    operations)."""

    def __init__(self, coverage: float = 0.8, step: float = STEP,
                 min_group_jobs: int = MIN_GROUP_JOBS):
        self.coverage = coverage
        self.step = step
        self.min_group_jobs = min_group_jobs
        self._trackers: dict[str, _Tracker] = {POOLED: _Tracker()}
        self._lock = threading.Lock()

    @classmethod
    def replayed(cls, groups, scores, confidence=None, within=None, coverage: float = 0.8
                 ) -> "OnlineConformal":
        """A fresh state fed these outcomes in order: each job's group, signed normalised score,
        and optionally its unadjusted stated confidence and whether it landed within ±20% (how
        an estimate rebuilds the state from the latest finished jobs)."""
        conformal = cls(coverage)
        stated = [None] * len(scores) if confidence is None else confidence
        landed = [None] * len(scores) if within is None else within
        for group, score, chance, hit in zip(groups, scores, stated, landed):
            conformal.update(str(group), float(score), chance, hit)
        return conformal

    def adjustment(self, group: str) -> Adjustment:
        """How `group`'s next interval and confidence are corrected."""
        with self._lock:
            tracker = self._current(group)
            return Adjustment(math.exp(tracker.log_low), math.exp(tracker.log_high),
                              tracker.log_odds)

    def update(self, group: str, score: float, confidence: float | None = None,
               within: bool | None = None) -> None:
        """Learn from one finished job of `group` whose signed normalised score (see
        :func:`normalised_scores`) is `score`, and, where given, whose unadjusted stated
        `confidence` it did or did not meet (`within`); a non-finite score is ignored."""
        if not math.isfinite(score):
            return
        target = (1 - self.coverage) / 2
        with self._lock:
            pooled = self._trackers[POOLED]
            own = self._trackers.setdefault(group, _Tracker(pooled.log_low, pooled.log_high,
                                                            pooled.log_odds))
            for tracker in (pooled, own) if own is not pooled else (pooled,):
                above = float(score > math.exp(tracker.log_high))
                below = float(-score > math.exp(tracker.log_low))
                tracker.log_high = _bounded(tracker.log_high + self.step * (above - target),
                                            MAX_LOG_WIDEN)
                tracker.log_low = _bounded(tracker.log_low + self.step * (below - target),
                                           MAX_LOG_WIDEN)
                if confidence is not None and within is not None:
                    stated = float(adjusted_confidence(confidence, tracker.log_odds))
                    tracker.log_odds = _bounded(
                        tracker.log_odds + CONFIDENCE_RATE * (float(within) - stated),
                        MAX_LOG_ODDS)
                tracker.jobs += 1

    def _current(self, group: str) -> _Tracker:
        own = self._trackers.get(group)
        return own if own is not None and own.jobs >= self.min_group_jobs \
            else self._trackers[POOLED]


def _bounded(value: float, limit: float) -> float:
    return float(min(max(value, -limit), limit))
