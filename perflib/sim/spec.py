"""The simulated farm's published facts: its GPUs, models, job mix, daily rhythm, phases and
errors (see :mod:`perflib.sim.simulate` for the generative model), and the arrays a day's jobs
travel in."""
from __future__ import annotations

import dataclasses

import numpy as np

INCIDENT_KINDS = ("driver_regression", "queue_backlog", "cpu_bound_preprocessing",
                  "vram_heavy_model")

EXPECTED_BOTTLENECKS = {
    "driver_regression": ["change_point", "slow_generation"],
    "queue_backlog": ["high_queue_time"],
    "cpu_bound_preprocessing": ["high_cpu_usage", "low_gpu_utilization"],
    "vram_heavy_model": ["vram_pressure", "high_failure_rate"],
}

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
RESOLUTION_MIX = np.array([  # per job type, over RESOLUTIONS (image ones, then video ones)
    [0.15, 0.15, 0.25, 0.25, 0.00, 0.20] + [0] * 5,     # character: portrait
    [0.05, 0.15, 0.25, 0.00, 0.50, 0.05] + [0] * 5,     # background: landscape
    [0.05, 0.15, 0.40, 0.15, 0.25, 0.00] + [0] * 5,     # keyframe
    [0] * 6 + [0.10, 0.20, 0.40, 0.10, 0.20],           # scene
    [0] * 6 + [0.50, 0.30, 0.05, 0.05, 0.10],           # loop: small and square
    [0] * 6 + [0.00, 0.10, 0.60, 0.20, 0.10],           # trailer: wide
])
VIDEO_FRAMES = (16, 24, 32, 48, 60, 72, 96, 120)
FRAME_MIX = np.array([
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


class Jobs:
    """One day's jobs as parallel arrays (filled in by the simulation steps)."""

    def __init__(self, **arrays: np.ndarray):
        self.__dict__.update(arrays)

    def __len__(self) -> int:
        return len(self.submit)


def categorical(u: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Index drawn per row of `probabilities` (one row per draw, or one shared row) from `u`."""
    cumulative = np.cumsum(np.atleast_2d(probabilities), axis=1)
    cumulative /= cumulative[:, -1:]
    return (u[:, None] >= cumulative[:, :-1]).sum(axis=1)
