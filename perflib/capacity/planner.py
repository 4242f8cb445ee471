"""Capacity planning: how many GPUs keep the p95 queue wait within the target at every hour of
the week, by simulation of the observed arrivals and predicted service times, with Erlang-C's
answer beside it."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from perflib.analysis.gpus import gpus_seen
from perflib.analysis.sql import window
from perflib.capacity import erlang
from perflib.capacity.arrivals import HOURS_IN_WEEK, ArrivalPattern, arrival_pattern
from perflib.capacity.history import history_start, submission_times
from perflib.capacity.service import SAMPLE_ROWS, ServiceSample, service_sample
from perflib.capacity.simulation import QueueResult, Workload, draw_workload, run_queue
from perflib.capacity.spread import SPREAD_WEEKS, NeedSpread, need_spread
from perflib.prediction.predictor import PerformancePredictor
from perflib.queue.search import smallest_gpus
from perflib.store import Store
from perflib.units import format_count, format_duration

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
QUANTILE = 0.95
EXACT_PER_HOUR_UP_TO = 32  # per-hour needs tried at every N up to this, on a grid above it
GRID_POINTS = 24
YOUNG_BY = timedelta(days=1)  # a history starting this much into the window is warned about
DRAW_SIGMAS = 4  # simulated jobs a week this many standard errors from the observed: warn


@dataclass
class CapacityPlan:
    """The planner's answer for one pool of GPUs (one pipeline, or all of them)."""

    pipeline_type: str | None
    start: datetime
    end: datetime
    target_wait_seconds: float
    current_gpus: int
    recommended_gpus: int  # simulation: smallest N meeting the target at every hour
    erlang_gpus: int  # Erlang-C's answer to the same question
    hours: pd.DataFrame  # one row per hour of the week (see plan_capacity)
    service: ServiceSample
    dispersion: float  # jobs-per-minute variance / mean (1 = Poisson)
    weeks_simulated: int
    current: QueueResult = field(repr=False)
    per_hour_exact: bool = True  # per-hour needs on every N (else on a grid)
    spread: NeedSpread | None = None  # the GPUs needed week by week
    warnings: list[str] = field(default_factory=list)  # what makes the plan less sure

    @property
    def arrivals_per_week(self) -> float:
        """Jobs a week, as observed."""
        return float(self.hours.observed_arrivals_per_hour.sum())

    def certainty(self) -> list[str]:
        """How sure the plan is, in sentences: the spread of the need over single simulated
        weeks, the warnings, and the simulation against its own counts (text, notebook and
        report all show these)."""
        return [*([self.spread.sentence()] if self.spread else []),
                *(f"Warning: {warning}" for warning in self.warnings),
                f"Simulation check: {self.simulation_check()}"]

    def simulation_check(self) -> str:
        """The simulation against its own counts: the jobs it drew against those observed, and
        the GPU time it kept busy against the work it drew."""
        simulated = float(self.current.arrivals_per_hour.sum())
        busy, work = self.current.busy_seconds, self.current.work_seconds
        weeks = self.weeks_simulated
        return (f"The simulated weeks drew {simulated:.0f} jobs a week "
                f"({self.arrivals_per_week:.0f} observed) bringing {work / 3600 / weeks:.1f} "
                f"GPU-hours of work a week, of which {busy / 3600 / weeks:.1f} kept "
                f"{format_count(self.current_gpus, 'GPU')} busy within the weeks.")

    def sentence(self) -> str:
        """The recommendation in one sentence."""
        worst = self.hours.p95_wait_seconds.max()
        target = f"{self.target_wait_seconds:g} s"
        keep = "keeps" if self.recommended_gpus == 1 else "keep"
        return (f"{format_count(self.recommended_gpus, 'GPU')} {keep} the p95 queue wait within "
                f"{target} at every hour of the week ({self.current_gpus} now: p95 wait "
                f"{format_duration(self.current.overall_p95_wait_seconds)} overall, "
                f"{format_duration(worst)} at the worst hour); Erlang-C (M/M/c) says "
                f"{self.erlang_gpus}.")

    def differences(self) -> list[str]:
        """Where the simulation and Erlang-C disagree, and why."""
        gap = self.recommended_gpus - self.erlang_gpus
        variation = self.service.variation
        lines = [f"Service times vary with a coefficient of variation of {variation:.2f} "
                 "(exponential: 1.00); arrivals per minute have a variance/mean of "
                 f"{self.dispersion:.2f} (Poisson: 1.00)."]
        if gap > 0:
            lines.append(f"The simulation needs {format_count(gap, 'GPU')} more than Erlang-C: "
                         + _why(variation, self.dispersion))
        elif gap < 0:
            lines.append(f"The simulation needs {format_count(-gap, 'GPU')} fewer than "
                         "Erlang-C: its exponential tail overstates rare long waits here.")
        else:
            lines.append("Both give the same count.")
        if self.hours.gpus_needed.notna().all():  # per-hour needs were asked for
            differing = (self.hours.gpus_needed != self.hours.erlang_gpus_needed).sum()
            lines.append(f"Per hour they differ at {differing} of {HOURS_IN_WEEK} hours.")
        return lines

    def day_table(self) -> pd.DataFrame:
        """Per weekday: peak arrivals, the GPUs its busiest hour needs (simulation, Erlang-C),
        and the worst p95 wait and mean utilisation with the current GPUs."""
        grouped = self.hours.groupby("weekday", sort=False)
        return pd.DataFrame({
            "peak_arrivals_per_hour": grouped.arrivals_per_hour.max(),
            "peak_gpus_needed": grouped.gpus_needed.max(),
            "peak_erlang_gpus": grouped.erlang_gpus_needed.max(),
            "worst_p95_wait_seconds": grouped.p95_wait_seconds.max(),
            "mean_utilisation": grouped.utilisation.mean(),
        })

    def worst_hours(self, count: int = 5) -> pd.DataFrame:
        """The hours of the week with the longest p95 wait with the current GPUs."""
        return self.hours.sort_values("p95_wait_seconds", ascending=False).head(count)

    def as_dict(self) -> dict:
        """JSON-ready: the summary numbers and the 168 hours."""
        hours = self.hours.replace({np.nan: None, np.inf: None})
        return {
            "pipeline_type": self.pipeline_type, "start": self.start.isoformat(),
            "end": self.end.isoformat(), "target_wait_seconds": self.target_wait_seconds,
            "current_gpus": self.current_gpus, "recommended_gpus": self.recommended_gpus,
            "erlang_gpus": self.erlang_gpus, "sentence": self.sentence(),
            "differences": self.differences(),
            "p95_wait_seconds_now": self.current.overall_p95_wait_seconds,
            "p50_wait_seconds_now": self.current.overall_p50_wait_seconds,
            "service": {"source": self.service.sources, "sampled_jobs": len(self.service.seconds),
                        "mean_seconds": self.service.mean_seconds,
                        "variation": self.service.variation},
            "arrivals_per_week": self.arrivals_per_week, "dispersion": self.dispersion,
            "weeks_simulated": self.weeks_simulated, "per_hour_exact": self.per_hour_exact,
            "spread": self.spread.as_dict() if self.spread else None,
            "warnings": self.warnings, "simulation_check": self.simulation_check(),
            "hours": hours.to_dict(orient="records"),
        }


def plan_capacity(store: Store, pipeline_type: str | None = None, days: float = 28,
                  target_wait_seconds: float | None = None, gpus: int | None = None,
                  end: datetime | str | None = None, weeks: int = 4, seed: int = 0,
                  per_hour: bool = True, sample_rows: int = SAMPLE_ROWS,
                  predictor: PerformancePredictor | None = None,
                  spread_weeks: int = SPREAD_WEEKS) -> CapacityPlan:
    """Plan the GPUs of the pool that ran `pipeline_type` (None: every pipeline, one pool) from
    the `days` before `end`: `gpus` is the count to evaluate (default: those seen in the
    window), `target_wait_seconds` the p95 wait to keep (default: the ``high_queue_time``
    threshold), `weeks` how many simulated weeks the figures pool, `spread_weeks` how many
    further weeks are simulated one at a time for the spread of the need. The window starts
    at the pool's first job where the history is younger. `per_hour=False` skips the per-hour
    needs (the report's cheap form)."""
    _check_arguments(days, target_wait_seconds, gpus, weeks)
    target = (store.config.thresholds.queue_seconds if target_wait_seconds is None
              else float(target_wait_seconds))
    asked, stop = observed_window(store, days, end)
    start = history_start(store, asked, stop, pipeline_type)
    pattern = arrival_pattern(store, start, stop, pipeline_type) if start else None
    if not pattern or not pattern.arrivals:
        raise ValueError(f"no {pipeline_type + ' ' if pipeline_type else ''}job arrived between "
                         f"{asked:%Y-%m-%d} and {stop:%Y-%m-%d}: nothing to plan from")
    service = service_sample(store, start, stop, pattern.arrivals, pipeline_type, sample_rows,
                             predictor)
    current = gpus or gpus_seen(store, start, stop, pipeline_type)
    queue = _CachedQueue(draw_workload(pattern, service.seconds, weeks, seed))
    erlang_needed = erlang_needs(pattern, service, target)
    erlang_gpus = max(1, int(erlang_needed.max()))
    recommended = smallest_gpus(lambda n: queue.at(n).meets(target).all(), erlang_gpus)
    needed, exact = (_per_hour_needs(queue, recommended, target) if per_hour
                     else (np.full(HOURS_IN_WEEK, np.nan), False))
    hours = _hours_table(pattern, service, queue.at(current), queue.at(recommended), needed,
                         erlang_needed)
    spread = need_spread(pattern, service.seconds, target, spread_weeks, seed + 1, recommended)
    warnings = _warnings(store, pattern, asked, queue.at(current), weeks, recommended, spread)
    return CapacityPlan(pipeline_type, start, stop, target, current, recommended, erlang_gpus,
                        hours, service, pattern.dispersion, weeks, queue.at(current), exact,
                        spread, warnings)


def observed_window(store: Store, days: float, end: datetime | str | None
                    ) -> tuple[datetime, datetime]:
    """[start, end) of `days` ending at `end` (default: the midnight after the newest job), moved
    back to end at the last whole hour where that is in the future: hours still to come have
    seen no arrivals yet, and would read as quiet ones."""
    start, stop = window(store, days, end)
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    if stop > now:
        start, stop = now - (stop - start), now
    return start, stop


def _warnings(store: Store, pattern: ArrivalPattern, asked: datetime, current: QueueResult,
              weeks: int, recommended: int, spread: NeedSpread) -> list[str]:
    """What makes the plan less sure than its one number: a young history, arrivals that are
    start times, a recommendation single weeks often exceed, a draw unlike the history."""
    warnings = []
    if pattern.start - asked > YOUNG_BY:
        days = (pattern.end - pattern.start).total_seconds() / 86400
        warnings.append(f"The history starts on {pattern.start:%Y-%m-%d %H:00}: the plan reads "
                        f"its {days:.1f} days, not the {(pattern.end - asked).days} asked for"
                        + (", and plans the hours of the week it never saw as quiet."
                           if days < 7 else "."))
    times = submission_times(store, pattern.start, pattern.end, pattern.pipeline_type)
    missing = times.warning(current.overall_p95_wait_seconds)
    if missing:
        warnings.append(missing)
    if spread.sure > recommended:
        warnings.append(f"{recommended} GPUs meet the target over the pooled weeks but in only "
                        f"{(spread.per_week <= recommended).mean():.0%} of single weeks; "
                        f"{spread.sure} meet it in at least 90%.")
    drawn, seen = current.arrivals_per_hour.sum(), pattern.arrivals_per_hour.sum()
    if abs(drawn - seen) > DRAW_SIGMAS * np.sqrt(seen * max(pattern.dispersion, 1) / weeks) + 1:
        warnings.append(f"The simulated weeks drew {drawn:.0f} jobs a week against {seen:.0f} "
                        "observed, more apart than chance allows: check the arrival counts.")
    return warnings


def erlang_needs(pattern: ArrivalPattern, service: ServiceSample, target_seconds: float
                 ) -> np.ndarray:
    """Per hour of the week, the GPUs Erlang-C needs for the p95 wait target (0: no jobs)."""
    rate = 1 / service.mean_seconds
    return np.array([erlang.servers_needed(arrivals / 3600, rate, target_seconds, QUANTILE)
                     if arrivals > 0 else 0 for arrivals in pattern.arrivals_per_hour])


class _CachedQueue:
    """One drawn workload, simulated once per GPU count asked for."""

    def __init__(self, workload: Workload):
        self.workload = workload
        self._results: dict[int, QueueResult] = {}

    def at(self, gpus: int) -> QueueResult:
        if gpus not in self._results:
            self._results[gpus] = run_queue(self.workload, gpus)
        return self._results[gpus]


def _per_hour_needs(queue: _CachedQueue, recommended: int, target: float
                    ) -> tuple[np.ndarray, bool]:
    """Per hour of the week, the fewest GPUs (of those tried) meeting the target there, with
    the fleet at that count all week; every N up to a small fleet, a geometric grid above."""
    exact = recommended <= EXACT_PER_HOUR_UP_TO
    counts = (range(1, recommended + 1) if exact else
              sorted({*np.unique(np.geomspace(1, recommended, GRID_POINTS).round().astype(int)),
                      recommended}))
    needed = np.full(HOURS_IN_WEEK, float(recommended))
    open_hours = np.ones(HOURS_IN_WEEK, dtype=bool)
    for gpus in counts:
        meets = queue.at(gpus).meets(target) & open_hours
        needed[meets] = gpus
        open_hours &= ~meets
    quiet = np.isnan(queue.at(recommended).p95_wait_seconds)
    needed[quiet] = 0
    return needed, exact


def _hours_table(pattern: ArrivalPattern, service: ServiceSample, current: QueueResult,
                 recommended: QueueResult, needed: np.ndarray, erlang_needed: np.ndarray
                 ) -> pd.DataFrame:
    how = np.arange(HOURS_IN_WEEK)
    arrivals = pattern.arrivals_per_hour
    rate = 1 / service.mean_seconds
    erlang_p95 = [erlang.wait_quantile(a / 3600, rate, current.gpus, QUANTILE) for a in arrivals]
    erlang_wait = [erlang.wait_probability(a / 3600, rate, current.gpus) for a in arrivals]
    return pd.DataFrame({
        "hour_of_week": how, "weekday": np.array(WEEKDAYS)[how // 24], "hour": how % 24,
        "arrivals_per_hour": current.arrivals_per_hour,  # simulated, as the waits are
        "observed_arrivals_per_hour": arrivals,
        "p50_wait_seconds": current.p50_wait_seconds,
        "p95_wait_seconds": current.p95_wait_seconds,
        "offered_load": current.offered_load,
        "utilisation": current.utilisation,
        "p95_wait_recommended_seconds": recommended.p95_wait_seconds,
        "gpus_needed": needed,
        "erlang_gpus_needed": erlang_needed,
        "erlang_p95_wait_seconds": erlang_p95,
        "erlang_wait_probability": erlang_wait,
    })


def _check_arguments(days, target_wait_seconds, gpus, weeks) -> None:
    if not (isinstance(days, (int, float)) and days >= 7):
        raise ValueError(f"days must be at least 7 (a whole week of arrivals), got {days!r}")
    if target_wait_seconds is not None and not (
            isinstance(target_wait_seconds, (int, float)) and target_wait_seconds > 0):
        raise ValueError(f"target_wait_seconds must be a number > 0, got {target_wait_seconds!r}")
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        raise ValueError(f"gpus must be a whole number ≥ 1, got {gpus!r}")
    if not (isinstance(weeks, int) and weeks >= 1):
        raise ValueError(f"weeks must be a whole number ≥ 1, got {weeks!r}")


def _why(variation: float, dispersion: float) -> str:
    reasons = []
    if variation > 1.05:
        reasons.append("long jobs among short ones hold GPUs (service times vary more than "
                       "exponential ones)")
    if dispersion > 1.05:
        reasons.append("jobs arrive in bursts (more than Poisson)")
    return " and ".join(reasons) + "." if reasons else "the sampled tail of the waits."
