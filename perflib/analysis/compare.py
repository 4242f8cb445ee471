"""A/B comparison of settings: is arm B faster or slower than arm A *for the same work*?

Two groups of successful jobs, chosen by job field, tag or time (:mod:`perflib.analysis.arms`),
are compared on **normalised time**: each job's compute seconds (processing time less model
loading, which depends on what the GPU ran before, not on the settings) ÷ the seconds the cost
model expects for its work (:class:`perflib.prediction.models.CostModel` on
:mod:`perflib.prediction.features`, fitted on both arms pooled). Raw means would mostly compare job
mixes — an arm that happened to get bigger jobs looks slower.

What the cost model leaves unexplained still varies with job size, so the arms are compared
within strata — the same GPU and model, and a similar expected time (quantile bins) — and the
per-stratum differences are averaged (:mod:`perflib.analysis.stratified`). A stratum that only
one arm ran says nothing about the difference and is left out (the result counts them).

Only reads; never writes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping

import numpy as np
import pandas as pd

from perflib.analysis.arms import SelectionError, Selector, TooFewJobs, instant
from perflib.analysis.sql import window
from perflib.analysis.stratified import (ALPHA, CONFIDENCE, POWER, Shift, stratified_shift,
                                         trimmed_mean, winsorised_variance)
from perflib.config import ModelProfile
from perflib.prediction.features import build_features, outcome_seconds
from perflib.prediction.models import CostModel
from perflib.record import CACHE_HIT_JOB_TYPE
from perflib.store import Store

REFERENCE_CHANGE = 0.05     # the power statement's example difference
TARGET_CHANGE = 0.02        # ... and the one whose jobs per arm it gives
MIN_ARM_JOBS = 10
MIN_STRATUM_ARM_JOBS = 3    # a stratum informs the comparison when both arms ran this many
JOBS_PER_BIN = 15           # a GPU/model group is cut into size bins of about this many jobs
MAX_BINS = 20
DEFAULT_DAYS = 30
_GROUP_FIELDS = ("gpu_name", "model_name")  # what the cost model fits groups by


@dataclass(frozen=True)
class ArmSummary:
    """One arm's compared jobs: how many, their raw times, their work, their normalised time."""

    label: str
    jobs: int
    mean_seconds: float             # raw compute seconds, as a naive comparison uses them
    median_seconds: float
    median_work_units: float        # the job mix: how big its jobs were
    normalised_time: float          # trimmed geometric mean of actual ÷ expected, all its jobs
    log_spread: float               # winsorised standard deviation of log normalised time


@dataclass(frozen=True)
class Comparison:
    """B against A on normalised time, compared within strata. Ratios are B ÷ A: above 1, B is
    slower for the same work."""

    a: ArmSummary
    b: ArmSummary
    ratio: float
    ratio_low: float                # bootstrap interval at confidence_level
    ratio_high: float
    confidence_level: float
    p_value: float                  # van Elteren (stratified Mann-Whitney), two-sided
    naive_ratio: float              # mean raw seconds, B ÷ A: what ignoring the job mix says
    detectable_change: float        # smallest relative change detected with 80% probability
    power_at_reference: float       # probability of detecting a 5% difference
    jobs_per_arm_for_target: int    # jobs per arm that detect a 2% difference
    strata: int
    excluded_jobs: int              # in strata only one arm ran
    period_start: datetime | None = None
    period_end: datetime | None = None
    pipeline_type: str | None = None
    notes: tuple[str, ...] = ()
    per_job: pd.DataFrame | None = field(default=None, repr=False, compare=False)
    """Per compared job: job_id, arm, stratum, seconds, expected_seconds, normalised."""

    @property
    def change(self) -> float:
        """B's normalised time relative to A's: +0.07 is 7% slower."""
        return self.ratio - 1.0

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def verdict(self) -> str:
        """One sentence: faster or slower by how much, with the interval and the test."""
        evidence = (f"{self.confidence_level:.0%} CI {self.ratio_low - 1:+.1%} to "
                    f"{self.ratio_high - 1:+.1%}; Mann-Whitney p = {self.p_value:.2g}")
        if not self.significant:
            return (f"No difference detected: B ({self.b.label}) runs {self.change:+.1%} "
                    f"against A ({self.a.label}) for the same work ({evidence}).")
        direction = "slower" if self.change > 0 else "faster"
        return (f"B ({self.b.label}) is {abs(self.change):.1%} {direction} than A "
                f"({self.a.label}) for the same work ({evidence}).")

    def power_statement(self) -> str:
        """What these counts can detect, and what a 2% difference needs."""
        reference = ("over 99%" if self.power_at_reference > 0.99
                     else f"{self.power_at_reference:.0%}")
        return (f"With {self.a.jobs:,} and {self.b.jobs:,} jobs, a "
                f"{self.detectable_change:.1%} difference would be detected with {POWER:.0%} "
                f"probability (a {REFERENCE_CHANGE:.0%} one with {reference}); to detect "
                f"{TARGET_CHANGE:.0%} you need about {self.jobs_per_arm_for_target:,} jobs per "
                "arm.")

    def table(self) -> pd.DataFrame:
        """The two arms side by side, one row each."""
        return pd.DataFrame([asdict(self.a), asdict(self.b)], index=["A", "B"])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field but the per-job rows, and the two sentences."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__
                  if name != "per_job"}
        values.update(a=asdict(self.a), b=asdict(self.b), notes=list(self.notes),
                      change=self.change, significant=self.significant,
                      verdict=self.verdict(), power_statement=self.power_statement())
        for name in ("period_start", "period_end"):
            if values[name] is not None:
                values[name] = values[name].isoformat()
        return values

    def to_markdown(self) -> str:
        """The verdict, the power statement and the two arms, as Markdown (plain text too)."""
        lines = [f"**{self.verdict()}**", "", self.power_statement(), ""]
        for name, arm in (("A", self.a), ("B", self.b)):
            lines.append(f"- {name} ({arm.label}): {arm.jobs:,} jobs, mean {arm.mean_seconds:.3g}"
                         f" s, median {arm.median_seconds:.3g} s, median work "
                         f"{arm.median_work_units:.3g} units, actual ÷ expected "
                         f"{arm.normalised_time:.3f} (log spread {arm.log_spread:.3f})")
        lines.append(f"- Mean seconds alone say B ÷ A = {self.naive_ratio:.3f}: that compares "
                     "the job mixes as much as the settings.")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def compare_settings(store: Store, a: str | None = None, b: str | None = None, *,
                     days: float = DEFAULT_DAYS, pipeline_type: str | None = None,
                     before: Any = None, after: Any = None, end: Any = None,
                     random_state: int = 0) -> Comparison:
    """Compare arm `a` with arm `b` (selectors, see :mod:`perflib.analysis.arms`) over the last
    `days` days, ending at the midnight after the newest job or at `end`. With `before` and
    `after`, arm A holds jobs started before `before` and arm B jobs started from `after` on
    (one alone stands for both). Raises :class:`SelectionError` naming the argument at fault,
    :class:`TooFewJobs` when an arm holds too few jobs."""
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 3650:
        raise SelectionError("days", f"must be a number of days in (0, 3650], got {days!r}")
    before, after = before or after, after or before
    arm_a = Selector.parse(a, "a", before=before)
    arm_b = Selector.parse(b, "b", after=after)
    if not (arm_a.conditions or arm_b.conditions or arm_a.before):
        raise SelectionError("a", "give the arms (FIELD=VALUE or tag:KEY=VALUE) or a date to "
                                  "compare before and after")
    start, stop = window(store, days, instant(end, "end"))
    jobs = store.jobs_frame(since=start, until=stop, pipeline_type=pipeline_type)
    comparison = compare_jobs(jobs, arm_a, arm_b, store.config.model_profiles, random_state)
    return replace(comparison, period_start=start, period_end=stop, pipeline_type=pipeline_type)


def compare_jobs(jobs: pd.DataFrame, a: Selector, b: Selector,
                 profiles: Mapping[str, ModelProfile] | None = None,
                 random_state: int = 0) -> Comparison:
    """The comparison on job rows as the store returns them (see the module docstring)."""
    jobs = _timed(jobs)
    in_a, in_b = a.matches(jobs, "a"), b.matches(jobs, "b")
    if (in_a & in_b).any():
        raise SelectionError("b", f"{int((in_a & in_b).sum())} jobs match both arms "
                                  f"({a.label()}; {b.label()}): the arms must not overlap")
    _enough(in_a.sum(), a, "a")
    _enough(in_b.sum(), b, "b")
    arms = jobs[in_a | in_b].reset_index(drop=True)
    is_b = in_b[in_a | in_b]
    seconds = compute_seconds(arms)
    features = build_features(arms, profiles, history={})
    pooled = [name for name in _GROUP_FIELDS if name in a.fields | b.fields]
    features = features.assign(**{name: "all" for name in pooled})
    expected = CostModel().fit(features, seconds).predict(features)
    strata = _strata(features, np.log(expected))
    shared = _shared_strata(strata, is_b)
    _enough((shared & ~is_b).sum(), a, "a", " in strata both arms ran")
    _enough((shared & is_b).sum(), b, "b", " in strata both arms ran")
    per_job = pd.DataFrame({"job_id": arms.job_id.to_numpy(), "arm": np.where(is_b, "B", "A"),
                            "stratum": strata, "work_units": features.work_units.to_numpy(),
                            "seconds": seconds, "expected_seconds": expected,
                            "normalised": seconds / expected})[shared]
    notes = _notes(pooled, int((~shared).sum()))
    return _summarise(per_job, a, b, int((~shared).sum()), notes, random_state)


def compute_seconds(jobs: pd.DataFrame) -> np.ndarray:
    """What the settings decide: processing seconds less model loading (``init_seconds``)."""
    return outcome_seconds(jobs) - jobs["init_seconds"].astype(float).fillna(0.0).to_numpy()


def _timed(jobs: pd.DataFrame) -> pd.DataFrame:
    """Successful jobs whose time is a real outcome of the work asked for (not a prompt
    ComfyUI served from its cache)."""
    if not len(jobs):
        return jobs
    usable = (jobs.status == "success") & (compute_seconds(jobs) > 0) & jobs.width.notna() \
        & jobs.height.notna() & jobs.steps.notna() & (jobs.job_type != CACHE_HIT_JOB_TYPE)
    return jobs[usable].reset_index(drop=True)


def _enough(count: int, selector: Selector, argument: str, where: str = "") -> None:
    if count < MIN_ARM_JOBS:
        raise TooFewJobs(argument, f"{int(count)} successful jobs match {selector.label()} in "
                                   f"the period{where}; at least {MIN_ARM_JOBS} are needed")


def _strata(features: pd.DataFrame, log_expected: np.ndarray) -> np.ndarray:
    """A stratum per job: its GPU/model group, cut into quantile bins of expected time."""
    groups = (features.gpu_name.astype(str) + "|" + features.model_name.astype(str)).to_numpy()
    bins = np.zeros(len(groups), dtype=int)
    for group in np.unique(groups):
        members = groups == group
        count = int(np.clip(members.sum() // JOBS_PER_BIN, 1, MAX_BINS))
        cut = pd.qcut(log_expected[members], count, labels=False, duplicates="drop")
        bins[members] = np.nan_to_num(cut, nan=0.0)  # NaN: all alike, one bin
    return pd.factorize(pd.Series(groups) + "#" + pd.Series(bins).astype(str))[0]


def _shared_strata(strata: np.ndarray, is_b: np.ndarray) -> np.ndarray:
    """Jobs in strata where both arms ran at least MIN_STRATUM_ARM_JOBS jobs."""
    b_jobs = np.bincount(strata, weights=is_b)
    a_jobs = np.bincount(strata) - b_jobs
    both = (a_jobs >= MIN_STRATUM_ARM_JOBS) & (b_jobs >= MIN_STRATUM_ARM_JOBS)
    return both[strata]


def _notes(pooled: list[str], excluded: int) -> tuple[str, ...]:
    notes = []
    if pooled:
        notes.append(f"The arms differ by {' and '.join(pooled)}: one cost model spans both "
                     "(its groups pool them).")
    if excluded:
        notes.append(f"{excluded} jobs left out: their GPU, model and size were run by one arm "
                     f"only (fewer than {MIN_STRATUM_ARM_JOBS} jobs of the other).")
    return tuple(notes)


def _summarise(per_job: pd.DataFrame, a: Selector, b: Selector, excluded: int,
               notes: tuple[str, ...], random_state: int) -> Comparison:
    log_normalised = np.log(per_job.normalised.to_numpy())
    by_stratum = [(log_normalised[(per_job.stratum == s).to_numpy() & (per_job.arm == "A")],
                   log_normalised[(per_job.stratum == s).to_numpy() & (per_job.arm == "B")])
                  for s in np.unique(per_job.stratum)]
    shift: Shift = stratified_shift([x for x, _ in by_stratum], [y for _, y in by_stratum],
                                    random_state)
    arm_a, arm_b = per_job[per_job.arm == "A"], per_job[per_job.arm == "B"]
    return Comparison(
        a=_arm_summary(a, arm_a), b=_arm_summary(b, arm_b),
        ratio=math.exp(shift.estimate), ratio_low=math.exp(shift.low),
        ratio_high=math.exp(shift.high), confidence_level=CONFIDENCE, p_value=shift.p_value,
        naive_ratio=float(arm_b.seconds.mean() / arm_a.seconds.mean()),
        detectable_change=math.expm1(shift.detectable()),
        power_at_reference=shift.power_at(math.log1p(REFERENCE_CHANGE)),
        jobs_per_arm_for_target=shift.jobs_per_arm(math.log1p(TARGET_CHANGE)),
        strata=len(by_stratum), excluded_jobs=excluded, notes=notes,
        per_job=per_job.reset_index(drop=True))


def _arm_summary(selector: Selector, jobs: pd.DataFrame) -> ArmSummary:
    log_normalised = np.log(jobs.normalised.to_numpy())
    return ArmSummary(
        label=selector.label(), jobs=len(jobs), mean_seconds=float(jobs.seconds.mean()),
        median_seconds=float(jobs.seconds.median()),
        median_work_units=float(jobs.work_units.median()),
        normalised_time=math.exp(trimmed_mean(log_normalised)),
        log_spread=math.sqrt(winsorised_variance(log_normalised)))


def report_section(store: Store, a: str | None = None, b: str | None = None, *,
                   days: float = DEFAULT_DAYS, pipeline_type: str | None = None,
                   before: Any = None, after: Any = None, end: Any = None) -> str:
    """The comparison as a Markdown report section, or why it cannot be made (too few jobs):
    for the weekly report and the notebooks."""
    arms = " vs ".join(part for part in (a, b) if part) or f"before and after {before or after}"
    heading = f"### A/B comparison: {arms}"
    try:
        comparison = compare_settings(store, a, b, days=days, pipeline_type=pipeline_type,
                                      before=before, after=after, end=end)
    except TooFewJobs as exc:
        return f"{heading}\n\nNo comparison: {exc}."
    return f"{heading}\n\n{comparison.to_markdown()}"
