"""Looking inside trained models: feature importances and the real-data check.

Used by ``notebooks/01-train-models.ipynb`` and the closing notes; logic lives here so notebooks
stay thin.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from perflib.config import ModelProfile, Settings
from perflib.prediction.predictor import PerformancePredictor, TrainingReport
from perflib.store import Store
from perflib.store.importer import import_jobs

METRIC_COLUMNS = ["accuracy_within_20_percent", "accuracy_within_10_percent", "mape",
                  "median_absolute_error_seconds", "interval_coverage", "n_train", "n_test"]


def comparison_table(result: dict) -> pd.DataFrame:
    """The per-family metrics of a ``train_model`` result, the chosen family first."""
    table = pd.DataFrame(result["comparison"]).T[METRIC_COLUMNS].astype(float)
    table = table.astype({"n_train": int, "n_test": int})
    order = [result["model_type"]] + [f for f in table.index if f != result["model_type"]]
    return table.loc[order]


def feature_importances(report: TrainingReport, family: str | None = None,
                        repeats: int = 5, random_state: int = 0) -> pd.Series:
    """Permutation importance on the test period: how much the median absolute log error grows
    when one feature is shuffled (the anchor columns included)."""
    family = family or report.chosen
    model = report.fitted[family]

    def negative_log_error(estimator, X, y):
        return -float(np.median(np.abs(np.log(estimator.predict(X)) - np.log(y))))

    result = permutation_importance(model, report.test_features, report.test_seconds,
                                    scoring=negative_log_error, n_repeats=repeats,
                                    random_state=random_state)
    return pd.Series(result.importances_mean, index=report.test_features.columns
                     ).sort_values(ascending=False)


def real_data_check(path: str | Path, profiles: Mapping[str, ModelProfile] | None = None
                    ) -> pd.DataFrame:
    """Train ``auto`` on a CSV of real jobs in a throwaway SQLite file, under both splits: the
    first 70% by time against the rest, and the 80% smallest against the 20% largest."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        store = Store(f"sqlite:///{Path(folder) / 'check.db'}",
                      Settings(spool_dir=Path(folder) / "spool", model_profiles=profiles or {}))
        import_jobs(path, store)
        predictor = PerformancePredictor(store)
        for split, fraction in (("time", 0.3), ("size", 0.2)):
            result = predictor.train_model(None, "auto", split=split, test_fraction=fraction)
            for family, metrics in result["comparison"].items():
                rows.append({"data": Path(path).name, "split": split, "family": family,
                             "chosen": family == result["model_type"], **metrics})
        store.engine.dispose()
    return pd.DataFrame(rows).set_index(["data", "split", "family"])
