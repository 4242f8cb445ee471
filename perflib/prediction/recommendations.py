"""Recommendations: the cheaper settings of a job worth pricing, and the advice for those that
save at least MIN_SAVING of its time."""
from __future__ import annotations

import numpy as np

from perflib.units import format_duration

MIN_SAVING = 0.10


def cheaper_variants(job: dict) -> list[tuple[str, str, dict]]:
    """(what changes, "old → new", job) for each cheaper setting worth pricing."""
    if job.get("passes"):
        return _cheaper_pass_variants(job)
    variants = []
    if job["steps"] > 10:
        fewer = max(10, int(round(job["steps"] * 2 / 3)))
        variants.append(("steps", f"steps {job['steps']} → {fewer}", {**job, "steps": fewer}))
    if max(job["width"], job["height"]) > 512:
        width, height = (_smaller_side(side) for side in (job["width"], job["height"]))
        variants.append(("resolution", f"resolution {job['width']}x{job['height']} → "
                         f"{width}x{height}", {**job, "width": width, "height": height}))
    if job["pipeline_type"] == "video" and job["frame_count"] > 16:
        frames = max(16, job["frame_count"] // 2)
        variants.append(("frame_count", f"frame_count {job['frame_count']} → {frames}",
                         {**job, "frame_count": frames}))
    if job["guidance_scale"] > 1:
        variants.append(("guidance_scale", f"guidance_scale {job['guidance_scale']:g} → 1 "
                         "(classifier-free guidance off)", {**job, "guidance_scale": 1.0}))
    return variants


def _cheaper_pass_variants(job: dict) -> list[tuple[str, str, dict]]:
    """The same advice for a job that lists its sampling passes: each change applies to every
    pass (fewer steps in each, every pass at 3/4 of its size)."""
    passes = job["passes"]
    variants = []
    steps = [p["steps"] for p in passes]
    if sum(steps) > 10:
        fewer = [max(1, int(round(n * 2 / 3))) for n in steps]
        variants.append(("steps", f"steps {'+'.join(map(str, steps))} → "
                         f"{'+'.join(map(str, fewer))}",
                         _with_passes(job, [{**p, "steps": n} for p, n in zip(passes, fewer)])))
    largest = max(passes, key=lambda p: p["width"] * p["height"])
    if max(largest["width"], largest["height"]) > 512:
        smaller = [{**p, "width": _smaller_side(p["width"]), "height": _smaller_side(p["height"])}
                   for p in passes]
        variants.append(("resolution", f"every pass at 3/4 size ({largest['width']}x"
                         f"{largest['height']} → {_smaller_side(largest['width'])}x"
                         f"{_smaller_side(largest['height'])})", _with_passes(job, smaller)))
    return variants


def _with_passes(job: dict, passes: list[dict]) -> dict:
    """`job` with new passes, its own columns following the first pass."""
    first = passes[0]
    return {**job, "passes": passes, "width": first["width"], "height": first["height"],
            "steps": first["steps"]}


def _smaller_side(side: int) -> int:
    return max(64, int(round(side * 0.75 / 64)) * 64)


def recommendations(variants, seconds: np.ndarray) -> list[str]:
    base = float(seconds[0])
    advice = []
    for (_, change, _), cheaper in zip(variants, seconds[1:]):
        saving = base - float(cheaper)
        if base > 0 and saving / base >= MIN_SAVING:
            advice.append(f"{change} saves about {format_duration(saving)} "
                          f"({saving / base:.0%})")
    return advice
