"""How good the estimates were over a window: the estimates given before jobs ran (stored
``predicted_seconds``) against their processing time, and the model that answers now replayed on
the window's jobs, for the coverage of its 80% interval (stored estimates carry no interval).

A replayed model trained on jobs of the window has seen them: its coverage is then marked
in-sample, and reads optimistic. A pipeline without a trained model is not replayed: the
heuristic's fixed range is no calibrated interval (and fitting it reads the whole history).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from perflib.analysis.performance_report import EstimateAccuracy
from perflib.prediction.metrics import coverage, is_inside, is_within
from perflib.prediction.predictor import PerformancePredictor
from perflib.store import Store, parse_timestamp

REPLAY_ROWS = 5_000  # per pipeline, evenly spaced in time: plenty for a coverage figure
NO_MODEL = "none: no trained model"


@dataclass
class EstimateCheck:
    """Per successful job: ``day``, ``pipeline_type``, ``actual_seconds``, the stored
    ``estimate_seconds`` (NaN where none was given) and the replayed model's ``replay_seconds``,
    ``replay_low``, ``replay_high``; and per pipeline, which model was replayed, whether it
    was trained on jobs of the window, and the stored estimates' accuracy over every job of the
    window (:meth:`PerformanceAnalyzer.prediction_accuracy`, the report summary's figure: `jobs`
    may be a sample)."""

    jobs: pd.DataFrame
    models: dict[str, str] = field(default_factory=dict)
    in_sample: dict[str, bool] = field(default_factory=dict)
    accuracy: dict[str, EstimateAccuracy] = field(default_factory=dict)

    @property
    def error(self) -> pd.Series:
        """Stored estimates' relative error, actual ÷ estimate − 1 (only jobs with one)."""
        given = self.jobs.dropna(subset=["estimate_seconds"])
        return given.actual_seconds / given.estimate_seconds - 1

    def daily(self) -> pd.DataFrame:
        """Per day: jobs with a stored estimate, the share of them within 20%, and the share of
        the replayed jobs inside the model's interval."""
        jobs = self.jobs
        estimated = jobs.estimate_seconds.notna()
        within = pd.Series(is_within(jobs.actual_seconds, jobs.estimate_seconds), jobs.index)
        inside = pd.Series(is_inside(jobs.actual_seconds, jobs.replay_low, jobs.replay_high),
                           jobs.index)
        per_job = pd.DataFrame({
            "day": jobs.day, "estimated": estimated,
            "within": within.astype(float).where(estimated),
            "inside": inside.astype(float).where(jobs.replay_low.notna())})
        return per_job.groupby("day").agg(
            estimated_jobs=("estimated", "sum"), within_20_percent=("within", "mean"),
            interval_coverage=("inside", "mean")).reset_index()

    def coverage(self) -> float | None:
        """Share of the jobs inside the replayed model's 80% interval; None without any."""
        replayed = self.jobs.dropna(subset=["replay_low", "replay_high"])
        if replayed.empty:
            return None
        return coverage(replayed.actual_seconds, replayed.replay_low, replayed.replay_high)


def estimate_check(store: Store, jobs: pd.DataFrame, start: datetime,
                   accuracy: dict[str, EstimateAccuracy] | None = None) -> EstimateCheck:
    """Check the estimates of `jobs` (finished job rows of a window starting at `start`, maybe
    a sample of it), with the `accuracy` of the window's stored estimates per pipeline."""
    done = jobs[(jobs.status == "success") & (jobs.processing_seconds > 0)]
    frame = pd.DataFrame({
        "day": pd.to_datetime(done.started_at, utc=True).dt.date,
        "pipeline_type": done.pipeline_type,
        "actual_seconds": done.processing_seconds,
        "estimate_seconds": done.predicted_seconds.where(done.predicted_seconds > 0),
        "replay_seconds": np.nan, "replay_low": np.nan, "replay_high": np.nan},
        index=done.index)
    check = EstimateCheck(frame, accuracy=dict(accuracy or {}))
    predictor = PerformancePredictor(store)
    for pipeline, group in done.groupby("pipeline_type"):
        model = predictor.active_model(pipeline)
        if model is None:  # the heuristic's fixed ×0.5–×2 range is no calibrated interval
            check.models[pipeline] = NO_MODEL
            check.in_sample[pipeline] = False
            continue
        group = group.iloc[::-(-len(group) // REPLAY_ROWS)]  # spread over the whole window
        priced = predictor.estimate_batch(group, pipeline)
        frame.loc[group.index, ["replay_seconds", "replay_low", "replay_high"]] = (
            priced[["predicted_time_seconds", "low", "high"]].to_numpy())
        check.models[pipeline] = (f"{model.family.replace('_', ' ')} v{model.version}, "
                                  f"trained on jobs up to "
                                  f"{parse_timestamp(model.train_end):%d %b %Y}")
        check.in_sample[pipeline] = parse_timestamp(model.train_end) >= start
    return check
