"""How much one arm's values sit above another's, compared within strata, with its uncertainty.

Built for log normalised times (see :mod:`perflib.analysis.compare`): within each stratum, the
difference of the arms' 10%-trimmed means (robust to stragglers); across strata, their average
weighted by ``n_a·n_b / (n_a + n_b)`` — so a stratum only one arm fills cannot pass for a
difference between the arms. With it:

- a percentile bootstrap interval, each arm of each stratum resampled on its own
  (:func:`scipy.stats.bootstrap`);
- the van Elteren test — Mann-Whitney U (:func:`scipy.stats.mannwhitneyu`) in each stratum,
  combined — for a p-value that needs no assumption about the distribution;
- the standard error from Yuen's winsorised variances, and from it the power statement: the
  smallest difference detected (p < 0.05) with 80% probability, and the jobs per arm a given
  difference needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

TRIM = 0.1            # share cut from each end of each sample
ALPHA = 0.05          # "detected" means a two-sided p below this
POWER = 0.8
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Shift:
    """B's values above A's, on the scale given (a log ratio, for log times)."""

    estimate: float
    low: float                    # bootstrap interval at CONFIDENCE
    high: float
    standard_error: float
    p_value: float                # van Elteren (stratified Mann-Whitney), two-sided
    jobs_a: int
    jobs_b: int

    def detectable(self, power: float = POWER) -> float:
        """The smallest shift detected with probability `power` at these counts."""
        return (_z(1 - ALPHA / 2) + _z(power)) * self.standard_error

    def power_at(self, shift: float) -> float:
        """Probability that a true `shift` is detected at these counts."""
        if self.standard_error == 0:
            return 1.0
        return float(stats.norm.cdf(abs(shift) / self.standard_error - _z(1 - ALPHA / 2)))

    def jobs_per_arm(self, shift: float, power: float = POWER) -> int:
        """Jobs in each arm that detect `shift` with probability `power`, the arms' spread and
        mix staying as they are."""
        variance_per_job = self.standard_error ** 2 / (1 / self.jobs_a + 1 / self.jobs_b)
        return max(2, math.ceil(2 * variance_per_job * (_z(1 - ALPHA / 2) + _z(power)) ** 2
                         / shift ** 2))


def stratified_shift(a: Sequence[np.ndarray], b: Sequence[np.ndarray], random_state: int = 0
                     ) -> Shift:
    """The shift of `b` over `a`, stratum by stratum (``a[i]`` and ``b[i]`` are one stratum's
    values, at least 2 of each)."""
    a = [np.asarray(values, dtype=float) for values in a]
    b = [np.asarray(values, dtype=float) for values in b]
    weights = np.array([len(x) * len(y) / (len(x) + len(y)) for x, y in zip(a, b)])
    weights = weights / weights.sum()
    variance = sum(w ** 2 * (trimmed_mean_variance(x) + trimmed_mean_variance(y))
                   for w, x, y in zip(weights, a, b))
    low, high = _bootstrap_interval(a, b, weights, random_state)
    return Shift(estimate=_weighted_difference(a, b, weights), low=low, high=high,
                 standard_error=math.sqrt(variance), p_value=van_elteren_p(a, b),
                 jobs_a=sum(map(len, a)), jobs_b=sum(map(len, b)))


def trimmed_mean(values: np.ndarray, axis: int = -1):
    return stats.trim_mean(values, TRIM, axis=axis)


def winsorised_variance(values: np.ndarray) -> float:
    """Variance with the TRIM share at each end pulled in to the nearest kept value."""
    values = np.sort(np.asarray(values, dtype=float))
    cut = int(math.floor(TRIM * len(values)))
    if cut:
        values = np.clip(values, values[cut], values[-cut - 1])
    return float(np.var(values, ddof=1))


def trimmed_mean_variance(values: np.ndarray) -> float:
    """Variance of the trimmed mean of `values` (Yuen): the winsorised variance scaled to the
    values the trim keeps."""
    count = len(values)
    kept = count - 2 * int(math.floor(TRIM * count))
    return (count - 1) * winsorised_variance(values) / (kept * (kept - 1))


def van_elteren_p(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Two-sided p of the van Elteren test: each stratum's Mann-Whitney U, weighted by
    1 / (its size + 1), summed and compared with its normal distribution under no shift."""
    statistic = expected = variance = 0.0
    for x, y in zip(a, b):
        size = len(x) + len(y)
        u = stats.mannwhitneyu(y, x, alternative="two-sided", method="asymptotic").statistic
        statistic += u / (size + 1)
        expected += len(x) * len(y) / (2 * (size + 1))
        variance += len(x) * len(y) / (12 * (size + 1))
    return float(2 * stats.norm.sf(abs(statistic - expected) / math.sqrt(variance)))


def _weighted_difference(a, b, weights, axis: int = -1):
    return sum(w * (trimmed_mean(y, axis) - trimmed_mean(x, axis))
               for w, x, y in zip(weights, a, b))


def _bootstrap_interval(a, b, weights, random_state: int) -> tuple[float, float]:
    """Percentile interval, every arm of every stratum resampled on its own."""
    strata = len(a)

    def statistic(*samples, axis=-1):
        return _weighted_difference(samples[:strata], samples[strata:], weights, axis)

    result = stats.bootstrap((*a, *b), statistic, n_resamples=BOOTSTRAP_RESAMPLES,
                             vectorized=True, confidence_level=CONFIDENCE,
                             method="percentile", batch=250,
                             rng=np.random.default_rng(random_state))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _z(probability: float) -> float:
    return float(stats.norm.ppf(probability))
