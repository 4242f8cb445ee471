"""Trends in generation time with statsmodels: direction, weekly rhythm and dated change-points.

The series is each day's *normalised* generation time: the median over the day's jobs of compute
seconds ÷ what the pipeline's reference cost model expects for them, times the window's mean
expected seconds per job — what the average job would have taken that day — so neither a shift
in job mix nor a few stragglers is mistaken for a slowdown. The days come from the stored daily
aggregates (:mod:`perflib.analysis.daily_aggregates`: each day's median ratio under the reference
model kept with them), never from a scan of the raw jobs of the window. On it:

- an OLS regression on time with HAC (Newey–West) errors gives the slope, its p-value and a
  confidence, labelled improving / degrading / stable;
- STL with a 7-day period separates the weekly rhythm from the trend;
- binary segmentation with an F-test dates step changes (a driver regression, a new model).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date, datetime

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.tsa.seasonal import STL

from perflib.analysis.daily_aggregates import daily_frame
from perflib.store import Store

MIN_DAY_JOBS = 5
MIN_SEGMENT_DAYS = 3
CHANGE_MIN = 0.10  # a step smaller than 10% is not reported
CHANGE_P = 1e-4  # strict: the best split of many is tested
TREND_P = 0.05
TREND_MIN = 0.05  # total change over the window for improving / degrading


@dataclass
class ChangePoint:
    """A step change: the first day of the new level and the levels either side."""

    day: date
    before_seconds: float
    after_seconds: float
    change_pct: float
    p_value: float

    def as_dict(self) -> dict:
        return {**asdict(self), "day": self.day.isoformat()}


@dataclass
class TrendResult:
    """The trend of one pipeline's generation time over the analysed days."""

    pipeline_type: str
    days: int
    jobs: int
    avg_generation_time: float | None
    success_rate: float | None
    slope_seconds_per_day: float | None
    p_value: float | None
    confidence: float
    direction: str  # improving | degrading | stable
    weekly_amplitude_pct: float | None
    change_points: list[ChangePoint] = field(default_factory=list)
    daily: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def as_dict(self) -> dict:
        values = {k: v for k, v in asdict(self).items() if k not in ("daily", "change_points")}
        values["change_points"] = [c.as_dict() for c in self.change_points]
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in values.items()}

    def rounded(self) -> TrendResult:
        """The trend with its figures as reported (4 decimals), change-points and days as
        they are."""
        return replace(self, **{f.name: round(getattr(self, f.name), 4) for f in fields(self)
                                if isinstance(getattr(self, f.name), float)})


def analyze_trends(store: Store, start: datetime, end: datetime,
                   pipeline_type: str | None = None) -> dict[str, TrendResult]:
    """Per pipeline type: the trend of normalised generation time over [start, end)."""
    daily = daily_frame(store, start, end, pipeline_type)
    return {pipeline: trend_of(pipeline, frame.reset_index(drop=True))
            for pipeline, frame in daily.groupby("pipeline_type")}


def trend_of(pipeline: str, daily: pd.DataFrame) -> TrendResult:
    """Regression, seasonality and change-points of one pipeline's daily aggregates."""
    usable = daily[(daily.job_count >= MIN_DAY_JOBS) & (daily.expected_seconds > 0)].copy()
    jobs = int(daily.job_count.sum())
    success = float((daily.success_rate * daily.job_count).sum() / jobs) if jobs else None
    if len(usable) == 0:
        return TrendResult(pipeline, 0, jobs, None, success, None, None, 0.0, "stable", None,
                           daily=usable)
    mean_expected = usable.expected_seconds.sum() / usable.job_count.sum()
    usable["normalised_seconds"] = usable.median_speed_ratio * mean_expected
    series = usable.normalised_seconds.to_numpy(float)
    day_index = np.array([(d - usable.day.iloc[0]).days for d in usable.day], dtype=float)
    average = float(usable.total_seconds_sum.sum() / usable.success_count.sum())
    fit = _hac_fit(day_index, series)
    slope, p_value = (float(fit.params[1]), float(fit.pvalues[1])) if fit else (None, None)
    if fit is not None:  # the fitted line and its 95% confidence band, for charts
        band = fit.get_prediction(sm.add_constant(day_index)).summary_frame(alpha=0.05)
        usable["fitted_seconds"] = band["mean"].to_numpy()
        usable["fitted_low"] = band["mean_ci_lower"].to_numpy()
        usable["fitted_high"] = band["mean_ci_upper"].to_numpy()
    direction = "stable"
    if p_value is not None and p_value < TREND_P and slope is not None:
        total_change = slope * max(day_index[-1], 1) / series.mean()
        if abs(total_change) >= TREND_MIN:
            direction = "degrading" if slope > 0 else "improving"
    usable["weekly_trend"], amplitude = _weekly(usable.day, series)
    change_points = _change_points(list(usable.day), series)
    return TrendResult(
        pipeline, len(usable), jobs, average, success, slope, p_value,
        confidence=0.0 if p_value is None else float(1 - p_value), direction=direction,
        weekly_amplitude_pct=amplitude, change_points=change_points, daily=usable)


def _hac_fit(x: np.ndarray, y: np.ndarray):
    """OLS of y on x with Newey–West (HAC) errors; None for fewer than four days."""
    if len(y) < 4:
        return None
    return sm.OLS(y, sm.add_constant(x)).fit(cov_type="HAC",
                                             cov_kwds={"maxlags": max(1, int(len(y) ** 0.25))})


def _weekly(days: pd.Series, series: np.ndarray) -> tuple[np.ndarray, float | None]:
    """STL's trend component, and the weekly seasonal swing as a share of the mean."""
    if len(series) < 14:
        return series, None
    indexed = pd.Series(series, index=pd.DatetimeIndex(pd.to_datetime(days)))
    full = indexed.asfreq("D").interpolate(limit_direction="both")
    result = STL(full, period=7, robust=True).fit()
    seasonal = result.seasonal
    return (result.trend.reindex(indexed.index).to_numpy(),
            float((seasonal.max() - seasonal.min()) / full.mean() * 100))


def _change_points(days: list, series: np.ndarray, depth: int = 3) -> list[ChangePoint]:
    """Binary segmentation of the log series: split where two levels explain it best, keep the
    split if the F-test and the size of the step both say it is real, recurse on each side."""
    found: list[ChangePoint] = []

    def search(lo: int, hi: int, level: int) -> None:
        segment = np.log(series[lo:hi])
        n = len(segment)
        if level == 0 or n < 2 * MIN_SEGMENT_DAYS:
            return
        total = ((segment - segment.mean()) ** 2).sum()
        best, best_k = np.inf, None
        for k in range(MIN_SEGMENT_DAYS, n - MIN_SEGMENT_DAYS + 1):
            left, right = segment[:k], segment[k:]
            sse = ((left - left.mean()) ** 2).sum() + ((right - right.mean()) ** 2).sum()
            if sse < best:
                best, best_k = sse, k
        if best_k is None or best <= 0:
            return
        f_stat = (total - best) / (best / (n - 2))
        p_value = float(stats.f.sf(f_stat, 1, n - 2))
        before, after = np.exp(segment[:best_k].mean()), np.exp(segment[best_k:].mean())
        change = after / before - 1
        if p_value < CHANGE_P and abs(change) >= CHANGE_MIN:
            found.append(ChangePoint(days[lo + best_k], float(before), float(after),
                                     float(change * 100), p_value))
            search(lo, lo + best_k, level - 1)
            search(lo + best_k, hi, level - 1)

    search(0, len(series), depth)
    return sorted(found, key=lambda c: c.day)
