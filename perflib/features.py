"""Feature builders: one function turns job rows into the feature matrix for training,
estimating and the notebooks.

Token counts follow each model's latent geometry (:class:`perflib.config.ModelProfile`): the VAE's
spatial and temporal compression, the transformer's patch size, and whether self-attention spans
one frame or all of them. Without a profile, SD-style defaults apply.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from perflib.config import ModelProfile

# Every feature, with what it means. The cost model uses the *_work / *_tokens terms; the other
# families also see the rest.
FEATURE_DESCRIPTIONS = {
    "width": "image width in pixels",
    "height": "image height in pixels",
    "megapixels": "width × height / 1e6",
    "aspect_ratio": "width / height",
    "tokens_per_frame": "latent tokens per frame: (w / spatial factor / patch) × (h / ... / patch)",
    "frame_count": "frames generated (1 for images)",
    "latent_frames": "latent frames after temporal VAE compression: 1 + (frames − 1) // factor",
    "batch_size": "images or videos generated together",
    "steps": "denoising steps",
    "cfg_factor": "2 when guidance_scale > 1 (classifier-free guidance doubles the passes), else 1",
    "step_passes": "steps × cfg_factor: denoiser calls per sample (per-step overhead)",
    "total_tokens": "tokens_per_frame × latent_frames × batch: tokens the denoiser holds at once",
    "work_units": "total_tokens × steps × cfg_factor: token-steps of denoising work",
    "log_work_units": "natural log of work_units",
    "attention_span": "tokens one token attends to: per frame, or across all latent frames",
    "attention_work": "work_units × attention_span: self-attention grows with tokens squared",
    "decode_work": "tokens_per_frame × frame_count × batch: what the VAE decodes",
    "hour_of_day": "UTC hour the job was submitted",
    "day_of_week": "0 = Monday",
    "queue_depth": "jobs waiting when this one was submitted (0 when unknown)",
    "recent_seconds_per_work": "median seconds per work unit of the last jobs on the same GPU and"
                               " model that finished before this one was submitted",
    "pipeline_type": "image or video",
    "job_type": "what the job makes (character, scene, ...)",
    "sampler": "the scheduler / sampler",
    "model_name": "the denoiser",
    "gpu_name": "the device it ran on",
}
CATEGORICAL_FEATURES = ["pipeline_type", "job_type", "sampler", "model_name", "gpu_name"]
NUMERIC_FEATURES = [name for name in FEATURE_DESCRIPTIONS if name not in CATEGORICAL_FEATURES]
COST_TERMS = ["step_passes", "work_units", "attention_work", "decode_work"]
HISTORY_WINDOW = 50

_DEFAULTS = {"frame_count": 1, "batch_size": 1, "steps": 20, "guidance_scale": 7.5}


def build_features(jobs: pd.DataFrame, profiles: Mapping[str, ModelProfile] | None = None,
                   history: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The feature matrix for job rows (as the store returns them).

    ``recent_seconds_per_work`` comes from the rows themselves when they carry outcomes
    (``total_seconds`` and ``finished_at``) and no `history` is given, else from `history`
    (``{"gpu|model": seconds_per_work}``, as a trained model keeps it).
    """
    profiles = profiles or {}
    index = jobs.index
    width = _numeric(jobs, "width", index)
    height = _numeric(jobs, "height", index)
    frames = _numeric(jobs, "frame_count", index).clip(lower=1)
    batch = _numeric(jobs, "batch_size", index).clip(lower=1)
    steps = _numeric(jobs, "steps", index).clip(lower=1)
    guidance = _numeric(jobs, "guidance_scale", index)
    models = _text(jobs, "model_name", index)

    geometry = _geometry(models, profiles)
    spatial = geometry["vae_spatial_factor"] * geometry["patch_size"]
    tokens_per_frame = (width / spatial) * (height / spatial)
    temporal = geometry["vae_temporal_factor"]
    latent_frames = np.where(temporal > 1, 1 + (frames - 1) // temporal, frames)
    cfg = np.where(guidance > 1, 2.0, 1.0)
    total_tokens = tokens_per_frame * latent_frames * batch
    work = total_tokens * steps * cfg
    span = np.where(geometry["full_attention"], tokens_per_frame * latent_frames, tokens_per_frame)
    submitted = _submitted_at(jobs, index)

    features = pd.DataFrame({
        "width": width, "height": height,
        "megapixels": width * height / 1e6,
        "aspect_ratio": width / height,
        "tokens_per_frame": tokens_per_frame,
        "frame_count": frames,
        "latent_frames": latent_frames,
        "batch_size": batch, "steps": steps,
        "cfg_factor": cfg,
        "step_passes": steps * cfg,
        "total_tokens": total_tokens,
        "work_units": work,
        "log_work_units": np.log(work),
        "attention_span": span,
        "attention_work": work * span,
        "decode_work": tokens_per_frame * frames * batch,
        "hour_of_day": submitted.dt.hour.astype(float),
        "day_of_week": submitted.dt.dayofweek.astype(float),
        "queue_depth": _numeric(jobs, "queue_depth", index, default=0.0),
        "pipeline_type": _text(jobs, "pipeline_type", index),
        "job_type": _text(jobs, "job_type", index),
        "sampler": _text(jobs, "sampler", index),
        "model_name": models,
        "gpu_name": _text(jobs, "gpu_name", index),
    }, index=index)
    if history is None and {"total_seconds", "finished_at"} <= set(jobs.columns):
        features["recent_seconds_per_work"] = past_seconds_per_work(jobs, features)
    else:
        keys = history_keys(features)
        fallback = (history or {}).get("*", np.nan)
        features["recent_seconds_per_work"] = [(history or {}).get(k, fallback) for k in keys]
    return features[list(FEATURE_DESCRIPTIONS)]


def history_keys(features: pd.DataFrame) -> pd.Series:
    return features["gpu_name"] + "|" + features["model_name"]


def past_seconds_per_work(jobs: pd.DataFrame, features: pd.DataFrame,
                          window: int = HISTORY_WINDOW) -> np.ndarray:
    """For each job, the median seconds per work unit over the last `window` successful jobs of
    the same GPU and model that *finished before it was submitted* — never the job itself or
    anything later. NaN when there is no such job yet."""
    per_work = (pd.to_numeric(jobs["total_seconds"], errors="coerce") / features["work_units"])
    ok = _text(jobs, "status", jobs.index).isin(["success", "unknown"]) & per_work.notna()
    finished = pd.to_datetime(jobs["finished_at"], utc=True)
    submitted = _submitted_at(jobs, jobs.index)
    keys = history_keys(features)
    result = np.full(len(jobs), np.nan)
    positions = pd.Series(np.arange(len(jobs)), index=jobs.index)
    for key in keys.unique():
        members = keys == key
        done = (members & ok & finished.notna())
        order = finished[done].sort_values(kind="stable")
        if order.empty:
            continue
        rolling = per_work[order.index].rolling(window, min_periods=1).median().to_numpy()
        finish_ns = order.to_numpy().astype("datetime64[ns]").astype(np.int64)
        submit_ns = submitted[members].to_numpy().astype("datetime64[ns]").astype(np.int64)
        last_before = np.searchsorted(finish_ns, submit_ns, side="left") - 1
        values = np.where(last_before >= 0, rolling[np.clip(last_before, 0, None)], np.nan)
        result[positions[members].to_numpy()] = values
    return result


def latest_seconds_per_work(jobs: pd.DataFrame, features: pd.DataFrame,
                            window: int = HISTORY_WINDOW) -> dict[str, float]:
    """The history snapshot a trained model keeps: per "gpu|model", the median seconds per work
    unit of its last `window` successful jobs, plus "*" over all of them."""
    per_work = pd.to_numeric(jobs["total_seconds"], errors="coerce") / features["work_units"]
    ok = (_text(jobs, "status", jobs.index) == "success") & per_work.notna()
    frame = pd.DataFrame({"key": history_keys(features), "per_work": per_work,
                          "when": pd.to_datetime(jobs["finished_at"], utc=True)})[ok]
    frame = frame.sort_values("when", kind="stable")
    snapshot = {str(k): float(g.per_work.tail(window).median()) for k, g in frame.groupby("key")}
    if not frame.empty:
        snapshot["*"] = float(frame.per_work.tail(window).median())
    return snapshot


def _geometry(models: pd.Series, profiles: Mapping[str, ModelProfile]) -> dict[str, np.ndarray]:
    default = ModelProfile()
    chosen = [profiles.get(m, default) for m in models]
    return {field: np.array([getattr(p, field) for p in chosen], dtype=float if field !=
                            "full_attention" else bool)
            for field in ("vae_spatial_factor", "vae_temporal_factor", "patch_size",
                          "full_attention")}


def _numeric(jobs: pd.DataFrame, column: str, index, default: float | None = None) -> pd.Series:
    fill = _DEFAULTS.get(column, default)
    if column not in jobs:
        return pd.Series(fill if fill is not None else np.nan, index=index, dtype=float)
    values = pd.to_numeric(jobs[column], errors="coerce").astype(float)
    return values.fillna(fill) if fill is not None else values


def _text(jobs: pd.DataFrame, column: str, index) -> pd.Series:
    if column not in jobs:
        return pd.Series("unknown", index=index, dtype=object)
    return jobs[column].astype(object).where(jobs[column].notna(), "unknown").astype(str)


def _submitted_at(jobs: pd.DataFrame, index) -> pd.Series:
    for column in ("submitted_at", "started_at"):
        if column in jobs:
            values = pd.to_datetime(jobs[column], utc=True, errors="coerce")
            if values.notna().any():
                return values.fillna(pd.Timestamp.now(tz="UTC"))
    return pd.Series(pd.Timestamp.now(tz="UTC"), index=index)
