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

if TYPE_CHECKING:
    from perflib.store import Store

log = logging.getLogger(__name__)

INCIDENT_KINDS = ("driver_regression", "queue_backlog", "cpu_bound_preprocessing",
                  "vram_heavy_model")

EXPECTED_BOTTLENECKS = {
    "driver_regression": ["change_point", "slow_generation"],
    "queue_backlog": ["high_queue_time"],
    "cpu_bound_preprocessing": ["high_cpu_usage", "low_gpu_utilization"],
    "vram_heavy_model": ["vram_pressure", "high_failure_rate"],
}

_DAY = 86400.0
_HOUR = 3600.0


# -- the domain -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GpuKind:
    """One kind of card in the fleet, with the numbers the cost and resource models use."""

    name: str
    vram_total_mb: float
    speed: float            # GPU-time divisor relative to an RTX 4090
    idle_power_w: float
    max_power_w: float
    max_temp_c: float


GPU_KINDS = (
    GpuKind("NVIDIA GeForce RTX 4090", 24564.0, 1.0, 25.0, 450.0, 83.0),
    GpuKind("NVIDIA A100-SXM4-80GB", 81920.0, 1.3, 60.0, 400.0, 70.0),
)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the cost and VRAM models know about one checkpoint."""

    pipeline_type: str
    speed_factor: float                     # denoiser seconds relative to SDXL at equal work
    init_seconds: tuple[float, float]       # cold-load time range after a model switch
    weights_mb: float
    activation_mb_per_token: float          # VRAM per latent token (tokens × frames × batch)


MODELS = {
    "sdxl-base": ModelSpec("image", 1.0, (7.0, 11.0), 7000.0, 0.18),
    "anything-v5": ModelSpec("image", 0.45, (4.0, 7.0), 2600.0, 0.12),
    "animatediff-v3": ModelSpec("video", 0.7, (6.0, 10.0), 4300.0, 0.018),
    "wan2.1-1.3b": ModelSpec("video", 0.9, (10.0, 15.0), 8200.0, 0.0135),
}
HEAVY_MODEL = ModelSpec("image", 1.6, (11.0, 15.0), 21000.0, 0.5)
"""The spec of a ``vram_heavy_model`` incident's model (a hires refiner plus upscaler)."""

CUDA_CONTEXT_MB = 700.0
A_LINEAR = 4.8e-6           # s per work unit
B_ATTENTION = 1.95e-10      # s per work unit per latent token of a frame
C_DECODE = 6.1e-5           # s per decoded latent token
BURST_SECONDS = 120.0       # a backlog batch is submitted over this long
STRAGGLER_SHARE = 0.005
RANDOM_ERROR_SHARE = 0.005
PREDICTED_SHARE = 0.6
RATED_SHARE = 0.2

IMAGE_SHARE = 0.65
JOB_TYPES = ("character", "background", "keyframe", "scene", "loop", "trailer")
JOB_TYPE_SHARES = (0.5, 0.3, 0.2)     # of the three job types, within each pipeline
PIPELINES = ("image", "video")

IMAGE_RESOLUTIONS = ((512, 512), (768, 768), (1024, 1024), (768, 1024), (1024, 768), (512, 768))
VIDEO_RESOLUTIONS = ((512, 512), (768, 768), (1024, 576), (576, 1024), (768, 432))
RESOLUTIONS = IMAGE_RESOLUTIONS + VIDEO_RESOLUTIONS
_RESOLUTION_MIX = np.array([  # per job type, over RESOLUTIONS (image ones, then video ones)
    [0.15, 0.15, 0.25, 0.25, 0.00, 0.20] + [0] * 5,     # character: portrait
    [0.05, 0.15, 0.25, 0.00, 0.50, 0.05] + [0] * 5,     # background: landscape
    [0.05, 0.15, 0.40, 0.15, 0.25, 0.00] + [0] * 5,     # keyframe
    [0] * 6 + [0.10, 0.20, 0.40, 0.10, 0.20],           # scene
    [0] * 6 + [0.50, 0.30, 0.05, 0.05, 0.10],           # loop: small and square
    [0] * 6 + [0.00, 0.10, 0.60, 0.20, 0.10],           # trailer: wide
])
VIDEO_FRAMES = (16, 24, 32, 48, 60, 72, 96, 120)
_FRAME_MIX = np.array([
    [0.05, 0.10, 0.15, 0.25, 0.15, 0.15, 0.10, 0.05],   # scene
    [0.40, 0.30, 0.20, 0.10, 0.00, 0.00, 0.00, 0.00],   # loop
    [0.00, 0.00, 0.00, 0.10, 0.15, 0.25, 0.25, 0.25],   # trailer
])
IMAGE_STEPS = ((20, 25, 28, 30, 35, 40), (0.2, 0.2, 0.15, 0.25, 0.1, 0.1))
VIDEO_STEPS = ((20, 25, 30), (0.35, 0.4, 0.25))
IMAGE_BATCH = ((1, 2, 3, 4), (0.45, 0.25, 0.1, 0.2))
GUIDANCE_SCALES = ((1.0, 5.0, 7.0, 7.5, 9.0), (0.08, 0.2, 0.3, 0.3, 0.12))
SAMPLERS = (("euler", "euler_a", "dpmpp_2m", "ddim"), (0.2, 0.3, 0.4, 0.1))
SMALL_IMAGE_ANYTHING_SHARE = 0.55       # anything-v5 share of images up to 768 px
LARGE_IMAGE_ANYTHING_SHARE = 0.15
WAN_SHARE = 0.35                        # of videos

# Hour of day (UTC) and weekday (Monday first) arrival profiles; normalised in _hourly_rates.
HOURLY_PROFILE = np.array([0.20, 0.14, 0.11, 0.09, 0.09, 0.12, 0.25, 0.55, 1.00, 1.45, 1.70,
                           1.75, 1.40, 1.65, 1.85, 1.80, 1.60, 1.35, 1.05, 0.80, 0.62, 0.50,
                           0.38, 0.28])
WEEKDAY_PROFILE = np.array([1.05, 1.10, 1.10, 1.05, 1.00, 0.45, 0.35])

PHASES = (("preprocessing", "prompt encoding, conditioning and latent set-up"),
          ("generation", "denoising loop"),
          ("decoding", "VAE decode"))
RANDOM_ERRORS = ("CUDA error: an illegal memory access was encountered",
                 "CUDA error: unspecified launch failure",
                 "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")


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
        records = _records(jobs, fleet, keep, seed, number)
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


class _Jobs:
    """One day's jobs as parallel arrays (filled in by the simulation steps)."""

    def __init__(self, **arrays: np.ndarray):
        self.__dict__.update(arrays)

    def __len__(self) -> int:
        return len(self.submit)


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
              incidents: Sequence[Incident], fleet: _Fleet) -> _Jobs | None:
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
    return _Jobs(**{name: values[order] for name, values in arrays.items()})


def _categorical(u: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Index drawn per row of `probabilities` (one row per draw, or one shared row) from `u`."""
    cumulative = np.cumsum(np.atleast_2d(probabilities), axis=1)
    cumulative /= cumulative[:, -1:]
    return (u[:, None] >= cumulative[:, :-1]).sum(axis=1)


def _pick(u: np.ndarray, table: tuple[tuple, tuple]) -> np.ndarray:
    values, probabilities = table
    return np.asarray(values)[_categorical(u, np.asarray(probabilities, dtype=float))]


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
    within = _categorical(col("job_type"), np.array(JOB_TYPE_SHARES))
    job_type = within + 3 * is_video
    resolution = _categorical(col("resolution"), _RESOLUTION_MIX[job_type])
    width = np.array([w for w, _ in RESOLUTIONS])[resolution]
    height = np.array([h for _, h in RESOLUTIONS])[resolution]
    frames = np.where(is_video, np.asarray(VIDEO_FRAMES)[
        _categorical(col("frames"), _FRAME_MIX[np.where(is_video, job_type - 3, 0)])], 1)
    steps = np.where(is_video, _pick(col("steps"), VIDEO_STEPS), _pick(col("steps"), IMAGE_STEPS))
    batch = np.where(is_video, 1, _pick(col("batch"), IMAGE_BATCH))
    guidance = _pick(col("guidance"), GUIDANCE_SCALES)
    sampler = _categorical(col("sampler"), np.asarray(SAMPLERS[1]))
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


def _matches(jobs: _Jobs, incident: Incident, epoch_days: np.ndarray) -> np.ndarray:
    mask = _in_window(epoch_days, incident)
    if incident.pipeline_type is not None:
        mask &= jobs.pipeline == PIPELINES.index(incident.pipeline_type)
    if incident.job_type is not None:
        mask &= jobs.job_type == JOB_TYPES.index(incident.job_type)
    return mask


def _apply_incidents(jobs: _Jobs, incidents: Sequence[Incident], fleet: _Fleet) -> None:
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


def _costs(jobs: _Jobs, fleet: _Fleet) -> None:
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


def _schedule(jobs: _Jobs, fleet: _Fleet) -> None:
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


def _records(jobs: _Jobs, fleet: _Fleet, keep: np.ndarray, seed: int, first_number: int
             ) -> list[dict[str, Any]]:
    """Store records (with phases and resource aggregates) of the jobs in `keep`."""
    n = len(jobs)
    numbers = np.arange(first_number, first_number + n)[keep]
    j = _Jobs(**{name: values[keep] for name, values in vars(jobs).items()
                 if isinstance(values, np.ndarray) and values.shape[:1] == (n,)})
    if not len(j):
        return []
    kinds = GPU_KINDS
    vram_total = np.array([k.vram_total_mb for k in kinds])[j.kind]

    # Phase seconds, cut short where the job failed.
    pre = j.preprocessing
    gen = j.generation / j.speed
    dec = j.decoding / j.speed
    elapsed = j.fail_after
    pre_s = np.minimum(pre, elapsed)
    gen_s = np.clip(elapsed - pre, 0, gen)
    dec_s = np.clip(elapsed - pre - gen, 0, dec)
    processing = j.init + pre_s + gen_s + dec_s

    # Utilisation per phase, then time-weighted over the job.
    cpu_bound = j.cpu_bound_extra > 0
    gen_util = np.minimum(99.5, 62 + 36 * (1 - np.exp(-j.latent_tokens / 6000))
                          + 1.5 * j.z_gen_util)
    init_util = 20 + 20 * j.u_gpu_util_init
    pre_util = np.where(cpu_bound, 5 + 10 * j.u_gpu_util_pre, 25 + 25 * j.u_gpu_util_pre)
    dec_util = 75 + 20 * j.u_gpu_util_decode
    # CPU-bound preprocessing saturates the CPU for the job's whole life (its workers keep going).
    init_cpu = np.where(cpu_bound, 88 + 12 * j.u_cpu_init, 30 + 30 * j.u_cpu_init)
    pre_cpu = np.where(cpu_bound, 94 + 6 * j.u_cpu_pre, 40 + 30 * j.u_cpu_pre)
    gen_cpu = np.where(cpu_bound, 86 + 12 * j.u_cpu_gen, 12 + 18 * j.u_cpu_gen)
    dec_cpu = np.where(cpu_bound, 86 + 12 * j.u_cpu_decode, 25 + 20 * j.u_cpu_decode)
    weights = np.stack([j.init, pre_s, gen_s, dec_s])
    span = np.maximum(processing, 1e-9)
    gpu_util = (weights * np.stack([init_util, pre_util, gen_util, dec_util])).sum(0) / span
    cpu_avg = (weights * np.stack([init_cpu, pre_cpu, gen_cpu, dec_cpu])).sum(0) / span
    ran = weights > 0
    gpu_max = np.minimum(100.0, np.where(ran, np.stack([init_util, pre_util, gen_util, dec_util]),
                                         0).max(0) + 1 + 4 * j.u_gpu_peak)
    cpu_max = np.minimum(100.0, np.where(ran, np.stack([init_cpu, pre_cpu, gen_cpu, dec_cpu]),
                                         0).max(0) + 5 + 20 * j.u_cpu_peak)
    vram_peak = np.where(j.oom, vram_total * (0.975 + 0.023 * j.u_vram_fill),
                         np.minimum(j.vram_need, vram_total))
    idle_w = np.array([k.idle_power_w for k in kinds])[j.kind]
    max_w = np.array([k.max_power_w for k in kinds])[j.kind]
    power = np.minimum(max_w, idle_w + (max_w - idle_w) * (gpu_util / 100) ** 1.2
                       * (0.92 + 0.13 * j.u_power))
    max_temp = np.array([k.max_temp_c for k in kinds])[j.kind]
    temp = 40 + (max_temp - 40) * gpu_max / 100 * (0.6 + 0.4 * (1 - np.exp(-processing / 120)))
    temp = np.minimum(max_temp + 3, temp + 1.5 * j.z_temp)
    decoded_mb = j.width * j.height * 3 * 4 * j.frames * j.batch / 1e6
    ram = 3500 + 1.1 * j.weights_mb + decoded_mb + 1500 * j.u_ram

    # What an estimator would have said before the run, and what users said after it.
    # The scheduler knows which model the assigned GPU holds, so the estimate includes the load.
    predicted = ((j.init + j.clean_preprocessing + (j.clean_generation + j.clean_decoding)
                  / j.speed) * np.exp(0.12 * j.z_predicted_noise))
    has_prediction = j.u_predicted < PREDICTED_SHARE
    queue = j.start - j.submit
    rating = 1 + _categorical(j.u_rating, np.array([0.03, 0.07, 0.2, 0.4, 0.3]))
    rating = np.maximum(1, rating - (queue > 120))
    has_rating = (j.u_rated < RATED_SHARE) & ~j.failed

    status = np.where(j.failed, "failed", "success").tolist()
    error_type = [None] * len(j)
    error_message = [None] * len(j)
    for i in np.flatnonzero(j.failed).tolist():
        if j.oom[i]:
            error_type[i] = "OutOfMemoryError"
            error_message[i] = _oom_message(j.vram_need[i], vram_total[i], vram_peak[i],
                                            j.z_allocated[i])
        else:
            error_type[i] = "RuntimeError"
            error_message[i] = RANDOM_ERRORS[int(j.u_error_kind[i] * len(RANDOM_ERRORS))]

    columns = {
        "job_id": [f"sim-{seed}-{number}" for number in numbers.tolist()],
        "pipeline_type": np.array(PIPELINES)[j.pipeline].tolist(),
        "job_type": np.array(JOB_TYPES)[j.job_type].tolist(),
        "status": status,
        "error_type": error_type,
        "error_message": error_message,
        "width": j.width.tolist(),
        "height": j.height.tolist(),
        "frame_count": j.frames.tolist(),
        "steps": j.steps.tolist(),
        "guidance_scale": j.guidance.tolist(),
        "batch_size": j.batch.tolist(),
        "sampler": np.array(SAMPLERS[0])[j.sampler].tolist(),
        "model_name": np.array(fleet.model_names)[j.model].tolist(),
        "hostname": np.array(fleet.hostnames)[j.gpu].tolist(),
        "gpu_index": np.array(fleet.gpu_indices)[j.gpu].tolist(),
        "gpu_name": np.array([k.name for k in kinds])[j.kind].tolist(),
        "submitted_at": _datetimes(j.submit),
        "started_at": _datetimes(j.start),
        "finished_at": _datetimes(j.start + processing),
        "queue_seconds": queue.tolist(),
        "init_seconds": j.init.tolist(),
        "processing_seconds": processing.tolist(),
        "total_seconds": (queue + processing).tolist(),
        "queue_depth": j.depth.tolist(),
        "gpu_util_avg_pct": np.round(gpu_util, 1).tolist(),
        "gpu_util_max_pct": np.round(gpu_max, 1).tolist(),
        "vram_peak_mb": np.round(vram_peak).tolist(),
        "vram_total_mb": vram_total.tolist(),
        "gpu_power_avg_w": np.round(power, 1).tolist(),
        "gpu_temp_max_c": np.round(temp).tolist(),
        "cpu_avg_pct": np.round(cpu_avg, 1).tolist(),
        "cpu_max_pct": np.round(cpu_max, 1).tolist(),
        "ram_peak_mb": np.round(ram).tolist(),
        "predicted_seconds": _where(has_prediction, np.round(predicted, 3)),
        "user_rating": _where(has_rating, rating.astype(float)),
    }
    columns["queued_at"] = columns["submitted_at"]
    columns["simulated"] = [True] * len(j)
    phase_starts = j.start + j.init
    columns["phases"] = _phase_lists(
        phase_count=1 + (elapsed > pre) + (elapsed > pre + gen),
        starts=[phase_starts, phase_starts + pre_s, phase_starts + pre_s + gen_s],
        seconds=[pre_s, gen_s, dec_s])
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*columns.values())]


def _phase_lists(phase_count: np.ndarray, starts: list[np.ndarray], seconds: list[np.ndarray]
                 ) -> list[list[dict[str, Any]]]:
    """Per job, its PHASES that started (a failed job stops early) as store phase rows."""
    (pre, pre_text), (gen, gen_text), (dec, dec_text) = PHASES
    rows = []
    for count, a0, a1, a2, s0, s1, s2 in zip(phase_count.tolist(), *map(_datetimes, starts),
                                             *(values.tolist() for values in seconds)):
        phases = [{"seq": 0, "name": pre, "description": pre_text, "started_at": a0,
                   "seconds": s0},
                  {"seq": 1, "name": gen, "description": gen_text, "started_at": a1,
                   "seconds": s1},
                  {"seq": 2, "name": dec, "description": dec_text, "started_at": a2,
                   "seconds": s2}]
        rows.append(phases if count == 3 else phases[:count])
    return rows


def _oom_message(need_mb: float, total_mb: float, peak_mb: float, z: float) -> str:
    gib = 1024.0
    allocated = peak_mb * (0.9 + 0.02 * z) / gib
    free = max(0.01, (total_mb - peak_mb) / gib)
    tried = max(free + 0.02, (need_mb - peak_mb) / gib * 0.5 + free)
    return (f"CUDA out of memory. Tried to allocate {tried:.2f} GiB (GPU 0; "
            f"{total_mb / gib:.2f} GiB total capacity; {allocated:.2f} GiB already allocated; "
            f"{free:.2f} GiB free; {peak_mb / gib:.2f} GiB reserved in total by PyTorch) If "
            "reserved memory is >> allocated memory try setting max_split_size_mb to avoid "
            "fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF")


def _datetimes(epoch_seconds: np.ndarray) -> list[datetime]:
    from_timestamp, utc = datetime.fromtimestamp, timezone.utc
    return [from_timestamp(value, utc) for value in epoch_seconds.tolist()]


def _where(mask: np.ndarray, values: np.ndarray) -> list:
    return [value if present else None for value, present in zip(values.tolist(), mask.tolist())]
