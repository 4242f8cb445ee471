"""A simulated day's finished jobs as store records: phase times cut short by failures, resource
aggregates weighted over the phases, the estimate given before the run and the user's rating,
errors, and the phases themselves."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from perflib.sim.spec import (GPU_KINDS, JOB_TYPES, PHASES, PIPELINES, PREDICTED_SHARE,
                              RANDOM_ERRORS, RATED_SHARE, SAMPLERS, Jobs, categorical)

if TYPE_CHECKING:
    from perflib.sim.simulate import _Fleet


def job_records(jobs: Jobs, fleet: _Fleet, keep: np.ndarray, seed: int, first_number: int
                ) -> list[dict[str, Any]]:
    """Store records (with phases and resource aggregates) of the jobs in `keep`."""
    n = len(jobs)
    numbers = np.arange(first_number, first_number + n)[keep]
    j = Jobs(**{name: values[keep] for name, values in vars(jobs).items()
                if isinstance(values, np.ndarray) and values.shape[:1] == (n,)})
    if not len(j):
        return []
    vram_total = np.array([k.vram_total_mb for k in GPU_KINDS])[j.kind]
    times = _phase_times(j)
    usage = _usage(j, times, vram_total)
    columns = {"job_id": [f"sim-{seed}-{number}" for number in numbers.tolist()],
               **_identity(j, fleet), **_errors(j, vram_total, usage.vram_peak),
               **_timing(j, times), **_measures(usage, vram_total), **_opinions(j)}
    columns["queued_at"] = columns["submitted_at"]
    columns["simulated"] = [True] * len(j)
    phase_starts = j.start + j.init
    columns["phases"] = _phase_lists(
        phase_count=1 + (times.elapsed > times.pre) + (times.elapsed > times.pre + times.gen),
        starts=[phase_starts, phase_starts + times.pre_s, phase_starts + times.pre_s
                + times.gen_s],
        seconds=[times.pre_s, times.gen_s, times.dec_s])
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*columns.values())]


def _phase_times(j: Jobs) -> Jobs:
    """Phase seconds, cut short where the job failed, and the processing time."""
    pre = j.preprocessing
    gen = j.generation / j.speed
    dec = j.decoding / j.speed
    elapsed = j.fail_after
    pre_s = np.minimum(pre, elapsed)
    gen_s = np.clip(elapsed - pre, 0, gen)
    dec_s = np.clip(elapsed - pre - gen, 0, dec)
    return Jobs(pre=pre, gen=gen, elapsed=elapsed, pre_s=pre_s, gen_s=gen_s, dec_s=dec_s,
                processing=j.init + pre_s + gen_s + dec_s)


def _usage(j: Jobs, t: Jobs, vram_total: np.ndarray) -> Jobs:
    """Utilisation per phase, then time-weighted over the job; VRAM, power, heat and RAM."""
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
    weights = np.stack([j.init, t.pre_s, t.gen_s, t.dec_s])
    span = np.maximum(t.processing, 1e-9)
    gpu_util = (weights * np.stack([init_util, pre_util, gen_util, dec_util])).sum(0) / span
    cpu_avg = (weights * np.stack([init_cpu, pre_cpu, gen_cpu, dec_cpu])).sum(0) / span
    ran = weights > 0
    gpu_max = np.minimum(100.0, np.where(ran, np.stack([init_util, pre_util, gen_util, dec_util]),
                                         0).max(0) + 1 + 4 * j.u_gpu_peak)
    cpu_max = np.minimum(100.0, np.where(ran, np.stack([init_cpu, pre_cpu, gen_cpu, dec_cpu]),
                                         0).max(0) + 5 + 20 * j.u_cpu_peak)
    vram_peak = np.where(j.oom, vram_total * (0.975 + 0.023 * j.u_vram_fill),
                         np.minimum(j.vram_need, vram_total))
    idle_w = np.array([k.idle_power_w for k in GPU_KINDS])[j.kind]
    max_w = np.array([k.max_power_w for k in GPU_KINDS])[j.kind]
    power = np.minimum(max_w, idle_w + (max_w - idle_w) * (gpu_util / 100) ** 1.2
                       * (0.92 + 0.13 * j.u_power))
    max_temp = np.array([k.max_temp_c for k in GPU_KINDS])[j.kind]
    temp = 40 + (max_temp - 40) * gpu_max / 100 * (0.6 + 0.4 * (1 - np.exp(-t.processing / 120)))
    temp = np.minimum(max_temp + 3, temp + 1.5 * j.z_temp)
    decoded_mb = j.width * j.height * 3 * 4 * j.frames * j.batch / 1e6
    ram = 3500 + 1.1 * j.weights_mb + decoded_mb + 1500 * j.u_ram
    return Jobs(gpu_util=gpu_util, gpu_max=gpu_max, cpu_avg=cpu_avg, cpu_max=cpu_max,
                vram_peak=vram_peak, power=power, temp=temp, ram=ram)


def _identity(j: Jobs, fleet: _Fleet) -> dict[str, list]:
    """What the job was and where it ran."""
    return {
        "pipeline_type": np.array(PIPELINES)[j.pipeline].tolist(),
        "job_type": np.array(JOB_TYPES)[j.job_type].tolist(),
        "status": np.where(j.failed, "failed", "success").tolist(),
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
        "gpu_name": np.array([k.name for k in GPU_KINDS])[j.kind].tolist(),
    }


def _errors(j: Jobs, vram_total: np.ndarray, vram_peak: np.ndarray) -> dict[str, list]:
    """Each failed job's error: out of memory, or one of the RANDOM_ERRORS."""
    error_type: list = [None] * len(j)
    error_message: list = [None] * len(j)
    for i in np.flatnonzero(j.failed).tolist():
        if j.oom[i]:
            error_type[i] = "OutOfMemoryError"
            error_message[i] = _oom_message(j.vram_need[i], vram_total[i], vram_peak[i],
                                            j.z_allocated[i])
        else:
            error_type[i] = "RuntimeError"
            error_message[i] = RANDOM_ERRORS[int(j.u_error_kind[i] * len(RANDOM_ERRORS))]
    return {"error_type": error_type, "error_message": error_message}


def _timing(j: Jobs, t: Jobs) -> dict[str, list]:
    queue = j.start - j.submit
    return {
        "submitted_at": _datetimes(j.submit),
        "started_at": _datetimes(j.start),
        "finished_at": _datetimes(j.start + t.processing),
        "queue_seconds": queue.tolist(),
        "init_seconds": j.init.tolist(),
        "processing_seconds": t.processing.tolist(),
        "total_seconds": (queue + t.processing).tolist(),
        "queue_depth": j.depth.tolist(),
    }


def _measures(usage: Jobs, vram_total: np.ndarray) -> dict[str, list]:
    return {
        "gpu_util_avg_pct": np.round(usage.gpu_util, 1).tolist(),
        "gpu_util_max_pct": np.round(usage.gpu_max, 1).tolist(),
        "vram_peak_mb": np.round(usage.vram_peak).tolist(),
        "vram_total_mb": vram_total.tolist(),
        "gpu_power_avg_w": np.round(usage.power, 1).tolist(),
        "gpu_temp_max_c": np.round(usage.temp).tolist(),
        "cpu_avg_pct": np.round(usage.cpu_avg, 1).tolist(),
        "cpu_max_pct": np.round(usage.cpu_max, 1).tolist(),
        "ram_peak_mb": np.round(usage.ram).tolist(),
    }


def _opinions(j: Jobs) -> dict[str, list]:
    """What an estimator would have said before the run, and what users said after it. The
    scheduler knows which model the assigned GPU holds, so the estimate includes the load."""
    predicted = ((j.init + j.clean_preprocessing + (j.clean_generation + j.clean_decoding)
                  / j.speed) * np.exp(0.12 * j.z_predicted_noise))
    has_prediction = j.u_predicted < PREDICTED_SHARE
    rating = 1 + categorical(j.u_rating, np.array([0.03, 0.07, 0.2, 0.4, 0.3]))
    rating = np.maximum(1, rating - ((j.start - j.submit) > 120))
    has_rating = (j.u_rated < RATED_SHARE) & ~j.failed
    return {"predicted_seconds": _where(has_prediction, np.round(predicted, 3)),
            "user_rating": _where(has_rating, rating.astype(float))}


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
