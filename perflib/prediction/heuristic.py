"""The heuristic that answers where no stored model can: fixed overhead + seconds per work unit,
fitted on whatever history exists, else defaults per pipeline type; a wide range and a low,
measured confidence."""
from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Callable

import numpy as np
import pandas as pd

from perflib.cache import TtlCache
from perflib.prediction.features import JobRows, build_features, feature_columns, outcome_seconds
from perflib.prediction.geometry_sources import CONFIGURED, DEFAULT
from perflib.prediction.metrics import within_share
from perflib.prediction.models import CostModel
from perflib.prediction.priced import HEURISTIC, PricedJobs
from perflib.store import Store

# Heuristic defaults when there is no history at all: fixed overhead and seconds per work unit
# (token-steps) of a current consumer GPU, per pipeline type.
HEURISTIC_DEFAULTS = {"image": (2.0, 1.0e-5), "video": (10.0, 1.0e-5)}
History = Callable[[str, "datetime | None"], pd.DataFrame]


class Heuristic:
    """The heuristic of each pipeline type, refitted as its `history` (usable jobs of a
    pipeline type as of a moment) grows; fits as of a past moment are kept a short while in
    `cache`."""

    def __init__(self, store: Callable[[], Store], history: History, cache: TtlCache):
        self._store = store
        self._history = history
        self._cache = cache
        self._heuristics: dict[str, tuple[CostModel | None, float, float]] = {}  # and fit time
        self._heuristic_lock = threading.Lock()

    def price(self, pipeline_type: str, rows: JobRows, as_of: datetime | None = None
              ) -> PricedJobs:
        """Estimates of `rows` of `pipeline_type` (fitted on the history as of `as_of`)."""
        fitted, confidence = self._current_heuristic(pipeline_type, as_of)
        configured = self._store().config.model_profiles
        features = feature_columns(rows, configured, history={})
        overhead, per_work = HEURISTIC_DEFAULTS[pipeline_type]
        seconds = overhead + per_work * np.asarray(features["work_units"], dtype=float)
        if fitted is not None:
            fitted_seconds = fitted.predict(features)
            seconds = np.where(np.isfinite(fitted_seconds) & (fitted_seconds > 0),
                               fitted_seconds, seconds)
        return PricedJobs(seconds, seconds * 0.5, seconds * 2.0,
                          np.full(len(seconds), confidence),
                          np.full(len(seconds), HEURISTIC, dtype=object),
                          np.array([CONFIGURED if name in configured else DEFAULT
                                    for name in features["model_name"]], dtype=object))

    def _current_heuristic(self, pipeline_type: str, as_of: datetime | None = None
                           ) -> tuple[CostModel | None, float]:
        """The fitted heuristic, refitted once older than ``heuristic_refresh_seconds`` (a
        long-running service sees the history grow): one thread refits while the others use
        the one there is. As of a past moment: fitted on the jobs finished before it, kept a
        short while among the recent behaviours."""
        if as_of is not None:
            fitted = self._cache.get((HEURISTIC, pipeline_type, as_of))
            if fitted is None:
                fitted = self._fit_heuristic(pipeline_type, as_of)
                self._cache.put((HEURISTIC, pipeline_type, as_of), fitted)
            return fitted
        refresh = self._store().config.heuristic_refresh_seconds
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
        jobs = self._history(pipeline_type, as_of)
        fitted, confidence = None, 0.1
        if len(jobs) >= 5:
            features = build_features(jobs, self._store().config.model_profiles, history={})
            features = features.assign(attention_work=0.0, decode_work=0.0, step_passes=0.0)
            seconds = outcome_seconds(jobs)
            fitted = CostModel(min_group_jobs=len(jobs) + 1).fit(features, seconds)
            confidence = min(within_share(seconds, fitted.predict(features)), 0.5)
        return fitted, confidence

