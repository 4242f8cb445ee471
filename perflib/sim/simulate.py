"""Production-history simulator: weeks of realistic diffusion jobs, written through the store.

New users, notebooks and tests get data that behaves like an anime image/video render farm, with
known incidents planted in it (and their ground truth written beside it), so trends, bottleneck
detection and time prediction can be checked against what really happened.

Generative model
----------------
Everything random comes from ``numpy.random.default_rng([seed, day, stream])``: one generator per
simulated day, so a seed gives the same history every time. Per-job random numbers are drawn
before any incident is applied, so a history with and without an incident are identical before it
starts, and after it ends differ only through the queue and loaded models it leaves behind (and,
after a backlog, in job ids).

* **Arrivals** — a non-homogeneous Poisson process, piecewise constant per hour:
  ``rate = jobs_per_day/24 × hourly(h) × weekday(d)`` with both profiles normalised so a week
  averages ``jobs_per_day``. Nights are quiet (≈0.1× the mean rate at 03:00 UTC), working hours
  busy (≈2.7× at 14:00 on a weekday, with a lunch dip at 12:00), weekends at ≈40% of a weekday.
* **Jobs** — 65% image, 35% video. Image job types character/background/keyframe and video job
  types scene/loop/trailer each have their own resolution mix (backgrounds are landscape,
  characters portrait; trailers are long and wide, loops short and square), frame counts
  (video 16–120), steps (image 20–40, video 20–30), batch (image 1–4, video 1), guidance scale
  (mostly > 1) and sampler. Images use ``sdxl-base`` or ``anything-v5`` (SD1.5-class, preferred at
  ≤768 px); videos ``animatediff-v3`` or ``wan2.1-1.3b``.
* **Fleet** — ``gpus`` devices, ``gpus_per_host`` to a host (``render-01``, ``render-02``, …,
  each GPU with its ``gpu_index`` on its host), alternating NVIDIA GeForce RTX 4090 (24 GB,
  speed 1.0) and NVIDIA A100-SXM4-80GB (80 GB, 1.3× faster).
* **Cost model** (seconds on an RTX 4090) — with ``tokens = (w/8)·(h/8)`` latent tokens per
  frame, ``cfg = 2 if guidance_scale > 1 else 1`` and
  ``work = tokens × frames × batch × steps × cfg``:

  - preprocessing (prompt encoding, conditioning, latent set-up): 1–3 s, on the CPU;
  - generation: ``model_factor × (A·work + B·work·tokens)`` — a linear term plus attention, which
    is quadratic in the tokens of a frame — divided by the GPU's speed;
  - decoding: ``C × tokens × frames × batch`` (the VAE), divided by the GPU's speed.

  A, B and C make a 1024² 30-step SDXL image ≈11 s and a 768² 60-frame 25-step AnimateDiff
  video ≈165 s on a 4090. GPU time carries lognormal noise (σ = 0.08) and 0.5% of jobs are
  stragglers, 3–10× slower.
* **Model switches** — when a GPU's previous job used another model, the job first loads its
  weights (``init_seconds`` 4–15 s depending on the model), else ≈0.2 s. Init is part of
  ``processing_seconds``; the phases cover the rest.
* **Scheduling** — FIFO over the fleet: each job, in submission order, starts on the GPU that is
  free first (when several are idle, the one that last ran the same model if it is idle, else
  the one idle longest). ``queue_seconds`` therefore emerges from load, and ``queue_depth`` is
  the number of earlier jobs still waiting when the job is submitted. Jobs that would still be
  running at ``end`` are not in the history (their records would not be written yet).
* **Failures** — VRAM need is ``context + weights + per-token activations × tokens × frames ×
  batch`` for the model. Where it exceeds the GPU's memory the job fails early with
  ``OutOfMemoryError`` (PyTorch's "CUDA out of memory. Tried to allocate …" message) and its VRAM
  peak sits at the card's capacity: the longest wide videos on a 4090 do. Another 0.5% fail at a
  random point with a ``RuntimeError``. A clean history fails about 1% of jobs.
* **Resources** — each phase has its own GPU and CPU utilisation (generation 75–99% GPU, higher
  for bigger latents; preprocessing mostly CPU); the job's averages are time-weighted over its
  phases, and power and temperature follow utilisation and duration. RAM holds the process, a
  CPU copy of the weights and the decoded frames.
* **Feedback** — 60% of jobs carry ``predicted_seconds``: the clean cost model's processing time
  (model load included) on the assigned GPU times lognormal noise (σ = 0.12), as an estimator given
  before the run would produce (it does not know about incidents). 20% of successful jobs carry
  a 1–5 ``user_rating``, a point lower after a long wait.

Incidents
---------
:class:`Incident` plants one known problem; it affects jobs *submitted* on the days from
``start`` to ``end`` inclusive (UTC), optionally only one ``pipeline_type`` / ``job_type``
(``None`` = every job it can apply to). ``magnitude`` means:

============================  ====================================================================
``driver_regression``         GPU time (generation and decoding) × (1 + magnitude): a step change
``queue_backlog``             arrival rate × (1 + magnitude): the extra jobs (of
                              ``pipeline_type``, if set; ``job_type`` is ignored) come in batches
                              of ``burst_size`` on average, as a script submits them
``cpu_bound_preprocessing``   preprocessing grows by magnitude × the job's GPU time and saturates
                              the CPU; the GPU mostly waits
``vram_heavy_model``          this share of image jobs switch to ``model_name``, whose VRAM need
                              exceeds a 24 GB card (OOM there), not an 80 GB one
============================  ====================================================================

:func:`default_incidents` places one of each after a two-week clean baseline.

Job ids are ``sim-<seed>-<n>``, ``n`` counting the arrivals in order, so writing the same
simulation twice stores it once. Every record carries ``simulated=True``, so simulated jobs are
never taken for real ones (``perflib purge --simulated`` removes them).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import deque
from datetime import date, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from perflib.sim.records import job_records
from perflib.sim.spec import (A_LINEAR, BURST_SECONDS, B_ATTENTION, CUDA_CONTEXT_MB, C_DECODE,
                              EXPECTED_BOTTLENECKS, FRAME_MIX, GPU_KINDS, GUIDANCE_SCALES,
                              HEAVY_MODEL, HOURLY_PROFILE, IMAGE_BATCH, IMAGE_SHARE, IMAGE_STEPS,
                              INCIDENT_KINDS, JOB_TYPES, JOB_TYPE_SHARES,
                              LARGE_IMAGE_ANYTHING_SHARE, MODELS, PIPELINES, RANDOM_ERROR_SHARE,
                              RESOLUTIONS, RESOLUTION_MIX, SAMPLERS, SMALL_IMAGE_ANYTHING_SHARE,
                              STRAGGLER_SHARE, VIDEO_FRAMES, VIDEO_STEPS, WAN_SHARE,
                              WEEKDAY_PROFILE, Jobs, categorical)

if TYPE_CHECKING:
    from perflib.store import Store

log = logging.getLogger(__name__)

_DAY = 86400.0
_HOUR = 3600.0


# -- public types -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Incident:
    """A known problem planted in the history (see the module docstring for `magnitude`)."""

    kind: str
    start: date             # first affected day (UTC)
    end: date | None        # last affected day, inclusive; None = until the end of the history
    pipeline_type: str | None = None
    job_type: str | None = None
    magnitude: float = 0.3
    model_name: str = "sdxl-refiner-hires"      # vram_heavy_model: the new model
    burst_size: float = 8.0                     # queue_backlog: mean jobs per submitted batch

    def __post_init__(self):
        if self.kind not in INCIDENT_KINDS:
            raise ValueError(f"unknown incident kind {self.kind!r}; one of {INCIDENT_KINDS}")
        if self.end is not None and self.end < self.start:
            raise ValueError(f"incident ends ({self.end}) before it starts ({self.start})")
        if self.pipeline_type not in (None, *PIPELINES):
            raise ValueError(f"unknown pipeline_type {self.pipeline_type!r}")
        if self.job_type not in (None, *JOB_TYPES):
            raise ValueError(f"unknown job_type {self.job_type!r}")
        if self.magnitude < 0:
            raise ValueError("magnitude must not be negative")
        if self.burst_size < 1:
            raise ValueError("burst_size must be at least 1")

    def as_ground_truth(self) -> dict[str, Any]:
        """The incident as one JSON-ready ground-truth entry."""
        return {
            "kind": self.kind,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
            "pipeline_type": self.pipeline_type,
            "job_type": self.job_type,
            "magnitude": self.magnitude,
            "model_name": self.model_name if self.kind == "vram_heavy_model" else None,
            "burst_size": self.burst_size if self.kind == "queue_backlog" else None,
            "expected_bottleneck": list(EXPECTED_BOTTLENECKS[self.kind]),
        }


@dataclasses.dataclass
class SimulationResult:
    """What :func:`simulate_history` wrote."""

    jobs: int               # jobs in the simulated history
    failed: int
    start: datetime         # the history covers [start, end)
    end: datetime
    gpus: int
    incidents: list[Incident]
    ground_truth_path: Path | None
    inserted: int = 0       # jobs new to the store (0 when the same run is repeated)


# -- entry points -----------------------------------------------------------------------------
def simulate_history(store: Store, weeks: int = 8, gpus: int = 2, seed: int = 0,
                     end: datetime | None = None, incidents: Sequence[Incident] = (),
                     jobs_per_day: float = 180.0, ground_truth_path: str | Path | None = None,
                     batch_size: int = 5000, gpus_per_host: int = 1) -> SimulationResult:
    """Write `weeks` of simulated job history ending at `end` (default: this hour) into `store`.

    Job ids are ``sim-<seed>-<n>``, so running the same simulation again adds nothing.
    """
    start, end = history_window(end, weeks)
    incidents = list(incidents)
    jobs = failed = inserted = 0
    records = generate_jobs(weeks=weeks, gpus=gpus, seed=seed, end=end, incidents=incidents,
                            jobs_per_day=jobs_per_day, gpus_per_host=gpus_per_host)
    while batch := list(islice(records, batch_size)):
        inserted += store.write_jobs(batch)
        jobs += len(batch)
        failed += sum(record["status"] == "failed" for record in batch)
    path = None
    if ground_truth_path is not None:
        path = Path(ground_truth_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([i.as_ground_truth() for i in incidents], indent=2) + "\n")
    log.info("simulated %d jobs (%d failed, %d new) from %s to %s on %d GPU(s)", jobs, failed,
             inserted, start, end, gpus)
    return SimulationResult(jobs=jobs, failed=failed, start=start, end=end, gpus=gpus,
                            incidents=incidents, ground_truth_path=path, inserted=inserted)


def default_incidents(end: date, weeks: int) -> list[Incident]:
    """One incident of each kind, in separate periods after a two-week clean baseline.

    Counting back from `end` (an 8-week history): a VRAM-heavy model on five days two weeks
    before the end, CPU-bound background preprocessing for a week before that, a queue backlog
    for a week in the middle, and a video driver regression from 10 days before the end on.
    Shorter histories get the same layout compressed into the weeks after the baseline.
    """
    if isinstance(end, datetime):
        end = end.date()
    days = weeks * 7
    if days < 21:
        raise ValueError("default incidents need at least 3 weeks: 2 clean, then the incidents")
    # (kind, days before end where it starts, its length in days; None = until the end)
    layout = [("queue_backlog", 36, 7), ("cpu_bound_preprocessing", 26, 7),
              ("vram_heavy_model", 17, 5), ("driver_regression", 10, None)]
    scale = min(1.0, (days - 14) / 36)
    settings = {
        "driver_regression": dict(pipeline_type="video", magnitude=0.3),
        "queue_backlog": dict(magnitude=2.0),
        "cpu_bound_preprocessing": dict(pipeline_type="image", job_type="background",
                                        magnitude=1.5),
        "vram_heavy_model": dict(pipeline_type="image", magnitude=0.4),
    }
    incidents = []
    for kind, days_before, length in layout:
        first = end - timedelta(days=max(1, round(days_before * scale)))
        last = (None if length is None
                else first + timedelta(days=max(1, round(length * scale)) - 1))
        incidents.append(Incident(kind, first, last, **settings[kind]))
    return incidents


def history_window(end: datetime | None, weeks: int) -> tuple[datetime, datetime]:
    """``(start, end)`` of a history of `weeks` ending at `end` (default: now, to the hour)."""
    if weeks <= 0:
        raise ValueError("weeks must be positive")
    if end is None:
        end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    elif end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    else:
        end = end.astimezone(timezone.utc)
    return end - timedelta(weeks=weeks), end


def generate_jobs(weeks: int = 8, gpus: int = 2, seed: int = 0, end: datetime | None = None,
                  incidents: Sequence[Incident] = (), jobs_per_day: float = 180.0,
                  gpus_per_host: int = 1) -> Iterator[dict[str, Any]]:
    """Job records (with phases) of the simulated history, in submission order; no database.

    The parameters mean what they mean for :func:`simulate_history`, which writes these records.
    """
    if gpus < 1:
        raise ValueError("gpus must be at least 1")
    if gpus_per_host < 1:
        raise ValueError("gpus_per_host must be at least 1")
    if jobs_per_day < 0:
        raise ValueError("jobs_per_day must not be negative")
    start, end = history_window(end, weeks)
    incidents = list(incidents)
    fleet = _Fleet(gpus, gpus_per_host, incidents)
    start_ts, end_ts = start.timestamp(), end.timestamp()
    number = 0
    for day in range(math.ceil((end_ts - start_ts) / _DAY)):
        day_start = start_ts + day * _DAY
        jobs = _draw_day(seed, day, day_start, min(day_start + _DAY, end_ts), jobs_per_day,
                         incidents, fleet)
        if jobs is None:
            continue
        _apply_incidents(jobs, incidents, fleet)
        _costs(jobs, fleet)
        _schedule(jobs, fleet)
        keep = jobs.finish <= end_ts        # still running at the end: not recorded yet
        records = job_records(jobs, fleet, keep, seed, number)
        number += len(jobs.submit)
        yield from records


# -- simulation steps -------------------------------------------------------------------------
class _Fleet:
    """The GPUs, the models in play, and the scheduler's state carried from day to day."""

    def __init__(self, gpus: int, gpus_per_host: int, incidents: Sequence[Incident]):
        self.kinds = [g % len(GPU_KINDS) for g in range(gpus)]
        self.hostnames = [f"render-{g // gpus_per_host + 1:02d}" for g in range(gpus)]
        self.gpu_indices = [g % gpus_per_host for g in range(gpus)]   # on its host
        names = list(MODELS)
        names += sorted({i.model_name for i in incidents if i.kind == "vram_heavy_model"}
                        - set(names))
        self.model_names = names
        self.specs = [MODELS.get(name, HEAVY_MODEL) for name in names]
        self.free_at = [-math.inf] * gpus           # when each GPU finishes its last job
        self.loaded = [-1] * gpus                   # model code on each GPU
        self.last_gpu = [-1] * len(names)           # per model: the GPU that last ran it
        self.waiting: deque[float] = deque()        # start times of jobs not started yet

    def spec_array(self, attribute: str) -> np.ndarray:
        return np.array([getattr(spec, attribute) for spec in self.specs], dtype=float)


def _hourly_rates(hour_starts: np.ndarray, jobs_per_day: float) -> np.ndarray:
    """Expected arrivals per hour starting at each of `hour_starts` (epoch seconds)."""
    norm = np.outer(WEEKDAY_PROFILE, HOURLY_PROFILE).mean()
    days = np.floor(hour_starts / _DAY).astype(np.int64)
    hours = ((hour_starts - days * _DAY) // _HOUR).astype(np.int64)
    weekdays = (days + 3) % 7                       # 1970-01-01 was a Thursday
    return jobs_per_day / 24 * HOURLY_PROFILE[hours] * WEEKDAY_PROFILE[weekdays] / norm


def _epoch_day(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def _in_window(epoch_days: np.ndarray, incident: Incident) -> np.ndarray:
    inside = epoch_days >= _epoch_day(incident.start)
    if incident.end is not None:
        inside &= epoch_days <= _epoch_day(incident.end)
    return inside


def _draw_day(seed: int, day: int, t0: float, t1: float, jobs_per_day: float,
              incidents: Sequence[Incident], fleet: _Fleet) -> Jobs | None:
    """Arrivals in ``[t0, t1)`` with their parameters and per-job random numbers."""
    hour_starts = np.arange(t0, t1, _HOUR)
    hour_lengths = np.minimum(hour_starts + _HOUR, t1) - hour_starts
    rates = _hourly_rates(hour_starts, jobs_per_day) * hour_lengths / _HOUR
    parts = [_draw_arrivals(np.random.default_rng([seed, day, 0]), hour_starts, hour_lengths,
                            rates, None, fleet)]
    hour_days = np.floor(hour_starts / _DAY).astype(np.int64)
    for number, incident in enumerate(incidents, start=1):
        if incident.kind == "queue_backlog":
            extra = rates * incident.magnitude * _in_window(hour_days, incident)
            if extra.any():
                parts.append(_draw_arrivals(np.random.default_rng([seed, day, number]),
                                            hour_starts, hour_lengths, extra,
                                            incident.pipeline_type, fleet, incident.burst_size))
    parts = [part for part in parts if part is not None]
    if not parts:
        return None
    arrays = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    order = np.argsort(arrays["submit"], kind="stable")
    return Jobs(**{name: values[order] for name, values in arrays.items()})


def _pick(u: np.ndarray, table: tuple[tuple, tuple]) -> np.ndarray:
    values, probabilities = table
    return np.asarray(values)[categorical(u, np.asarray(probabilities, dtype=float))]


# Column of the per-job uniform matrix used for each purpose (fixed, so streams stay aligned).
_U = {name: i for i, name in enumerate((
    "pipeline", "job_type", "resolution", "frames", "steps", "batch", "guidance", "sampler",
    "model", "straggler", "straggler_factor", "preprocessing", "init", "warm_init", "error",
    "error_kind", "fail_point", "predicted", "rated", "rating", "heavy", "gpu_util_pre",
    "gpu_util_init", "gpu_util_decode", "cpu_pre", "cpu_gen", "cpu_decode", "cpu_init",
    "cpu_peak", "gpu_peak", "vram_fill", "power", "ram"))}
_N = {name: i for i, name in enumerate(("gpu_noise", "pre_noise", "vram_noise",
                                        "predicted_noise", "gen_util", "temp", "allocated"))}


def _draw_arrivals(rng: np.random.Generator, hour_starts: np.ndarray, hour_lengths: np.ndarray,
                   rates: np.ndarray, pipeline: str | None, fleet: _Fleet,
                   burst_size: float = 1.0) -> dict | None:
    """Jobs arriving at `rates` per hour bin, in bursts of `burst_size` jobs on average."""
    counts = rng.poisson(rates / burst_size)
    submit = np.repeat(hour_starts, counts) + rng.random(counts.sum()) * np.repeat(hour_lengths,
                                                                                   counts)
    if burst_size > 1:      # a script submits a batch: one job every few seconds
        sizes = rng.geometric(1 / burst_size, len(submit))
        submit = np.repeat(submit, sizes) + rng.random(sizes.sum()) * BURST_SECONDS
        submit = np.sort(submit[submit < hour_starts[-1] + hour_lengths[-1]])
    n = len(submit)
    if n == 0:
        return None
    u = rng.random((n, len(_U)))
    z = rng.standard_normal((n, len(_N)))

    def col(name):
        return u[:, _U[name]]

    if pipeline is None:
        is_video = col("pipeline") >= IMAGE_SHARE
    else:
        is_video = np.full(n, pipeline == "video")
    within = categorical(col("job_type"), np.array(JOB_TYPE_SHARES))
    job_type = within + 3 * is_video
    resolution = categorical(col("resolution"), RESOLUTION_MIX[job_type])
    width = np.array([w for w, _ in RESOLUTIONS])[resolution]
    height = np.array([h for _, h in RESOLUTIONS])[resolution]
    frames = np.where(is_video, np.asarray(VIDEO_FRAMES)[
        categorical(col("frames"), FRAME_MIX[np.where(is_video, job_type - 3, 0)])], 1)
    steps = np.where(is_video, _pick(col("steps"), VIDEO_STEPS), _pick(col("steps"), IMAGE_STEPS))
    batch = np.where(is_video, 1, _pick(col("batch"), IMAGE_BATCH))
    guidance = _pick(col("guidance"), GUIDANCE_SCALES)
    sampler = categorical(col("sampler"), np.asarray(SAMPLERS[1]))
    anything_share = np.where(np.maximum(width, height) <= 768, SMALL_IMAGE_ANYTHING_SHARE,
                              LARGE_IMAGE_ANYTHING_SHARE)
    names = fleet.model_names
    model = np.where(
        is_video,
        np.where(col("model") < WAN_SHARE, names.index("wan2.1-1.3b"),
                 names.index("animatediff-v3")),
        np.where(col("model") < anything_share, names.index("anything-v5"),
                 names.index("sdxl-base")))
    return dict(submit=submit, job_type=job_type, pipeline=is_video.astype(np.int64),
                width=width, height=height, frames=frames, steps=steps, batch=batch,
                guidance=guidance, sampler=sampler, model=model,
                **{f"u_{name}": u[:, i] for name, i in _U.items()},
                **{f"z_{name}": z[:, i] for name, i in _N.items()})


def _matches(jobs: Jobs, incident: Incident, epoch_days: np.ndarray) -> np.ndarray:
    mask = _in_window(epoch_days, incident)
    if incident.pipeline_type is not None:
        mask &= jobs.pipeline == PIPELINES.index(incident.pipeline_type)
    if incident.job_type is not None:
        mask &= jobs.job_type == JOB_TYPES.index(incident.job_type)
    return mask


def _apply_incidents(jobs: Jobs, incidents: Sequence[Incident], fleet: _Fleet) -> None:
    """Turn the incidents into per-job multipliers and model swaps (before costs are known)."""
    n = len(jobs)
    epoch_days = np.floor(jobs.submit / _DAY).astype(np.int64)
    jobs.gpu_multiplier = np.ones(n)
    jobs.cpu_bound_extra = np.zeros(n)      # extra preprocessing, × the job's GPU seconds
    for incident in incidents:
        if incident.kind == "driver_regression":
            jobs.gpu_multiplier[_matches(jobs, incident, epoch_days)] *= 1 + incident.magnitude
        elif incident.kind == "cpu_bound_preprocessing":
            jobs.cpu_bound_extra[_matches(jobs, incident, epoch_days)] += incident.magnitude
        elif incident.kind == "vram_heavy_model":
            heavy = incident if incident.pipeline_type else _with_pipeline(incident, "image")
            swap = _matches(jobs, heavy, epoch_days) & (jobs.u_heavy < incident.magnitude)
            jobs.model[swap] = fleet.model_names.index(incident.model_name)


def _with_pipeline(incident: Incident, pipeline_type: str) -> Incident:
    return dataclasses.replace(incident, pipeline_type=pipeline_type)


def _costs(jobs: Jobs, fleet: _Fleet) -> None:
    """Clean and actual phase seconds at RTX 4090 speed, VRAM need and init times."""
    tokens = (jobs.width // 8) * (jobs.height // 8)
    cfg = np.where(jobs.guidance > 1, 2, 1)
    latents = tokens * jobs.frames * jobs.batch
    work = (latents * jobs.steps * cfg).astype(float)
    speed_factor = fleet.spec_array("speed_factor")[jobs.model]
    jobs.latent_tokens = latents
    jobs.clean_generation = speed_factor * (A_LINEAR * work + B_ATTENTION * work * tokens)
    jobs.clean_decoding = C_DECODE * latents
    pre_low = np.where(jobs.pipeline == 1, 1.5, 1.0)
    jobs.clean_preprocessing = pre_low + 0.5 * (3.0 - pre_low)     # the estimator's mean
    noise = np.exp(0.08 * jobs.z_gpu_noise) * jobs.gpu_multiplier
    noise = np.where(jobs.u_straggler < STRAGGLER_SHARE, noise * (3 + 7 * jobs.u_straggler_factor),
                     noise)
    jobs.generation = jobs.clean_generation * noise
    jobs.decoding = jobs.clean_decoding * noise
    jobs.preprocessing = ((pre_low + (3.0 - pre_low) * jobs.u_preprocessing)
                          * np.exp(0.1 * jobs.z_pre_noise)
                          + jobs.cpu_bound_extra * (jobs.generation + jobs.decoding))
    weights = fleet.spec_array("weights_mb")[jobs.model]
    per_token = fleet.spec_array("activation_mb_per_token")[jobs.model]
    jobs.weights_mb = weights
    jobs.vram_need = (CUDA_CONTEXT_MB + weights + per_token * latents) * np.exp(
        0.03 * jobs.z_vram_noise)
    low, high = fleet.spec_array("init_seconds")[jobs.model].T
    jobs.init_cold = low + (high - low) * jobs.u_init
    jobs.init_warm = 0.1 + 0.2 * jobs.u_warm_init


def _schedule(jobs: Jobs, fleet: _Fleet) -> None:
    """FIFO over the fleet: start, GPU, init and finish of each job, and the queue it met."""
    kinds = np.array(fleet.kinds)
    n_kinds = len(GPU_KINDS)
    # Processing after init on each kind of GPU, shortened where the job fails there.
    vram = np.array([k.vram_total_mb for k in GPU_KINDS])
    speed = np.array([k.speed for k in GPU_KINDS])
    oom = jobs.vram_need[None, :] > vram[:, None]                       # (kind, job)
    random_error = jobs.u_error < RANDOM_ERROR_SHARE
    gpu_seconds = (jobs.generation + jobs.decoding)[None, :] / speed[:, None]
    planned = jobs.preprocessing[None, :] + gpu_seconds
    oom_point = jobs.preprocessing[None, :] + (0.02 + 0.33 * jobs.u_fail_point) * (
        jobs.generation[None, :] / speed[:, None])
    error_point = (0.05 + 0.9 * jobs.u_fail_point) * planned
    duration = np.where(oom, oom_point, np.where(random_error, error_point, planned))

    submit = jobs.submit.tolist()
    model = jobs.model.tolist()
    cold = jobs.init_cold.tolist()
    warm = jobs.init_warm.tolist()
    durations = [duration[k].tolist() for k in range(n_kinds)]
    gpu_kind = fleet.kinds
    free_at, loaded, last_gpu, waiting = fleet.free_at, fleet.loaded, fleet.last_gpu, fleet.waiting
    gpu_range = range(len(free_at))
    n = len(submit)
    start, gpu, init, finish, depth = [0.0] * n, [0] * n, [0.0] * n, [0.0] * n, [0] * n
    for i in range(n):
        t, m = submit[i], model[i]
        while waiting and waiting[0] <= t:
            waiting.popleft()
        depth[i] = len(waiting)
        g = last_gpu[m]
        if g < 0 or free_at[g] > t or loaded[g] != m:
            g = min(gpu_range, key=free_at.__getitem__)
        begin = free_at[g] if free_at[g] > t else t
        if begin > t:
            waiting.append(begin)
        setup = warm[i] if loaded[g] == m else cold[i]
        end = begin + setup + durations[gpu_kind[g]][i]
        free_at[g], loaded[g], last_gpu[m] = end, m, g
        start[i], gpu[i], init[i], finish[i] = begin, g, setup, end
    jobs.start, jobs.init, jobs.finish = np.array(start), np.array(init), np.array(finish)
    jobs.gpu = np.array(gpu, dtype=np.int64)
    jobs.depth = np.array(depth, dtype=np.int64)
    jobs.kind = kinds[jobs.gpu]
    rows = np.arange(n)
    jobs.oom = oom[jobs.kind, rows]
    jobs.failed = jobs.oom | random_error
    jobs.speed = speed[jobs.kind]
    jobs.fail_after = duration[jobs.kind, rows]        # seconds after init when it ended
