"""Model families for generation time, all anchored to a physical cost model.

The anchor is a cost model per (model_name, gpu_name):
``seconds = a + e·step_passes + b·work_units + c·attention_work + d·decode_work (+ per-sample
decode)`` by non-negative
least squares on relative error (weights 1/seconds²), with stragglers trimmed, so it extrapolates
to jobs bigger than any seen — times the recent drift of that GPU and model (how much slower than
the cost model its last jobs ran). ``linear_regression`` is exactly that; ``random_forest``,
``gradient_boosting`` and ``neural_network`` learn what it misses — the log of actual ÷ anchored
seconds — from every feature, so each stays anchored to physics. All are scikit-learn estimators
predicting seconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (FunctionTransformer, OneHotEncoder, OrdinalEncoder,
                                   StandardScaler)

from perflib.features import CATEGORICAL_FEATURES, COST_TERMS, NUMERIC_FEATURES

FAMILIES = ("linear_regression", "random_forest", "gradient_boosting", "neural_network")
MAD_TO_SIGMA = 1.4826
MIN_SECONDS = 1e-3
MAX_DRIFT = 1.0  # recent drift is trusted up to a factor of e either way


class CostModel(RegressorMixin, BaseEstimator):
    """Non-negative cost model per (model_name, gpu_name), fitted on relative error.

    Groups with fewer than `min_group_jobs` jobs, and pairs never seen, use the pooled fit scaled
    by the median actual/pooled ratio of their GPU and of their model, where those are known.
    """

    def __init__(self, min_group_jobs: int = 12, trim_mads: float = 4.0, max_rounds: int = 4):
        self.min_group_jobs = min_group_jobs
        self.trim_mads = trim_mads
        self.max_rounds = max_rounds

    def fit(self, X: pd.DataFrame, y) -> "CostModel":
        # A timer can record a job as (almost) instant; floor it so 1/y² stays finite.
        y = np.maximum(np.asarray(y, dtype=float), MIN_SECONDS)
        design = _design(X)
        self.pooled_, pooled_kept = self._fit_terms(design, y)
        self.coefficients_ = {}
        keys = _group_keys(X)
        for key in np.unique(keys):
            members = keys == key
            if members.sum() >= self.min_group_jobs:
                self.coefficients_[str(key)] = self._fit_terms(design[members], y[members])[0]
        ratio = y / np.maximum(design @ self.pooled_, 1e-9)
        self.gpu_factor_ = _median_by(X["gpu_name"].to_numpy(), ratio, pooled_kept)
        self.model_factor_ = _median_by(X["model_name"].to_numpy(), ratio, pooled_kept)
        return self

    def _fit_terms(self, design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """NNLS on relative error; rounds of trimming drop jobs far off the fit (stragglers)."""
        scale = np.maximum(design.max(axis=0), 1e-12)
        scaled = design / scale
        kept = np.ones(len(y), dtype=bool)
        coefficients = np.zeros(design.shape[1])
        for _ in range(self.max_rounds):
            regression = LinearRegression(fit_intercept=False, positive=True)
            regression.fit(scaled[kept], y[kept], sample_weight=1.0 / y[kept] ** 2)
            coefficients = regression.coef_ / scale
            log_residual = np.log(y) - np.log(np.maximum(design @ coefficients, 1e-9))
            center = np.median(log_residual[kept])
            spread = max(MAD_TO_SIGMA * np.median(np.abs(log_residual[kept] - center)), 0.02)
            now_kept = np.abs(log_residual - center) <= self.trim_mads * spread
            if now_kept.sum() < max(design.shape[1] + 1, int(0.5 * len(y))) or \
                    (now_kept == kept).all():
                break
            kept = now_kept
        return coefficients, kept

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        design = _design(X)
        keys = _group_keys(X)
        seconds = design @ self.pooled_
        seconds = seconds * np.array([self.gpu_factor_.get(g, 1.0) for g in X["gpu_name"]])
        seconds = seconds * np.array([self.model_factor_.get(m, 1.0) for m in X["model_name"]])
        for key in set(keys) & set(self.coefficients_):
            members = keys == key
            seconds[members] = design[members] @ self.coefficients_[key]
        return np.maximum(seconds, 1e-3)


ANCHOR_FEATURES = ["log_cost_seconds", "recent_log_ratio"]
# The corrections see every feature and the anchor, in this order, as one object array: column
# selection by position keeps a single estimate quick (pandas selection costs milliseconds).
MODEL_COLUMNS = NUMERIC_FEATURES + ANCHOR_FEATURES + CATEGORICAL_FEATURES


class AnchoredRegressor(RegressorMixin, BaseEstimator):
    """Seconds = exp(log cost-model seconds + recent drift + correction).

    `X` carries the anchor columns (see :func:`anchor`): ``log_cost_seconds`` and
    ``recent_log_ratio``, how much slower than the cost model the same GPU and model have run
    lately (0 when unknown). `correction` learns the rest of log(actual / anchor); without one
    this is the cost model itself, tracking drift.
    """

    def __init__(self, correction=None, clip_mads: float = 4.0):
        self.correction = correction
        self.clip_mads = clip_mads

    def fit(self, X: pd.DataFrame, y) -> "AnchoredRegressor":
        if self.correction is not None:
            target = np.log(np.maximum(np.asarray(y, dtype=float), MIN_SECONDS)) - _anchor_log(X)
            # Stragglers are unpredictable: clip their residuals so they cannot pull the fit.
            center = np.median(target)
            spread = max(MAD_TO_SIGMA * np.median(np.abs(target - center)), 0.02)
            target = np.clip(target, center - self.clip_mads * spread,
                             center + self.clip_mads * spread)
            self.correction_ = clone(self.correction).fit(_as_array(X), target)
            # Threads help fitting many trees; for the few rows of an estimate they cost more
            # than they save.
            self.correction_.set_params(**{name: 1 for name in self.correction_.get_params()
                                           if name.endswith("n_jobs")})
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        log_seconds = _anchor_log(X)
        if self.correction is not None:
            log_seconds = log_seconds + self.correction_.predict(_as_array(X))
        return np.exp(log_seconds)


def anchor(features: pd.DataFrame, cost_model: CostModel, recent_log_ratio) -> pd.DataFrame:
    """The features plus the anchor columns every family predicts from."""
    recent = np.clip(np.asarray(recent_log_ratio, dtype=float), -MAX_DRIFT, MAX_DRIFT)
    return features.assign(log_cost_seconds=np.log(cost_model.predict(features)),
                           recent_log_ratio=recent)


def _as_array(X: pd.DataFrame) -> np.ndarray:
    return X[MODEL_COLUMNS].to_numpy(dtype=object)


def _anchor_log(X: pd.DataFrame) -> np.ndarray:
    return X["log_cost_seconds"].to_numpy() + np.nan_to_num(X["recent_log_ratio"].to_numpy())


def make_family(family: str, random_state: int = 0) -> AnchoredRegressor:
    """A fresh, unfitted estimator of one family."""
    if family == "linear_regression":
        return AnchoredRegressor()
    if family == "random_forest":
        learner = RandomForestRegressor(n_estimators=80, min_samples_leaf=5, max_features=0.5,
                                        n_jobs=-1, random_state=random_state)
        return AnchoredRegressor(Pipeline([("columns", _tree_columns()), ("forest", learner)]))
    if family == "gradient_boosting":
        learner = HistGradientBoostingRegressor(
            loss="absolute_error", max_iter=120, learning_rate=0.1, min_samples_leaf=10,
            l2_regularization=1.0, categorical_features=_CATEGORICAL_POSITIONS,
            random_state=random_state)
        return AnchoredRegressor(Pipeline([("columns", _tree_columns()), ("boosting", learner)]))
    if family == "neural_network":
        learner = MLPRegressor(hidden_layer_sizes=(32, 16), alpha=1e-3, early_stopping=True,
                               max_iter=300, random_state=random_state)
        return AnchoredRegressor(Pipeline([("columns", _scaled_columns()), ("mlp", learner)]))
    raise ValueError(f"model_type must be 'auto' or one of {', '.join(FAMILIES)}, "
                     f"got {family!r}")


_NUMERIC_POSITIONS = list(range(len(NUMERIC_FEATURES) + len(ANCHOR_FEATURES)))
_CATEGORICAL_POSITIONS = list(range(len(_NUMERIC_POSITIONS), len(MODEL_COLUMNS)))


def _tree_columns() -> ColumnTransformer:
    """Trees take numbers as they are (missing ones included) and categories as codes; an
    unseen category becomes -1, which the trees treat as missing."""
    return ColumnTransformer(
        [("numeric", "passthrough", _NUMERIC_POSITIONS),
         ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                        encoded_missing_value=-1, min_frequency=5),
          _CATEGORICAL_POSITIONS)])


def _scaled_columns() -> ColumnTransformer:
    """For the MLP: numbers imputed, log-scaled and standardised; categories one-hot."""
    numeric = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                            FunctionTransformer(_signed_log1p), StandardScaler())
    return ColumnTransformer(
        [("numeric", numeric, _NUMERIC_POSITIONS),
         ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=5,
                                       sparse_output=False), _CATEGORICAL_POSITIONS)])


def _signed_log1p(values):
    return np.sign(values) * np.log1p(np.abs(values))


def _design(X: pd.DataFrame) -> np.ndarray:
    return np.column_stack([np.ones(len(X))] + [X[term].to_numpy(dtype=float)
                                                for term in COST_TERMS])


def _group_keys(X: pd.DataFrame) -> np.ndarray:
    return (X["model_name"].astype(str) + "|" + X["gpu_name"].astype(str)).to_numpy()


def _median_by(labels: np.ndarray, ratio: np.ndarray, kept: np.ndarray) -> dict[str, float]:
    frame = pd.DataFrame({"label": labels, "ratio": ratio})[kept]
    return {str(k): float(v) for k, v in frame.groupby("label")["ratio"].median().items()}


# -- metrics and calibrated uncertainty -------------------------------------------------------
@dataclass(frozen=True)
class Metrics:
    """Held-out accuracy of one model (relative errors; seconds where named)."""

    accuracy_within_20_percent: float
    accuracy_within_10_percent: float
    mape: float
    median_absolute_error_seconds: float
    interval_coverage: float | None
    n_train: int
    n_test: int

    def as_dict(self) -> dict:
        return asdict(self)


def score(actual, predicted, low=None, high=None, n_train: int = 0) -> Metrics:
    actual, predicted = np.asarray(actual, float), np.asarray(predicted, float)
    relative = np.abs(predicted - actual) / actual
    coverage = None
    if low is not None and high is not None:
        coverage = float(np.mean((actual >= np.asarray(low)) & (actual <= np.asarray(high))))
    return Metrics(
        accuracy_within_20_percent=float(np.mean(relative <= 0.2)),
        accuracy_within_10_percent=float(np.mean(relative <= 0.1)),
        mape=float(np.mean(relative)),
        median_absolute_error_seconds=float(np.median(np.abs(predicted - actual))),
        interval_coverage=coverage, n_train=int(n_train), n_test=len(actual))


class Calibration(BaseEstimator):
    """Split-conformal intervals on log residuals — ``prediction × exp(±q)`` with q the
    conformal quantile of the residuals' spread about their median — per size bin of the prediction when there
    are enough calibration jobs (Mondrian), and the calibrated chance of landing within ±20%."""

    def __init__(self, coverage: float = 0.8, min_bin: int = 150, max_bins: int = 3):
        self.coverage = coverage
        self.min_bin = min_bin
        self.max_bins = max_bins

    def fit(self, actual, predicted) -> "Calibration":
        actual, predicted = np.asarray(actual, float), np.asarray(predicted, float)
        log_pred = np.log(predicted)
        residual = np.log(actual) - log_pred
        bins = int(max(1, min(self.max_bins, len(actual) // self.min_bin)))
        self.edges_ = np.quantile(log_pred, np.linspace(0, 1, bins + 1)[1:-1])
        which = np.searchsorted(self.edges_, log_pred)
        self.low_, self.high_, self.within_20_ = [], [], []
        for b in range(bins):
            r = residual[which == b]
            n = len(r)
            # Split conformal on the spread of the log residuals about their median, with the
            # finite-sample correction. A calibration window's own bias is drift that the anchor
            # tracks, so it widens nothing.
            level = min(1.0, np.ceil((n + 1) * self.coverage) / n) if n else 1.0
            half_width = float(np.quantile(np.abs(r - np.median(r)), level)) if n else 0.7
            self.low_.append(-half_width)
            self.high_.append(half_width)
            self.within_20_.append(float(np.mean(np.abs(np.exp(r) - 1) <= 0.2)) if n else 0.2)
        return self

    def interval(self, predicted) -> tuple[np.ndarray, np.ndarray]:
        predicted = np.asarray(predicted, float)
        which = np.searchsorted(self.edges_, np.log(predicted))
        return (predicted * np.exp(np.take(self.low_, which)),
                predicted * np.exp(np.take(self.high_, which)))

    def confidence(self, predicted) -> np.ndarray:
        which = np.searchsorted(self.edges_, np.log(np.asarray(predicted, float)))
        return np.take(self.within_20_, which)
