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

import math
import numbers
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from perflib.prediction.conformal import Adjustment, adjusted_confidence
from perflib.prediction.features import (CATEGORICAL_FEATURES, COST_TERMS, CYCLIC_FEATURES,
                                         NUMERIC_FEATURES, Features, history_keys)
from perflib.prediction.metrics import CLOSE, WITHIN, coverage, mape, within_share
from perflib.prediction.pooling import PooledSpeeds, at_speed, split_cost
from perflib.store.model_checks import check_learner

FAMILIES = ("linear_regression", "random_forest", "gradient_boosting", "neural_network")
MAD_TO_SIGMA = 1.4826
MIN_SECONDS = 1e-3
MAX_DRIFT = 1.0  # recent drift is trusted up to a factor of e either way
SPEED_MAPPINGS = ("gpu_effect_", "gpu_variance_", "model_effect_", "model_variance_",
                  "pair_effect_", "pair_variance_", "pair_jobs_", "seeded_")
POOLING_ROUNDS = 3  # turns of (reference costs, speeds): enough for them to settle
REFERENCE_FIT_JOBS = 5000


class CostModel(RegressorMixin, BaseEstimator):
    """Non-negative cost model per (model_name, gpu_name), fitted on relative error.

    Groups with fewer than `min_group_jobs` jobs, and pairs never seen, use their model's
    reference cost (fitted on all its jobs, each GPU's speed taken out; the pooled fit for a
    model with fewer jobs) with its compute part scaled by the pooled, shrunk speed of their GPU,
    model and pair (:class:`perflib.prediction.pooling.PooledSpeeds`).
    """

    def __init__(self, min_group_jobs: int = 12, trim_mads: float = 4.0, max_rounds: int = 4):
        self.min_group_jobs = min_group_jobs
        self.trim_mads = trim_mads
        self.max_rounds = max_rounds

    def fit(self, X: pd.DataFrame, y, gpu_profiles=None) -> "CostModel":
        """Fit the groups' own costs and the pooled speeds; `gpu_profiles` (``{gpu_name:
        GpuProfile}``) may seed the speed of GPUs without jobs."""
        # A timer can record a job as (almost) instant; floor it so 1/y² stays finite.
        y = np.maximum(np.asarray(y, dtype=float), MIN_SECONDS)
        design = _design(X)
        self.coefficients_ = {}
        keys = history_keys(X)
        for key in np.unique(keys):
            members = keys == key
            if members.sum() >= self.min_group_jobs:
                self.coefficients_[str(key)] = self._fit_terms(design[members], y[members])[0]
        self._fit_speeds(design, y, np.asarray(X["gpu_name"]).astype(str),
                         np.asarray(X["model_name"]).astype(str), gpu_profiles)
        return self

    def _fit_speeds(self, design, y, gpus, models, gpu_profiles) -> None:
        """The pooled and each model's reference cost, and the pooled speeds, in turns: each
        GPU's speed taken out of its jobs before the costs are refitted."""
        names, counts = np.unique(models, return_counts=True)
        own = names[counts >= self.min_group_jobs]
        log_factor = np.zeros(len(y))
        every = _spread_out(np.arange(len(y)))
        members = {str(name): _spread_out(np.flatnonzero(models == name)) for name in own}
        for _ in range(POOLING_ROUNDS):
            self.pooled_ = self._fit_terms(at_speed(design[every], log_factor[every]),
                                           y[every])[0]
            self.model_coefficients_ = {
                name: self._fit_terms(at_speed(design[rows], log_factor[rows]), y[rows])[0]
                for name, rows in members.items()}
            overhead, compute = self._reference_cost(design, models)
            self.speeds_ = PooledSpeeds().fit(overhead, compute, y, gpus, models, own,
                                              gpu_profiles)
            log_factor = self.speeds_.log_factor(gpus, models)[0]

    def _reference_cost(self, design: np.ndarray, models) -> tuple[np.ndarray, np.ndarray]:
        """(overhead, compute) seconds of each row at its model's reference speed."""
        overhead, compute = split_cost(design, self.pooled_)
        for name in set(self.model_coefficients_) & set(models):
            members = np.asarray(models) == name
            overhead[members], compute[members] = split_cost(
                design[members], self.model_coefficients_[name])
        return overhead, compute

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

    def predict(self, X: Features) -> np.ndarray:
        design = _design(X)
        keys = history_keys(X)
        overhead, compute = self._reference_cost(design, np.asarray(X["model_name"]).astype(str))
        log_factor = self.speeds_.log_factor(X["gpu_name"], X["model_name"])[0]
        seconds = overhead + np.exp(log_factor) * compute
        for key in set(keys) & set(self.coefficients_):
            members = keys == key
            seconds[members] = design[members] @ self.coefficients_[key]
        return np.maximum(seconds, 1e-3)

    def check_fitted(self, name: str = "cost_model") -> None:
        """Raise ValueError naming the part at fault unless every coefficient and factor is there,
        finite, and of the right shape (a stored cost model may be damaged)."""
        terms = (len(COST_TERMS) + 1,)
        check_array(getattr(self, "pooled_", None), f"{name}.pooled_", shape=terms)
        check_mapping(getattr(self, "coefficients_", None), f"{name}.coefficients_",
                      lambda value, where: check_array(value, where, shape=terms))
        check_mapping(getattr(self, "model_coefficients_", None), f"{name}.model_coefficients_",
                      lambda value, where: check_array(value, where, shape=terms))
        speeds = getattr(self, "speeds_", None)
        if not isinstance(speeds, PooledSpeeds):
            raise ValueError(f"{name}.speeds_ is a {type(speeds).__name__}, not PooledSpeeds")
        for part in SPEED_MAPPINGS:
            check_mapping(getattr(speeds, part, None), f"{name}.speeds_.{part}", check_number)
        for part in ("noise_", "gpu_spread_", "model_spread_", "pair_spread_"):
            check_number(getattr(speeds, part, None), f"{name}.speeds_.{part}")

    def speed_uncertainty(self, X: Features) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the standard deviation of its log speed and where that speed comes from
        (:data:`perflib.prediction.pooling.SOURCES`); 0 and "observed" for groups with their own
        cost."""
        _, variance, source = self.speeds_.log_factor(X["gpu_name"], X["model_name"])
        own = np.isin(history_keys(X), list(self.coefficients_))
        return np.where(own, 0.0, np.sqrt(variance)), np.where(own, "observed", source)


ANCHOR_FEATURES = ["log_cost_seconds", "recent_log_ratio"]
# The corrections see every feature and the anchor, in this order, as one object array.
MODEL_COLUMNS = NUMERIC_FEATURES + ANCHOR_FEATURES + CATEGORICAL_FEATURES
_NUMERIC_POSITIONS = list(range(len(NUMERIC_FEATURES) + len(ANCHOR_FEATURES)))
_CATEGORICAL_POSITIONS = list(range(len(_NUMERIC_POSITIONS), len(MODEL_COLUMNS)))
_CYCLIC_POSITIONS = {MODEL_COLUMNS.index(name): period for name, period in CYCLIC_FEATURES.items()}
# A cyclic feature (hour of day, day of week) is used only once training saw this share of its
# cycle's values.
MIN_CYCLE_SHARE = 0.75


class AnchoredRegressor(RegressorMixin, BaseEstimator):
    """Seconds = exp(log cost-model seconds + recent drift + correction).

    `X` (a DataFrame or a mapping of column arrays) carries the anchor columns (see
    :func:`anchor`): ``log_cost_seconds`` and ``recent_log_ratio``, how much slower than the cost
    model the same GPU and model have run lately (0 when unknown). `correction` learns the rest
    of log(actual / anchor) from the :data:`MODEL_COLUMNS`; without one this is the cost model
    itself, tracking drift.
    """

    def __init__(self, correction=None, clip_mads: float = 4.0):
        self.correction = correction
        self.clip_mads = clip_mads

    def fit(self, X: Features, y) -> "AnchoredRegressor":
        if self.correction is not None:
            target = np.log(np.maximum(np.asarray(y, dtype=float), MIN_SECONDS)) - _anchor_log(X)
            # Stragglers are unpredictable: clip their residuals so they cannot pull the fit.
            center = np.median(target)
            spread = max(MAD_TO_SIGMA * np.median(np.abs(target - center)), 0.02)
            target = np.clip(target, center - self.clip_mads * spread,
                             center + self.clip_mads * spread)
            with warnings.catch_warnings():  # an iteration cap reached is by design
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.correction_ = clone(self.correction).fit(model_matrix(X), target)
            self.correction_range_ = (float(target.min()), float(target.max()))
            # Threads help fitting many trees; for the few rows of an estimate they cost more
            # than they save.
            self.correction_.set_params(**{name: 1 for name in self.correction_.get_params()
                                           if name.endswith("n_jobs")})
        return self

    def predict(self, X: Features) -> np.ndarray:
        log_seconds = _anchor_log(X)
        if self.correction is not None:
            # Far outside the training data a correction (an MLP's above all) can run away:
            # it never moves an estimate further from the anchor than it did in training.
            log_seconds = log_seconds + np.clip(self.correction_.predict(model_matrix(X)),
                                                *self.correction_range_)
        return np.exp(log_seconds)

    def check_fitted(self, name: str = "estimator") -> None:
        """Raise ValueError naming the part at fault unless a fitted correction, where there is
        one, can predict within a finite range, its trees and network weights sound (see
        :mod:`perflib.store.model_checks`; what it predicts is probed by the caller)."""
        if self.correction is None:
            return
        if not callable(getattr(getattr(self, "correction_", None), "predict", None)):
            raise ValueError(f"{name}.correction_ is missing or cannot predict")
        check_learner(self.correction_, f"{name}.correction_")
        bounds = getattr(self, "correction_range_", None)
        if not isinstance(bounds, tuple) or len(bounds) != 2:
            raise ValueError(f"{name}.correction_range_ is not a (low, high) pair")
        for which, bound in zip(("low", "high"), bounds):
            check_number(bound, f"{name}.correction_range_ {which}")


class MatrixEncoder(TransformerMixin, BaseEstimator):
    """The model matrix as numbers: numeric columns as floats, each categorical column as the
    code of its value (``one_hot=False``, for trees) or as indicator columns (``one_hot=True``).
    Values seen fewer than `min_frequency` times in training, and unseen ones, share one
    "rare" code, or get all-zero indicators.

    A numeric feature seen over too narrow a range cannot swing an estimate: a column with no
    value or a single one in training (a short history) carries nothing and becomes 0, as does
    a `cyclic` one (``{position: period}``: the hour of day, the day of week) whose training
    values cover less than :data:`MIN_CYCLE_SHARE` of its cycle — learnt from jobs that all ran
    within an hour, it would make an estimate depend on the clock time it is asked at. Every
    other numeric value is clamped to its training range.

    sklearn's OrdinalEncoder and OneHotEncoder, behind a ColumnTransformer, cost 0.6–1 ms a
    call however few the rows; a single estimate has a 2 ms budget in all, so this is a lookup.
    """

    def __init__(self, categorical=(), one_hot: bool = False, min_frequency: int = 5,
                 cyclic=None):
        self.categorical = categorical
        self.one_hot = one_hot
        self.min_frequency = min_frequency
        self.cyclic = cyclic

    def fit(self, X, y=None) -> "MatrixEncoder":
        X = np.asarray(X, dtype=object)
        self.numeric_ = [i for i in range(X.shape[1]) if i not in set(self.categorical)]
        numeric = X[:, self.numeric_].astype(float)
        self.empty_ = np.isnan(numeric).all(axis=0) | self._narrow(numeric)
        with warnings.catch_warnings():  # an all-NaN column has no range: it is empty
            warnings.simplefilter("ignore", RuntimeWarning)
            self.low_, self.high_ = np.nanmin(numeric, axis=0), np.nanmax(numeric, axis=0)
        self.codes_ = []
        for position in self.categorical:
            values, counts = np.unique(X[:, position].astype(str), return_counts=True)
            kept = sorted(str(v) for v in values[counts >= self.min_frequency])
            self.codes_.append({value: code for code, value in enumerate(kept)})
        return self

    def _narrow(self, numeric: np.ndarray) -> np.ndarray:
        """Per numeric column: at most one distinct value, or a cyclic one covering too little
        of its cycle."""
        narrow = np.zeros(numeric.shape[1], dtype=bool)
        for column, position in enumerate(self.numeric_):
            values = np.unique(numeric[:, column][~np.isnan(numeric[:, column])])
            period = (self.cyclic or {}).get(position)
            seen = len(np.unique(np.floor(values) % period)) / period if period else 1.0
            narrow[column] = len(values) <= 1 or seen < MIN_CYCLE_SHARE
        return narrow

    def transform(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=object)
        numeric = X[:, self.numeric_].astype(float)
        if hasattr(self, "low_"):  # encoders stored before clamping have no range
            numeric = np.clip(numeric, self.low_, self.high_)
        numeric[:, self.empty_] = 0.0
        blocks = [numeric]
        for position, codes in zip(self.categorical, self.codes_):
            rare = len(codes)
            found = np.array([codes.get(str(value), rare) for value in X[:, position]])
            if self.one_hot:
                indicators = np.zeros((len(X), rare + 1))
                indicators[np.arange(len(X)), found] = 1.0
                blocks.append(indicators[:, :rare])
            else:
                blocks.append(found[:, None].astype(float))
        return np.hstack(blocks)


def anchor(features: Features, cost_model: CostModel, recent_log_ratio) -> Features:
    """The features plus the anchor columns every family predicts from (a DataFrame for a
    DataFrame, else a dict of column arrays)."""
    recent = np.clip(np.asarray(recent_log_ratio, dtype=float), -MAX_DRIFT, MAX_DRIFT)
    columns = {"log_cost_seconds": np.log(cost_model.predict(features)),
               "recent_log_ratio": recent}
    if isinstance(features, pd.DataFrame):
        return features.assign(**columns)
    return {**features, **columns}


def model_matrix(X: Features) -> np.ndarray:
    """The :data:`MODEL_COLUMNS` of `X` as one object array, the input of every correction."""
    matrix = np.empty((len(X["log_cost_seconds"]), len(MODEL_COLUMNS)), dtype=object)
    for position, name in enumerate(MODEL_COLUMNS):
        matrix[:, position] = np.asarray(X[name])
    return matrix


def _anchor_log(X: Features) -> np.ndarray:
    return np.asarray(X["log_cost_seconds"], dtype=float) + np.nan_to_num(
        np.asarray(X["recent_log_ratio"], dtype=float))


def make_family(family: str, random_state: int = 0) -> AnchoredRegressor:
    """A fresh, unfitted estimator of one family: a scikit-learn pipeline from the model matrix
    to the correction, inside the anchor."""
    if family == "linear_regression":
        return AnchoredRegressor()
    if family == "random_forest":
        # Few trees: each costs ~50 µs of scikit-learn overhead per estimate, and averaging a
        # residual this small gains little past a couple of dozen.
        learner = RandomForestRegressor(n_estimators=16, min_samples_leaf=5, max_features=0.5,
                                        n_jobs=-1, random_state=random_state)
        return AnchoredRegressor(make_pipeline(_encoder(), learner))
    if family == "gradient_boosting":
        # Categories go in as codes the trees split on; HistGradientBoosting's own categorical
        # support re-encodes every call (~1.3 ms for a single estimate).
        learner = HistGradientBoostingRegressor(
            loss="absolute_error", max_iter=120, learning_rate=0.1, min_samples_leaf=10,
            l2_regularization=1.0, random_state=random_state)
        return AnchoredRegressor(make_pipeline(_encoder(), learner))
    if family == "neural_network":
        # Small and strongly regularised: it learns a correction of a few percent, and an
        # eager network fits the noise instead (0.82–0.90 within-20% on the real data, against
        # 0.95–1.00 so). L-BFGS suits these few features; its iteration cap bounds the time.
        learner = MLPRegressor(hidden_layer_sizes=(16,), alpha=1.0, solver="lbfgs",
                               max_iter=300, random_state=random_state)
        return AnchoredRegressor(make_pipeline(
            _encoder(one_hot=True), SimpleImputer(strategy="median", keep_empty_features=True),
            FunctionTransformer(_signed_log1p), StandardScaler(), learner))
    raise ValueError(f"model_type must be 'auto' or one of {', '.join(FAMILIES)}, "
                     f"got {family!r}")


def _encoder(one_hot: bool = False) -> MatrixEncoder:
    return MatrixEncoder(categorical=_CATEGORICAL_POSITIONS, one_hot=one_hot,
                         cyclic=_CYCLIC_POSITIONS)


def _signed_log1p(values):
    return np.sign(values) * np.log1p(np.abs(values))


def _factors(adjustment: Adjustment | None) -> tuple:
    """An adjustment's (lower, upper) widening factors; (1, 1) for none."""
    return (1.0, 1.0) if adjustment is None else (np.asarray(adjustment.low, float),
                                                   np.asarray(adjustment.high, float))


def _spread_out(rows: np.ndarray) -> np.ndarray:
    """At most REFERENCE_FIT_JOBS of `rows`, evenly spaced: plenty for a reference cost's six
    coefficients, and training on a large history stays quick."""
    return rows[np.linspace(0, len(rows) - 1, min(len(rows), REFERENCE_FIT_JOBS)).astype(int)]


def _design(X: Features) -> np.ndarray:
    terms = [np.asarray(X[term], dtype=float) for term in COST_TERMS]
    return np.column_stack([np.ones(len(terms[0]))] + terms)


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
    covered = None
    if low is not None and high is not None:
        covered = coverage(actual, low, high)
    return Metrics(
        accuracy_within_20_percent=within_share(actual, predicted),
        accuracy_within_10_percent=within_share(actual, predicted, CLOSE),
        mape=mape(actual, predicted),
        median_absolute_error_seconds=float(np.median(np.abs(predicted - actual))),
        interval_coverage=covered, n_train=int(n_train), n_test=len(actual))


class Calibration(BaseEstimator):
    """Normalised split-conformal intervals on log residuals, and the calibrated chance of
    landing within ±20%.

    Each job comes with how scattered its GPU and model have run lately (the robust spread of
    log(actual / cost model) over their last jobs, see :func:`perflib.prediction.features.spread`).
    Residuals about their median, divided by that spread, are the conformity scores; the
    interval is ``prediction × exp(−q_low · spread)`` to ``prediction × exp(q_high · spread)``,
    each tail's q its own conformal quantile (of an 80% interval: a tenth of the jobs below, a
    tenth above), so it widens as soon as a GPU's recent jobs turn noisier and narrows when they
    calm down. Scores are
    kept per size bin of the prediction when there are enough calibration jobs (Mondrian). A
    job without a known spread gets the calibration window's typical one; spreads are floored
    at a quarter of it, so a short quiet spell cannot make an interval vanish.
    """

    def __init__(self, coverage: float = 0.8, min_bin: int = 150, max_bins: int = 3,
                 kept_scores: int = 1001):
        self.coverage = coverage
        self.min_bin = min_bin
        self.max_bins = max_bins
        self.kept_scores = kept_scores

    def fit(self, actual, predicted, spread=None) -> "Calibration":
        actual, predicted = np.asarray(actual, float), np.asarray(predicted, float)
        known = np.asarray([] if spread is None else spread, float)
        known = known[np.isfinite(known) & (known > 0)]
        self.typical_spread_ = float(np.median(known)) if len(known) else 1.0
        log_pred = np.log(predicted)
        residual = np.log(actual) - log_pred
        scale = self._scale(spread, len(actual))
        bins = int(max(1, min(self.max_bins, len(actual) // self.min_bin)))
        self.edges_ = np.unique(np.quantile(log_pred, np.linspace(0, 1, bins + 1)[1:-1]))
        which = np.searchsorted(self.edges_, log_pred)
        self.half_width_, self.tail_widths_, self.scores_ = [], [], []
        for b in range(len(self.edges_) + 1):
            members = which == b
            if members.sum() < self.min_bin // 2:  # too few to stand alone: every job's
                members = np.ones(len(actual), dtype=bool)
            r, sigma = residual[members], scale[members]
            # Split conformal with the finite-sample correction, each tail apart (a shared
            # machine's errors are skewed). A calibration window's own bias is drift that the
            # anchor tracks, so it widens nothing.
            scores = (r - np.median(r)) / sigma
            level = min(1.0, np.ceil((len(r) + 1) * self.coverage) / len(r))
            tail = min(1.0, np.ceil((len(r) + 1) * (1 + self.coverage) / 2) / len(r))
            self.half_width_.append(float(np.quantile(np.abs(scores), level)))
            self.tail_widths_.append((float(max(-np.quantile(scores, 1 - tail), 0.0)),
                                      float(max(np.quantile(scores, tail), 0.0))))
            if len(scores) > self.kept_scores:
                scores = np.quantile(scores, np.linspace(0, 1, self.kept_scores))
            self.scores_.append(np.sort(scores))
        return self

    def interval(self, predicted, spread=None, adjustment=None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Low and high seconds; `adjustment` (:class:`perflib.prediction.conformal.Adjustment`,
        of scalars or per-row arrays) multiplies each tail's half-width in log (the online
        conformal correction; None: as calibrated)."""
        predicted = np.asarray(predicted, float)
        which = np.searchsorted(self.edges_, np.log(predicted))
        scale = self._scale(spread, len(predicted))
        lower, upper = self._tails(which)
        low, high = _factors(adjustment)
        return (predicted * np.exp(-lower * scale * low),
                predicted * np.exp(upper * scale * high))

    def _tails(self, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the lower and upper calibrated half-widths of its bin (a model stored before
        the tails were apart has one, symmetric)."""
        tails = getattr(self, "tail_widths_", None) or [(h, h) for h in self.half_width_]
        tails = np.asarray(tails, float)[which]
        return tails[:, 0], tails[:, 1]

    def confidence(self, predicted, spread=None, adjustment=None) -> np.ndarray:
        """Share of calibration jobs that, scaled to each job's spread, land within ±20%; its
        log-odds shifted by the `adjustment`'s (recalibrated online on the same replay as the
        tails, :mod:`perflib.prediction.conformal`)."""
        predicted = np.asarray(predicted, float)
        which = np.searchsorted(self.edges_, np.log(predicted))
        scale = self._scale(spread, len(predicted))
        chances = np.empty(len(predicted))
        for b in np.unique(which):
            rows, scores = which == b, self.scores_[b]
            inside = np.searchsorted(scores, np.log(1 + WITHIN) / scale[rows], side="right") - \
                np.searchsorted(scores, np.log(1 - WITHIN) / scale[rows], side="left")
            chances[rows] = inside / len(scores)
        if adjustment is None:
            return chances
        return adjusted_confidence(chances, adjustment.log_odds)

    def _scale(self, spread, rows: int) -> np.ndarray:
        if spread is None:
            return np.full(rows, self.typical_spread_)
        spread = np.asarray(spread, float)
        spread = np.where(np.isfinite(spread) & (spread > 0), spread, self.typical_spread_)
        return np.maximum(spread, 0.25 * self.typical_spread_)

    def check_fitted(self, name: str = "calibration") -> None:
        """Raise ValueError naming the part at fault unless the bin edges, half widths, scores
        and typical spread are there, finite, and agree in number."""
        check_number(getattr(self, "typical_spread_", None), f"{name}.typical_spread_")
        edges = getattr(self, "edges_", None)
        check_array(edges, f"{name}.edges_", ndim=1)
        for part in ("half_width_", "scores_"):
            values = getattr(self, part, None)
            if not isinstance(values, list) or len(values) != len(edges) + 1:
                raise ValueError(f"{name}.{part} is not a list of one entry per bin "
                                 f"({len(edges) + 1})")
        tails = getattr(self, "tail_widths_", None)
        if tails is not None and (not isinstance(tails, list) or len(tails) != len(edges) + 1):
            raise ValueError(f"{name}.tail_widths_ is not a list of one entry per bin")
        for b, (half, scores) in enumerate(zip(self.half_width_, self.scores_)):
            check_number(half, f"{name}.half_width_[{b}]")
            for side, width in zip(("low", "high"), tails[b] if tails is not None else ()):
                check_number(width, f"{name}.tail_widths_[{b}] {side}")
            check_array(scores, f"{name}.scores_[{b}]", ndim=1)
            if not len(scores):
                raise ValueError(f"{name}.scores_[{b}] is empty")


# -- checking a loaded model's parts ----------------------------------------------------------
def check_number(value: Any, name: str, allow_nan: bool = False) -> None:
    """Raise ValueError unless `value` is a real number, finite (or NaN where allowed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} is a {type(value).__name__}, not a number")
    if not (math.isfinite(value) or (allow_nan and math.isnan(value))):
        raise ValueError(f"{name} is {value}, not a finite number")


def check_array(value: Any, name: str, shape: tuple | None = None, ndim: int | None = None
                ) -> None:
    """Raise ValueError unless `value` is a numeric array of that shape (or number of
    dimensions) holding only finite values."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise ValueError(f"{name} is a {type(value).__name__}, not a numeric array")
    if (shape is not None and value.shape != shape) or (ndim is not None and
                                                        value.ndim != ndim):
        raise ValueError(f"{name} has shape {value.shape}, expected "
                         f"{shape if shape is not None else f'{ndim} dimension(s)'}")
    if not np.isfinite(value).all():
        raise ValueError(f"{name} holds values that are not finite (NaN or infinite)")


def check_mapping(value: Any, name: str, check_value: Callable[[Any, str], None]) -> None:
    """Raise ValueError unless `value` is a dict with text keys whose every value passes
    `check_value(value, "name['key']")`."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} is a {type(value).__name__}, not a dict")
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"{name} has a key of type {type(key).__name__}, not text")
        check_value(item, f"{name}[{key!r}]")
