"""PerformancePredictor: train, store and use generation-time models (the seed's API).

Training is time-ordered: fit on the past, score on the future (or, with ``split='size'``, fit on
the smaller jobs and score on the largest). Intervals are split-conformal on log residuals from
the later half of the training period, scaled by how scattered each GPU and model have run
lately; ``confidence`` is the calibrated chance of landing within ±20%. Models are stored with
skops and loaded only with an explicit trusted-type list.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np
import pandas as pd
import skops.io
import sqlalchemy as sa
from tqdm import tqdm

from perflib.config import ModelProfile, Settings
from perflib.features import (FEATURE_DESCRIPTIONS, JobRows, build_features, feature_columns,
                              history_keys, latest_median, outcome_seconds, past_median,
                              row_count, spread)
from perflib.geometry import infer_profiles
from perflib.models import (FAMILIES, AnchoredRegressor, Calibration, CostModel, anchor,
                            make_family, score)
from perflib.store import UsesStore
from perflib.store.schema import performance_prediction_models as models_table
from perflib.record import estimate_params

log = logging.getLogger(__name__)

MIN_JOBS_FOR_MODEL = 30
# The calibration part of the training window, its latest (or largest) jobs: half of it, to
# hold both the calm and the noisy spells a shared machine goes through.
CALIBRATION_FRACTION = 0.5
MIN_DRIFT_JOBS = 5  # recent jobs needed before their drift is trusted
MIN_SPREAD_JOBS = 10  # ... and before their spread is
MODEL_FORMAT = 2  # what TrainedModel holds; a blob of another format is not used
RECENT_JOBS = 50  # a GPU and model's latest jobs: their spread scales intervals
DRIFT_JOBS = 20  # ... and the latest of these, their drift (short, to follow a step change)
RECENT_CACHE_SECONDS = 30.0
KEEP_VERSIONS = 3
RELOAD_CHECK_SECONDS = 2.0
MIN_SAVING = 0.10
# Heuristic defaults when there is no history at all: fixed overhead and seconds per work unit
# (token-steps) of a current consumer GPU, per pipeline type.
HEURISTIC_DEFAULTS = {"image": (2.0, 1.0e-5), "video": (10.0, 1.0e-5)}

TRUSTED_TYPES = [
    "perflib.predictor.TrainedModel", "perflib.models.AnchoredRegressor",
    "perflib.models.CostModel", "perflib.models.Calibration", "perflib.models._signed_log1p",
    "perflib.config.ModelProfile", "numpy.dtype", "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "perflib.models.MatrixEncoder",
]


class UntrustedModelError(ValueError):
    """A stored model blob holds types outside perflib's trusted list; it is never loaded."""


class IncompatibleModelError(ValueError):
    """A stored model was saved in another format by another perflib version: retrain it."""


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
        fresher values (NaN where unknown)."""
        features = feature_columns(jobs, self.profiles, history=self.history)
        keys = history_keys(features)
        drift = [self._recent(recent, key, 0, self.drift) for key in keys]
        spread = [self._recent(recent, key, 1, self.spread) for key in keys]
        seconds = self.estimator.predict(anchor(features, self.cost_model, drift))
        low, high = self.calibration.interval(seconds, spread)
        return seconds, low, high, self.calibration.confidence(seconds, spread)

    @staticmethod
    def _recent(fresh, key: str, which: int, stored: Mapping[str, float]) -> float:
        value = fresh[key][which] if fresh and key in fresh else np.nan
        return stored.get(key, np.nan) if np.isnan(value) else value

    def recent_behaviour(self, jobs: pd.DataFrame) -> tuple[float, float]:
        """(drift, spread) of finished job rows: the median log(actual / cost model) over the
        latest DRIFT_JOBS of them, and its robust spread over all (each NaN if too few jobs)."""
        jobs = jobs[(outcome_seconds(jobs) > 0) & jobs.width.notna() & jobs.height.notna()
                    & jobs.steps.notna()].sort_values("finished_at", kind="stable")
        if len(jobs) < MIN_DRIFT_JOBS:
            return float("nan"), float("nan")
        features = build_features(jobs, self.profiles, history=self.history)
        ratio = np.log(outcome_seconds(jobs)) - np.log(self.cost_model.predict(features))
        return (float(np.median(ratio[-DRIFT_JOBS:])),
                spread(ratio) if len(ratio) >= MIN_SPREAD_JOBS else float("nan"))


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
        self._active: dict[str, tuple[int | None, TrainedModel | None, float]] = {}
        self._heuristics: dict[str, tuple[CostModel | None, float]] = {}
        self._recent_cache: dict[tuple, tuple[tuple[float, float], float]] = {}
        self.last_training: TrainingReport | None = None
        self._lock = threading.Lock()

    # -- training -----------------------------------------------------------------------------
    def training_data(self, pipeline_type: str | None = None) -> pd.DataFrame:
        """Successful jobs with the parameters a model needs, oldest first."""
        jobs = self.store.jobs_frame(pipeline_type=pipeline_type)
        usable = (jobs.status == "success") & (outcome_seconds(jobs) > 0) & jobs.width.notna() \
            & jobs.height.notna() & jobs.steps.notna() & ~_cache_hits(jobs)
        return jobs[usable].reset_index(drop=True)

    def train_model(self, pipeline_type: str | None = None, model_type: str = "auto",
                    split: str = "time", test_fraction: float = 0.3, coverage: float = 0.8,
                    random_state: int = 0, progress: bool = False) -> dict:
        """Train one family (or all four with ``'auto'``, keeping the best by within-20%
        accuracy, ties by MAPE) and return the chosen model's held-out metrics, plus
        ``model_type``, a per-family ``comparison``, and the ``inferred_profiles`` of video
        models that have no configured profile (see :mod:`perflib.geometry`)."""
        families = FAMILIES if model_type == "auto" else (model_type,)
        for family in families:
            make_family(family)  # raises a clear ValueError for an unknown model_type
        jobs = self.training_data(pipeline_type)
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
        on_proper = _anchored(jobs, features, seconds, proper, online)
        on_train = _anchored(jobs, features, seconds, train, online)

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
        on_all = _anchored(jobs, features, seconds, everything)
        per_work = seconds / features.work_units.to_numpy()
        keys = history_keys(features)
        bundle = TrainedModel(
            pipeline_type=pipeline_type or "all", family=best, cost_model=on_all.cost_model,
            estimator=make_family(best, random_state).fit(on_all.features, seconds),
            calibration=Calibration(coverage).fit(*residuals),
            history=latest_median(jobs, keys, per_work),
            drift=latest_median(jobs, keys, on_all.ratio, window=DRIFT_JOBS,
                                min_periods=MIN_DRIFT_JOBS),
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

    # -- model store ----------------------------------------------------------------------------
    def save_model_to_db(self, pipeline_type: str | None, model_type: str) -> int:
        """Store the model trained last for (pipeline_type, model_type) as a new active version;
        keep the newest three versions per pipeline and family."""
        key = (pipeline_type or "all", model_type)
        bundle = self._trained.get(key)
        if bundle is None:
            raise ValueError(f"no trained {model_type!r} model for pipeline_type "
                             f"{key[0]!r}: call train_model first")
        blob = skops.io.dumps(bundle)
        t = models_table
        with self.store.engine.begin() as conn:
            latest = conn.execute(sa.select(sa.func.max(t.c.version)).where(
                t.c.pipeline_type == key[0], t.c.family == model_type)).scalar() or 0
            conn.execute(sa.update(t).where(t.c.pipeline_type == key[0]).values(is_active=False))
            conn.execute(sa.insert(t).values(
                pipeline_type=key[0], family=model_type, version=latest + 1, is_active=True,
                metrics=bundle.metrics, features=bundle.features,
                train_start=datetime.fromisoformat(bundle.train_start),
                train_end=datetime.fromisoformat(bundle.train_end), n_rows=bundle.n_rows,
                blob=blob, created_at=datetime.now(timezone.utc)))
            stale = conn.execute(sa.select(t.c.id).where(
                t.c.pipeline_type == key[0], t.c.family == model_type)
                .order_by(t.c.version.desc()).offset(KEEP_VERSIONS)).scalars().all()
            if stale:
                conn.execute(sa.delete(t).where(t.c.id.in_(stale)))
        bundle.version = latest + 1
        return latest + 1

    def _active_row(self, pipeline_type: str):
        t = models_table
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(t.c.id, t.c.blob, t.c.version).where(
                t.c.pipeline_type == pipeline_type, t.c.is_active.is_(True))
                .order_by(t.c.id.desc()).limit(1)).first()

    def _active_id(self, pipeline_type: str) -> int | None:
        t = models_table
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(t.c.id)).where(
                t.c.pipeline_type == pipeline_type, t.c.is_active.is_(True))).scalar()

    def reload(self) -> None:
        """Forget the loaded models: the next estimate reads the active versions afresh (a
        service calls this after saving a model, instead of waiting for the periodic check)."""
        with self._lock:
            self._active.clear()

    def active_model(self, pipeline_type: str) -> TrainedModel | None:
        """The active model for `pipeline_type` (else the pooled one), reloaded when a newer
        version has been saved (checked at most every couple of seconds)."""
        for key in (pipeline_type, "all"):
            model = self._cached_model(key)
            if model is not None:
                return model
        return None

    def _cached_model(self, key: str) -> TrainedModel | None:
        now = time.monotonic()
        cached = self._active.get(key)
        if cached is not None and now - cached[2] < RELOAD_CHECK_SECONDS:
            return cached[1]
        with self._lock:
            current_id = self._active_id(key)
            if cached is not None and cached[0] == current_id:
                self._active[key] = (cached[0], cached[1], now)
                return cached[1]
            model = None
            if current_id is not None:
                row = self._active_row(key)
                try:
                    model = load_model_blob(row.blob)
                    model.version = row.version
                except (UntrustedModelError, IncompatibleModelError) as exc:
                    log.error("model %s v%s for %s refused, using the heuristic: %s",
                              row.id, row.version, key, exc)
            self._active[key] = (current_id, model, now)
            return model

    def model_status(self) -> dict:
        """Per pipeline type: the active model's family, version, training time and metrics,
        and whether estimates for it fall back to the heuristic."""
        t = models_table
        with self.store.engine.connect() as conn:
            rows = conn.execute(sa.select(t.c.pipeline_type, t.c.family, t.c.version,
                                          t.c.created_at, t.c.metrics, t.c.n_rows)
                                .where(t.c.is_active.is_(True))).mappings().all()
        active = {row["pipeline_type"]: row for row in rows}
        status = {}
        for pipeline in ("image", "video"):
            row = active.get(pipeline) or active.get("all")
            model = self.active_model(pipeline) if row else None
            too_few = model is not None and model.pipeline_counts.get(pipeline, 0) < \
                MIN_JOBS_FOR_MODEL
            status[pipeline] = {
                "model_pipeline_type": row["pipeline_type"] if row else None,
                "family": row["family"] if row else None,
                "version": row["version"] if row else None,
                "trained_at": _iso(row["created_at"]) if row else None,
                "n_rows": row["n_rows"] if row else 0,
                "metrics": row["metrics"] if row else None,
                "heuristic_in_use": model is None or too_few,  # none, refused, or too few jobs
            }
        return status

    # -- estimating -----------------------------------------------------------------------------
    def estimate(self, params: Mapping[str, Any]) -> dict:
        """How long a job will take, how sure we are, and what would make it faster.

        Returns ``predicted_time_seconds, confidence, prediction_method ('ml_model' |
        'heuristic'), model_used, uncertainty_range [low, high], recommendations``. Raises
        ValueError naming the field for malformed input; never fails for a well-formed one.
        """
        result = self.estimate_many([params])[0]
        if isinstance(result, ValueError):
            raise result
        return result

    def estimate_many(self, requests: list[Mapping[str, Any]]) -> list[dict | ValueError]:
        """:meth:`estimate` for many requests in one pass through the model (a service batches
        concurrent requests this way: the cost of a call hardly depends on its rows). Each
        answer is the estimate dict, or the ValueError that request raised."""
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
        submitted = pd.Timestamp.now(tz="UTC")
        for pipeline, entries in priced.items():
            # Each job and its cheaper variants, as columns: one model pass prices them all.
            rows = [row for _, variants, job in entries
                    for row in [job] + [variant for _, _, variant in variants]]
            names = {name for row in rows for name in row}
            columns = {name: [row.get(name) for row in rows] for name in names}
            columns["submitted_at"] = [submitted] * len(rows)
            predicted, method, used = self._predict(pipeline, columns)
            first = 0
            for position, variants, _ in entries:
                mine = slice(first, first + 1 + len(variants))
                first = mine.stop
                seconds, low, high, confidence = (values[mine] for values in predicted)
                answers[position] = {
                    "predicted_time_seconds": round(float(seconds[0]), 3),
                    "confidence": round(float(confidence[0]), 3),
                    "prediction_method": method,
                    "model_used": used,
                    "uncertainty_range": [round(float(low[0]), 3), round(float(high[0]), 3)],
                    "recommendations": _recommendations(variants, seconds),
                }
        return answers

    def _fresh_behaviour(self, model: TrainedModel, gpu: str | None, name: str | None
                         ) -> tuple[str, tuple[float, float]]:
        """How much slower than the cost model a GPU and model ran in their latest jobs, and
        how scattered those were — ("gpu|model", (drift, spread)), from the store (cached for a
        short while); NaN where there are too few jobs."""
        key = f"{gpu or 'unknown'}|{name or 'unknown'}"
        cache_key = (model.pipeline_type, model.version, key)
        cached = self._recent_cache.get(cache_key)
        now = time.monotonic()
        if cached is None or now - cached[1] > RECENT_CACHE_SECONDS:
            recent = self.store.recent_jobs(gpu, name, RECENT_JOBS)
            cached = (model.recent_behaviour(recent), now)
            self._recent_cache[cache_key] = cached
        return key, cached[0]

    def estimate_batch(self, jobs: pd.DataFrame, pipeline_type: str) -> pd.DataFrame:
        """Predictions for many job rows of one pipeline type at once (no recommendations)."""
        (seconds, low, high, confidence), _, _ = self._predict(pipeline_type, jobs)
        return pd.DataFrame({"predicted_time_seconds": seconds, "low": low, "high": high,
                             "confidence": confidence}, index=jobs.index)

    def _predict(self, pipeline_type: str, rows: JobRows):
        """(seconds, low, high, confidence), method and model label for rows of one pipeline:
        the active model with each GPU and model's fresh drift and spread, else the
        heuristic."""
        model = self.active_model(pipeline_type)
        if model is None or model.pipeline_counts.get(pipeline_type, 0) < MIN_JOBS_FOR_MODEL:
            return self._heuristic(pipeline_type, rows), "heuristic", "heuristic"
        recent = dict(self._fresh_behaviour(model, _text_or_none(gpu), _text_or_none(name))
                      for gpu, name in set(zip(_column(rows, "gpu_name"),
                                               _column(rows, "model_name"))))
        used = f"{model.family} v{model.version} ({model.pipeline_type})"
        return model.predict(rows, recent), "ml_model", used

    def _heuristic(self, pipeline_type: str, rows: JobRows):
        """Fixed overhead + seconds per work unit, fitted on whatever history exists, else
        defaults per pipeline type; a wide range and a low, measured confidence."""
        fitted, confidence = self._heuristics.get(pipeline_type) or self._fit_heuristic(
            pipeline_type)
        features = feature_columns(rows, self.config.model_profiles, history={})
        if fitted is not None:
            seconds = fitted.predict(features)
        else:
            overhead, per_work = HEURISTIC_DEFAULTS[pipeline_type]
            seconds = overhead + per_work * features["work_units"]
        return seconds, seconds * 0.5, seconds * 2.0, np.full(len(seconds), confidence)

    def _fit_heuristic(self, pipeline_type: str):
        jobs = self.training_data(pipeline_type)
        fitted, confidence = None, 0.1
        if len(jobs) >= 5:
            features = build_features(jobs, self.config.model_profiles, history={})
            features = features.assign(attention_work=0.0, decode_work=0.0, step_passes=0.0)
            seconds = outcome_seconds(jobs)
            fitted = CostModel(min_group_jobs=len(jobs) + 1).fit(features, seconds)
            relative = np.abs(fitted.predict(features) / seconds - 1)
            confidence = float(min(np.mean(relative <= 0.2), 0.5))
        self._heuristics[pipeline_type] = (fitted, confidence)
        return fitted, confidence


def load_model_blob(blob: bytes) -> TrainedModel:
    """Load a stored model, refusing any blob that holds a type outside TRUSTED_TYPES."""
    try:
        untrusted = skops.io.get_untrusted_types(data=blob)
    except Exception as exc:
        raise UntrustedModelError(f"stored model blob is not a readable skops file: {exc}") \
            from None
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedModelError("stored model blob contains types that are not trusted and "
                                  f"was not loaded: {', '.join(unexpected)} (a model saved by an "
                                  "older perflib is refused too: retrain it)")
    model = skops.io.loads(blob, trusted=untrusted)
    if not isinstance(model, TrainedModel):
        raise UntrustedModelError(f"stored model blob holds a {type(model).__name__}, "
                                  "not a perflib TrainedModel")
    if getattr(model, "format", 1) != MODEL_FORMAT:
        raise IncompatibleModelError(
            f"stored model has format {getattr(model, 'format', 1)}, this perflib reads format "
            f"{MODEL_FORMAT}: retrain it (perflib train)")
    return model


@dataclass
class _Anchoring:
    """Every job anchored to a cost model fitted on some of them: the features with the anchor
    columns, log(actual / cost model), and each job's leak-free recent spread of that ratio."""

    cost_model: CostModel
    features: pd.DataFrame
    ratio: np.ndarray
    spread: np.ndarray


def _anchored(jobs: pd.DataFrame, features: pd.DataFrame, seconds: np.ndarray,
              fit_positions: np.ndarray, online: bool = True) -> _Anchoring:
    """Fit the cost model on `fit_positions`; anchor every row to it, with each row's history
    taken only from jobs that finished before it was submitted — any such job when `online`
    (as in production), else only the fitted ones (so bigger jobs stay unseen)."""
    cost_model = CostModel().fit(features.iloc[fit_positions], seconds[fit_positions])
    ratio = np.log(seconds) - np.log(cost_model.predict(features))
    keys = history_keys(features)
    known = None
    if not online:
        known = np.zeros(len(features), dtype=bool)
        known[fit_positions] = True
        per_work = seconds / features.work_units.to_numpy()
        features = features.assign(
            recent_seconds_per_work=past_median(jobs, keys, per_work, known=known))
    recent = past_median(jobs, keys, ratio, window=DRIFT_JOBS, min_periods=MIN_DRIFT_JOBS,
                         known=known)
    recent_spread = past_median(jobs, keys, ratio, min_periods=MIN_SPREAD_JOBS, known=known,
                                statistic="spread")
    return _Anchoring(cost_model, anchor(features, cost_model, recent), ratio, recent_spread)


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
    typed = jobs.job_type.fillna("").eq("comfyui-cache-hit").to_numpy()
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


def _column(rows: JobRows, name: str) -> list:
    return list(rows[name]) if name in rows else [None] * row_count(rows)


def _text_or_none(value: Any) -> str | None:
    return None if value is None or value != value else str(value)


def _cheaper_variants(job: dict) -> list[tuple[str, str, dict]]:
    """(what changes, "old → new", job) for each cheaper setting worth pricing (none for a
    job that lists its sampling passes: its settings are per pass)."""
    if job.get("passes"):
        return []
    variants = []
    if job["steps"] > 10:
        fewer = max(10, int(round(job["steps"] * 2 / 3)))
        variants.append(("steps", f"steps {job['steps']} → {fewer}", {**job, "steps": fewer}))
    if max(job["width"], job["height"]) > 512:
        width, height = (max(64, int(round(side * 0.75 / 64)) * 64)
                         for side in (job["width"], job["height"]))
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


def _recommendations(variants, seconds: np.ndarray) -> list[str]:
    base = float(seconds[0])
    advice = []
    for (_, change, _), cheaper in zip(variants, seconds[1:]):
        saving = base - float(cheaper)
        if base > 0 and saving / base >= MIN_SAVING:
            advice.append(f"{change} saves about {_seconds_text(saving)} "
                          f"({saving / base:.0%})")
    return advice


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _iso(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return pd.Timestamp(value).isoformat()
