"""PerformancePredictor: train, store and use generation-time models (the seed's API), a thin
facade over :mod:`~perflib.prediction.training`, :mod:`~perflib.prediction.estimating`,
:mod:`~perflib.prediction.status`, :mod:`~perflib.prediction.stored` and the model registry
(:mod:`perflib.store.model_registry`). Models are stored with skops and loaded only with an
explicit trusted-type list.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

import pandas as pd
import skops.io

from perflib.config import Settings
from perflib.prediction.estimating import Estimator, moment
from perflib.prediction.status import model_status
from perflib.prediction.stored import (MOVED_MODULES, TRUSTED_TYPES, load_model_blob,
                                       with_current_modules)
from perflib.prediction.trained import (DRIFT_JOBS, MIN_DRIFT_JOBS, MODEL_FORMAT,
                                        IncompatibleModelError, InvalidModelError,
                                        RefusedModelError, TrainedModel, UntrustedModelError)
from perflib.prediction.training import MIN_JOBS_FOR_MODEL, TrainingReport, train, training_data
from perflib.store import UsesStore
from perflib.store.model_registry import save_version

__all__ = ["DRIFT_JOBS", "IncompatibleModelError", "InvalidModelError", "MIN_DRIFT_JOBS",
           "MIN_JOBS_FOR_MODEL", "MODEL_FORMAT", "MOVED_MODULES", "PerformancePredictor",
           "RefusedModelError", "TRUSTED_TYPES", "TrainedModel", "TrainingReport",
           "UntrustedModelError", "load_model_blob", "with_current_modules"]

RELOAD_CHECK_SECONDS = 2.0
RECENT_CACHE_SIZE = 4096  # (stored version, GPU and model) pairs whose drift is kept


class PerformancePredictor(UsesStore):
    """Predicts a job's generation time before it starts, from the pipeline's own history."""

    def __init__(self, db: Any = None, settings: Settings | None = None):
        super().__init__(db, settings)
        self._trained: dict[tuple[str, str], TrainedModel] = {}
        self.estimator = Estimator(lambda: self.store,
                                   lambda pipeline, as_of: self.training_data(pipeline, as_of),
                                   RELOAD_CHECK_SECONDS, RECENT_CACHE_SIZE)
        self.last_training: TrainingReport | None = None

    # -- training -----------------------------------------------------------------------------
    def training_data(self, pipeline_type: str | None = None, as_of: datetime | None = None
                      ) -> pd.DataFrame:
        """Successful jobs with the parameters a model needs, oldest first (only those finished
        before `as_of` where given)."""
        return training_data(self.store, pipeline_type, as_of)

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
        if jobs is None:
            jobs = self.training_data(pipeline_type)
        elif pipeline_type:
            jobs = jobs[jobs.pipeline_type == pipeline_type].reset_index(drop=True)
        trained = train(jobs, pipeline_type, self.config, model_type, split, test_fraction,
                        coverage, random_state, progress)
        self.last_training = trained.report
        self._trained[(trained.model.pipeline_type, trained.model.family)] = trained.model
        return trained.result

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
        bundle = self.trained_model(pipeline_type, model_type)
        bundle.version = save_version(
            self.store, bundle.pipeline_type, model_type, skops.io.dumps(bundle), activate,
            metrics={**bundle.metrics, **(notes or {})}, features=bundle.features,
            train_start=datetime.fromisoformat(bundle.train_start),
            train_end=datetime.fromisoformat(bundle.train_end), n_rows=bundle.n_rows)
        return bundle.version

    def reload(self) -> None:
        """Read the stored versions afresh at the next estimate and try refused ones again (a
        service calls this after saving a model, instead of waiting for the periodic check)."""
        self.estimator.stored.reload()

    def active_model(self, pipeline_type: str) -> TrainedModel | None:
        """The stored model that answers for `pipeline_type` (None: the heuristic does); a
        newly saved version is picked up within a couple of seconds."""
        return next((model for _, model in self.estimator.answering(pipeline_type)), None)

    def model_status(self) -> dict:
        """Per pipeline type: which model answers (``model_used``: its label, or "heuristic"),
        its family, version, training time and metrics; the active stored version; each
        version passed over and why (``refused``); the versions that left some jobs to
        the next one, how often and why (``estimate_fallbacks``); and the latest automatic
        retraining, its reason and whether it was kept (``last_retraining``)."""
        return model_status(self.estimator)

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
        return self.estimator.estimate_many(requests, as_of)

    def estimate_batch(self, jobs: pd.DataFrame, pipeline_type: str,
                       as_of: datetime | None = None) -> pd.DataFrame:
        """Predictions for many job rows of one pipeline type at once (no recommendations);
        `as_of` as in :meth:`estimate`."""
        return self.estimator.price(pipeline_type, jobs, as_of=moment(as_of))[0].frame(jobs.index)
