"""Backtests: replay a job history the way production would have seen it.

Protocols (:func:`run_backtest`):

- ``online`` — train on the jobs submitted before the start point; then, in submission order,
  estimate each later job with only the jobs that had *finished before it was submitted*
  visible (the drift and spread an estimate reads from the store, and the online conformal
  widening of its interval), let it finish, and retrain on a schedule (``never``, ``daily``,
  ``weekly``, or ``auto``: :func:`perflib.prediction.retraining_rule.should_retrain`, the rule
  ``perflib maintain`` applies, fed with the replayed estimates, and the candidate kept or
  rejected as production does, :func:`perflib.prediction.retraining_choice.choose_candidate`). ``time`` is the static
  protocol of ``train_model(split="time")``: the same replay, never retrained.
- ``size`` — train on the smallest jobs, estimate the largest: drift and spread come from the
  training jobs only, so the big jobs stay unseen; intervals still adapt as they finish.

The replay never touches the database per job: every visible-history quantity is a
"finished before submitted" window over the in-memory frame
(:func:`perflib.prediction.features.past_median`, the same statistics the estimate path computes
from the store), and each model version prices all the jobs it answers for in one batch.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from perflib.config import Settings
from perflib.prediction.conformal import (OnlineConformal, adjusted_confidence,
                                          normalised_scores)
from perflib.prediction.features import build_features, outcome_seconds
from perflib.prediction.metrics import (CLOSE, coverage, is_within, mape, relative_errors,
                                        within_share)
from perflib.prediction.predictor import PerformancePredictor, TrainedModel
from perflib.prediction.retraining_choice import choose_candidate
from perflib.prediction.retraining_rule import ModelInfo, should_retrain
from perflib.store import Store, parse_timestamp
from perflib.store.importer import import_jobs

PROTOCOLS = ("online", "time", "size")
SCHEDULES = {"never": None, "daily": timedelta(days=1), "weekly": timedelta(days=7),
             "auto": "rule"}
GROUP_COLUMNS = ("pipeline_type", "gpu_name", "model_name")
METRIC_NAMES = ("jobs", "within_10_percent", "within_20_percent", "mape", "median_ape",
                "interval_coverage", "mean_relative_width")


@dataclass
class Backtest:
    """One replay: each estimated job (``estimates``: actual and predicted seconds, interval,
    confidence, the model version that answered, submission and finish times), and each
    retraining (``retrains``: when, why, on how many jobs)."""

    protocol: str
    retrain: str
    estimates: pd.DataFrame
    retrains: list[dict] = field(default_factory=list)

    def table(self, by: Sequence[str] = GROUP_COLUMNS) -> pd.DataFrame:
        """The metrics of :data:`METRIC_NAMES` per group of `by`, plus an ``all`` row."""
        rows = {("all",) * len(by): backtest_metrics(self.estimates)}
        for key, group in self.estimates.groupby(list(by), dropna=False, sort=True):
            rows[tuple(str(k) for k in key)] = backtest_metrics(group)
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index = pd.MultiIndex.from_tuples(table.index, names=list(by))
        return table

    def as_dict(self) -> dict:
        """The table and retrainings as plain values (``perflib backtest --json``)."""
        table = self.table().reset_index()
        return {"protocol": self.protocol, "retrain": self.retrain,
                "groups": table.to_dict("records"), "retrains": self.retrains}


def backtest_metrics(estimates: pd.DataFrame) -> dict:
    """Within-10/20%, MAPE and median APE (fractions), 80%-interval coverage and mean width
    relative to the estimate, over estimated jobs."""
    actual, predicted = estimates.actual_seconds.to_numpy(), estimates.predicted_seconds.to_numpy()
    relative = relative_errors(actual, predicted)
    width = (estimates.high_seconds - estimates.low_seconds) / estimates.predicted_seconds
    return {"jobs": len(estimates), "within_10_percent": within_share(actual, predicted, CLOSE),
            "within_20_percent": within_share(actual, predicted),
            "mape": mape(actual, predicted), "median_ape": float(np.median(relative)),
            "interval_coverage": coverage(actual, estimates.low_seconds, estimates.high_seconds),
            "mean_relative_width": float(np.mean(width))}


def reliability_table(estimates: pd.DataFrame, bins: Sequence[float] = (
        0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)) -> pd.DataFrame:
    """Is ``confidence`` honest? Per bin of stated confidence: jobs, mean stated confidence,
    and the share that landed within ±20% of the estimate."""
    within = is_within(estimates.actual_seconds, estimates.predicted_seconds)
    frame = pd.DataFrame({"bin": pd.cut(estimates.confidence, list(bins), include_lowest=True),
                          "confidence": estimates.confidence, "within": within})
    table = frame.groupby("bin", observed=True).agg(
        jobs=("within", "size"), stated_confidence=("confidence", "mean"),
        observed_within_20_percent=("within", "mean"))
    return table


def run_backtest(predictor: PerformancePredictor, jobs: pd.DataFrame | None = None,
                 protocol: str = "online", start: float | None = None,
                 retrain: str = "never", model_type: str = "linear_regression",
                 coverage: float = 0.8, adaptive: bool = True) -> Backtest:
    """Replay `jobs` (default: the predictor's usable stored jobs) under `protocol` (see the
    module docstring). `start`: the share of jobs trained on first (0.7; 0.8 for ``size``).
    `adaptive`: intervals corrected online (:mod:`perflib.prediction.conformal`); False keeps the
    calibrated split-conformal interval as trained."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if retrain not in SCHEDULES:
        raise ValueError(f"retrain must be one of {', '.join(SCHEDULES)}, got {retrain!r}")
    start = (0.8 if protocol == "size" else 0.7) if start is None else start
    if not 0 < start < 1:
        raise ValueError(f"start must be a share of the jobs between 0 and 1, got {start!r}")
    jobs = predictor.training_data() if jobs is None else jobs
    jobs = _in_submission_order(jobs)
    replay = _Replay(predictor, jobs, protocol, model_type, coverage)
    trained = replay.first_training(start)
    schedule = None if protocol != "online" else SCHEDULES[retrain]
    estimates, retrains = replay.estimate(trained, schedule)
    estimates = replay.intervals(estimates, adaptive)
    return Backtest(protocol, retrain if protocol == "online" else "never", estimates, retrains)


def backtest_file(path: str | Path, settings: Settings, **options) -> Backtest:
    """:func:`run_backtest` on the jobs of a CSV or JSONL file (the import format), loaded into
    a throwaway SQLite file so they are read exactly as stored jobs are."""
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{Path(folder) / 'backtest.db'}",
                      replace(settings, spool_dir=Path(folder) / "spool"))
        try:
            report = import_jobs(path, store)
            if report.errors:
                raise ValueError(f"{path}: {len(report.errors)} rows could not be read, the "
                                 f"first at line {report.errors[0].line}: "
                                 f"{report.errors[0].field}: {report.errors[0].message}")
            return run_backtest(PerformancePredictor(store), **options)
        finally:
            store.engine.dispose()


def _in_submission_order(jobs: pd.DataFrame) -> pd.DataFrame:
    jobs = jobs.assign(submitted=_instants(_submitted(jobs)),
                       finished=_instants(jobs["finished_at"]),
                       actual_seconds=outcome_seconds(jobs))
    jobs = jobs[np.isfinite(jobs.submitted) & np.isfinite(jobs.finished)]
    return jobs.sort_values("submitted", kind="stable").reset_index(drop=True)


def _submitted(jobs: pd.DataFrame) -> pd.Series:
    started = jobs["started_at"]
    if "submitted_at" in jobs:
        return jobs["submitted_at"].where(jobs["submitted_at"].notna(), started)
    return started


def _moment(instant: float) -> datetime:
    return datetime.fromtimestamp(instant, timezone.utc)


def _instants(values) -> np.ndarray:
    stamps = pd.to_datetime(pd.Series(values), utc=True, errors="coerce")
    return (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(float)


class _Replay:
    """The state of one replay: the jobs, which of them trained the first model, and how each
    model version is trained and prices the jobs it answers for."""

    def __init__(self, predictor: PerformancePredictor, jobs: pd.DataFrame, protocol: str,
                 model_type: str, coverage: float):
        self.predictor, self.jobs, self.protocol = predictor, jobs, protocol
        self.model_type, self.coverage = model_type, coverage
        self.known: np.ndarray | None = None  # size: only training jobs' outcomes are seen

    def first_training(self, start: float) -> tuple[TrainedModel, np.ndarray]:
        """The first model and the positions of the jobs it estimates (submission order)."""
        count = len(self.jobs)
        cut = int(round(count * start))
        if self.protocol == "size":
            by_size = np.argsort(self._work(), kind="stable")
            train, test = np.sort(by_size[:cut]), np.sort(by_size[cut:])
            self.known = np.zeros(count, dtype=bool)
            self.known[train] = True
        else:
            train, test = np.arange(cut), np.arange(cut, count)
        return self._train(train), test

    def _work(self) -> np.ndarray:
        features = build_features(self.jobs, self.predictor.config.model_profiles, history={})
        return features.work_units.to_numpy()

    def _train(self, positions: np.ndarray) -> TrainedModel:
        result = self.predictor.train_model(None, self.model_type, **self._training(positions))
        return self.predictor.trained_model(None, result["model_type"])

    def _training(self, positions: np.ndarray) -> dict:
        """How a model is trained on the jobs at `positions`: its rows oldest first, split and
        coverage."""
        rows = self.jobs.iloc[positions].sort_values("started_at", kind="stable")
        return {"jobs": rows.reset_index(drop=True), "coverage": self.coverage,
                "split": "size" if self.protocol == "size" else "time"}

    def _retrain(self, positions: np.ndarray, active: TrainedModel, rule: bool
                 ) -> tuple[TrainedModel, dict]:
        """The model after a retraining on the jobs at `positions`: on a schedule, the new one;
        by the rule, what production keeps (:func:`choose_candidate`), and the verdict."""
        if not rule:
            return self._train(positions), {"kept": True}
        training = self._training(positions)
        choice = choose_candidate(self.predictor, None, self.model_type, training.pop("jobs"),
                                  active, self.predictor.config.retrain_rule.compare_jobs,
                                  **training)
        verdict = {"kept": choice.kept, "compared_on": choice.compared_on,
                   "candidate_within_20": choice.candidate_within_20,
                   "active_within_20": choice.active_within_20}
        return (self.predictor.trained_model(None, choice.family) if choice.kept
                else active), verdict

    def estimate(self, trained: tuple[TrainedModel, np.ndarray], schedule
                 ) -> tuple[pd.DataFrame, list[dict]]:
        """Point estimates and calibrated (unwidened) intervals of every test job, model by
        model: each version prices the jobs submitted until the next retraining (a candidate
        the rule does not keep leaves the version as it was)."""
        model, pending = trained
        version, parts, retrains = 1, [], []
        since = self.jobs.submitted.to_numpy()[pending[0]] if len(pending) else 0.0
        while len(pending):
            priced = self._price(model, pending).assign(model_version=version)
            cut, reason = self._next_retraining(priced, since, schedule, model)
            parts.append(priced.iloc[:cut])
            if cut >= len(pending):
                break
            since = priced.submitted.iloc[cut]  # the attempt, kept or not, restarts the rule
            visible = np.flatnonzero(self.jobs.finished.to_numpy() < since)
            model, verdict = self._retrain(visible, model, schedule == "rule")
            version += verdict["kept"]
            retrains.append({"at": _moment(since).isoformat(), "reason": reason,
                             "jobs": len(visible), "version": version, **verdict})
            pending = pending[cut:]
        return pd.concat(parts, ignore_index=True), retrains

    def _price(self, model: TrainedModel, positions: np.ndarray) -> pd.DataFrame:
        """`model`'s estimates of the jobs at `positions`, each with the drift and spread of
        its GPU and model over the jobs that finished before it was submitted (far-slower
        jobs left out of drift, as live)."""
        jobs = self.jobs
        keys, drift, spread = model.replayed_history(jobs, self.known)
        rows = jobs.iloc[positions]
        seconds, low, high, confidence = model.replay_predict(rows, drift[positions],
                                                              spread[positions])
        return pd.DataFrame({
            "job_id": rows.job_id.to_numpy(), **{c: rows[c].to_numpy() for c in GROUP_COLUMNS},
            "submitted": rows.submitted.to_numpy(), "finished": rows.finished.to_numpy(),
            "actual_seconds": rows.actual_seconds.to_numpy(), "predicted_seconds": seconds,
            "calibrated_low_seconds": low, "calibrated_high_seconds": high,
            "calibrated_confidence": confidence, "spread": spread[positions],
            "group": keys[positions]})

    def _next_retraining(self, priced: pd.DataFrame, trained_at: float, schedule,
                         model: TrainedModel) -> tuple[int, str | None]:
        """Position in `priced` of the first job submitted after a retraining is due, and
        why (len(priced), None: none is)."""
        submitted = priced.submitted.to_numpy()
        if schedule is None:
            return len(priced), None
        if isinstance(schedule, timedelta):
            due = np.flatnonzero(submitted >= trained_at + schedule.total_seconds())
            return (int(due[0]), "schedule") if len(due) else (len(priced), None)
        return self._rule_retraining(priced, trained_at, model)

    def _rule_retraining(self, priced: pd.DataFrame, trained_at: float, model: TrainedModel
                         ) -> tuple[int, str | None]:
        rule = self.predictor.config.retrain_rule
        info = ModelInfo(trained_at=_moment(trained_at),
                         train_end=parse_timestamp(model.train_end))
        outcomes = priced.assign(
            total_seconds=priced.actual_seconds,
            submitted_at=pd.to_datetime(priced.submitted, unit="s", utc=True),
            finished_at=pd.to_datetime(priced.finished, unit="s", utc=True))
        finished = priced.finished.to_numpy()
        for position, now in enumerate(priced.submitted.to_numpy()):
            seen = outcomes[finished < now].nlargest(max(rule.accuracy_jobs, rule.bias_jobs),
                                                     "finished")
            if len(seen) < min(rule.min_accuracy_jobs, rule.bias_jobs):
                continue
            decision = should_retrain(info, seen, [], _moment(now), rule)
            if decision:
                return position, decision.reason
        return len(priced), None

    def intervals(self, estimates: pd.DataFrame, adaptive: bool) -> pd.DataFrame:
        """Each job's interval and confidence: as calibrated, or adjusted by the online
        conformal state as of its submission (outcomes seen in the order jobs finished): each
        tail widened apart, the confidence's log-odds shifted."""
        low, high, log_odds = (np.ones(len(estimates)), np.ones(len(estimates)),
                               np.zeros(len(estimates)))
        if adaptive:
            low, high, log_odds = _online_adjustment(estimates, self.coverage)
        predicted = estimates.predicted_seconds.to_numpy()
        lower = np.log(predicted / estimates.calibrated_low_seconds.to_numpy()) * low
        upper = np.log(estimates.calibrated_high_seconds.to_numpy() / predicted) * high
        return estimates.assign(
            low_seconds=predicted * np.exp(-lower), high_seconds=predicted * np.exp(upper),
            widen_low=low, widen=high,
            confidence=adjusted_confidence(estimates.calibrated_confidence, log_odds))


def _online_adjustment(estimates: pd.DataFrame, coverage: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each job's lower and upper widening factors and confidence log-odds shift at its
    submission, from the outcomes of the replayed jobs that finished before it (fed to
    :class:`OnlineConformal` in the order they finished)."""
    conformal = OnlineConformal(coverage)
    scores = normalised_scores(estimates.actual_seconds, estimates.predicted_seconds,
                               estimates.calibrated_low_seconds,
                               estimates.calibrated_high_seconds)
    within = is_within(estimates.actual_seconds, estimates.predicted_seconds)
    stated = estimates.calibrated_confidence.to_numpy()
    finish_order = np.argsort(estimates.finished.to_numpy(), kind="stable")
    finished = estimates.finished.to_numpy()[finish_order]
    groups = estimates.group.to_numpy()
    adjusted, seen = np.empty((len(estimates), 3)), 0
    for position, submitted in enumerate(estimates.submitted.to_numpy()):
        while seen < len(finish_order) and finished[seen] < submitted:
            done = finish_order[seen]
            conformal.update(groups[done], float(scores[done]), stated[done], within[done])
            seen += 1
        state = conformal.adjustment(groups[position])
        adjusted[position] = state.low, state.high, state.log_odds
    return adjusted[:, 0], adjusted[:, 1], adjusted[:, 2]
