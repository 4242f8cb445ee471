"""What a job asks of the denoiser: latent tokens, work units and the other cost terms.

The one definition of work. Features use it for the models, and the store computes the same terms
once at write time into ``generation_performance`` columns, so SQL analyses aggregate exactly what
Python computes. Token counts follow each model's latent geometry
(:class:`perflib.config.ModelProfile`); without a profile, SD-style defaults apply.

A job may run several sampling passes (hires fix, refiner, upscale and resample): its work is the
sum over its passes, each at its own resolution, frames, batch, steps and guidance; what the VAE
decodes is the largest pass's output. A job without ``passes`` is one pass of its own columns.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from perflib.config import ModelProfile

# Job rows: a DataFrame as the store returns it, or a mapping of column sequences.
JobRows = Union[pd.DataFrame, Mapping[str, Sequence]]

STORED_TERMS = ("work_units", "attention_work", "decode_work")
DEFAULTS = {"frame_count": 1, "batch_size": 1, "steps": 20, "guidance_scale": 7.5}
_DEFAULT_PROFILE = ModelProfile()
_PASS_COLUMNS = ("width", "height", "frame_count", "batch_size", "steps", "guidance_scale")


def cost_terms(jobs: JobRows, profiles: Mapping[str, ModelProfile] | None = None
               ) -> dict[str, np.ndarray]:
    """Per job: ``tokens_per_frame``, ``latent_frames``, ``cfg_factor``, ``total_tokens`` and
    ``attention_span`` of its first pass; ``step_passes``, ``work_units`` and
    ``attention_work`` summed over its passes; ``decode_work`` and ``decode_work_per_sample`` of
    its largest output."""
    profiles = profiles or {}
    models = text_column(jobs, "model_name")
    base = _pass_terms({name: numeric_column(jobs, name) for name in _PASS_COLUMNS},
                       models, profiles)
    terms = dict(base)
    passes = jobs["passes"] if "passes" in jobs else None
    if passes is not None and any(isinstance(p, list) and p for p in passes):
        _sum_over_passes(terms, passes, models, profiles)
    return terms


def _pass_terms(columns: Mapping[str, np.ndarray], models: np.ndarray,
                profiles: Mapping[str, ModelProfile]) -> dict[str, np.ndarray]:
    """Every term of one pass per row, from its width, height, frames, batch, steps, guidance."""
    frames = np.maximum(columns["frame_count"], 1)
    batch = np.maximum(columns["batch_size"], 1)
    steps = np.maximum(columns["steps"], 1) * columns.get("model_calls_per_step", 1.0)
    spatial, temporal, full_attention = _geometry(models, profiles)
    tokens_per_frame = (columns["width"] / spatial) * (columns["height"] / spatial)
    latent_frames = np.where(temporal > 1, 1 + (frames - 1) // temporal, frames)
    cfg = np.where(columns["guidance_scale"] > 1, 2.0, 1.0)
    total_tokens = tokens_per_frame * latent_frames * batch
    work = total_tokens * steps * cfg
    span = np.where(full_attention, tokens_per_frame * latent_frames, tokens_per_frame)
    return {"tokens_per_frame": tokens_per_frame, "latent_frames": latent_frames,
            "cfg_factor": cfg, "total_tokens": total_tokens, "attention_span": span,
            "step_passes": steps * cfg, "work_units": work, "attention_work": work * span,
            "decode_work": tokens_per_frame * frames * batch,
            "decode_work_per_sample": tokens_per_frame * frames}


def _sum_over_passes(terms: dict[str, np.ndarray], passes: Sequence[Any], models: np.ndarray,
                     profiles: Mapping[str, ModelProfile]) -> None:
    """Replace the summed terms of rows that list their passes (in place)."""
    rows, flat = [], []
    for row, row_passes in enumerate(passes):
        if isinstance(row_passes, list):
            for one in row_passes:
                rows.append(row)
                flat.append(one)
    if not flat:
        return
    rows = np.asarray(rows)
    columns = {name: np.array([_number(p.get(name), DEFAULTS.get(name)) for p in flat])
               for name in _PASS_COLUMNS}
    columns["model_calls_per_step"] = np.array([_number(p.get("model_calls_per_step"), 1.0)
                                                for p in flat])
    pass_models = np.array([p.get("model_name") or models[r] for p, r in zip(flat, rows)],
                           dtype=object)
    per_pass = _pass_terms(columns, pass_models, profiles)
    listed = np.unique(rows)
    for name in ("step_passes", "work_units", "attention_work"):
        summed = np.bincount(rows, weights=per_pass[name], minlength=len(models))
        terms[name] = np.where(np.isin(np.arange(len(models)), listed), summed, terms[name])
    for name in ("decode_work", "decode_work_per_sample"):
        largest = np.full(len(models), -np.inf)
        np.maximum.at(largest, rows, per_pass[name])
        terms[name] = np.where(np.isfinite(largest), largest, terms[name])


def stored_terms(records: Sequence[Mapping[str, Any]],
                 profiles: Mapping[str, ModelProfile] | None = None) -> list[dict[str, float]]:
    """The cost terms kept in the job table, for job records about to be written (None where a
    record lacks the width, height or steps to compute them)."""
    if not records:
        return []
    columns = {name: [r.get(name) for r in records]
               for name in _PASS_COLUMNS + ("model_name", "passes")}
    terms = cost_terms(columns, profiles)
    known = ~(np.isnan(numeric_column(columns, "width")) | np.isnan(
        numeric_column(columns, "height")))
    has_passes = np.array([bool(p) for p in columns["passes"]])
    usable = known | has_passes
    return [{name: float(terms[name][i]) if usable[i] and np.isfinite(terms[name][i]) else None
             for name in STORED_TERMS} for i in range(len(records))]


def numeric_column(jobs: JobRows, column: str, default: float | None = None) -> np.ndarray:
    """A column as floats; missing values take :data:`DEFAULTS` (else `default`, else NaN)."""
    fill = DEFAULTS.get(column, default)
    if column not in jobs:
        return np.full(row_count(jobs), np.nan if fill is None else fill, dtype=float)
    try:  # numbers (or None) convert directly, much faster than pd.to_numeric on a few rows
        values = np.asarray(jobs[column], dtype=float)
    except (TypeError, ValueError):
        values = pd.to_numeric(pd.Series(jobs[column]), errors="coerce").to_numpy(dtype=float)
    return values if fill is None else np.where(np.isnan(values), fill, values)


def text_column(jobs: JobRows, column: str) -> np.ndarray:
    """A column as text; missing values read ``"unknown"``."""
    if column not in jobs:
        return np.full(row_count(jobs), "unknown", dtype=object)
    return np.array(["unknown" if v is None or v != v else str(v) for v in jobs[column]],
                    dtype=object)


def row_count(jobs: JobRows) -> int:
    """How many job rows `jobs` holds (a DataFrame or a mapping of column sequences)."""
    if isinstance(jobs, pd.DataFrame):
        return len(jobs)
    return len(next(iter(jobs.values()), ()))


def _number(value: Any, default: float | None) -> float:
    if value is None:
        return np.nan if default is None else float(default)
    return float(value)


def _geometry(models: np.ndarray, profiles: Mapping[str, ModelProfile]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per job: pixels per latent token side, temporal compression, full attention or not."""
    chosen = [profiles.get(m, _DEFAULT_PROFILE) for m in models]
    return (np.array([p.vae_spatial_factor * p.patch_size for p in chosen], dtype=float),
            np.array([p.vae_temporal_factor for p in chosen], dtype=float),
            np.array([p.full_attention for p in chosen], dtype=bool))
