"""Bottleneck detection: eight kinds, each with its evidence, severity and computed advice.

Statistics come from the daily sums stored per pipeline, job type, model and GPU
(:mod:`perflib.analysis.daily_aggregates`, re-aggregated over the window), and what sums cannot say
— the share of jobs above a VRAM threshold, phase times — from a bounded sample of the window's
jobs, so the cost does not grow with the history or the fleet. Thresholds come from configuration
(the seed's defaults: slow image 120 s, slow video 300 s, low GPU 60%, high CPU 80%, failures
10%, queue 30 s; and VRAM peaks at 90% of the card).
"""
from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from perflib.analysis.daily import GROUP_KEYS
from perflib.analysis.daily_aggregates import group_frame
from perflib.analysis.sql import (frame_without_jit, out_of_memory, sampled_jobs,
                                  sampled_phases)
from perflib.config import Thresholds
from perflib.record import FINAL_STATUSES
from perflib.store import Store

MIN_JOBS = 20  # a group smaller than this says nothing reliable
INIT_SHARE = 0.15
PHASE_SHARE = 0.4
SLOWDOWN = 1.15  # seconds per work unit against the previous weeks
BASELINE_DAYS = 28
CORE_PHASES = ("generat", "denois", "sampl", "diffus", "unet", "transformer")
SAMPLE_ROWS = 20_000  # jobs sampled for shares and phase times, whatever the window holds


class BottleneckType(str, enum.Enum):
    LOW_GPU_UTILIZATION = "low_gpu_utilization"
    HIGH_QUEUE_TIME = "high_queue_time"
    VRAM_PRESSURE = "vram_pressure"
    HIGH_CPU_USAGE = "high_cpu_usage"
    HIGH_FAILURE_RATE = "high_failure_rate"
    SLOW_GENERATION = "slow_generation"
    INITIALIZATION_OVERHEAD = "initialization_overhead"
    PHASE_IMBALANCE = "phase_imbalance"


@dataclass
class Bottleneck:
    """One finding: what, how bad (0–1), where, the numbers behind it, and what to do."""

    type: BottleneckType
    severity: float
    pipeline_type: str | None
    evidence: dict
    affected_jobs: int
    recommendations: list[str] = field(default_factory=list)
    scope: dict = field(default_factory=dict)  # job_type / model_name / gpu_name / phase

    def as_dict(self) -> dict:
        return {**asdict(self), "type": self.type.value, "severity": round(self.severity, 3)}


def analyze_bottlenecks(store: Store, start: datetime, end: datetime,
                        thresholds: Thresholds, pipeline_type: str | None = None
                        ) -> list[Bottleneck]:
    """Every bottleneck found in [start, end), most severe first."""
    fine = group_frame(store, start, end, pipeline_type)
    if fine.empty:
        return []
    sample = _Sample(store, *sampled_jobs(store, start, end, int(fine.jobs.sum()), SAMPLE_ROWS))
    fine = _with_vram_pressure(fine, sample, thresholds)
    groups = _rollup(fine, ["pipeline_type"])
    by_job_type = _rollup(fine, ["pipeline_type", "job_type"])
    by_device = _rollup(fine, ["pipeline_type", "model_name", "gpu_name"])
    found: list[Bottleneck] = []
    found += _utilisation(by_job_type, thresholds)
    found += _queueing(groups, thresholds)
    found += _vram(by_device, thresholds)
    found += _failures(groups, by_device, thresholds)
    found += _slow(store, groups, start, pipeline_type, thresholds)
    found += _initialisation(groups)
    found += _phase_imbalance(sample, pipeline_type)
    return sorted(found, key=lambda b: -b.severity)


# -- statistics ------------------------------------------------------------------------------
@dataclass
class _Sample:
    """A bounded, even sample of the window's jobs (:func:`~perflib.analysis.sql.sampled_jobs`)
    for what the stored sums cannot say: shares of jobs above a VRAM threshold, phase times."""

    store: Store
    rows: sa.Subquery
    fraction: float  # of the window's jobs


def _with_vram_pressure(fine: pd.DataFrame, sample: _Sample, t: Thresholds) -> pd.DataFrame:
    """Adds ``vram_full`` (jobs at or above the VRAM threshold) and ``vram_pressed`` (those or
    out of memory) per group, estimated from the sample's shares (exact when it holds the whole
    window)."""
    s = sample.rows.c
    near_full = s.vram_peak_mb / sa.func.nullif(s.vram_total_mb, 0) >= t.high_vram_pct / 100
    keys = [s[k] for k in GROUP_KEYS]
    query = (sa.select(*keys, sa.func.count().label("sampled"),
                       sa.func.sum(sa.case((near_full, 1), else_=0)).label("full"),
                       sa.func.sum(sa.case((sa.or_(out_of_memory(s), near_full), 1), else_=0)
                                   ).label("pressed"))
             .where(s.status.in_(FINAL_STATUSES)).group_by(*keys))
    shares = _plain_keys(sample.store.frame(query), GROUP_KEYS)
    fine = _plain_keys(fine, GROUP_KEYS).merge(shares, on=GROUP_KEYS, how="left")
    sampled = fine.sampled.where(fine.sampled > 0)
    fine["vram_full"] = (fine.full / sampled * fine.jobs).round().fillna(0)
    fine["vram_pressed"] = (fine.pressed / sampled * fine.jobs).round().fillna(0)
    fine["vram_pressed"] = fine[["vram_pressed", "oom"]].max(axis=1)
    return fine.drop(columns=["sampled", "full", "pressed"])


def _rollup(fine: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The per-group statistics the rules read, from the fine-grained sums."""
    sums = [c for c in fine.columns if c not in GROUP_KEYS and c != "queue_max"]
    g = fine.groupby(keys, dropna=False).agg({**{c: "sum" for c in sums}, "queue_max": "max"})
    g = _plain_keys(g.reset_index(), keys)

    def mean(total, count):
        return g[total] / g[count].where(g[count] > 0)

    return g.assign(vram_ratio=mean("vram_ratio_sum", "vram_ratio_count"),
                    gpu_util=mean("gpu_util_sum", "gpu_util_count"),
                    cpu=mean("cpu_sum", "cpu_count"), queue=mean("queue_sum", "queue_count"),
                    processing=mean("processing_sum", "processing_count"),
                    processing_total=g.processing_sum)


def _plain_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Missing key values as None (pandas' NaN would pass for a job type or a model)."""
    frame = frame.copy()
    for key in keys:
        frame[key] = frame[key].astype(object).where(frame[key].notna(), None)
    return frame


def _scope(row, *names) -> dict:
    return {name: row[name] for name in names if name in row and row[name] is not None}


def _label(scope: dict, pipeline: str) -> str:
    parts = [f"{k.replace('_name', '').replace('_', ' ')} {v}" for k, v in scope.items()]
    return f"{pipeline} jobs" + (f" ({', '.join(parts)})" if parts else "")


# -- rules -----------------------------------------------------------------------------------
def _utilisation(groups: pd.DataFrame, t: Thresholds) -> list[Bottleneck]:
    found = []
    for _, row in groups[groups.jobs >= MIN_JOBS].iterrows() if len(groups) else ():
        scope = _scope(row, "job_type")
        label = _label(scope, row.pipeline_type)
        if pd.notna(row.gpu_util) and row.gpu_util < t.low_gpu_util_pct:
            idle = 100 - row.gpu_util
            advice = [f"The GPU idles {idle:.0f}% of the time in {label}."]
            if pd.notna(row.cpu) and row.cpu >= t.high_cpu_pct:
                advice.append(f"CPU averages {row.cpu:.0f}%: preprocessing is CPU-bound and "
                              "starves the GPU — move prompt encoding and conditioning to a "
                              "separate worker or prefetch them for the next job.")
            else:
                advice.append("Batch these jobs together or raise batch_size so each launch "
                              "keeps the GPU busy.")
            found.append(Bottleneck(
                BottleneckType.LOW_GPU_UTILIZATION,
                _clip(2 * (t.low_gpu_util_pct - row.gpu_util) / t.low_gpu_util_pct),
                row.pipeline_type, {"gpu_util_avg_pct": _round(row.gpu_util),
                                    "threshold_pct": t.low_gpu_util_pct,
                                    "cpu_avg_pct": _round(row.cpu)},
                int(row.jobs), advice, scope))
        if pd.notna(row.cpu) and row.cpu > t.high_cpu_pct:
            found.append(Bottleneck(
                BottleneckType.HIGH_CPU_USAGE,
                _clip(1.5 * (row.cpu - t.high_cpu_pct) / (100 - t.high_cpu_pct)),
                row.pipeline_type, {"cpu_avg_pct": _round(row.cpu),
                                    "threshold_pct": t.high_cpu_pct,
                                    "gpu_util_avg_pct": _round(row.gpu_util)},
                int(row.jobs),
                [f"CPU averages {row.cpu:.0f}% in {label}: profile the CPU phases "
                 "(tokenisation, image loading, safety checks) and move them off the GPU "
                 "worker's critical path."], scope))
    return found


def _queueing(groups: pd.DataFrame, t: Thresholds) -> list[Bottleneck]:
    found = []
    for _, row in groups.iterrows():
        if pd.isna(row.queue) or row.queue <= t.queue_seconds or row.jobs < MIN_JOBS:
            continue
        share = row.queue / (row.queue + row.processing) if row.processing else 1.0
        found.append(Bottleneck(
            BottleneckType.HIGH_QUEUE_TIME,
            _clip(math.log(row.queue / t.queue_seconds) / math.log(8)),
            row.pipeline_type, {"mean_queue_seconds": _round(row.queue),
                                "max_queue_seconds": _round(row.queue_max),
                                "threshold_seconds": t.queue_seconds,
                                "queue_share_of_total": _round(share, 3)},
            int(row.jobs),
            [f"{row.pipeline_type} jobs wait {row.queue:.0f} s on average ({share:.0%} of their "
             f"total time): add GPU capacity at peak hours or move batch submissions off-peak."]))
    return found


def _vram(groups: pd.DataFrame, t: Thresholds) -> list[Bottleneck]:
    found = []
    for _, row in groups[groups.jobs >= MIN_JOBS].iterrows() if len(groups) else ():
        pressure = row.vram_pressed / row.jobs
        if pressure < 0.1:
            continue
        scope = _scope(row, "model_name", "gpu_name")
        found.append(Bottleneck(
            BottleneckType.VRAM_PRESSURE, _clip(2 * pressure), row.pipeline_type,
            {"oom_failures": int(row.oom), "jobs_near_full_vram": int(row.vram_full),
             "mean_vram_use": _round(row.vram_ratio, 3), "jobs": int(row.jobs),
             "threshold_pct": t.high_vram_pct},
            int(row.vram_pressed),
            [f"{row.model_name} on {row.gpu_name}: {row.oom:.0f} out-of-memory failures and "
             f"{row.vram_full:.0f} jobs above {t.high_vram_pct:.0f}% of VRAM — route it to GPUs "
             "with more memory, or enable VAE tiling / attention slicing / a smaller batch."],
            scope))
    return found


def _failures(groups: pd.DataFrame, by_device: pd.DataFrame, t: Thresholds) -> list[Bottleneck]:
    found = []
    for frame, names in ((groups, ()), (by_device, ("model_name", "gpu_name"))):
        for _, row in frame[frame.jobs >= MIN_JOBS].iterrows() if len(frame) else ():
            rate = row.failed / row.jobs
            if rate <= t.failure_rate:
                continue
            scope = _scope(row, *names)
            cause = (f"{row.oom:.0f} of them out of memory" if row.oom else
                     "check the error types in the alerts table")
            found.append(Bottleneck(
                BottleneckType.HIGH_FAILURE_RATE,
                _clip((rate - t.failure_rate) / (0.5 - t.failure_rate)), row.pipeline_type,
                {"failure_rate": _round(rate, 3), "failed": int(row.failed),
                 "jobs": int(row.jobs), "threshold": t.failure_rate},
                int(row.failed),
                [f"{rate:.0%} of {_label(scope, row.pipeline_type)} failed ({cause})."],
                scope))
    return found


def _slow(store: Store, groups: pd.DataFrame, start, pipeline_type,
          t: Thresholds) -> list[Bottleneck]:
    """Slow against the configured limits, and slow against the previous weeks for the same
    work (seconds per work unit, so a change in job mix is not mistaken for a slowdown)."""
    found = []
    before = group_frame(store, start - timedelta(days=BASELINE_DAYS), start, pipeline_type)
    baseline = _rollup(before, ["pipeline_type"]) if len(before) else before
    for _, row in groups.iterrows():
        limit = t.slow_video_seconds if row.pipeline_type == "video" else t.slow_image_seconds
        evidence = {"mean_processing_seconds": _round(row.processing), "limit_seconds": limit}
        severity, advice = 0.0, []
        if pd.notna(row.processing) and row.processing > limit:
            severity = _clip(math.log(row.processing / limit) / math.log(4))
            advice.append(f"{row.pipeline_type} jobs average {row.processing:.0f} s, above the "
                          f"{limit:.0f} s limit: see the parameter recommendations of "
                          "estimate-time (steps, resolution, frames).")
        before = baseline[baseline.pipeline_type == row.pipeline_type] if len(baseline) else None
        if before is not None and len(before) and row.work and before.iloc[0].work:
            now_rate = row.timed_seconds / row.work
            then_rate = before.iloc[0].timed_seconds / before.iloc[0].work
            ratio = now_rate / then_rate
            evidence.update(seconds_per_work_ratio_vs_previous=_round(ratio, 3),
                            previous_days=BASELINE_DAYS)
            if ratio > SLOWDOWN:
                severity = max(severity, _clip((ratio - 1) / 0.5))
                advice.append(f"{row.pipeline_type} jobs take {ratio - 1:.0%} longer for the "
                              f"same work than in the previous {BASELINE_DAYS} days: look for a "
                              "driver, library or model change at the trend's change-point.")
        if severity > 0:
            found.append(Bottleneck(BottleneckType.SLOW_GENERATION, severity, row.pipeline_type,
                                    evidence, int(row.jobs), advice))
    return found


def _initialisation(groups: pd.DataFrame) -> list[Bottleneck]:
    found = []
    for _, row in groups.iterrows():
        if not row.processing_total or pd.isna(row.init_total) or row.jobs < MIN_JOBS:
            continue
        share = row.init_total / row.processing_total
        if share <= INIT_SHARE:
            continue
        found.append(Bottleneck(
            BottleneckType.INITIALIZATION_OVERHEAD, _clip((share - INIT_SHARE) / 0.6),
            row.pipeline_type, {"init_share_of_processing": _round(share, 3),
                                "init_hours": _round(row.init_total / 3600, 2)},
            int(row.jobs),
            [f"Model loading takes {share:.0%} of {row.pipeline_type} processing time "
             f"({row.init_total / 3600:.1f} h): keep models resident, or route jobs to GPUs "
             "that already hold their model and group submissions by model."]))
    return found


def _phase_imbalance(sample: _Sample, pipeline_type) -> list[Bottleneck]:
    """A phase other than the denoising loop taking an outsized share of a job type's time
    (shares from the sample; seconds and jobs scaled up by its fraction)."""
    s = sample.rows.c
    joined, phase = sampled_phases(sample.store, sample.rows)
    query = (sa.select(s.pipeline_type, s.job_type, phase.name,
                       sa.func.sum(phase.seconds).label("seconds"),
                       sa.func.count(sa.distinct(s.job_id)).label("jobs"))
             .select_from(joined).where(s.status == "success")
             .group_by(s.pipeline_type, s.job_type, phase.name))
    if pipeline_type:
        query = query.where(s.pipeline_type == pipeline_type)
    frame = frame_without_jit(sample.store, query)
    frame["seconds"] = frame.seconds / sample.fraction
    frame["jobs"] = (frame.jobs / sample.fraction).round()
    found = []
    if frame.empty:
        return found
    for (pipeline, job_type), group in frame.groupby(["pipeline_type", "job_type"],
                                                    dropna=False):
        total = group.seconds.sum()
        for _, row in group.iterrows():
            share = row.seconds / total if total else 0
            core = any(word in str(row["name"]).lower() for word in CORE_PHASES)
            if core or share < PHASE_SHARE or row.jobs < MIN_JOBS:
                continue
            scope = {"job_type": job_type, "phase": row["name"]}
            found.append(Bottleneck(
                BottleneckType.PHASE_IMBALANCE, _clip((share - PHASE_SHARE) / 0.4), pipeline,
                {"phase": row["name"], "share_of_phase_time": _round(share, 3),
                 "phase_hours": _round(row.seconds / 3600, 2)}, int(row.jobs),
                [f"The {row['name']} phase takes {share:.0%} of {_label({'job_type': job_type}, pipeline)}"
                 "' time, more than the denoising itself: overlap it with the previous job's "
                 "generation or cache its results."], scope))
    return found


def _clip(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def _round(value, digits: int = 1):
    return None if value is None or pd.isna(value) else round(float(value), digits)
