"""PerformancePredictor: train, store and use generation-time models (the seed's API).

Training is time-ordered: fit on the past, score on the future (or, with ``split='size'``, fit on
the smaller jobs and score on the largest). Intervals are split-conformal on log residuals from
the later half of the training period, scaled by how scattered each GPU and model have run
lately; ``confidence`` is the calibrated chance of landing within ±20%. Models are stored with
skops and loaded only with an explicit trusted-type list.
"""
from __future__ import annotations

import io
import json
import numbers
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np
import pandas as pd
import skops.io
import sqlalchemy as sa
from tqdm import tqdm

from perflib.cache import TtlCache
from perflib.config import ModelProfile, Settings
from perflib.prediction.conformal import MIN_GROUP_JOBS as MIN_WIDEN_JOBS
from perflib.prediction.conformal import POOLED as POOLED_GROUP
from perflib.prediction.conformal import OnlineConformal, normalised_scores
from perflib.prediction.features import (FEATURE_DESCRIPTIONS, JobRows, build_features, far_slower,
                              far_slower_jobs, feature_columns, history_keys, latest_median,
                              outcome_seconds, past_median, row_count, spread, text_column)
from perflib.prediction.geometry import infer_profiles
from perflib.prediction.models import (FAMILIES, AnchoredRegressor, Calibration, CostModel, anchor,
                            check_mapping, check_number, make_family, score)
from perflib.prediction.pooling import SOURCES as POOLING_SOURCES
from perflib.record import CACHE_HIT_JOB_TYPE, PIPELINE_TYPES, estimate_params
from perflib.store import UsesStore, parse_timestamp
from perflib.store.model_registry import POOLED, StoredModels, StoredVersion
from perflib.store.schema import performance_prediction_models as models_table
from perflib.units import format_duration

MIN_JOBS_FOR_MODEL = 30
# The calibration part of the training window, its latest (or largest) jobs: half of it, to
# hold both the calm and the noisy spells a shared machine goes through.
CALIBRATION_FRACTION = 0.5
MIN_DRIFT_JOBS = 5  # recent jobs needed before their drift is trusted
MIN_SPREAD_JOBS = 10  # ... and before their spread is
MODEL_FORMAT = 3  # what TrainedModel holds; a blob of another format is not used
RECENT_JOBS = 50  # a GPU and model's latest jobs: their spread scales intervals
DRIFT_JOBS = 20  # ... and the latest of these, their drift (short, to follow a step change)
RECENT_CACHE_SECONDS = 30.0
RECENT_CACHE_SIZE = 4096  # (stored version, GPU and model) pairs whose drift is kept
# The online conformal widening of an interval is replayed over a group's latest finished jobs
# (or, for a group with fewer than MIN_WIDEN_JOBS of them, over its pipeline's latest jobs).
WIDEN_JOBS = 100
POOLED_WIDEN_JOBS = 200
KEEP_VERSIONS = 3
RELOAD_CHECK_SECONDS = 2.0
MIN_SAVING = 0.10
# Heuristic defaults when there is no history at all: fixed overhead and seconds per work unit
# (token-steps) of a current consumer GPU, per pipeline type.
HEURISTIC_DEFAULTS = {"image": (2.0, 1.0e-5), "video": (10.0, 1.0e-5)}
HEURISTIC = "heuristic"
SPEED_SOURCES = (*POOLING_SOURCES, HEURISTIC)  # an estimate's speed_source, coded in row 5
# A loaded model must price this job, for each GPU and model it knows, finite and positive.
PROBE_JOB = {"resolution": "512x512", "frame_count": 16, "steps": 20}

TRUSTED_TYPES = [
    "perflib.prediction.predictor.TrainedModel", "perflib.prediction.models.AnchoredRegressor",
    "perflib.prediction.models.CostModel", "perflib.prediction.models.Calibration",
    "perflib.prediction.models._signed_log1p",
    "perflib.config.ModelProfile", "numpy.dtype", "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "perflib.prediction.models.MatrixEncoder", "perflib.prediction.pooling.PooledSpeeds",
]


# Where the classes of models stored by an earlier perflib live now (the package move of #18):
# a stored model names its classes' modules, and is read as if it named the new ones.
MOVED_MODULES = {"perflib.predictor": "perflib.prediction.predictor",
                 "perflib.models": "perflib.prediction.models",
                 "perflib.pooling": "perflib.prediction.pooling"}


class RefusedModelError(ValueError):
    """A stored model that is not used; the message says why."""


class UntrustedModelError(RefusedModelError):
    """A stored model blob holds types outside perflib's trusted list; it is never loaded."""


class IncompatibleModelError(RefusedModelError):
    """A stored model was saved in another format by another perflib version: retrain it."""


class InvalidModelError(RefusedModelError):
    """A stored model made of trusted types that is damaged: unreadable, a part of the wrong
    type or shape, a non-finite coefficient, or a probe job it cannot price."""


@dataclass
class TrainedModel:
    """What is stored per model version: the fitted cost model and family, and everything they
    need to predict, explain their uncertainty, and say where they came from."""

    pipeline_type: str
    family: str
    cost_model: CostModel
    estimator: AnchoredRegressor
    calibration: Calibration
    history: dict[str, float]  # recent seconds per work unit, per "gpu|model"
    drift: dict[str, float]  # recent log(actual / cost model), per "gpu|model"
    spread: dict[str, float]  # and its recent robust spread
    profiles: dict[str, ModelProfile]
    pipeline_counts: dict[str, int]
    metrics: dict[str, Any]
    n_rows: int
    train_start: str
    train_end: str
    trained_at: str
    features: list[str] = field(default_factory=lambda: list(FEATURE_DESCRIPTIONS))
    version: int | None = None
    format: int = MODEL_FORMAT

    def predict(self, jobs: JobRows, recent: Mapping[str, tuple[float, float]] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Seconds, interval low/high and confidence for job rows (a DataFrame or a mapping of
        column sequences); `recent` overrides the stored (drift, spread) per "gpu|model" with
        fresher values (NaN where unknown), optionally with a third value: the online
        conformal widening of the interval (:mod:`perflib.prediction.conformal`)."""
        features = feature_columns(jobs, self.profiles, history=self.history)
        keys = history_keys(features)
        drift = [self._recent(recent, key, 0, self.drift) for key in keys]
        spread = [self._recent(recent, key, 1, self.spread) for key in keys]
        widen = [recent[key][2] if recent and len(recent.get(key, ())) > 2 else 1.0
                 for key in keys]
        return self._price(features, drift, spread, np.asarray(widen, float))

    def replay_predict(self, jobs: pd.DataFrame, drift, spread, widen=1.0
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict` with each row's own (drift, spread) — as a backtest knows them at
        the row's submission; NaN: the stored value — and interval widening factor."""
        features = feature_columns(jobs, self.profiles, history=self.history)
        keys = history_keys(features)
        drift, spread = np.asarray(drift, float), np.asarray(spread, float)
        drift = np.where(np.isnan(drift), [self.drift.get(k, np.nan) for k in keys], drift)
        spread = np.where(np.isnan(spread), [self.spread.get(k, np.nan) for k in keys], spread)
        return self._price(features, drift, spread, widen)

    def _price(self, features, drift, spread, widen):
        seconds = self.estimator.predict(anchor(features, self.cost_model, drift))
        spread = self._with_speed_uncertainty(features, drift, spread)
        low, high = self.calibration.interval(seconds, spread, widen)
        return seconds, low, high, self.calibration.confidence(seconds, spread, widen)

    def _with_speed_uncertainty(self, features, drift, spread) -> np.ndarray:
        """Each row's spread, widened by how unsure its group's pooled speed is where no recent
        drift measures the group (a GPU or model with few or no jobs): the interval of an
        unseen GPU is honestly wider."""
        unsure = self.cost_model.speed_uncertainty(features)[0]
        unsure = np.where(np.isnan(np.asarray(drift, float)), unsure, 0.0)
        spread = np.asarray(spread, float)
        spread = np.where(np.isfinite(spread), spread, self._gpu_spread(features["gpu_name"]))
        known = np.where(np.isfinite(spread) & (spread > 0), spread,
                         self.calibration.typical_spread_)
        return np.where(unsure > 0, np.hypot(known, unsure), spread)

    def _gpu_spread(self, gpus) -> np.ndarray:
        """For a group too young to have its own spread: the largest spread of its GPU's other
        models (a noisy GPU is noisy for a new model too); NaN for a GPU without one."""
        by_gpu: dict[str, float] = {}
        for key, value in self.spread.items():
            gpu = key.split("|", 1)[0]
            if "|" in key and np.isfinite(value):
                by_gpu[gpu] = max(by_gpu.get(gpu, value), value)
        return np.array([by_gpu.get(str(gpu), np.nan) for gpu in gpus], dtype=float)

    def speed_sources(self, jobs: JobRows, recent: Mapping[str, tuple] | None = None
                      ) -> np.ndarray:
        """Per job row, where its GPU and model's speed comes from: "observed" (their own jobs,
        in training or lately), "pooled" (other GPUs and models) or "gpu_profile"."""
        groups = {"gpu_name": text_column(jobs, "gpu_name"),
                  "model_name": text_column(jobs, "model_name")}
        sources = self.cost_model.speed_uncertainty(groups)[1]
        drift = np.array([self._recent(recent, key, 0, self.drift)
                          for key in history_keys(groups)], dtype=float)
        return np.where(np.isnan(drift), sources, "observed")

    @staticmethod
    def _recent(fresh, key: str, which: int, stored: Mapping[str, float]) -> float:
        value = fresh[key][which] if fresh and key in fresh else np.nan
        return stored.get(key, np.nan) if np.isnan(value) else value

    def recent_behaviour(self, jobs: pd.DataFrame) -> tuple[float, float]:
        """(drift, spread) of finished job rows: the median log(actual / cost model) over the
        latest DRIFT_JOBS of them, and its robust spread over all (each NaN if too few jobs).
        Jobs far slower than the rows' level (a burst of contention) are left out, so one
        burst does not drag every estimate."""
        jobs = _priceable(jobs)
        if len(jobs) < MIN_DRIFT_JOBS:
            return float("nan"), float("nan")
        features = build_features(jobs, self.profiles, history=self.history)
        ratio = np.log(outcome_seconds(jobs)) - np.log(self.cost_model.predict(features))
        ratio = ratio[~far_slower(ratio, np.median(ratio), spread(ratio)
                                  if len(ratio) >= MIN_SPREAD_JOBS else np.nan)]
        return (float(np.median(ratio[-DRIFT_JOBS:])),
                spread(ratio) if len(ratio) >= MIN_SPREAD_JOBS else float("nan"))

    def replayed_history(self, jobs: pd.DataFrame, known: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per finished job row: its "gpu|model" group, and the drift and spread an estimate
        at its submission would have read — over the rows that had finished before then (only
        `known` ones where given), far-slower jobs left out of drift as in training."""
        features = build_features(jobs, self.profiles, history=self.history)
        keys = history_keys(features)
        ratio = np.log(outcome_seconds(jobs)) - np.log(self.cost_model.predict(features))
        usual = ~far_slower_jobs(jobs, keys, ratio)[0]
        drift = past_median(jobs, keys, ratio, window=DRIFT_JOBS, min_periods=MIN_DRIFT_JOBS,
                            known=usual if known is None else usual & known)
        recent_spread = past_median(jobs, keys, ratio, window=RECENT_JOBS,
                                    min_periods=MIN_SPREAD_JOBS, known=known,
                                    statistic="spread")
        return keys, drift, recent_spread

    def replay_scores(self, jobs: pd.DataFrame, latest: int) -> tuple[np.ndarray, np.ndarray]:
        """Groups and normalised conformal scores
        (:func:`perflib.prediction.conformal.normalised_scores`) of the latest `latest` of these
        finished job rows started after this model's training window, in the order they finished:
        each re-priced in one batch by this model with the drift and spread of the rows finished
        before its submission (what its estimate would have said, as no estimate is stored). Jobs it
        was trained on are history only: its in-sample errors would understate the misses and narrow
        every interval."""
        jobs = _priceable(jobs)
        unseen = np.flatnonzero((pd.to_datetime(jobs.started_at, utc=True)
                                 > parse_timestamp(self.train_end)).to_numpy())
        scored = unseen[-latest:]
        if not len(scored):  # nothing to learn from (and a correction refuses zero rows)
            return np.array([], dtype=object), np.array([])
        keys, drift, recent_spread = self.replayed_history(jobs)
        rows = jobs.iloc[scored]
        seconds, _, high, _ = self.replay_predict(rows, drift[scored], recent_spread[scored])
        return keys[scored], normalised_scores(outcome_seconds(rows), seconds, high)

    def check(self) -> None:
        """Raise InvalidModelError saying what is wrong unless every part has the right type,
        shape and finite values, and a probe job is priced finite and positive for each GPU
        and model this model knows (a stored model may be damaged in ways its types hide)."""
        try:
            self._check_parts()
        except ValueError as exc:
            raise InvalidModelError(str(exc)) from None
        pipelines = PIPELINE_TYPES if self.pipeline_type == POOLED else (self.pipeline_type,)
        pairs = {tuple(key.split("|", 1)) for key in self.history if "|" in key}
        jobs = [{**estimate_params({**PROBE_JOB, "pipeline_type": pipeline}),
                 "gpu_name": gpu, "model_name": name}
                for pipeline in pipelines for gpu, name in pairs | {(None, None)}]
        try:
            priced = np.asarray(self.predict(job_columns(jobs)), dtype=float)
        except Exception as exc:  # whatever a damaged part raises, the model is not used
            raise InvalidModelError(f"a probe job cannot be priced: {type(exc).__name__}: "
                                    f"{exc}") from None
        if not sound_estimates(priced).all():
            raise InvalidModelError("a probe job is priced at a value that is not finite and "
                                    "positive")

    def _check_parts(self) -> None:
        for name, kind in (("cost_model", CostModel), ("estimator", AnchoredRegressor),
                           ("calibration", Calibration)):
            part = getattr(self, name, None)
            if not isinstance(part, kind):
                raise ValueError(f"{name} is a {type(part).__name__}, not a {kind.__name__}")
            part.check_fitted(name)
        if self.pipeline_type not in (*PIPELINE_TYPES, POOLED):
            raise ValueError(f"pipeline_type {self.pipeline_type!r} is not known")
        if self.family not in FAMILIES:
            raise ValueError(f"family {self.family!r} is not known")
        for name in ("history", "drift", "spread"):
            check_mapping(getattr(self, name, None), name,
                          lambda value, where: check_number(value, where, allow_nan=True))
        check_mapping(self.profiles, "profiles", _check_profile)
        check_mapping(self.pipeline_counts, "pipeline_counts", _check_count)


@dataclass
class TrainingReport:
    """The last training run's held-out view, for notebooks: per family, the model fitted on the
    training window and its test-period predictions and intervals."""

    chosen: str
    test_features: pd.DataFrame
    test_seconds: np.ndarray
    fitted: dict[str, AnchoredRegressor]
    held_out: dict[str, pd.DataFrame]


class PerformancePredictor(UsesStore):
    """Predicts a job's generation time before it starts, from the pipeline's own history."""

    def __init__(self, db: Any = None, settings: Settings | None = None):
        super().__init__(db, settings)
        self._trained: dict[tuple[str, str], TrainedModel] = {}
        self._stored = StoredModels(lambda: self.store, _load_version, RELOAD_CHECK_SECONDS)
        self._heuristics: dict[str, tuple[CostModel | None, float, float]] = {}  # and fit time
        self._heuristic_lock = threading.Lock()
        self._recent_cache = TtlCache(RECENT_CACHE_SECONDS, RECENT_CACHE_SIZE)
        self.last_training: TrainingReport | None = None

    # -- training -----------------------------------------------------------------------------
    def training_data(self, pipeline_type: str | None = None, as_of: datetime | None = None
                      ) -> pd.DataFrame:
        """Successful jobs with the parameters a model needs, oldest first (only those finished
        before `as_of` where given)."""
        jobs = self.store.jobs_frame(until=as_of, pipeline_type=pipeline_type)
        usable = (jobs.status == "success") & (outcome_seconds(jobs) > 0) & jobs.width.notna() \
            & jobs.height.notna() & jobs.steps.notna() & ~_cache_hits(jobs)
        if as_of is not None:
            usable &= jobs.finished_at < pd.Timestamp(as_of)
        return jobs[usable].reset_index(drop=True)

    def train_model(self, pipeline_type: str | None = None, model_type: str = "auto",
                    split: str = "time", test_fraction: float = 0.3, coverage: float = 0.8,
                    random_state: int = 0, progress: bool = False,
                    jobs: pd.DataFrame | None = None) -> dict:
        """Train one family (or all four with ``'auto'``, keeping the best by within-20%
        accuracy, ties by MAPE) and return the chosen model's held-out metrics, plus
        ``model_type``, a per-family ``comparison``, and the ``inferred_profiles`` of video
        models that have no configured profile (see :mod:`perflib.prediction.geometry`). `jobs`:
        train on these usable job rows, oldest first, instead of the store's (a backtest trains on
        the past of its replayed clock)."""
        families = FAMILIES if model_type == "auto" else (model_type,)
        for family in families:
            make_family(family)  # raises a clear ValueError for an unknown model_type
        if jobs is None:
            jobs = self.training_data(pipeline_type)
        elif pipeline_type:
            jobs = jobs[jobs.pipeline_type == pipeline_type].reset_index(drop=True)
        if len(jobs) < MIN_JOBS_FOR_MODEL:
            raise ValueError(f"pipeline_type {pipeline_type or 'all'!r} has {len(jobs)} usable "
                             f"jobs; at least {MIN_JOBS_FOR_MODEL} are needed to train")
        features = build_features(jobs, self.config.model_profiles)
        seconds = outcome_seconds(jobs)
        train, test = _split(features, np.arange(len(features)), test_fraction, split)
        proper, calibrate = _split(features, train, CALIBRATION_FRACTION, split)
        # Video models without a configured profile get the geometry their training jobs show.
        inferred = infer_profiles(jobs, seconds, proper, calibrate, self.config.model_profiles)
        shown_profiles = {name: asdict(profile) for name, profile in inferred.items()}
        profiles = {**inferred, **self.config.model_profiles}
        if inferred:
            features = build_features(jobs, profiles)
        # The cost model is shared by every family: fit it once per training window.
        online = split == "time"
        gpus = self.config.gpu_profiles
        on_proper = _anchored(jobs, features, seconds, proper, online, gpus)
        on_train = _anchored(jobs, features, seconds, train, online, gpus)

        results: dict[str, tuple] = {}
        bar = tqdm(families, desc="training", unit="family", disable=not progress)
        for family in bar:
            bar.set_postfix_str(family)
            results[family] = _evaluate(family, on_proper, on_train, seconds, train, test,
                                        proper, calibrate, coverage, random_state)
        best = min(results, key=lambda f: (-results[f][0].accuracy_within_20_percent,
                                           results[f][0].mape))
        metrics, residuals = results[best][:2]
        self.last_training = TrainingReport(
            chosen=best, test_features=on_train.features.iloc[test], test_seconds=seconds[test],
            fitted={family: result[2] for family, result in results.items()},
            held_out={family: result[3].assign(job_id=jobs.job_id.to_numpy()[test],
                                               pipeline_type=jobs.pipeline_type.to_numpy()[test])
                      for family, result in results.items()})
        everything = np.arange(len(features))
        on_all = _anchored(jobs, features, seconds, everything, gpu_profiles=gpus)
        per_work = seconds / features.work_units.to_numpy()
        keys = history_keys(features)
        bundle = TrainedModel(
            pipeline_type=pipeline_type or "all", family=best, cost_model=on_all.cost_model,
            estimator=make_family(best, random_state).fit(on_all.features, seconds),
            calibration=Calibration(coverage).fit(*residuals),
            history=latest_median(jobs, keys, per_work),
            drift=latest_median(jobs, keys, on_all.ratio, window=DRIFT_JOBS,
                                min_periods=MIN_DRIFT_JOBS, known=on_all.usual),
            spread=latest_median(jobs, keys, on_all.ratio, min_periods=MIN_SPREAD_JOBS,
                                 statistic="spread"),
            profiles=profiles,
            pipeline_counts={str(k): int(v) for k, v in jobs.pipeline_type.value_counts().items()},
            metrics={**metrics.as_dict(), "coverage_target": coverage, "split": split,
                     "inferred_profiles": shown_profiles},
            n_rows=len(jobs), train_start=_iso(jobs.started_at.min()),
            train_end=_iso(jobs.started_at.max()), trained_at=_iso(datetime.now(timezone.utc)))
        self._trained[(bundle.pipeline_type, best)] = bundle
        comparison = {family: result[0].as_dict() for family, result in results.items()}
        return {**metrics.as_dict(), "model_type": best, "pipeline_type": bundle.pipeline_type,
                "comparison": comparison, "inferred_profiles": shown_profiles}

    def trained_model(self, pipeline_type: str | None, model_type: str) -> TrainedModel:
        """The model trained last for (pipeline_type, chosen family), as it would be stored."""
        key = (pipeline_type or "all", model_type)
        if key not in self._trained:
            raise ValueError(f"no trained {model_type!r} model for pipeline_type {key[0]!r}: "
                             "call train_model first")
        return self._trained[key]

    def backtest(self, jobs: pd.DataFrame | None = None, **options):
        """Replay `jobs` (default: the usable stored jobs) as production would have estimated
        them and return the :class:`perflib.prediction.backtest.Backtest`; `options` are those of
        :func:`perflib.prediction.backtest.run_backtest` (protocol, start, retrain, model_type,
        ...)."""
        from perflib.prediction.backtest import run_backtest  # it imports this module

        return run_backtest(self, jobs, **options)

    # -- model store ----------------------------------------------------------------------------
    def save_model_to_db(self, pipeline_type: str | None, model_type: str,
                         activate: bool = True, notes: Mapping[str, Any] | None = None) -> int:
        """Store the model trained last for (pipeline_type, model_type) as a new version, the
        active one unless `activate` is false (a retrained candidate that did not beat the
        active one, kept for the record), with `notes` added to its stored metrics; keep the
        newest three versions per pipeline and family, and the active one."""
        key = (pipeline_type or "all", model_type)
        bundle = self._trained.get(key)
        if bundle is None:
            raise ValueError(f"no trained {model_type!r} model for pipeline_type "
                             f"{key[0]!r}: call train_model first")
        blob = skops.io.dumps(bundle)
        t = models_table
        with self.store.writable_engine().begin() as conn:
            latest = conn.execute(sa.select(sa.func.max(t.c.version)).where(
                t.c.pipeline_type == key[0], t.c.family == model_type)).scalar() or 0
            if activate:
                conn.execute(sa.update(t).where(t.c.pipeline_type == key[0])
                             .values(is_active=False))
            conn.execute(sa.insert(t).values(
                pipeline_type=key[0], family=model_type, version=latest + 1,
                is_active=activate, metrics={**bundle.metrics, **(notes or {})},
                features=bundle.features,
                train_start=datetime.fromisoformat(bundle.train_start),
                train_end=datetime.fromisoformat(bundle.train_end), n_rows=bundle.n_rows,
                blob=blob, created_at=datetime.now(timezone.utc)))
            stale = conn.execute(sa.select(t.c.id).where(
                t.c.pipeline_type == key[0], t.c.family == model_type, t.c.is_active.is_(False),
                t.c.version <= latest + 1 - KEEP_VERSIONS)).scalars().all()
            if stale:
                conn.execute(sa.delete(t).where(t.c.id.in_(stale)))
        bundle.version = latest + 1
        return latest + 1

    def reload(self) -> None:
        """Read the stored versions afresh at the next estimate and try refused ones again (a
        service calls this after saving a model, instead of waiting for the periodic check)."""
        self._stored.reload()

    def active_model(self, pipeline_type: str) -> TrainedModel | None:
        """The stored model that answers for `pipeline_type` (None: the heuristic does); a
        newly saved version is picked up within a couple of seconds."""
        return next((model for _, model in self._answering(pipeline_type)), None)

    def _answering(self, pipeline_type: str):
        """(version, model) of each stored model that may price jobs of `pipeline_type`, in
        order of preference: loaded, checked, and trained on enough jobs of that type."""
        for version, model in self._stored.usable(pipeline_type):
            if model.pipeline_counts.get(pipeline_type, 0) >= MIN_JOBS_FOR_MODEL:
                yield version, model

    def model_status(self) -> dict:
        """Per pipeline type: which model answers (``model_used``: its label, or "heuristic"),
        its family, version, training time and metrics; the active stored version; each
        version passed over and why (``refused``); the versions that left some jobs to
        the next one, how often and why (``estimate_fallbacks``); and the latest automatic
        retraining, its reason and whether it was kept (``last_retraining``)."""
        status = {}
        for pipeline in PIPELINE_TYPES:
            answering = next(self._answering(pipeline), (None, None))[0]
            versions = self._stored.versions(pipeline)
            active = next((version for version in versions if version.is_active), None)
            status[pipeline] = {
                "model_used": answering.label if answering else HEURISTIC,
                "heuristic_in_use": answering is None,
                "model_pipeline_type": answering.pipeline_type if answering else None,
                "family": answering.family if answering else None,
                "version": answering.version if answering else None,
                "trained_at": _iso(answering.created_at) if answering else None,
                "n_rows": answering.n_rows if answering else 0,
                "metrics": answering.metrics if answering else None,
                "active": active.identity() if active else None,
                "refused": [{**version.identity(), "reason": reason} for version in versions
                            if (reason := self._passed_over(version, pipeline))],
                "estimate_fallbacks": [
                    {**version.identity(), "count": noted[0], "last_reason": noted[1]}
                    for version in versions if (noted := self._stored.fallbacks(version))],
                "last_retraining": _last_retraining(versions),
            }
        return status

    def _passed_over(self, version: StoredVersion, pipeline_type: str) -> str | None:
        """Why `version` does not answer for `pipeline_type`, if it was tried and does not."""
        model = self._stored.loaded(version)
        if model is not None and model.pipeline_counts.get(pipeline_type, 0) < \
                MIN_JOBS_FOR_MODEL:
            return (f"trained on {model.pipeline_counts.get(pipeline_type, 0)} {pipeline_type} "
                    f"jobs, fewer than {MIN_JOBS_FOR_MODEL}")
        return self._stored.refusal(version)

    # -- estimating -----------------------------------------------------------------------------
    def estimate(self, params: Mapping[str, Any], as_of: datetime | None = None) -> dict:
        """How long a job will take, how sure we are, and what would make it faster.

        Returns ``predicted_time_seconds, confidence, prediction_method ('ml_model' |
        'heuristic'), model_used, uncertainty_range [low, high], recommendations``. Raises
        ValueError naming the field for malformed input; never fails for a well-formed one.
        `as_of`: estimate as if submitted then, seeing only the jobs finished before it (a
        replay); the stored model versions are today's.
        """
        result = self.estimate_many([params], as_of)[0]
        if isinstance(result, ValueError):
            raise result
        return result

    def estimate_many(self, requests: list[Mapping[str, Any]], as_of: datetime | None = None
                      ) -> list[dict | ValueError]:
        """:meth:`estimate` for many requests in one pass through the model (a service batches
        concurrent requests this way: the cost of a call hardly depends on its rows). Each
        answer is the estimate dict, or the ValueError that request raised."""
        as_of = _moment(as_of)
        answers: list[dict | ValueError] = []
        priced: dict[str, list[tuple[int, list, dict]]] = {}  # per pipeline: answer, variants, job
        for params in requests:
            try:
                job = estimate_params(dict(params))
            except ValueError as exc:
                answers.append(exc)
                continue
            answers.append({})
            priced.setdefault(job["pipeline_type"], []).append(
                (len(answers) - 1, _cheaper_variants(job), job))
        for pipeline, entries in priced.items():
            # Each job and its cheaper variants, as columns: one model pass prices them all,
            # and one model prices each request.
            rows = [row for _, variants, job in entries
                    for row in [job] + [variant for _, _, variant in variants]]
            requests_of_rows = np.repeat(np.arange(len(entries)),
                                         [1 + len(variants) for _, variants, _ in entries])
            predicted, labels = self._predict(pipeline, job_columns(rows, as_of),
                                              requests_of_rows, as_of)
            first = 0
            for position, variants, _ in entries:
                mine = slice(first, first + 1 + len(variants))
                first = mine.stop
                seconds, low, high, confidence = predicted[:4, mine]
                answers[position] = {
                    "predicted_time_seconds": round(float(seconds[0]), 3),
                    "confidence": round(float(confidence[0]), 3),
                    "prediction_method": HEURISTIC if labels[mine.start] == HEURISTIC
                    else "ml_model",
                    "speed_source": SPEED_SOURCES[int(predicted[4, mine.start])],
                    "model_used": labels[mine.start],
                    "uncertainty_range": [round(float(low[0]), 3), round(float(high[0]), 3)],
                    "recommendations": _recommendations(variants, seconds),
                }
        return answers

    def estimate_batch(self, jobs: pd.DataFrame, pipeline_type: str,
                       as_of: datetime | None = None) -> pd.DataFrame:
        """Predictions for many job rows of one pipeline type at once (no recommendations);
        `as_of` as in :meth:`estimate`."""
        (seconds, low, high, confidence, source), _ = self._predict(
            pipeline_type, jobs, as_of=_moment(as_of))
        return pd.DataFrame({"predicted_time_seconds": seconds, "low": low, "high": high,
                             "confidence": confidence,
                             "speed_source": np.take(SPEED_SOURCES, source.astype(int))},
                            index=jobs.index)

    def _predict(self, pipeline_type: str, rows: JobRows, groups: np.ndarray | None = None,
                 as_of: datetime | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(seconds, low, high, confidence, speed source) as a 5×rows array, and each row's
        model label, for rows of one pipeline type: the preferred stored model with each GPU
        and model's fresh drift, spread and interval widening (as of `as_of`, else now). Rows
        it cannot price (an error, or a value that is not finite and
        positive — and with them every row of the same group) go to the next stored model,
        and what is left to the heuristic."""
        count = row_count(rows)
        groups = np.arange(count) if groups is None else groups
        predicted = np.full((5, count), np.nan)
        labels = np.full(count, HEURISTIC, dtype=object)
        pending = np.arange(count)
        if not count:
            return predicted, labels
        for version, model in self._answering(pipeline_type):
            priced = self._model_predict(version, model, _take(rows, pending, count),
                                         pipeline_type, as_of)
            sound = sound_estimates(priced)
            if not sound.all():
                sound &= ~np.isin(groups[pending], groups[pending][~sound])
            predicted[:, pending[sound]] = priced[:, sound]
            labels[pending[sound]] = version.label
            pending = pending[~sound]
            if not len(pending):
                return predicted, labels
        predicted[:, pending] = self._heuristic(pipeline_type, _take(rows, pending, count),
                                                as_of)
        return predicted, labels

    def _model_predict(self, version: StoredVersion, model: TrainedModel, rows: JobRows,
                       pipeline_type: str, as_of: datetime | None) -> np.ndarray:
        """What `model` prices rows at (5×rows), NaN where it fails; a failure is noted with
        why, for model_status."""
        try:
            recent = dict(self._fresh_behaviour(version, model, pipeline_type,
                                                _text_or_none(gpu), _text_or_none(name), as_of)
                          for gpu, name in set(zip(_column(rows, "gpu_name"),
                                                   _column(rows, "model_name"))))
            priced = np.asarray(model.predict(rows, recent), dtype=float)
            sources = model.speed_sources(rows, recent)
            priced = np.vstack([priced, [SPEED_SOURCES.index(s) for s in sources]])
        except sa.exc.SQLAlchemyError:
            raise  # the database, not the model: the caller reports it
        except Exception as exc:  # a model that passed its checks may still fail on a job
            self._stored.note_fallback(version, f"{type(exc).__name__}: {exc}")
            return np.full((5, row_count(rows)), np.nan)
        unsound = int((~sound_estimates(priced)).sum())
        if unsound:
            self._stored.note_fallback(version, f"priced {unsound} of {len(priced[0])} job "
                                                "rows at a non-finite or non-positive value")
        return priced

    def _fresh_behaviour(self, version: StoredVersion, model: TrainedModel,
                         pipeline_type: str, gpu: str | None, name: str | None,
                         as_of: datetime | None) -> tuple[str, tuple[float, float, float]]:
        """How much slower than the cost model a GPU and model ran in their latest jobs, how
        scattered those were, and how much their intervals widen (online conformal, replayed
        over those jobs) — ("gpu|model", (drift, spread, widen)), from the store as of `as_of`
        (else now), cached per stored version and `as_of` for a short while; drift and spread
        NaN where there are too few jobs."""
        key = f"{gpu or 'unknown'}|{name or 'unknown'}"
        behaviour = self._recent_cache.get((version.id, key, as_of))
        if behaviour is None:
            jobs = self.store.recent_jobs(gpu, name, RECENT_JOBS + WIDEN_JOBS, as_of)
            behaviour = (*model.recent_behaviour(jobs.head(RECENT_JOBS)),
                         self._widening(version, model, pipeline_type, jobs, as_of))
            self._recent_cache.put((version.id, key, as_of), behaviour)
        return key, behaviour

    def _widening(self, version: StoredVersion, model: TrainedModel, pipeline_type: str,
                  jobs: pd.DataFrame, as_of: datetime | None) -> float:
        """A group's interval widening: adaptive conformal inference replayed over its latest
        WIDEN_JOBS finished `jobs` (each re-priced by `model` as it would have been at its
        submission, see :meth:`TrainedModel.replay_scores`), started afresh at 1 — a sliding
        window, as no state survives between estimates; a group with fewer than MIN_WIDEN_JOBS
        of them takes its pipeline's pooled widening."""
        coverage = model.calibration.coverage
        groups, scores = model.replay_scores(jobs, WIDEN_JOBS) if len(jobs) >= MIN_WIDEN_JOBS \
            else ((), ())
        if len(scores) >= MIN_WIDEN_JOBS:
            # One group's jobs only: the pooled tracker is the group's own.
            return OnlineConformal.replayed(groups, scores, coverage).widen(POOLED_GROUP)
        pooled = self._recent_cache.get((version.id, pipeline_type, POOLED_GROUP, as_of))
        if pooled is None:
            latest = self.store.latest_jobs(pipeline_type, POOLED_WIDEN_JOBS, as_of)
            groups, scores = model.replay_scores(latest, POOLED_WIDEN_JOBS)
            pooled = OnlineConformal.replayed(groups, scores, coverage).widen(POOLED_GROUP)
            self._recent_cache.put((version.id, pipeline_type, POOLED_GROUP, as_of), pooled)
        return pooled

    def _heuristic(self, pipeline_type: str, rows: JobRows, as_of: datetime | None = None
                   ) -> np.ndarray:
        """Fixed overhead + seconds per work unit, fitted on whatever history exists (as of
        `as_of`), else defaults per pipeline type; a wide range and a low, measured
        confidence."""
        fitted, confidence = self._current_heuristic(pipeline_type, as_of)
        features = feature_columns(rows, self.config.model_profiles, history={})
        overhead, per_work = HEURISTIC_DEFAULTS[pipeline_type]
        seconds = overhead + per_work * np.asarray(features["work_units"], dtype=float)
        if fitted is not None:
            fitted_seconds = fitted.predict(features)
            seconds = np.where(np.isfinite(fitted_seconds) & (fitted_seconds > 0),
                               fitted_seconds, seconds)
        return np.array([seconds, seconds * 0.5, seconds * 2.0,
                         np.full(len(seconds), confidence),
                         np.full(len(seconds), SPEED_SOURCES.index(HEURISTIC))])

    def _current_heuristic(self, pipeline_type: str, as_of: datetime | None = None
                           ) -> tuple[CostModel | None, float]:
        """The fitted heuristic, refitted once older than ``heuristic_refresh_seconds`` (a
        long-running service sees the history grow): one thread refits while the others use
        the one there is. As of a past moment: fitted on the jobs finished before it, kept a
        short while among the recent behaviours."""
        if as_of is not None:
            fitted = self._recent_cache.get((HEURISTIC, pipeline_type, as_of))
            if fitted is None:
                fitted = self._fit_heuristic(pipeline_type, as_of)
                self._recent_cache.put((HEURISTIC, pipeline_type, as_of), fitted)
            return fitted
        refresh = self.config.heuristic_refresh_seconds
        fitted = self._heuristics.get(pipeline_type)
        if fitted is not None and time.monotonic() - fitted[2] < refresh:
            return fitted[:2]
        if not self._heuristic_lock.acquire(blocking=fitted is None):
            return fitted[:2]
        try:
            latest = self._heuristics.get(pipeline_type)
            if latest is fitted:  # not refitted by another thread meanwhile
                latest = (*self._fit_heuristic(pipeline_type), time.monotonic())
                self._heuristics[pipeline_type] = latest
            return latest[:2]
        finally:
            self._heuristic_lock.release()

    def _fit_heuristic(self, pipeline_type: str, as_of: datetime | None = None
                       ) -> tuple[CostModel | None, float]:
        jobs = self.training_data(pipeline_type, as_of)
        fitted, confidence = None, 0.1
        if len(jobs) >= 5:
            features = build_features(jobs, self.config.model_profiles, history={})
            features = features.assign(attention_work=0.0, decode_work=0.0, step_passes=0.0)
            seconds = outcome_seconds(jobs)
            fitted = CostModel(min_group_jobs=len(jobs) + 1).fit(features, seconds)
            relative = np.abs(fitted.predict(features) / seconds - 1)
            confidence = float(min(np.mean(relative <= 0.2), 0.5))
        return fitted, confidence


def _last_retraining(versions: list[StoredVersion]) -> dict | None:
    """The newest version an automatic retraining stored: why it was trained, and whether it
    was kept as the active one (see :mod:`perflib.ops.auto_retrain`)."""
    made = [v for v in versions if isinstance(v.metrics, dict) and "retrain_reason" in v.metrics]
    if not made:
        return None
    latest = max(made, key=lambda version: version.id)
    return {**latest.identity(), "trained_at": _iso(latest.created_at),
            **{key: latest.metrics.get(key) for key in
               ("retrain_reason", "retrain_detail", "kept", "compared_on")}}


def _check_profile(profile: Any, name: str) -> None:
    if not isinstance(profile, ModelProfile):
        raise ValueError(f"{name} is a {type(profile).__name__}, not a ModelProfile")
    for part in ("vae_spatial_factor", "vae_temporal_factor", "patch_size"):
        value = getattr(profile, part)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}.{part} is {value!r}, not a positive whole number")
    if not isinstance(profile.full_attention, (bool, np.bool_)):
        raise ValueError(f"{name}.full_attention is {profile.full_attention!r}, not true or "
                         "false")


def _check_count(count: Any, name: str) -> None:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise ValueError(f"{name} is {count!r}, not a count of jobs")


def sound_estimates(priced: np.ndarray) -> np.ndarray:
    """Per job, whether (seconds, low, high, confidence) can be returned: all finite, the times
    positive."""
    return np.isfinite(priced).all(axis=0) & (priced[:3] > 0).all(axis=0)


def job_columns(jobs: list[Mapping[str, Any]], submitted: datetime | None = None
                ) -> dict[str, list]:
    """Checked estimate requests as columns (what a model pass takes), submitted at
    `submitted` (default: now)."""
    names = {name for job in jobs for name in job}
    columns = {name: [job.get(name) for job in jobs] for name in names}
    when = pd.Timestamp.now(tz="UTC") if submitted is None else pd.Timestamp(submitted)
    columns["submitted_at"] = [when] * len(jobs)
    return columns


def _moment(as_of: Any) -> datetime | None:
    """`as_of` as an aware UTC datetime (None stays None: now); ValueError naming as_of."""
    if as_of is None:
        return None
    try:
        return parse_timestamp(as_of)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"as_of: {exc}") from None


def with_current_modules(blob: bytes) -> bytes:
    """The skops file `blob` with the modules in MOVED_MODULES renamed in its schema (the same
    bytes when it names none)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as source:
        members = {name: source.read(name) for name in source.namelist()}
    schema = json.loads(members["schema.json"])
    if not _rename_modules(schema):
        return blob
    members["schema.json"] = json.dumps(schema).encode()
    renamed = io.BytesIO()
    with zipfile.ZipFile(renamed, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in members.items():
            target.writestr(name, data)
    return renamed.getvalue()


def _rename_modules(node) -> bool:
    """Rename, in place, every ``__module__`` of `node` (a skops schema) found in
    MOVED_MODULES; whether any was."""
    renamed = False
    if isinstance(node, dict):
        if node.get("__module__") in MOVED_MODULES:
            node["__module__"] = MOVED_MODULES[node["__module__"]]
            renamed = True
        children = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return False
    for child in children:
        renamed = _rename_modules(child) or renamed
    return renamed


def load_model_blob(blob: bytes) -> TrainedModel:
    """Load a stored model, refusing any blob that holds a type outside TRUSTED_TYPES, and any
    whose parts fail :meth:`TrainedModel.check` (RefusedModelError says why)."""
    try:
        blob = with_current_modules(blob)
        untrusted = skops.io.get_untrusted_types(data=blob)
    except Exception as exc:
        raise UntrustedModelError(f"stored model blob is not a readable skops file: {exc}") \
            from None
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedModelError("stored model blob contains types that are not trusted and "
                                  f"was not loaded: {', '.join(unexpected)}")
    try:
        model = skops.io.loads(blob, trusted=untrusted)
    except Exception as exc:  # a damaged member raises whatever its reader raises
        raise InvalidModelError(f"stored model blob could not be loaded: "
                                f"{type(exc).__name__}: {exc}") from None
    if not isinstance(model, TrainedModel):
        raise UntrustedModelError(f"stored model blob holds a {type(model).__name__}, "
                                  "not a perflib TrainedModel")
    if getattr(model, "format", 1) != MODEL_FORMAT:
        raise IncompatibleModelError(
            f"stored model has format {getattr(model, 'format', 1)}, this perflib reads format "
            f"{MODEL_FORMAT}: retrain it (perflib train)")
    model.check()
    return model


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
                         known=usual if known is None else usual & known)
    recent_spread = past_median(jobs, keys, ratio, min_periods=MIN_SPREAD_JOBS, known=known,
                                statistic="spread")
    return _Anchoring(cost_model, anchor(features, cost_model, recent), ratio, recent_spread,
                      usual)


def _evaluate(family: str, on_proper: _Anchoring, on_train: _Anchoring, seconds: np.ndarray,
              train, test, proper, calibrate, coverage: float, random_state: int):
    """Held-out metrics of one family; the out-of-sample (actual, predicted, spread) that
    calibrate it; the model fitted on the training window, and its test predictions and
    intervals."""
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


def _priceable(jobs: pd.DataFrame) -> pd.DataFrame:
    """Finished job rows a model can price (an outcome and the size of the work), in the order
    they finished."""
    return jobs[(outcome_seconds(jobs) > 0) & jobs.width.notna() & jobs.height.notna()
                & jobs.steps.notna()].sort_values("finished_at", kind="stable")


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


def _load_version(blob: bytes, version: StoredVersion) -> TrainedModel:
    model = load_model_blob(blob)
    model.version = version.version
    return model


def _take(rows: JobRows, positions: np.ndarray, count: int) -> JobRows:
    """The job rows at `positions` (all `count` of them as they are)."""
    if len(positions) == count:
        return rows
    if isinstance(rows, pd.DataFrame):
        return rows.iloc[positions]
    return {name: [column[i] for i in positions] for name, column in rows.items()}


def _column(rows: JobRows, name: str) -> list:
    return list(rows[name]) if name in rows else [None] * row_count(rows)


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value != value else str(value)


def _cheaper_variants(job: dict) -> list[tuple[str, str, dict]]:
    """(what changes, "old → new", job) for each cheaper setting worth pricing."""
    if job.get("passes"):
        return _cheaper_pass_variants(job)
    variants = []
    if job["steps"] > 10:
        fewer = max(10, int(round(job["steps"] * 2 / 3)))
        variants.append(("steps", f"steps {job['steps']} → {fewer}", {**job, "steps": fewer}))
    if max(job["width"], job["height"]) > 512:
        width, height = (_smaller_side(side) for side in (job["width"], job["height"]))
        variants.append(("resolution", f"resolution {job['width']}x{job['height']} → "
                         f"{width}x{height}", {**job, "width": width, "height": height}))
    if job["pipeline_type"] == "video" and job["frame_count"] > 16:
        frames = max(16, job["frame_count"] // 2)
        variants.append(("frame_count", f"frame_count {job['frame_count']} → {frames}",
                         {**job, "frame_count": frames}))
    if job["guidance_scale"] > 1:
        variants.append(("guidance_scale", f"guidance_scale {job['guidance_scale']:g} → 1 "
                         "(classifier-free guidance off)", {**job, "guidance_scale": 1.0}))
    return variants


def _cheaper_pass_variants(job: dict) -> list[tuple[str, str, dict]]:
    """The same advice for a job that lists its sampling passes: each change applies to every
    pass (fewer steps in each, every pass at 3/4 of its size)."""
    passes = job["passes"]
    variants = []
    steps = [p["steps"] for p in passes]
    if sum(steps) > 10:
        fewer = [max(1, int(round(n * 2 / 3))) for n in steps]
        variants.append(("steps", f"steps {'+'.join(map(str, steps))} → "
                         f"{'+'.join(map(str, fewer))}",
                         _with_passes(job, [{**p, "steps": n} for p, n in zip(passes, fewer)])))
    largest = max(passes, key=lambda p: p["width"] * p["height"])
    if max(largest["width"], largest["height"]) > 512:
        smaller = [{**p, "width": _smaller_side(p["width"]), "height": _smaller_side(p["height"])}
                   for p in passes]
        variants.append(("resolution", f"every pass at 3/4 size ({largest['width']}x"
                         f"{largest['height']} → {_smaller_side(largest['width'])}x"
                         f"{_smaller_side(largest['height'])})", _with_passes(job, smaller)))
    return variants


def _with_passes(job: dict, passes: list[dict]) -> dict:
    """`job` with new passes, its own columns following the first pass."""
    first = passes[0]
    return {**job, "passes": passes, "width": first["width"], "height": first["height"],
            "steps": first["steps"]}


def _smaller_side(side: int) -> int:
    return max(64, int(round(side * 0.75 / 64)) * 64)


def _recommendations(variants, seconds: np.ndarray) -> list[str]:
    base = float(seconds[0])
    advice = []
    for (_, change, _), cheaper in zip(variants, seconds[1:]):
        saving = base - float(cheaper)
        if base > 0 and saving / base >= MIN_SAVING:
            advice.append(f"{change} saves about {format_duration(saving)} "
                          f"({saving / base:.0%})")
    return advice


def _iso(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return pd.Timestamp(value).isoformat()
