"""Where each denoiser's latent geometry comes from, for models whose own jobs cannot say.

A model's geometry is, in order: its configured profile (``configured``); the one its own
training jobs showed (``inferred``, see :mod:`perflib.prediction.geometry`); the published
geometry of the public architecture its name matches (``profile:<arch>``, see
:mod:`perflib.prediction.public_profiles`; with enough jobs, its own data may overrule it);
``default`` for a model with enough jobs whose data kept the default; a sibling's known geometry
(``sibling:<name>``) for a model with too few jobs to judge; else the SD-style default
(``default``). A sibling is, first, a known model of the same family stem (see
:func:`family_stem`: the name with version, size and precision suffixes stripped, or that stem
extended by more name parts — ``wan-dit-v2`` and ``wan-dit-s-lora`` are siblings of
``wan-dit``); else the only geometry known among the models that share its pipeline types.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import pandas as pd

from perflib.config import ModelProfile
from perflib.prediction.public_profiles import PROFILE, public_profile

CONFIGURED, INFERRED, DEFAULT = "configured", "inferred", "default"
SIBLING = "sibling:"
# Trailing name parts that name a version, size or precision of one family, not another family:
# v2, 2, 2.1, 14b, 1.3b, 500m, s / m / l / xl / xxl, tiny / small / base / large, fp16, int8 ...
SUFFIX = re.compile(r"v?\d+(\.\d+)*|\d+(\.\d+)?[bm]|x*[sml]|xl|tiny|small|base|medium|large"
                    r"|huge|(fp|bf|int|q)\d+|gguf|turbo|lightning|distilled|pruned|ema")
SEPARATORS = re.compile(r"[-_\s/:]+")


def family_stem(name: str) -> tuple[str, ...]:
    """The parts of a model name (lower case, split on - _ / : and spaces) with trailing version,
    size and precision parts stripped; a name that is all suffixes keeps its first part."""
    parts = [part for part in SEPARATORS.split(str(name).lower()) if part]
    while len(parts) > 1 and SUFFIX.fullmatch(parts[-1]):
        parts.pop()
    return tuple(parts)


def priors(models) -> dict[str, ModelProfile]:
    """The public profile of each of `models` that matches one."""
    return {model: found[1] for model in models if (found := public_profile(model))}


def carried_profiles(jobs: pd.DataFrame, configured: Mapping[str, ModelProfile],
                     inferred: Mapping[str, ModelProfile], judged: set[str]
                     ) -> tuple[dict[str, ModelProfile], dict[str, str]]:
    """The profile of each model of `jobs` that has one (configured, inferred, a public
    architecture's, or carried from a sibling to a model outside `judged`: those with too few
    jobs to judge their own), and every model's geometry source."""
    models = jobs.model_name.fillna("unknown").astype(str)
    counts = models.value_counts()
    public = priors(name for name in counts.index if name not in {**inferred, **configured})
    known = {name: profile for name, profile in {**public, **inferred, **configured}.items()
             if name in counts}
    profiles, sources = dict(known), {}
    pipelines = _pipelines(jobs, models)
    for model in counts.index:
        if model in configured:
            sources[model] = CONFIGURED
        elif model in public:
            sources[model] = PROFILE + public_profile(model)[0]
        elif model in inferred or model in judged:
            sources[model] = INFERRED if model in inferred else DEFAULT
        else:
            sibling = _sibling(model, known, counts, pipelines)
            sources[model] = DEFAULT if sibling is None else SIBLING + sibling
            if sibling is not None:
                profiles[model] = known[sibling]
    return profiles, sources


def _sibling(model: str, known: Mapping[str, ModelProfile], counts: pd.Series,
             pipelines: Mapping[str, set]) -> str | None:
    """The known model `model` takes its geometry from: the longest matching family stem (most
    jobs among equals), else the one geometry known in its pipeline types (None if none)."""
    kin = _stem_sibling(model, known, counts)
    if kin is not None:
        return kin
    near = [name for name in known if name != model and pipelines[name] & pipelines[model]]
    if len({known[name] for name in near}) == 1:
        return max(near, key=lambda name: (counts[name], name))
    return None


def _stem_sibling(model: str, known: Mapping[str, ModelProfile], counts: Mapping[str, int]
                  ) -> str | None:
    """The known model whose family stem `model`'s stem equals or extends, the longest stem
    first (then the most jobs); None if none."""
    stem = family_stem(model)
    kin = [name for name in known if name != model and family_stem(name)
           and stem[:len(family_stem(name))] == family_stem(name)]
    if not kin:
        return None
    return max(kin, key=lambda name: (len(family_stem(name)), counts.get(name, 0), name))


def unseen_geometry(model: str, profiles: Mapping[str, ModelProfile]
                    ) -> tuple[ModelProfile | None, str]:
    """For a model a trained model never saw: its public architecture's profile, else the
    profile of a family sibling among `profiles`, else none (the default), and which."""
    found = public_profile(model)
    if found:
        return found[1], PROFILE + found[0]
    sibling = _stem_sibling(model, profiles, {})
    return (None, DEFAULT) if sibling is None else (profiles[sibling], SIBLING + sibling)


def _pipelines(jobs: pd.DataFrame, models: pd.Series) -> dict[str, set]:
    """Each model's pipeline types in `jobs`."""
    pipelines = jobs.pipeline_type.fillna("unknown").astype(str).to_numpy()
    return {model: set(np.unique(pipelines[(models == model).to_numpy()]))
            for model in models.unique()}
