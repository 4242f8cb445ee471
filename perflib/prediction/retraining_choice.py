"""Keep or reject a retrained candidate: the one comparison ``perflib maintain`` and a backtest's
``--retrain auto`` both make, so the backtest replays production exactly.

A rolling-origin evaluation over the latest `compare_jobs` usable jobs (at most a quarter of
them): they are cut into COMPARE_FOLDS folds, oldest first; for each fold a candidate trained on
every job before it prices the fold, and so does the active model, both as production prices
(each job with its GPU and model's drift level over the jobs that finished before it was
submitted). A later fold's candidate has seen the earlier folds — after a step change, the new
level — which a single candidate trained on all but the latest jobs never does. The candidate is
kept when it ranks above the active model over all folds together (within ±20%, ties by MAPE);
kept, it is refit on all the jobs, so the version stored has seen the latest ones too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from perflib.prediction.features import outcome_seconds
from perflib.prediction.metrics import rank
from perflib.prediction.models import score
from perflib.prediction.predictor import PerformancePredictor
from perflib.prediction.trained import TrainedModel

COMPARE_FOLDS = 2
MIN_COMPARE_JOBS = 20


@dataclass(frozen=True)
class Choice:
    """The verdict: the candidate's family (the last one trained), whether it is kept, on how
    many of the latest jobs the two were compared (0: too few, kept without comparison), and
    each one's within-±20% share there (None where not measured)."""

    family: str
    kept: bool
    compared_on: int
    candidate_within_20: float | None = None
    active_within_20: float | None = None


def choose_candidate(predictor: PerformancePredictor, scope: str | None, model_type: str,
                     jobs: pd.DataFrame, active: TrainedModel | None, compare_jobs: int,
                     **train_options) -> Choice:
    """Train candidates on `jobs` (usable rows, oldest first) for `scope`, compare them with
    `active` by rolling origin, and leave the model to store as `predictor`'s last trained for
    (scope, family): refit on all of `jobs` when kept (or when there is nothing to compare
    with), else the last fold's candidate. `train_options` go to ``train_model``."""
    jobs = jobs.reset_index(drop=True)
    held_out = min(compare_jobs, len(jobs) // 4)
    held_out = held_out if held_out >= MIN_COMPARE_JOBS else 0
    if not held_out or active is None:
        family = predictor.train_model(scope, model_type, jobs=jobs, **train_options)
        return Choice(family["model_type"], True, 0)
    actual = outcome_seconds(jobs)
    mine, theirs = [], []
    for fold in np.array_split(np.arange(len(jobs) - held_out, len(jobs)), COMPARE_FOLDS):
        family = predictor.train_model(scope, model_type, jobs=jobs.iloc[:fold[0]],
                                       **train_options)["model_type"]
        mine.append(held_out_estimates(predictor.trained_model(scope, family), jobs, fold))
        theirs.append(held_out_estimates(active, jobs, fold))
    later = actual[len(jobs) - held_out:]
    candidate, current = score(later, np.concatenate(mine)), score(later, np.concatenate(theirs))
    kept = rank(candidate.accuracy_within_20_percent, candidate.mape) > \
        rank(current.accuracy_within_20_percent, current.mape)
    if kept:
        family = predictor.train_model(scope, model_type, jobs=jobs, **train_options)["model_type"]
    return Choice(family, kept, held_out, candidate.accuracy_within_20_percent,
                  current.accuracy_within_20_percent)


def held_out_estimates(model: TrainedModel, jobs: pd.DataFrame, rows: np.ndarray
                       ) -> np.ndarray:
    """What `model` estimates for jobs at positions `rows`, each with its GPU and model's drift
    from the jobs (of `jobs`) that finished before it was submitted — as production and a
    backtest price it (:meth:`TrainedModel.replayed_history`); NaN for any job it cannot
    price."""
    try:
        drift, spread = model.replayed_history(jobs)[1:]
        seconds = model.replay_predict(jobs.iloc[rows], drift[rows], spread[rows])[0]
    except Exception:  # a damaged active model prices nothing: the candidate wins
        return np.full(len(rows), np.nan)
    return np.where(np.isfinite(seconds) & (seconds > 0), seconds, np.nan)
