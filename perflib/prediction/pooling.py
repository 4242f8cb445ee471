"""Speed factors pooled across (GPU, model) groups, so a GPU or model with few jobs borrows
strength from the rest.

A job's seconds are ``overhead + exp(offset) · compute`` of its model's reference cost: the
overhead terms (fixed and per-step, host-side work a faster device does not shorten) as they
are, the compute terms scaled by ``offset = gpu effect + model effect + pair effect``. Each effect
is a robust (least absolute log error) level of its jobs, shrunk toward its prior by empirical
Bayes: a GPU toward what its ``PERFLIB_GPU_PROFILES`` facts predict from the GPUs seen (else the
fleet's average), a model (how its jobs sit about its reference cost) and a (GPU, model) pair
toward zero. An effect with no jobs is its
prior, with the prior's variance, so an estimate for an unseen GPU or model is the pooled one
with an honestly wider interval.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator

from perflib.config import GpuProfile

OVERHEAD_TERMS = 2  # the cost design's first columns: fixed and per-step overhead
DEFAULT_GPU_SPREAD = 0.5  # log speed spread between GPUs, at least (fleets mix 1–3× speeds)
DEFAULT_MODEL_SPREAD = 0.5  # ... between models run on pooled cost coefficients
DEFAULT_PAIR_SPREAD = 0.15  # ... of a pair about its GPU and model, until pairs show theirs
PROFILE_SPREAD = 0.25  # how far achieved speed strays from what peak figures predict
MIN_SPREAD_GROUPS = 3  # groups needed before their effects' spread is measured
MIN_NOISE = 0.02
MEDIAN_EFFICIENCY = math.pi / 2  # variance of a median over that of a mean, normal noise
MAX_EFFECT = 4.0  # log factor: e⁴ ≈ 55× either way
SOURCES = ("observed", "pooled", "gpu_profile")


def split_cost(design: np.ndarray, coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(overhead, compute) seconds of each job's cost-design row under `coefficients`."""
    return (design[:, :OVERHEAD_TERMS] @ coefficients[:OVERHEAD_TERMS],
            design[:, OVERHEAD_TERMS:] @ coefficients[OVERHEAD_TERMS:])


def at_speed(design: np.ndarray, log_factor: np.ndarray) -> np.ndarray:
    """The cost design with each row's compute columns scaled by exp(`log_factor`): fitting
    it gives coefficients at the reference speed."""
    scaled = design.copy()
    scaled[:, OVERHEAD_TERMS:] *= np.exp(log_factor)[:, None]
    return scaled


def profile_capacity(profile: GpuProfile | None, other: GpuProfile | None) -> float | None:
    """Log of how much work `profile`'s GPU does per second relative to `other`'s, from the
    facts both give (the mean over peak FLOPs and memory bandwidth); None if none in common."""
    if profile is None or other is None:
        return None
    ratios = [math.log(getattr(profile, name) / getattr(other, name))
              for name in ("peak_tflops", "memory_bandwidth_gbps")
              if getattr(profile, name) and getattr(other, name)]
    return float(np.mean(ratios)) if ratios else None


class PooledSpeeds(BaseEstimator):
    """Shrunk GPU, model and pair effects on the compute part of each model's reference cost.

    ``fit`` takes each job's overhead and compute seconds at the reference speed, its seconds,
    GPU and model, the models that have their own reference cost (their jobs place the GPUs;
    all when none has), and the GPU profiles that may seed unseen GPUs.
    """

    def __init__(self, gpu_spread: float = DEFAULT_GPU_SPREAD,
                 model_spread: float = DEFAULT_MODEL_SPREAD,
                 profile_spread: float = PROFILE_SPREAD):
        self.gpu_spread = gpu_spread
        self.model_spread = model_spread
        self.profile_spread = profile_spread

    def fit(self, overhead, compute, seconds, gpus, models, own_models=(),
            gpu_profiles: Mapping[str, GpuProfile] | None = None) -> "PooledSpeeds":
        overhead, compute = np.asarray(overhead, float), np.asarray(compute, float)
        seconds = np.asarray(seconds, float)
        gpus, models = np.asarray(gpus).astype(str), np.asarray(models).astype(str)
        pairs = np.char.add(np.char.add(gpus, "|"), models)
        profiles = dict(gpu_profiles or {})
        offset = np.zeros(len(seconds))
        # GPU levels from the models with their own cost, centred on the jobs' average GPU.
        anchored = np.isin(models, list(own_models)) if len(own_models) else \
            np.ones(len(seconds), dtype=bool)
        raw = {gpu: _level(seconds[m], overhead[m], compute[m], offset[m])
               for gpu in np.unique(gpus) if (m := (gpus == gpu) & anchored).any()}
        centre = np.average([level for level, _ in raw.values()],
                            weights=[count for _, count in raw.values()]) if raw else 0.0
        raw = {gpu: (level - centre, count) for gpu, (level, count) in raw.items()}
        self.noise_ = self._noise(seconds[anchored], overhead[anchored], compute[anchored],
                                  gpus[anchored], raw)
        self._fit_gpus(raw, profiles)
        offset = offset + self._lookup(gpus, self.gpu_effect_)
        raw_models = {model: _level(seconds[m], overhead[m], compute[m], offset[m])
                      for model in np.unique(models) for m in [models == model]}
        self.model_spread_ = self._between(raw_models, self.model_spread)
        self.model_effect_, self.model_variance_ = self._shrink(raw_models, {},
                                                                self.model_spread_)
        offset = offset + self._lookup(models, self.model_effect_)
        raw_pairs = {pair: _level(seconds[m], overhead[m], compute[m], offset[m])
                     for pair in np.unique(pairs) for m in [pairs == pair]}
        self.pair_spread_ = self._between(raw_pairs, DEFAULT_PAIR_SPREAD, floor=0.05)
        self.pair_effect_, self.pair_variance_ = self._shrink(raw_pairs, {}, self.pair_spread_)
        self.pair_jobs_ = {pair: int(count) for pair, count in
                           zip(*np.unique(pairs, return_counts=True))}
        return self

    def _fit_gpus(self, raw: dict, profiles: Mapping[str, GpuProfile]) -> None:
        """GPU effects shrunk toward what profiles predict from the GPUs seen; GPUs with a
        profile and no jobs get that seed (``seeded_``)."""
        spread = self._between(raw, self.gpu_spread)
        seeds = {gpu: seed for gpu in set(raw) | set(profiles)
                 if (seed := self._profile_seed(gpu, raw, profiles)) is not None}
        priors = {gpu: (seeds[gpu], self.profile_spread) for gpu in seeds}
        self.gpu_effect_, self.gpu_variance_ = self._shrink(raw, priors, spread)
        self.seeded_ = {gpu: 1 for gpu in seeds if gpu not in raw}
        for gpu in self.seeded_:
            self.gpu_effect_[gpu] = float(seeds[gpu])
            self.gpu_variance_[gpu] = self.profile_spread ** 2
        self.gpu_spread_ = spread

    @staticmethod
    def _profile_seed(gpu: str, raw: dict, profiles: Mapping[str, GpuProfile]) -> float | None:
        """The effect `gpu`'s profile predicts: each other seen GPU's effect, less the log of
        how much faster `gpu` is by the facts both profiles give, averaged by their jobs."""
        guesses, weights = [], []
        for other, (level, count) in raw.items():
            faster = profile_capacity(profiles.get(gpu), profiles.get(other)) \
                if other != gpu else None
            if faster is not None:
                guesses.append(level - faster)
                weights.append(count)
        return float(np.average(guesses, weights=weights)) if guesses else None

    def _noise(self, seconds, overhead, compute, gpus, raw) -> float:
        residual = np.log(seconds) - np.log(np.maximum(
            overhead + np.exp(self._lookup(gpus, {g: v[0] for g, v in raw.items()})) * compute,
            1e-9))
        low, high = np.quantile(residual, [0.25, 0.75]) if len(residual) else (0.0, 0.0)
        return float(max((high - low) / 1.349, MIN_NOISE))

    def _shrink(self, raw: dict, priors: dict, spread: float) -> tuple[dict, dict]:
        """Posterior mean and variance of each level (normal prior `priors.get(key, (0,
        spread))`, a median's sampling variance from the noise)."""
        means, variances = {}, {}
        for key, (level, count) in raw.items():
            prior, prior_sd = priors.get(key, (0.0, spread))
            precision = count / (MEDIAN_EFFICIENCY * self.noise_ ** 2)
            weight = precision / (precision + prior_sd ** -2)
            means[str(key)] = float(weight * level + (1 - weight) * prior)
            variances[str(key)] = float(1.0 / (precision + prior_sd ** -2))
        return means, variances

    @staticmethod
    def _between(raw: dict, default: float, floor: float | None = None) -> float:
        """Spread of well-measured levels about zero where there are enough of them (never below
        `floor`, which defaults to `default`), else `default`."""
        levels = [level for level, count in raw.values() if count >= 10]
        if len(levels) < MIN_SPREAD_GROUPS:
            return default
        return float(max(np.std(levels), default if floor is None else floor))

    @staticmethod
    def _lookup(labels: np.ndarray, effects: Mapping[str, float]) -> np.ndarray:
        return np.array([effects.get(label, 0.0) for label in labels], dtype=float)

    def log_factor(self, gpus, models) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per job: the log factor on its compute seconds, that factor's variance, and where its
        speed comes from (:data:`SOURCES`: jobs of its GPU and model, the pooled fit, or its
        GPU's profile)."""
        effect, variance, source = [], [], []
        for gpu, model in zip(gpus, models):
            gpu, model = str(gpu), str(model)
            pair = f"{gpu}|{model}"
            effect.append(self.gpu_effect_.get(gpu, 0.0) + self.model_effect_.get(model, 0.0)
                          + self.pair_effect_.get(pair, 0.0))
            variance.append(self.gpu_variance_.get(gpu, self.gpu_spread_ ** 2)
                            + self.model_variance_.get(model, self.model_spread_ ** 2)
                            + self.pair_variance_.get(pair, self.pair_spread_ ** 2))
            source.append("observed" if self.pair_jobs_.get(pair, 0) else
                          "gpu_profile" if gpu in self.seeded_ else "pooled")
        return np.array(effect), np.array(variance), np.array(source, dtype=object)


def _level(seconds, overhead, compute, offset) -> tuple[float, int]:
    """(log factor on the compute seconds that best fits the jobs in least absolute log error,
    how many jobs)."""
    if not len(seconds):
        return 0.0, 0

    def loss(level: float) -> float:
        fitted = overhead + np.exp(offset + level) * compute
        return float(np.abs(np.log(seconds) - np.log(np.maximum(fitted, 1e-9))).sum())

    best = minimize_scalar(loss, bounds=(-MAX_EFFECT, MAX_EFFECT), method="bounded",
                           options={"xatol": 1e-4})
    return float(best.x), len(seconds)
