"""The demo job: a few hundred real, tracked CPU generation jobs, then a summary from the store.

Each job runs a miniature latent-diffusion loop in NumPy — self-attention over the latent tokens
of every frame for each denoising step (doubled under classifier-free guidance), then a decode —
so its time really grows with resolution, frames, steps and guidance, as a GPU job's does.
"""
from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
from tqdm import tqdm

from perflib.store import Store, flush_all
from perflib.tracking.tracker import track_generation_job

CHANNELS = 16
RESOLUTIONS = ["256x256", "320x320", "384x384", "256x384", "384x256", "448x448", "512x512"]
SAMPLERS = ["ddim", "euler"]


def _attention_step(latents: np.ndarray) -> np.ndarray:
    """One denoising step: self-attention within each frame (tokens × tokens)."""
    scores = latents @ latents.transpose(0, 2, 1) / np.sqrt(latents.shape[-1])
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return 0.9 * latents + 0.1 * (weights @ latents)


def run_job(tracker, width: int, height: int, frames: int, steps: int, guidance: float,
            rng: np.random.Generator) -> None:
    """Run one generation job, marking its phases on `tracker`."""
    tracker.mark_processing_start()
    with tracker.mark_phase("preprocessing", "latent and conditioning set-up"):
        tokens = (width // 16) * (height // 16)  # a 16× latent keeps the demo quick
        latents = rng.standard_normal((frames, tokens, CHANNELS)).astype(np.float32)
    tracker.mark_initialized()
    with tracker.mark_phase("generation", "denoising loop"):
        passes = 2 if guidance > 1 else 1
        for _ in range(steps * passes):
            latents = _attention_step(latents)
    with tracker.mark_phase("decoding", "latent decode"):
        np.tanh(latents @ rng.standard_normal((CHANNELS, 48)).astype(np.float32))
    tracker.mark_success()


def run_demo(jobs: int = 300, seed: int = 0, store: Store | None = None) -> pd.DataFrame:
    """Run `jobs` tracked jobs into `store` (default: the configured database); return a summary."""
    store = store or Store()
    rng = np.random.default_rng(seed)
    run_id = uuid.uuid4().hex[:8]  # each run adds new jobs
    for number in tqdm(range(jobs), desc="demo jobs", unit="job"):
        pipeline = "video" if rng.random() < 0.3 else "image"
        width, height = (int(v) for v in rng.choice(RESOLUTIONS).split("x"))
        params = {
            "width": width, "height": height,
            "frame_count": int(rng.integers(2, 9)) if pipeline == "video" else 1,
            "steps": int(rng.integers(4, 26)),
            "guidance_scale": float(rng.choice([1.0, 5.0, 7.5])),
            "batch_size": 1, "sampler": str(rng.choice(SAMPLERS)),
            "model_name": "numpy-attention-demo", "gpu_name": "cpu",
            "job_type": "demo",
        }
        with track_generation_job(f"demo-{run_id}-{number}", pipeline, params,
                                  db=store) as tracker:
            tracker.mark_queued()
            run_job(tracker, width, height, params["frame_count"], params["steps"],
                    params["guidance_scale"], rng)
    flush_all()
    return store.summary()
