"""Training: time-ordered, fit on the past and score on the future (or, with ``split='size'``,
fit on the smaller jobs and score on the largest). Intervals are split-conformal on log
residuals from the later half of the training period, scaled by how scattered each GPU and model
have run lately; ``confidence`` is the calibrated chance of landing within ±20%."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from perflib.config import ModelProfile, Settings
from perflib.prediction.features import (build_features, far_slower_jobs, history_keys,
                                         latest_median, outcome_seconds, past_median)
from perflib.prediction.geometry import infer_profiles, judged_models
from perflib.prediction.geometry_sources import carried_profiles, priors
from perflib.prediction.metrics import rank
from perflib.prediction.models import (FAMILIES, AnchoredRegressor, Calibration, CostModel,
                                       anchor, make_family, score)
from perflib.prediction.trained import DRIFT_JOBS, MIN_DRIFT_JOBS, MIN_SPREAD_JOBS, TrainedModel
from perflib.record import CACHE_HIT_JOB_TYPE
from perflib.store import Store

MIN_JOBS_FOR_MODEL = 30
# The calibration part of the training window, its latest (or largest) jobs: half of it, to
# hold both the calm and the noisy spells a shared machine goes through.
CALIBRATION_FRACTION = 0.5


@dataclass
class TrainingReport:
    """The last training run's held-out view, for notebooks: per family, the model fitted on the
    training window and its test-period predictions and intervals."""

    chosen: str
    test_features: pd.DataFrame
    test_seconds: np.ndarray
    fitted: dict[str, AnchoredRegressor]
    held_out: dict[str, pd.DataFrame]



@dataclass
class Training:
    """One training run: what train_model returns, the chosen model as it would be stored, and
    the held-out view."""

    result: dict
    model: TrainedModel
    report: TrainingReport


@dataclass
class _Windows:
    """Training jobs (oldest first), their features and outcomes, the row positions of each
    window, and the model profiles used (configured, and inferred ones shown apart) with where
    each model's geometry came from."""

    jobs: pd.DataFrame
    features: pd.DataFrame
    seconds: np.ndarray
    train: np.ndarray
    test: np.ndarray
    proper: np.ndarray
    calibrate: np.ndarray
    profiles: dict[str, ModelProfile]
    inferred: dict[str, dict]
    geometry_sources: dict[str, str]


def training_data(store: Store, pipeline_type: str | None = None,
                  as_of: datetime | None = None) -> pd.DataFrame:
    """Successful jobs with the parameters a model needs, oldest first (only those finished
    before `as_of` where given)."""
    jobs = store.jobs_frame(until=as_of, pipeline_type=pipeline_type)
    usable = (jobs.status == "success") & (outcome_seconds(jobs) > 0) & jobs.width.notna() \
        & jobs.height.notna() & jobs.steps.notna() & ~_cache_hits(jobs)
    if as_of is not None:
        usable &= jobs.finished_at < pd.Timestamp(as_of)
    return jobs[usable].reset_index(drop=True)


def train(jobs: pd.DataFrame, pipeline_type: str | None, settings: Settings,
          model_type: str = "auto", split: str = "time", test_fraction: float = 0.3,
          coverage: float = 0.8, random_state: int = 0, progress: bool = False) -> Training:
    """Train one family (or all with ``'auto'``, keeping the best by within-20% accuracy, ties
    by MAPE) on usable job rows, oldest first (see PerformancePredictor.train_model)."""
    families = FAMILIES if model_type == "auto" else (model_type,)
    for family in families:
        make_family(family)  # raises a clear ValueError for an unknown model_type
    if len(jobs) < MIN_JOBS_FOR_MODEL:
        raise ValueError(f"pipeline_type {pipeline_type or 'all'!r} has {len(jobs)} usable "
                         f"jobs; at least {MIN_JOBS_FOR_MODEL} are needed to train")
    windows = _windows(jobs, settings.model_profiles, split, test_fraction)
    # The cost model is shared by every family: fit it once per training window.
    online, gpus = split == "time", settings.gpu_profiles
    on_proper = _anchored(jobs, windows.features, windows.seconds, windows.proper, online, gpus)
    on_train = _anchored(jobs, windows.features, windows.seconds, windows.train, online, gpus)
    results: dict[str, tuple] = {}
    bar = tqdm(families, desc="training", unit="family", disable=not progress)
    for family in bar:
        bar.set_postfix_str(family)
        results[family] = _evaluate(family, on_proper, on_train, windows, coverage,
                                    random_state)
    best = max(results, key=lambda f: rank(results[f][0].accuracy_within_20_percent,
                                           results[f][0].mape))
    metrics, residuals = results[best][:2]
    model = _final_model(windows, pipeline_type or "all", best, random_state, gpus,
                         Calibration(coverage).fit(*residuals))
    model.metrics = {**metrics.as_dict(), "coverage_target": coverage, "split": split,
                     "inferred_profiles": windows.inferred,
                     "geometry_sources": windows.geometry_sources}
    comparison = {family: result[0].as_dict() for family, result in results.items()}
    return Training({**metrics.as_dict(), "model_type": best, "pipeline_type": model.pipeline_type,
                     "comparison": comparison, "inferred_profiles": windows.inferred,
                     "geometry_sources": windows.geometry_sources},
                    model, _held_out(best, results, on_train, windows))


def _windows(jobs: pd.DataFrame, configured: Mapping[str, ModelProfile], split: str,
             test_fraction: float) -> _Windows:
    """Split `jobs` into their windows; video models without a configured profile get the
    geometry their training jobs show."""
    features = build_features(jobs, configured)
    seconds = outcome_seconds(jobs)
    train, test = _split(features, np.arange(len(features)), test_fraction, split)
    proper, calibrate = _split(features, train, CALIBRATION_FRACTION, split)
    inferred = infer_profiles(jobs, seconds, proper, calibrate, configured,
                              priors(jobs.model_name.dropna().astype(str).unique()))
    carried, sources = carried_profiles(jobs, configured, inferred,
                                        judged_models(jobs, proper, calibrate))
    profiles = {**configured, **carried}
    if profiles != dict(configured):
        features = build_features(jobs, profiles)
    return _Windows(jobs, features, seconds, train, test, proper, calibrate, profiles,
                    {name: asdict(profile) for name, profile in inferred.items()}, sources)


def _held_out(best: str, results: dict[str, tuple], on_train: "_Anchoring", windows: _Windows
              ) -> TrainingReport:
    jobs, test = windows.jobs, windows.test
    return TrainingReport(
        chosen=best, test_features=on_train.features.iloc[test],
        test_seconds=windows.seconds[test],
        fitted={family: result[2] for family, result in results.items()},
        held_out={family: result[3].assign(job_id=jobs.job_id.to_numpy()[test],
                                           pipeline_type=jobs.pipeline_type.to_numpy()[test])
                  for family, result in results.items()})


def _final_model(windows: _Windows, pipeline_type: str, family: str, random_state: int,
                 gpus, calibration: Calibration) -> TrainedModel:
    """`family` refitted on every job, with each group's latest speed, drift and spread."""
    jobs, features, seconds = windows.jobs, windows.features, windows.seconds
    on_all = _anchored(jobs, features, seconds, np.arange(len(features)), gpu_profiles=gpus)
    keys = history_keys(features)
    return TrainedModel(
        pipeline_type=pipeline_type, family=family, cost_model=on_all.cost_model,
        estimator=make_family(family, random_state).fit(on_all.features, seconds),
        calibration=calibration,
        history=latest_median(jobs, keys, seconds / features.work_units.to_numpy()),
        drift=latest_median(jobs, keys, on_all.ratio, window=DRIFT_JOBS,
                            min_periods=MIN_DRIFT_JOBS, known=on_all.usual, statistic="level"),
        spread=latest_median(jobs, keys, on_all.ratio, min_periods=MIN_SPREAD_JOBS,
                             statistic="spread"),
        profiles=windows.profiles, geometry_sources=windows.geometry_sources,
        pipeline_counts={str(k): int(v) for k, v in jobs.pipeline_type.value_counts().items()},
        metrics={}, n_rows=len(jobs), train_start=iso(jobs.started_at.min()),
        train_end=iso(jobs.started_at.max()), trained_at=iso(datetime.now(timezone.utc)))


@dataclass
class _Anchoring:
    """Every job anchored to a cost model fitted on some of them: the features with the anchor
    columns, log(actual / cost model), each job's leak-free recent spread of that ratio, and
    which jobs count towards drift (not far slower than their group's level)."""

    cost_model: CostModel
    features: pd.DataFrame
    ratio: np.ndarray
    spread: np.ndarray
    usual: np.ndarray


def _anchored(jobs: pd.DataFrame, features: pd.DataFrame, seconds: np.ndarray,
              fit_positions: np.ndarray, online: bool = True, gpu_profiles=None
              ) -> _Anchoring:
    """Fit the cost model on `fit_positions`; anchor every row to it, with each row's history
    taken only from jobs that finished before it was submitted — any such job when `online`
    (as in production), else only the fitted ones (so bigger jobs stay unseen)."""
    cost_model = CostModel().fit(features.iloc[fit_positions], seconds[fit_positions],
                                 gpu_profiles)
    ratio = np.log(seconds) - np.log(cost_model.predict(features))
    keys = history_keys(features)
    known = None
    if not online:
        known = np.zeros(len(features), dtype=bool)
        known[fit_positions] = True
        per_work = seconds / features.work_units.to_numpy()
        features = features.assign(
            recent_seconds_per_work=past_median(jobs, keys, per_work, known=known))
    usual = ~far_slower_jobs(jobs, keys, ratio)[0]  # a burst of stragglers is not drift
    recent = past_median(jobs, keys, ratio, window=DRIFT_JOBS, min_periods=MIN_DRIFT_JOBS,
                         known=usual if known is None else usual & known, statistic="level")
    recent_spread = past_median(jobs, keys, ratio, min_periods=MIN_SPREAD_JOBS, known=known,
                                statistic="spread")
    return _Anchoring(cost_model, anchor(features, cost_model, recent), ratio, recent_spread,
                      usual)



def _evaluate(family: str, on_proper: _Anchoring, on_train: _Anchoring, windows: _Windows,
              coverage: float, random_state: int):
    """Held-out metrics of one family; the out-of-sample (actual, predicted, spread) that
    calibrate it; the model fitted on the training window, and its test predictions and
    intervals."""
    seconds, train, test = windows.seconds, windows.train, windows.test
    proper, calibrate = windows.proper, windows.calibrate
    fitted = make_family(family, random_state).fit(on_proper.features.iloc[proper],
                                                   seconds[proper])
    calibration_predicted = fitted.predict(on_proper.features.iloc[calibrate])
    calibration = Calibration(coverage).fit(seconds[calibrate], calibration_predicted,
                                            on_proper.spread[calibrate])
    fitted = make_family(family, random_state).fit(on_train.features.iloc[train],
                                                   seconds[train])
    predicted = fitted.predict(on_train.features.iloc[test])
    low, high = calibration.interval(predicted, on_train.spread[test])
    metrics = score(seconds[test], predicted, low, high, n_train=len(train))
    residuals = (np.concatenate([seconds[calibrate], seconds[test]]),
                 np.concatenate([calibration_predicted, predicted]),
                 np.concatenate([on_proper.spread[calibrate], on_train.spread[test]]))
    held_out = pd.DataFrame({"actual_seconds": seconds[test], "predicted_seconds": predicted,
                             "low_seconds": low, "high_seconds": high})
    return metrics, residuals, fitted, held_out


def _cache_hits(jobs: pd.DataFrame) -> np.ndarray:
    """Jobs answered from a cache (a ComfyUI prompt whose every node was cached): their time
    says nothing about the work asked for, so they never train a model."""
    typed = jobs.job_type.fillna("").eq(CACHE_HIT_JOB_TYPE).to_numpy()
    flagged = np.array([isinstance(extra, dict) and isinstance(extra.get("comfyui"), dict)
                        and extra["comfyui"].get("cache_hit") is True
                        for extra in jobs.get("extra_params", pd.Series([None] * len(jobs)))],
                       dtype=bool)
    return typed | flagged



def _split(features: pd.DataFrame, positions: np.ndarray, fraction: float, how: str
           ) -> tuple[np.ndarray, np.ndarray]:
    """Split row `positions` into (earlier, later) by time — rows are in time order — or into
    (smaller, larger) by work units, with `fraction` of them in the second part."""
    if how not in ("time", "size"):
        raise ValueError(f"split must be 'time' or 'size', got {how!r}")
    if how == "size":
        work = features.work_units.to_numpy()[positions]
        positions = positions[np.argsort(work, kind="stable")]
    cut = int(round(len(positions) * (1 - fraction)))
    return np.sort(positions[:cut]), np.sort(positions[cut:])



def iso(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return pd.Timestamp(value).isoformat()
