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
from perflib.prediction.work_terms import (DEFAULTS, DEFAULT_PROFILE, LARGEST_TERMS,
                                           PASS_COLUMNS, SUMMED_TERMS, pass_number,
                                           pass_profile, pass_terms)

# Job rows: a DataFrame as the store returns it, or a mapping of column sequences.
JobRows = Union[pd.DataFrame, Mapping[str, Sequence]]


def cost_terms(jobs: JobRows, profiles: Mapping[str, ModelProfile] | None = None
               ) -> dict[str, np.ndarray]:
    """Per job: ``tokens_per_frame``, ``latent_frames``, ``cfg_factor``, ``total_tokens`` and
    ``attention_span`` of its first pass; ``step_passes``, ``work_units`` and
    ``attention_work`` summed over its passes; ``decode_work`` and ``decode_work_per_sample`` of
    its largest output."""
    profiles = profiles or {}
    models = text_column(jobs, "model_name")
    base = _pass_terms({name: numeric_column(jobs, name) for name in PASS_COLUMNS},
                       models, profiles)
    terms = dict(base)
    passes = jobs["passes"] if "passes" in jobs else None
    if passes is not None and any(isinstance(p, list) and p for p in passes):
        _sum_over_passes(terms, passes, models, profiles)
    return terms


def _pass_terms(columns: Mapping[str, np.ndarray], models: np.ndarray,
                profiles: Mapping[str, ModelProfile]) -> dict[str, np.ndarray]:
    """Every term of one pass per row, from its width, height, frames, batch, steps, guidance."""
    return pass_terms(columns, *_geometry(models, profiles), maximum=np.maximum, where=np.where)


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
    columns = {name: np.array([pass_number(p.get(name), DEFAULTS.get(name)) for p in flat])
               for name in PASS_COLUMNS}
    columns["model_calls_per_step"] = np.array([pass_number(p.get("model_calls_per_step"), 1.0)
                                                for p in flat])
    chosen = [pass_profile(p, profiles.get(p.get("model_name") or models[r], DEFAULT_PROFILE))
              for p, r in zip(flat, rows)]
    per_pass = pass_terms(columns, *_profile_arrays(chosen), maximum=np.maximum, where=np.where)
    listed = np.unique(rows)
    for name in SUMMED_TERMS:
        summed = np.bincount(rows, weights=per_pass[name], minlength=len(models))
        terms[name] = np.where(np.isin(np.arange(len(models)), listed), summed, terms[name])
    for name in LARGEST_TERMS:
        largest = np.full(len(models), -np.inf)
        np.maximum.at(largest, rows, per_pass[name])
        terms[name] = np.where(np.isfinite(largest), largest, terms[name])


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


def _geometry(models: np.ndarray, profiles: Mapping[str, ModelProfile]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per job: pixels per latent token side, temporal compression, full attention or not."""
    return _profile_arrays([profiles.get(m, DEFAULT_PROFILE) for m in models])


def _profile_arrays(chosen: Sequence[ModelProfile]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([p.vae_spatial_factor * p.patch_size for p in chosen], dtype=float),
            np.array([p.vae_temporal_factor for p in chosen], dtype=float),
            np.array([p.full_attention for p in chosen], dtype=bool))
