"""Shared checks for job parameters: one place that says what a valid value is."""
from __future__ import annotations

import re
from typing import Any

PIPELINE_TYPES = ("image", "video")
FINAL_STATUSES = ("success", "failed", "cancelled")
LIVE_STATUSES = ("queued", "running")  # jobs not finished yet, as services report them
STATUSES = FINAL_STATUSES + LIVE_STATUSES
MAX_SIDE_PX = 8192
MAX_FRAMES = 10_000
MAX_STEPS = 1_000
MAX_BATCH = 1_024

_STATUS_ALIASES = {"completed": "success", "succeeded": "success", "ok": "success",
                   "error": "failed", "failure": "failed", "canceled": "cancelled"}
_RESOLUTION = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_resolution(value: Any) -> tuple[int, int]:
    """``"768x512"`` → ``(768, 512)``; raises ValueError for anything else."""
    match = _RESOLUTION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not WIDTHxHEIGHT")
    width, height = int(match.group(1)), int(match.group(2))
    if not (0 < width <= MAX_SIDE_PX and 0 < height <= MAX_SIDE_PX):
        raise ValueError(f"{value!r}: each side must be between 1 and {MAX_SIDE_PX}")
    return width, height


def normalise_status(value: Any) -> str:
    """One of STATUSES, accepting common spellings (``completed``, ``error``)."""
    status = str(value).strip().lower()
    status = _STATUS_ALIASES.get(status, status)
    if status not in STATUSES:
        raise ValueError(f"{value!r} is not one of {', '.join(STATUSES)}")
    return status


def positive_int(value: Any, name: str, maximum: int | None = None) -> int:
    """A whole number ≥ 1 (and ≤ maximum when given)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer() or number < 1:
        raise ValueError(f"{name} must be a whole number ≥ 1, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")
    return int(number)


def _bounded_number(params: dict, name: str, minimum: float, maximum: float) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (minimum <= number <= maximum):
        raise ValueError(f"{name} must be between {minimum:g} and {maximum:g}, got {value!r}")
    return number


def validate_job_params(params: dict) -> dict:
    """Check an estimate request; return it normalised (width/height split out).

    Raises ValueError naming the field for anything missing or malformed.
    """
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    job = dict(params)
    pipeline = job.get("pipeline_type")
    if pipeline not in PIPELINE_TYPES:
        raise ValueError(f"pipeline_type must be one of {', '.join(PIPELINE_TYPES)}, "
                         f"got {pipeline!r}")
    if job.get("resolution") is not None:
        try:
            job["width"], job["height"] = parse_resolution(job["resolution"])
        except ValueError as exc:
            raise ValueError(f"resolution: {exc}") from None
    elif job.get("width") is not None and job.get("height") is not None:
        job["width"] = positive_int(job["width"], "width", MAX_SIDE_PX)
        job["height"] = positive_int(job["height"], "height", MAX_SIDE_PX)
    else:
        raise ValueError("resolution is required (WIDTHxHEIGHT)")
    if job.get("steps") is None:
        raise ValueError("steps is required")
    job["steps"] = positive_int(job["steps"], "steps", MAX_STEPS)
    for name, maximum in (("frame_count", MAX_FRAMES), ("batch_size", MAX_BATCH)):
        value = job.get(name)
        job[name] = 1 if value is None else positive_int(value, name, maximum)
    guidance = _bounded_number(job, "guidance_scale", 0.0, 100.0)
    job["guidance_scale"] = 7.5 if guidance is None else guidance
    for name in ("job_type", "sampler", "model_name", "gpu_name"):
        if job.get(name) is not None and not isinstance(job[name], str):
            raise ValueError(f"{name} must be text, got {job[name]!r}")
    return job
