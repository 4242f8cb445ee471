"""A denoiser's latent geometry, inferred from its own jobs when no profile is configured.

Only two parts of a :class:`~perflib.config.ModelProfile` change the *shape* of the cost model:
the VAE's temporal compression and whether attention spans all frames. Spatial factor and patch
size scale tokens by a constant, which the cost model's coefficients absorb. So for each video
model without a profile, the cost model is fitted under each candidate geometry on the earlier
(or smaller) part of the training jobs and scored on the later (or larger) part; a candidate
replaces the SD-style default only when it predicts clearly better there.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np
import pandas as pd

from perflib.config import ModelProfile
from perflib.prediction.features import build_features
from perflib.prediction.models import CostModel

TEMPORAL_FACTORS = (1, 4, 8)  # none; Wan / CogVideoX / HunyuanVideo; LTX-Video
MIN_JOBS = 20  # on each side of the split, per model (fewer choose by chance)
MIN_IMPROVEMENT = 0.10  # relative drop of the held-out error a candidate must bring


def candidate_profiles(prior: ModelProfile = ModelProfile()) -> list[ModelProfile]:
    """The geometries tried, `prior` (the SD-style default unless a public profile says
    otherwise) first; the others keep its spatial factor and patch size."""
    others = [replace(prior, vae_temporal_factor=factor, full_attention=full)
              for full in (False, True) for factor in TEMPORAL_FACTORS]
    return [prior] + [profile for profile in others if profile != prior]


def infer_profiles(jobs: pd.DataFrame, seconds: np.ndarray, fit_positions: np.ndarray,
                   score_positions: np.ndarray, configured: Mapping[str, ModelProfile],
                   priors: Mapping[str, ModelProfile] | None = None
                   ) -> dict[str, ModelProfile]:
    """Profiles for the models of `jobs` that have none configured and make videos of more than
    one length, chosen on the given row positions (both inside the training window); a model's
    prior (its public profile) stands unless another candidate clearly beats it."""
    if "frame_count" not in jobs:
        return {}
    models = jobs.model_name.fillna("unknown").astype(str).to_numpy()
    frames = pd.to_numeric(jobs.frame_count, errors="coerce").to_numpy()
    inferred = {}
    for model in np.unique(models):
        mine = models == model
        if model in configured or len(np.unique(frames[mine & ~np.isnan(frames)])) < 2:
            continue
        fit = fit_positions[mine[fit_positions]]
        score = score_positions[mine[score_positions]]
        if len(fit) < MIN_JOBS or len(score) < MIN_JOBS:
            continue
        candidates = candidate_profiles((priors or {}).get(model, ModelProfile()))
        errors = [_held_out_error(jobs, seconds, fit, score, {model: profile})
                  for profile in candidates]
        best = int(np.argmin(errors))
        if best and errors[best] < (1 - MIN_IMPROVEMENT) * errors[0]:
            inferred[model] = candidates[best]
    return inferred


def judged_models(jobs: pd.DataFrame, fit_positions: np.ndarray, score_positions: np.ndarray
                  ) -> set[str]:
    """The models with enough jobs on both sides of the split for their own jobs to judge
    their geometry (fewer jobs cannot, and take a sibling's, see
    :mod:`perflib.prediction.geometry_sources`)."""
    models = jobs.model_name.fillna("unknown").astype(str).to_numpy()
    fit = pd.Series(models[fit_positions]).value_counts()
    score = pd.Series(models[score_positions]).value_counts()
    return {model for model in np.unique(models)
            if fit.get(model, 0) >= MIN_JOBS and score.get(model, 0) >= MIN_JOBS}


def _held_out_error(jobs: pd.DataFrame, seconds: np.ndarray, fit: np.ndarray,
                    score: np.ndarray, profiles: Mapping[str, ModelProfile]) -> float:
    """Median |log(actual / cost model)| on `score` for a cost model fitted on `fit`."""
    features = build_features(jobs.iloc[np.concatenate([fit, score])], profiles, history={})
    cost_model = CostModel().fit(features.iloc[:len(fit)], seconds[fit])
    predicted = cost_model.predict(features.iloc[len(fit):])
    return float(np.median(np.abs(np.log(seconds[score]) - np.log(predicted))))
