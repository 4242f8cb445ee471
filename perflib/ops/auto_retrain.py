"""Retraining the pipelines whose model is due (the rule of
:mod:`perflib.prediction.retraining_rule`).

For each stored pipeline with an active model, the rule looks at the model's dates, its latest
estimated jobs and the last four weeks' change-points. A due pipeline gets a candidate, kept as
the active version only if it beats the active one by rolling origin over the latest
`compare_jobs` (:mod:`perflib.prediction.retraining_choice`, the comparison a backtest's
``--retrain auto`` replays). Either way the candidate is stored, with ``retrain_reason``, ``kept`` and ``compared_on`` in its
metrics, so ``model-status`` shows why it exists and the next check measures from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
import sqlalchemy as sa

from perflib.analysis.trends import analyze_trends
from perflib.prediction.predictor import (PerformancePredictor, RefusedModelError,
                                          TrainedModel, load_model_blob)
from perflib.prediction.retraining_choice import choose_candidate
from perflib.prediction.retraining_rule import ModelInfo, RetrainDecision, should_retrain
from perflib.store import Store, parse_timestamp
from perflib.store.model_registry import POOLED, active_blob, version_dates
from perflib.store.schema import generation_performance as jobs_table

TREND_DAYS = 28


@dataclass
class RetrainOutcome:
    """What the rule decided for one stored pipeline, and what a retraining made of it."""

    pipeline_type: str  # the stored model's: image, video, or all (pooled)
    decision: RetrainDecision
    version: int | None = None  # the candidate's stored version
    family: str | None = None
    kept: bool | None = None
    compared_on: int = 0
    candidate_within_20: float | None = None
    active_within_20: float | None = None
    error: str | None = None

    def describe(self) -> str:
        if not self.decision:
            return f"{self.pipeline_type}: not retrained ({self.decision.detail})"
        head = f"{self.pipeline_type}: retrain ({self.decision.reason}: {self.decision.detail})"
        if self.error:
            return f"{head} failed: {self.error}"
        if self.version is None:
            return f"{head} — dry run"
        verdict = "kept as the active version" if self.kept else "not kept, the active one stays"
        return (f"{head} → {self.family} v{self.version} {verdict}"
                + (f" (within ±20% on the latest {self.compared_on} jobs: "
                   f"{_share(self.candidate_within_20)} against {_share(self.active_within_20)})"
                   if self.compared_on else " (too few jobs to compare)"))

    def as_dict(self) -> dict:
        return {"pipeline_type": self.pipeline_type, "reason": self.decision.reason,
                "detail": self.decision.detail, "live_accuracy": self.decision.live_accuracy,
                "version": self.version, "family": self.family, "kept": self.kept,
                "compared_on": self.compared_on, "error": self.error}


def retrain_due(store: Store, now: datetime | None = None, model_type: str = "auto",
                dry_run: bool = False) -> list[RetrainOutcome]:
    """Check the rule for every stored pipeline with an active model and retrain those due
    (with `dry_run`, only say which are)."""
    now = parse_timestamp(now or datetime.now(timezone.utc))
    rule = store.config.retrain_rule
    outcomes = []
    for pipeline, info in model_infos(store).items():
        scope = None if pipeline == POOLED else pipeline
        decision = should_retrain(info, estimated_jobs(store, scope, now,
                                                    max(rule.accuracy_jobs, rule.bias_jobs)),
                                  _change_points(store, scope, now), now, rule)
        outcome = RetrainOutcome(pipeline, decision)
        if decision and not dry_run:
            try:
                outcome = retrain(PerformancePredictor(store), pipeline, decision, model_type,
                                  rule.compare_jobs)
            except ValueError as exc:  # e.g. too few usable jobs: reported, the rest go on
                outcome.error = str(exc)
        outcomes.append(outcome)
    return outcomes


def model_infos(store: Store) -> dict[str, ModelInfo]:
    """Per stored pipeline with an active version: its dates, and the last retraining attempt
    (the newest version stored, kept or not)."""
    rows = version_dates(store)
    infos = {}
    for row in rows:
        if row.is_active:
            attempts = [r.created_at for r in rows if r.pipeline_type == row.pipeline_type]
            infos[row.pipeline_type] = ModelInfo(
                trained_at=row.created_at, train_end=row.train_end or row.created_at,
                last_attempt_at=max(attempts))
    return infos


def estimated_jobs(store: Store, pipeline_type: str | None, now: datetime,
                   limit: int) -> pd.DataFrame:
    """The latest `limit` successful jobs finished by `now` that carry the estimate given at
    submission."""
    t = jobs_table
    query = (sa.select(t.c.job_id, t.c.status, t.c.predicted_seconds, t.c.processing_seconds,
                       t.c.total_seconds, t.c.submitted_at, t.c.started_at, t.c.finished_at)
             .where(t.c.status == "success", t.c.predicted_seconds > 0,
                    t.c.finished_at <= now)
             .order_by(t.c.finished_at.desc()).limit(limit))
    if pipeline_type:
        query = query.where(t.c.pipeline_type == pipeline_type)
    return store.frame(query)


def retrain(predictor: PerformancePredictor, pipeline: str, decision: RetrainDecision,
            model_type: str = "auto", compare_jobs: int = 100,
            jobs: pd.DataFrame | None = None) -> RetrainOutcome:
    """Train a candidate for stored pipeline `pipeline`, keep or reject it against the active
    model (:func:`perflib.prediction.retraining_choice.choose_candidate`, the backtest's rule
    too), store it (active only if kept) with the reason. `jobs`: the usable jobs, oldest
    first (default: the store's). Raises ValueError when there are too few jobs to train."""
    scope = None if pipeline == POOLED else pipeline
    jobs = predictor.training_data(scope) if jobs is None else jobs
    choice = choose_candidate(predictor, scope, model_type, jobs,
                              _active_model(predictor.store, pipeline), compare_jobs)
    outcome = RetrainOutcome(pipeline, decision, family=choice.family, kept=choice.kept,
                             compared_on=choice.compared_on,
                             candidate_within_20=choice.candidate_within_20,
                             active_within_20=choice.active_within_20)
    outcome.version = predictor.save_model_to_db(scope, outcome.family, activate=outcome.kept,
                                                 notes={
        "retrain_reason": decision.reason, "retrain_detail": decision.detail,
        "kept": outcome.kept, "compared_on": outcome.compared_on,
        "compared_within_20": {"candidate": outcome.candidate_within_20,
                               "active": outcome.active_within_20}})
    predictor.reload()
    return outcome


def _active_model(store: Store, pipeline: str) -> TrainedModel | None:
    blob = active_blob(store, pipeline)
    try:
        return load_model_blob(blob) if blob is not None else None
    except RefusedModelError:
        return None


def _change_points(store: Store, pipeline_type: str | None, now: datetime) -> list:
    trends = analyze_trends(store, now - timedelta(days=TREND_DAYS), now, pipeline_type)
    return [point for trend in trends.values() for point in trend.change_points]


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"
