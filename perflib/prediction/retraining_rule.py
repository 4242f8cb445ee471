"""When a pipeline's model is retrained: the rule, as a pure function of what is known at a moment.

:func:`should_retrain` sees only its arguments — the model's dates, the latest finished jobs
with the estimate each was given at submission, the dated change-points, the clock — so
``perflib maintain``, the service's schedule and a backtest replaying history (``--retrain
auto``) decide the same way. A retraining is due when

- **age**: `max_age_days` have passed since the model (or since the last retraining attempt,
  kept or not);
- **accuracy**: over the latest `accuracy_jobs` jobs estimated since then, fewer than
  `min_accuracy` landed within ±20% of their estimate (at least `min_accuracy_jobs` needed);
- **bias**: the median log(actual / estimate) of the latest `bias_jobs` of them is beyond
  ±`max_bias` — the jobs are off one way (a step of ×1.25 sits on the accuracy rule's own
  boundary, 1/1.25 = 0.8, yet shows here at once);
- **change_point**: trend analysis dates a step change on or after the last day of the model's
  training window, which therefore never saw the new level (and no retraining was tried since
  that day).

Measuring from the last attempt means a candidate that was not kept is not retried on the same
evidence.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Sequence

import numpy as np
import pandas as pd

from perflib.config import RetrainRule
from perflib.prediction.features import outcome_seconds, succeeded
from perflib.prediction.metrics import within_share
from perflib.store import parse_timestamp

REASONS = ("accuracy", "bias", "change_point", "age")


@dataclass(frozen=True)
class ModelInfo:
    """What the rule needs of a pipeline's active model: when it was made, the last job it was
    trained on, and the last retraining attempt for the pipeline (None: none since)."""

    trained_at: datetime
    train_end: datetime
    last_attempt_at: datetime | None = None

    @property
    def since(self) -> datetime:
        """From when the model's age and live accuracy are measured."""
        return max(self.trained_at, self.last_attempt_at or self.trained_at)


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain: `reason` one of :data:`REASONS` (None: not due), `detail` why, in
    words, and the live accuracy measured (None where too few jobs)."""

    reason: str | None
    detail: str
    live_accuracy: float | None = None
    live_jobs: int = 0

    def __bool__(self) -> bool:
        return self.reason is not None


def should_retrain(model_info: ModelInfo | None, recent_jobs: pd.DataFrame,
                   change_points: Sequence[Any], now: datetime,
                   settings: RetrainRule) -> RetrainDecision:
    """Decide whether the pipeline's model is due for retraining at `now`.

    `recent_jobs`: finished jobs with ``predicted_seconds`` (the estimate given at submission),
    ``processing_seconds`` or ``total_seconds``, ``finished_at`` and ``submitted_at`` or
    ``started_at`` (only what was known at `now` — a replay passes the jobs finished by then).
    `change_points`: objects with a ``day`` (a date), as trend analysis dates them.
    No model: nothing to retrain (``perflib train`` makes the first).
    """
    if model_info is None:
        return RetrainDecision(None, "no stored model: perflib train makes the first")
    now, since = parse_timestamp(now), parse_timestamp(model_info.since)
    accuracy, count = live_accuracy(recent_jobs, since, now, settings.accuracy_jobs)
    measured = dict(live_accuracy=accuracy if count >= settings.min_accuracy_jobs else None,
                    live_jobs=count)
    if count >= settings.min_accuracy_jobs and accuracy < settings.min_accuracy:
        return RetrainDecision("accuracy", f"{accuracy:.0%} of the latest {count} estimated "
                               f"jobs landed within ±20%, below {settings.min_accuracy:.0%}",
                               **measured)
    bias, biased = live_bias(recent_jobs, since, now, settings.bias_jobs)
    if biased >= settings.bias_jobs and abs(bias) > settings.max_bias:
        return RetrainDecision("bias", f"the latest {biased} estimated jobs ran ×"
                               f"{np.exp(bias):.2f} their estimates (median), beyond "
                               f"×{np.exp(-settings.max_bias):.2f}–{np.exp(settings.max_bias):.2f}",
                               **measured)
    last_trained_day = parse_timestamp(model_info.train_end).date()
    tried_day = parse_timestamp(model_info.last_attempt_at or model_info.train_end).date()
    unseen = sorted(_as_date(point.day) for point in change_points
                    if _as_date(point.day) >= max(last_trained_day, tried_day))
    if unseen:
        return RetrainDecision("change_point", f"a change-point on {unseen[0]} is on or after "
                               f"the model's last training day {last_trained_day}", **measured)
    age = now - since
    if age >= timedelta(days=settings.max_age_days):
        return RetrainDecision("age", f"{age.total_seconds() / 86400:.1f} days since the model "
                               f"or the last retraining (at most {settings.max_age_days:g})",
                               **measured)
    return RetrainDecision(None, "model is recent, accurate, and has seen the latest level",
                           **measured)


def live_accuracy(jobs: pd.DataFrame, since: datetime, now: datetime, count: int
                  ) -> tuple[float, int]:
    """Share of the latest `count` successful jobs submitted in [since, now) that finished
    within ±20% of the estimate they were given, and how many there were (NaN, 0 for none)."""
    actual, predicted = _latest_estimated(jobs, since, now, count)
    return (within_share(actual, predicted), len(actual)) if len(actual) else (float("nan"), 0)


def live_bias(jobs: pd.DataFrame, since: datetime, now: datetime, count: int
              ) -> tuple[float, int]:
    """Median log(actual / estimate) of the latest `count` successful jobs submitted in
    [since, now), and how many there were (NaN, 0 for none)."""
    actual, predicted = _latest_estimated(jobs, since, now, count)
    return ((float(np.median(np.log(actual / predicted))), len(actual)) if len(actual)
            else (float("nan"), 0))


def _latest_estimated(jobs: pd.DataFrame, since: datetime, now: datetime, count: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Actual and estimated seconds of the latest `count` successful jobs submitted in
    [since, now) that carry an estimate, in the order they finished."""
    if jobs is None or not len(jobs) or "predicted_seconds" not in jobs:
        return np.array([]), np.array([])
    actual = outcome_seconds(jobs)
    predicted = pd.to_numeric(jobs["predicted_seconds"], errors="coerce").to_numpy(float)
    submitted = _seconds(jobs, "submitted_at", "started_at")
    finished = _seconds(jobs, "finished_at")
    usable = (succeeded(jobs) & (actual > 0) & (predicted > 0)
              & (submitted >= since.timestamp()) & (finished <= now.timestamp()))
    latest = np.flatnonzero(usable)
    latest = latest[np.argsort(finished[latest], kind="stable")][-count:]
    return actual[latest], predicted[latest]


def _seconds(jobs: pd.DataFrame, *columns: str) -> np.ndarray:
    """The first of `columns` present, as seconds since the epoch (NaN where missing)."""
    for column in columns:
        if column in jobs:
            stamps = pd.to_datetime(jobs[column], utc=True, errors="coerce")
            return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(float)
    return np.full(len(jobs), np.nan)


def _as_date(day: Any) -> date:
    return day if isinstance(day, date) and not isinstance(day, datetime) else \
        pd.Timestamp(day).date()
