"""A trained model as it is stored: the fitted cost model and family and what they need to
predict, explain their uncertainty, follow their groups' recent drift, and check themselves
before use."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from perflib.config import ModelProfile
from perflib.prediction.conformal import UNADJUSTED, Adjustment, normalised_scores
from perflib.prediction.features import (FEATURE_DESCRIPTIONS, JobRows, build_features, far_slower,
                                         far_slower_jobs, feature_columns, history_keys,
                                         job_columns, level, outcome_seconds, past_median,
                                         spread, text_column)
from perflib.prediction.models import (FAMILIES, AnchoredRegressor, Calibration, CostModel, anchor,
                                       check_mapping, check_number)
from perflib.prediction.geometry_sources import CONFIGURED, unseen_geometry
from perflib.prediction.metrics import is_within
from perflib.prediction.priced import sound
from perflib.record import PIPELINE_TYPES, estimate_params
from perflib.store import parse_timestamp
from perflib.store.model_registry import POOLED

MIN_DRIFT_JOBS = 5  # recent jobs needed before their drift is trusted
MIN_SPREAD_JOBS = 10  # ... and before their spread is
MODEL_FORMAT = 3  # what TrainedModel holds; a blob of another format is not used
RECENT_JOBS = 50  # a GPU and model's latest jobs: their spread scales intervals
DRIFT_JOBS = 20  # ... and the latest of these, their drift (short, to follow a step change)
# A loaded model must price this job, for each GPU and model it knows, finite and positive.
PROBE_JOB = {"resolution": "512x512", "frame_count": 16, "steps": 20}


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
    # Per model trained on, where its geometry came from (see geometry_sources.py).
    geometry_sources: dict[str, str] = field(default_factory=dict)

    def predict(self, jobs: JobRows, recent: Mapping[str, tuple[float, float]] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Seconds, interval low/high and confidence for job rows (a DataFrame or a mapping of
        column sequences); `recent` overrides the stored (drift, spread) per "gpu|model" with
        fresher values (NaN where unknown), optionally with a third value: the online
        :class:`~perflib.prediction.conformal.Adjustment` of the interval and confidence."""
        features = feature_columns(jobs, self.profiles_for(jobs), history=self.history)
        keys = history_keys(features)
        drift = [self._recent(recent, key, 0, self.drift) for key in keys]
        spread = [self._recent(recent, key, 1, self.spread) for key in keys]
        adjustments = [recent[key][2] if recent and len(recent.get(key, ())) > 2 else UNADJUSTED
                       for key in keys]
        return self._price(features, drift, spread, Adjustment(
            *(np.array([getattr(a, part) for a in adjustments], float)
              for part in ("low", "high", "log_odds"))))

    def replay_predict(self, jobs: pd.DataFrame, drift, spread, adjustment=None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`predict` with each row's own (drift, spread) — as a backtest knows them at
        the row's submission; NaN: the stored value — and online adjustment (None: as
        calibrated)."""
        features = feature_columns(jobs, self.profiles_for(jobs), history=self.history)
        keys = history_keys(features)
        drift, spread = np.asarray(drift, float), np.asarray(spread, float)
        drift = np.where(np.isnan(drift), [self.drift.get(k, np.nan) for k in keys], drift)
        spread = np.where(np.isnan(spread), [self.spread.get(k, np.nan) for k in keys], spread)
        return self._price(features, drift, spread, adjustment)

    def _price(self, features, drift, spread, adjustment):
        seconds = self.estimator.predict(anchor(features, self.cost_model, drift))
        spread = self._with_speed_uncertainty(features, drift, spread)
        low, high = self.calibration.interval(seconds, spread, adjustment)
        return seconds, low, high, self.calibration.confidence(seconds, spread, adjustment)

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

    def geometry_sources_of(self, jobs: JobRows) -> np.ndarray:
        """Per job row, where its model's geometry came from: "configured", "inferred",
        "profile:<arch>", "sibling:<name>" or "default" — for a model trained on, as training
        found it; for another, as :meth:`profiles_for` carries it. A model stored before
        sources were kept has none of them."""
        sources = getattr(self, "geometry_sources", {})
        return np.array([sources.get(name) or (CONFIGURED if name in self.profiles else
                                               unseen_geometry(name, self.profiles)[1])
                         for name in text_column(jobs, "model_name")], dtype=object)

    def profiles_for(self, jobs: JobRows) -> dict[str, ModelProfile]:
        """The stored profiles, and those carried to the models of `jobs` not trained on (see
        :func:`~perflib.prediction.geometry_sources.unseen_geometry`)."""
        sources = getattr(self, "geometry_sources", {})
        unseen = {name for name in text_column(jobs, "model_name")
                  if name not in sources and name not in self.profiles}
        carried = {name: profile for name in unseen
                   if (profile := unseen_geometry(name, self.profiles)[0]) is not None}
        return {**self.profiles, **carried} if carried else self.profiles

    @staticmethod
    def _recent(fresh, key: str, which: int, stored: Mapping[str, float]) -> float:
        value = fresh[key][which] if fresh and key in fresh else np.nan
        return stored.get(key, np.nan) if np.isnan(value) else value

    def recent_behaviour(self, jobs: pd.DataFrame) -> tuple[float, float]:
        """(drift, spread) of finished job rows: the level (:func:`level`: the median, or after
        a step the latest jobs' median) of log(actual / cost model) over the latest DRIFT_JOBS, and its robust spread over all (each NaN if too few jobs).
        Jobs far slower than the rows' level (a burst of contention) are left out, so one
        burst does not drag every estimate."""
        jobs = _priceable(jobs)
        if len(jobs) < MIN_DRIFT_JOBS:
            return float("nan"), float("nan")
        features = build_features(jobs, self.profiles_for(jobs), history=self.history)
        ratio = np.log(outcome_seconds(jobs)) - np.log(self.cost_model.predict(features))
        ratio = ratio[~far_slower(ratio, np.median(ratio), spread(ratio)
                                  if len(ratio) >= MIN_SPREAD_JOBS else np.nan)]
        return (level(ratio[-DRIFT_JOBS:]),
                spread(ratio) if len(ratio) >= MIN_SPREAD_JOBS else float("nan"))

    def replayed_history(self, jobs: pd.DataFrame, known: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per finished job row: its "gpu|model" group, and the drift and spread an estimate
        at its submission would have read — over the rows that had finished before then (only
        `known` ones where given), far-slower jobs left out of drift as in training."""
        features = build_features(jobs, self.profiles_for(jobs), history=self.history)
        keys = history_keys(features)
        ratio = np.log(outcome_seconds(jobs)) - np.log(self.cost_model.predict(features))
        usual = ~far_slower_jobs(jobs, keys, ratio)[0]
        drift = past_median(jobs, keys, ratio, window=DRIFT_JOBS, min_periods=MIN_DRIFT_JOBS,
                            known=usual if known is None else usual & known, statistic="level")
        recent_spread = past_median(jobs, keys, ratio, window=RECENT_JOBS,
                                    min_periods=MIN_SPREAD_JOBS, known=known,
                                    statistic="spread")
        return keys, drift, recent_spread

    def replay_scores(self, jobs: pd.DataFrame, latest: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Groups, signed normalised conformal scores
        (:func:`perflib.prediction.conformal.normalised_scores`), unadjusted stated confidence
        and whether each landed within ±20%, of the latest `latest` of these finished job rows
        started after this model's training window, in the order they finished: each re-priced
        in one batch by this model with the drift and spread of the rows finished before its
        submission (what its estimate would have said, as no estimate is stored). Jobs it was
        trained on are history only: its in-sample errors would understate the misses and
        narrow every interval."""
        jobs = _priceable(jobs)
        unseen = np.flatnonzero((pd.to_datetime(jobs.started_at, utc=True)
                                 > parse_timestamp(self.train_end)).to_numpy())
        scored = unseen[-latest:]
        if not len(scored):  # nothing to learn from (and a correction refuses zero rows)
            return (np.array([], dtype=object),) + (np.array([]),) * 3
        keys, drift, recent_spread = self.replayed_history(jobs)
        rows = jobs.iloc[scored]
        seconds, low, high, confidence = self.replay_predict(rows, drift[scored],
                                                             recent_spread[scored])
        actual = outcome_seconds(rows)
        return (keys[scored], normalised_scores(actual, seconds, low, high), confidence,
                is_within(actual, seconds))

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
            priced = self.predict(job_columns(jobs))
        except Exception as exc:  # whatever a damaged part raises, the model is not used
            raise InvalidModelError(f"a probe job cannot be priced: {type(exc).__name__}: "
                                    f"{exc}") from None
        if not sound(*priced).all():
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
        check_mapping(getattr(self, "geometry_sources", {}), "geometry_sources", _check_text)



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


def _check_text(value: Any, name: str) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} is {value!r}, not text")


def _check_count(count: Any, name: str) -> None:
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise ValueError(f"{name} is {count!r}, not a count of jobs")


def _priceable(jobs: pd.DataFrame) -> pd.DataFrame:
    """Finished job rows a model can price (an outcome and the size of the work), in the order
    they finished."""
    return jobs[(outcome_seconds(jobs) > 0) & jobs.width.notna() & jobs.height.notna()
                & jobs.steps.notna()].sort_values("finished_at", kind="stable")
