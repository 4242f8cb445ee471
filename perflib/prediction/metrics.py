"""The accuracy figures perflib reports, each defined once: an estimate is good when it lands
within ±WITHIN (20%) of the actual time; MAPE is the mean relative error; coverage is the share
of actual times inside their interval. numpy only, so every layer may use it (SQL queries use
WITHIN)."""
from __future__ import annotations

import numpy as np

WITHIN = 0.2  # "within ±20%": the accuracy the team tracks
CLOSE = 0.1  # the stricter "within ±10%"


def relative_errors(actual, predicted) -> np.ndarray:
    """|predicted − actual| ÷ actual, per job."""
    actual = np.asarray(actual, dtype=float)
    return np.abs(np.asarray(predicted, dtype=float) - actual) / actual


def is_within(actual, predicted, within: float = WITHIN) -> np.ndarray:
    """Per job, whether its estimate landed within ±`within` of its actual time."""
    return relative_errors(actual, predicted) <= within


def within_share(actual, predicted, within: float = WITHIN) -> float:
    """Share of the jobs whose estimate landed within ±`within`; NaN without jobs."""
    return _mean(is_within(actual, predicted, within))


def mape(actual, predicted) -> float:
    """Mean absolute percentage error (a fraction); NaN without jobs."""
    return _mean(relative_errors(actual, predicted))


def is_inside(actual, low, high) -> np.ndarray:
    """Per job, whether its actual time lies inside [low, high]."""
    actual = np.asarray(actual, dtype=float)
    return (actual >= np.asarray(low, dtype=float)) & (actual <= np.asarray(high, dtype=float))


def coverage(actual, low, high) -> float:
    """Share of the jobs whose actual time lies inside their interval; NaN without jobs."""
    return _mean(is_inside(actual, low, high))


def rank(within_20: float, mape_: float) -> tuple[float, float]:
    """How models compare, larger is better: the within-20% share, then the lower MAPE (an
    unknown MAPE last)."""
    return within_20, -mape_ if np.isfinite(mape_) else -np.inf


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")
