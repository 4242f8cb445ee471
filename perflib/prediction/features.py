"""Feature builders: one function turns job rows into the feature matrix for training,
estimating and the notebooks.

The cost terms (latent tokens, work units, attention and decode work, summed over a job's
sampling passes) come from :mod:`perflib.prediction.workload`, the one definition of work that the
store also writes into the job table for SQL.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Mapping, Union

import numpy as np
import pandas as pd

from perflib.config import ModelProfile
from perflib.prediction.workload import JobRows, cost_terms, numeric_column, row_count, text_column

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
    "step_passes": "steps × cfg_factor: denoiser calls per sample (per-step overhead), over all"
                   " sampling passes",
    "total_tokens": "tokens_per_frame × latent_frames × batch: tokens the denoiser holds at once",
    "work_units": "total_tokens × steps × cfg_factor: token-steps of denoising work, summed"
                  " over the sampling passes",
    "log_work_units": "natural log of work_units",
    "attention_span": "tokens one token attends to: per frame, or across all latent frames",
    "attention_work": "work_units × attention_span: self-attention grows with tokens squared",
    "decode_work": "tokens_per_frame × frame_count × batch: what the VAE decodes",
    "decode_work_per_sample": "tokens_per_frame × frame_count: decoding that does not grow with"
                              " batch (decoders that batch samples for free)",
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
# Features that repeat with the clock, and their period: the time a job is asked about.
CYCLIC_FEATURES = {"hour_of_day": 24, "day_of_week": 7}
COST_TERMS = ["step_passes", "work_units", "attention_work", "decode_work",
              "decode_work_per_sample"]
HISTORY_WINDOW = 50
IQR_TO_SIGMA = 1.349
# A job far slower than expected (a neighbour's load, a throttled GPU): log(actual / expected)
# above its group's recent level by at least log(3) and beyond the level's one-sided 99% bound.
FAR_SLOWER_FACTOR = 3.0
FAR_SLOWER_Z = 2.326
MIN_LEVEL_JOBS = 5  # a group's recent level needs this many earlier jobs
STEP_JOBS = 6  # the latest jobs that, all off one side of the window's median, are a new level
STEP_MARGIN = float(np.log(1.1))  # ... each by at least this (log scale)

# Features: build_features' DataFrame, or feature_columns' dict of arrays.
Features = Union[pd.DataFrame, Mapping[str, np.ndarray]]


def build_features(jobs: pd.DataFrame, profiles: Mapping[str, ModelProfile] | None = None,
                   history: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The feature matrix for job rows (as the store returns them); see :func:`feature_columns`."""
    return pd.DataFrame(feature_columns(jobs, profiles, history), index=jobs.index)


def feature_columns(jobs: JobRows, profiles: Mapping[str, ModelProfile] | None = None,
                    history: Mapping[str, float] | None = None) -> dict[str, np.ndarray]:
    """Every feature of :data:`FEATURE_DESCRIPTIONS` as an array, for job rows: a DataFrame, or
    a mapping of column sequences (an estimate's few rows need no DataFrame built).

    ``recent_seconds_per_work`` comes from the rows themselves when they carry outcomes
    (``total_seconds`` and ``finished_at``) and no `history` is given, else from `history`
    (``{"gpu|model": seconds_per_work}``, as a trained model keeps it).
    """
    width, height = numeric_column(jobs, "width"), numeric_column(jobs, "height")
    terms = cost_terms(jobs, profiles)
    work = terms["work_units"]
    gpus, models = text_column(jobs, "gpu_name"), text_column(jobs, "model_name")
    hour, weekday = _hour_and_weekday(jobs)
    keys = gpus + "|" + models
    if history is None and "total_seconds" in jobs and "finished_at" in jobs:
        jobs = pd.DataFrame(jobs)
        recent = past_median(jobs, keys, outcome_seconds(jobs) / work)
    else:
        history = history or {}
        fallback = history.get("*", np.nan)
        recent = np.array([history.get(k, fallback) for k in keys], dtype=float)

    columns = {
        **terms,
        "width": width, "height": height,
        "megapixels": width * height / 1e6,
        "aspect_ratio": width / height,
        "frame_count": np.maximum(numeric_column(jobs, "frame_count"), 1),
        "batch_size": np.maximum(numeric_column(jobs, "batch_size"), 1),
        "steps": np.maximum(numeric_column(jobs, "steps"), 1),
        "log_work_units": np.log(work),
        "hour_of_day": hour,
        "day_of_week": weekday,
        "queue_depth": numeric_column(jobs, "queue_depth", default=0.0),
        "recent_seconds_per_work": recent,
        "pipeline_type": text_column(jobs, "pipeline_type"),
        "job_type": text_column(jobs, "job_type"),
        "sampler": text_column(jobs, "sampler"),
        "model_name": models,
        "gpu_name": gpus,
    }
    return {name: columns[name] for name in FEATURE_DESCRIPTIONS}


def outcome_seconds(jobs: pd.DataFrame) -> np.ndarray:
    """What each job took once it started — ``processing_seconds`` (model loading included, queue
    excluded; the queue is estimated apart) where recorded, else ``total_seconds``."""
    total = numeric_column(jobs, "total_seconds")
    if "processing_seconds" not in jobs:
        return total
    processing = numeric_column(jobs, "processing_seconds")
    return np.where(processing > 0, processing, total)


def history_keys(features: Features) -> np.ndarray:
    """The group each job's history is kept in: ``"gpu_name|model_name"``."""
    return np.asarray(features["gpu_name"], dtype=object) + "|" + np.asarray(
        features["model_name"], dtype=object)


def succeeded(jobs: pd.DataFrame) -> np.ndarray:
    """Jobs whose time is a real outcome (status success; rows without a status count)."""
    if "status" not in jobs:
        return np.ones(len(jobs), dtype=bool)
    return (jobs["status"].fillna("success") == "success").to_numpy()


def past_median(jobs: pd.DataFrame, keys: np.ndarray, values,
                window: int = HISTORY_WINDOW, min_periods: int = 1,
                known: np.ndarray | None = None, statistic: str = "median") -> np.ndarray:
    """For each job, the median of `values` over the last `window` successful jobs of the same
    GPU and model that *finished before it was submitted* — never the job itself or anything
    later, so it can be used on the past and the future alike. NaN where fewer than
    `min_periods` such jobs exist. `known` (a boolean mask) limits whose outcomes may be used.
    ``statistic="spread"`` gives their robust spread instead (see :func:`spread`);
    ``statistic="level"`` the median that follows a step (see :func:`level`)."""
    values = pd.Series(np.asarray(values, dtype=float), index=jobs.index)
    finished = _instants(jobs["finished_at"]) if "finished_at" in jobs else None
    if finished is None:
        return np.full(len(jobs), np.nan)
    submitted = _submitted_instants(jobs)
    usable = succeeded(jobs) & values.notna().to_numpy() & ~np.isnan(finished)
    if known is not None:
        usable &= known
    result = np.full(len(jobs), np.nan)
    for key in np.unique(keys):
        members = keys == key
        done = np.flatnonzero(members & usable)
        if not len(done):
            continue
        done = done[np.argsort(finished[done], kind="stable")]
        rolling = values.iloc[done].rolling(window, min_periods=min_periods)
        if statistic == "spread":
            rolling = (rolling.quantile(0.75) - rolling.quantile(0.25)) / IQR_TO_SIGMA
        elif statistic == "level":
            rolling = _rolling_level(values.iloc[done], rolling.median())
        else:
            rolling = rolling.median()
        rolling = np.asarray(rolling, dtype=float)
        wanted = np.flatnonzero(members)
        last_before = np.searchsorted(finished[done], submitted[wanted], side="left") - 1
        result[wanted] = np.where(last_before >= 0, rolling[np.clip(last_before, 0, None)],
                                  np.nan)
    return result


def latest_median(jobs: pd.DataFrame, keys: np.ndarray, values,
                  window: int = HISTORY_WINDOW, min_periods: int = 1,
                  statistic: str = "median", known: np.ndarray | None = None
                  ) -> dict[str, float]:
    """The history a trained model keeps: per "gpu|model", the median (or ``"spread"``) of
    `values` over its last `window` successful jobs, plus "*" over the last jobs of all
    groups. `known` (a boolean mask) limits which jobs count. ``statistic``: as for
    :func:`past_median`."""
    frame = pd.DataFrame({"key": keys,
                          "value": np.asarray(values, dtype=float),
                          "when": _instants(jobs["finished_at"])})
    usable = succeeded(jobs) & frame.value.notna().to_numpy()
    frame = frame[usable if known is None else usable & known]
    frame = frame.sort_values("when", kind="stable")
    summary = {"spread": spread, "level": level}.get(statistic, np.median)
    snapshot = {str(k): float(summary(g.value.tail(window))) for k, g in frame.groupby("key")
                if len(g) >= min_periods}
    if len(frame) >= min_periods:
        snapshot["*"] = float(summary(frame.value.tail(window)))
    return snapshot


def level(values) -> float:
    """The current level of `values` (oldest first): their median, unless the latest STEP_JOBS
    all sit more than STEP_MARGIN off one side of it — a step the median of a longer window
    follows only once half its jobs are past it — then the median of those latest jobs."""
    values = np.asarray(values, dtype=float)
    middle = float(np.median(values))
    latest = values[-STEP_JOBS:]
    if len(values) > STEP_JOBS and (latest.min() - middle > STEP_MARGIN
                                    or middle - latest.max() > STEP_MARGIN):
        return float(np.median(latest))
    return middle


def _rolling_level(values: pd.Series, middle: pd.Series) -> np.ndarray:
    """:func:`level` of each rolling window of `values`, given the windows' medians."""
    latest = values.rolling(STEP_JOBS, min_periods=STEP_JOBS)
    stepped = ((latest.min() - middle > STEP_MARGIN)
               | (middle - latest.max() > STEP_MARGIN)).to_numpy()
    return np.where(stepped, latest.median().to_numpy(), middle.to_numpy())


def far_slower(log_ratio, level, level_spread) -> np.ndarray:
    """Which jobs ran far slower than expected: `log_ratio` (log actual ÷ cost model) above
    their group's recent `level` by at least log(FAR_SLOWER_FACTOR) and beyond the level's 99%
    bound (FAR_SLOWER_Z × its robust spread; no bound where the spread is unknown). Never
    flagged where the level is unknown."""
    excess = np.asarray(log_ratio, dtype=float) - np.asarray(level, dtype=float)
    bound = np.maximum(np.log(FAR_SLOWER_FACTOR),
                       FAR_SLOWER_Z * np.nan_to_num(np.asarray(level_spread, dtype=float)))
    return np.isfinite(excess) & (excess >= bound)


def far_slower_jobs(jobs: pd.DataFrame, keys: np.ndarray, log_ratio
                    ) -> tuple[np.ndarray, np.ndarray]:
    """For job rows: which ran far slower than expected (see :func:`far_slower`), the level
    being the median log ratio of the group's last HISTORY_WINDOW jobs that finished before
    each was submitted; and that level (NaN where fewer than MIN_LEVEL_JOBS)."""
    level = past_median(jobs, keys, log_ratio, min_periods=MIN_LEVEL_JOBS)
    level_spread = past_median(jobs, keys, log_ratio, min_periods=2 * MIN_LEVEL_JOBS,
                               statistic="spread")
    return far_slower(log_ratio, level, level_spread), level


def spread(values) -> float:
    """Robust spread of `values`: interquartile range / 1.349 (the standard deviation, were
    they normal), untouched by the few stragglers a shared machine produces."""
    low, high = np.quantile(np.asarray(values, dtype=float), [0.25, 0.75])
    return float((high - low) / IQR_TO_SIGMA)


def _instants(values) -> np.ndarray:
    """Timestamps as float seconds since the epoch (NaN where missing; naive ones are UTC)."""
    if isinstance(values, list) and all(isinstance(v, datetime) and v.tzinfo for v in values):
        return np.array([v.timestamp() for v in values], dtype=float)  # an estimate's few rows
    stamps = pd.to_datetime(pd.Series(values), utc=True, errors="coerce")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return seconds.to_numpy(dtype=float)


def _hour_and_weekday(jobs: JobRows) -> tuple[np.ndarray, np.ndarray]:
    seconds = _submitted_instants(jobs)
    days = np.floor(seconds / 86400.0)
    return np.floor((seconds - days * 86400.0) / 3600.0), (days + 3) % 7  # 1970-01-01: Thursday


def _submitted_instants(jobs: JobRows) -> np.ndarray:
    """When each job was submitted (else started; else now), as seconds since the epoch."""
    now = time.time()
    for column in ("submitted_at", "started_at"):
        if column in jobs:
            seconds = _instants(jobs[column])
            if not np.isnan(seconds).all():
                return np.where(np.isnan(seconds), now, seconds)
    return np.full(row_count(jobs), now)


def job_columns(jobs: list[Mapping[str, Any]], submitted: datetime | None = None
                ) -> dict[str, list]:
    """Checked estimate requests as columns (what a model pass takes), submitted at
    `submitted` (default: now)."""
    names = {name for job in jobs for name in job}
    columns = {name: [job.get(name) for job in jobs] for name in names}
    when = pd.Timestamp.now(tz="UTC") if submitted is None else pd.Timestamp(submitted)
    columns["submitted_at"] = [when] * len(jobs)
    return columns
