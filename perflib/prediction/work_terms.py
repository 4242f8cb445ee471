"""The one formula of a sampling pass's work terms, and the terms the store keeps per job.

Plain Python (no numpy): the store computes its stored columns here on the tracker's write path,
which a core install runs. :mod:`perflib.prediction.workload` evaluates the same formula on numpy
arrays for the models.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

from perflib.config import ModelProfile

STORED_TERMS = ("work_units", "attention_work", "decode_work")
DEFAULTS = {"frame_count": 1, "batch_size": 1, "steps": 20, "guidance_scale": 7.5}
PASS_COLUMNS = ("width", "height", "frame_count", "batch_size", "steps", "guidance_scale")
SUMMED_TERMS = ("step_passes", "work_units", "attention_work")
LARGEST_TERMS = ("decode_work", "decode_work_per_sample")
DEFAULT_PROFILE = ModelProfile()


def pass_terms(columns: Mapping[str, Any], spatial: Any, temporal: Any, full_attention: Any,
               maximum: Callable = max,
               where: Callable = lambda condition, yes, no: yes if condition else no
               ) -> dict[str, Any]:
    """Every term of one pass, from its width, height, frames, batch, steps and guidance and its
    model's geometry; numbers by default, arrays given numpy's `maximum` and `where`."""
    frames = maximum(columns["frame_count"], 1)
    batch = maximum(columns["batch_size"], 1)
    steps = maximum(columns["steps"], 1) * columns.get("model_calls_per_step", 1.0)
    tokens_per_frame = (columns["width"] / spatial) * (columns["height"] / spatial)
    latent_frames = where(temporal > 1, 1 + (frames - 1) // temporal, frames)
    cfg = where(columns["guidance_scale"] > 1, 2.0, 1.0)
    total_tokens = tokens_per_frame * latent_frames * batch
    work = total_tokens * steps * cfg
    span = where(full_attention, tokens_per_frame * latent_frames, tokens_per_frame)
    return {"tokens_per_frame": tokens_per_frame, "latent_frames": latent_frames,
            "cfg_factor": cfg, "total_tokens": total_tokens, "attention_span": span,
            "step_passes": steps * cfg, "work_units": work, "attention_work": work * span,
            "decode_work": tokens_per_frame * frames * batch,
            "decode_work_per_sample": tokens_per_frame * frames}


def geometry(profile: ModelProfile) -> tuple[float, float, bool]:
    """Pixels per latent token side, temporal compression, full attention or not."""
    return (float(profile.vae_spatial_factor * profile.patch_size),
            float(profile.vae_temporal_factor), bool(profile.full_attention))


def stored_terms(records: Sequence[Mapping[str, Any]],
                 profiles: Mapping[str, ModelProfile] | None = None) -> list[dict[str, float]]:
    """The cost terms kept in the job table, for job records about to be written (None where a
    record lacks the width, height or steps to compute them)."""
    return [_record_terms(record, profiles or {}) for record in records]


def _record_terms(record: Mapping[str, Any], profiles: Mapping[str, ModelProfile]
                  ) -> dict[str, float | None]:
    model = record.get("model_name")
    model = "unknown" if model is None or model != model else str(model)
    columns = {name: _column_value(record.get(name), DEFAULTS.get(name)) for name in PASS_COLUMNS}
    terms = _terms_for(columns, model, profiles)
    passes = record.get("passes")
    if isinstance(passes, list) and passes:
        _sum_over_passes(terms, passes, model, profiles)
    usable = not (math.isnan(columns["width"]) or math.isnan(columns["height"])) or bool(passes)
    return {name: float(terms[name]) if usable and math.isfinite(terms[name]) else None
            for name in STORED_TERMS}


def _terms_for(columns: Mapping[str, float], model: str,
               profiles: Mapping[str, ModelProfile]) -> dict[str, float]:
    return pass_terms(columns, *geometry(profiles.get(model, DEFAULT_PROFILE)))


def _sum_over_passes(terms: dict[str, float], passes: Sequence[Mapping[str, Any]], model: str,
                     profiles: Mapping[str, ModelProfile]) -> None:
    """Summed terms over the passes, and the largest pass's decode terms (in place)."""
    per_pass = []
    for one in passes:
        columns = {name: pass_number(one.get(name), DEFAULTS.get(name)) for name in PASS_COLUMNS}
        columns["model_calls_per_step"] = pass_number(one.get("model_calls_per_step"), 1.0)
        profile = profiles.get(one.get("model_name") or model, DEFAULT_PROFILE)
        per_pass.append(pass_terms(columns, *geometry(pass_profile(one, profile))))
    for name in SUMMED_TERMS:
        terms[name] = sum(one[name] for one in per_pass)
    for name in LARGEST_TERMS:
        values = [one[name] for one in per_pass]
        if all(math.isfinite(value) for value in values):
            terms[name] = max(values)


def pass_profile(one: Mapping[str, Any], profile: ModelProfile) -> ModelProfile:
    """`profile` with the VAE compression a pass's own latent states (a ComfyUI video latent
    node: ``vae_temporal_factor``, ``vae_spatial_factor``), its patching and attention kept."""
    stated = {name: int(one[name]) for name in ("vae_temporal_factor", "vae_spatial_factor")
              if isinstance(one.get(name), int) and one[name] >= 1}
    return dataclasses.replace(profile, **stated) if stated else profile


def pass_number(value: Any, default: float | None) -> float:
    """A pass's value as a float; None takes `default` (else NaN)."""
    if value is None:
        return math.nan if default is None else float(default)
    return float(value)


def _column_value(value: Any, fill: float | None) -> float:
    """A job column's value as a float: not a number reads NaN, and NaN takes `fill`."""
    try:
        number = math.nan if value is None else float(value)
    except (TypeError, ValueError):
        number = math.nan
    return float(fill) if fill is not None and math.isnan(number) else number
