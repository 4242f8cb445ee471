"""Background GPU/CPU sampler: one daemon thread per process.

Every ``PERFLIB_SAMPLE_INTERVAL`` seconds it reads each GPU through NVML and the system's and this
process's CPU and memory through psutil, and folds the reading into every running job's
:class:`JobResources`, so each job record gets aggregates over its own lifetime. A job shorter than
one interval gets the latest reading taken before it ended.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import psutil

from perflib.threads import PerProcess, PeriodicThread
from perflib.tracking.nvml import Nvml, NvmlReading

BYTES_PER_MB = 1024 * 1024


@dataclass(frozen=True)
class ResourceSample:
    """One reading of the machine: every GPU plus system and process CPU/RAM."""

    sampled_at: float  # seconds since the epoch
    gpus: Mapping[int, NvmlReading]
    cpu_pct: float
    process_cpu_pct: float
    ram_used_mb: float
    process_rss_mb: float


@dataclass
class JobResources:
    """Running aggregates of the samples taken while one job ran, over that job's GPUs."""

    gpu_indices: tuple[int, ...] | None = None  # None: every GPU the process can see
    keep_samples: bool = False
    count: int = 0
    gpu_util_sum: float = 0.0
    gpu_util_count: int = 0
    gpu_util_max: float | None = None
    vram_peak_mb: float | None = None
    vram_total_mb: float | None = None
    power_sum: float = 0.0
    power_count: int = 0
    temp_max_c: float | None = None
    cpu_sum: float = 0.0
    cpu_max: float | None = None
    ram_peak_mb: float | None = None
    gpu_name: str | None = None
    visible_gpus: tuple[int, ...] = ()  # NVML indices in the latest reading
    last_seen: ResourceSample | None = None  # the reading to fall back on for very short jobs
    samples: list[ResourceSample] = field(default_factory=list)

    def add(self, sample: ResourceSample) -> None:
        self.count += 1
        self.cpu_sum += sample.cpu_pct
        self.cpu_max = _max(self.cpu_max, sample.cpu_pct)
        self.ram_peak_mb = _max(self.ram_peak_mb, sample.process_rss_mb)
        vram_used = vram_total = None
        self.visible_gpus = tuple(sample.gpus)
        for reading in self._readings(sample):
            self.gpu_name = self.gpu_name or reading.name
            if reading.gpu_util_pct is not None:
                self.gpu_util_sum += reading.gpu_util_pct
                self.gpu_util_count += 1
                self.gpu_util_max = _max(self.gpu_util_max, reading.gpu_util_pct)
            if reading.vram_used_mb is not None:
                vram_used = (vram_used or 0.0) + reading.vram_used_mb
                vram_total = (vram_total or 0.0) + (reading.vram_total_mb or 0.0)
            if reading.power_w is not None:
                self.power_sum += reading.power_w
                self.power_count += 1
            self.temp_max_c = _max(self.temp_max_c, reading.temperature_c)
        self.vram_peak_mb = _max(self.vram_peak_mb, vram_used)
        self.vram_total_mb = vram_total if vram_total is not None else self.vram_total_mb
        if self.keep_samples:
            self.samples.append(sample)

    def _readings(self, sample: ResourceSample):
        if self.gpu_indices is None:
            return sample.gpus.values()
        return [sample.gpus[i] for i in self.gpu_indices if i in sample.gpus]

    def aggregates(self) -> dict[str, Any]:
        """Job-table columns: GPU fields None without NVML; CPU/RAM from psutil."""
        if self.count == 0 and self.last_seen is not None:
            self.add(self.last_seen)
        if self.count == 0:
            return {}
        return {
            "gpu_util_avg_pct": _mean(self.gpu_util_sum, self.gpu_util_count),
            "gpu_util_max_pct": self.gpu_util_max,
            "vram_peak_mb": self.vram_peak_mb,
            "vram_total_mb": self.vram_total_mb,
            "gpu_power_avg_w": _mean(self.power_sum, self.power_count),
            "gpu_temp_max_c": self.temp_max_c,
            "cpu_avg_pct": self.cpu_sum / self.count,
            "cpu_max_pct": self.cpu_max,
            "ram_peak_mb": self.ram_peak_mb,
            "gpu_index": self.gpu_index(),
        }

    def gpu_index(self) -> int | None:
        """NVML index of the job's (first) GPU, so the fleet counts GPUs rather than hosts;
        None without a GPU reading, or when the job may use any of several."""
        if self.gpu_name is None:
            return None
        if self.gpu_indices:
            return self.gpu_indices[0]
        return self.visible_gpus[0] if len(self.visible_gpus) == 1 else None

    def sample_rows(self) -> list[dict[str, Any]]:
        """Rows for ``resource_samples`` (one per reading; GPU values summed/averaged)."""
        rows = []
        for seq, sample in enumerate(self.samples):
            readings = list(self._readings(sample))
            rows.append({
                "seq": seq,
                "sampled_at": _utc(sample.sampled_at),
                "gpu_util_pct": _mean_of([r.gpu_util_pct for r in readings]),
                "vram_used_mb": _sum_of([r.vram_used_mb for r in readings]),
                "vram_total_mb": _sum_of([r.vram_total_mb for r in readings]),
                "power_w": _sum_of([r.power_w for r in readings]),
                "temperature_c": max((r.temperature_c for r in readings
                                      if r.temperature_c is not None), default=None),
                "sm_clock_mhz": _mean_of([r.sm_clock_mhz for r in readings]),
                "cpu_pct": sample.cpu_pct,
                "process_cpu_pct": sample.process_cpu_pct,
                "ram_used_mb": sample.ram_used_mb,
                "process_rss_mb": sample.process_rss_mb,
            })
        return rows


class ResourceSampler:
    """Samples GPUs and CPU on a daemon thread and feeds the jobs attached to it."""

    def __init__(self, interval: float = 1.0, nvml: Nvml | None = None):
        self.interval = interval
        self.nvml = nvml
        self.latest: ResourceSample | None = None
        self._jobs: dict[int, JobResources] = {}
        self._lock = threading.Lock()
        self._thread = PeriodicThread(self.sample_once, interval, "perflib-sampler",
                                      first_wait=interval, keep_rate=True)
        self._process = psutil.Process()

    # -- jobs (hot path: a dict insert/delete under one lock) --------------------------------
    def attach(self, resources: JobResources) -> None:
        with self._lock:
            self._jobs[id(resources)] = resources

    def detach(self, resources: JobResources) -> None:
        with self._lock:
            self._jobs.pop(id(resources), None)
        resources.last_seen = self.latest

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "ResourceSampler":
        if self._thread.running:
            return self
        if self.nvml is None:
            self.nvml = Nvml()
        self.nvml.start()
        # A first reading now, so that even the first short job has one (system CPU is measured
        # since psutil was imported; the process's own CPU starts counting here).
        self.sample_once()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.stop()

    def sample_once(self) -> ResourceSample:
        """Take one reading and fold it into every attached job."""
        memory = psutil.virtual_memory()
        sample = ResourceSample(
            sampled_at=time.time(),
            gpus=self.nvml.read_all() if self.nvml and self.nvml.available else {},
            cpu_pct=psutil.cpu_percent(None),
            process_cpu_pct=self._process.cpu_percent(None),
            ram_used_mb=(memory.total - memory.available) / BYTES_PER_MB,
            process_rss_mb=self._process.memory_info().rss / BYTES_PER_MB,
        )
        self.latest = sample
        with self._lock:
            jobs = list(self._jobs.values())
        for resources in jobs:
            resources.add(sample)
        return sample


def gpu_indices_for(params: Mapping[str, Any], cuda_visible_devices: str | None
                    ) -> tuple[int, ...] | None:
    """The NVML (physical) indices of the GPUs a job uses, or None for all visible ones.

    A job may name its devices as ``gpu_index``/``gpu_ids``/``device`` (``"cuda:1"``) in its
    params; those are CUDA indices, mapped through ``CUDA_VISIBLE_DEVICES`` when it is set.
    """
    visible = _visible_devices(cuda_visible_devices)
    requested = None
    for key in ("gpu_ids", "gpu_index", "device"):
        if params.get(key) is not None:
            requested = _device_list(params[key])
            break
    if requested is None:
        return visible
    if visible is None:
        return requested
    return tuple(visible[i] for i in requested if i < len(visible))


def _visible_devices(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        return None  # UUIDs or MIG names: fall back to every GPU
    return tuple(int(p) for p in parts)


def _device_list(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    text = str(value).replace("cuda:", "")
    if text.strip().isdigit():
        return (int(text),)
    if all(p.strip().isdigit() for p in text.split(",")):
        return tuple(int(p) for p in text.split(","))
    return None


_sampler: PerProcess[ResourceSampler] = PerProcess()


def process_sampler(interval: float) -> ResourceSampler:
    """The one sampler of this process, started on first use."""
    return _sampler.get(None, lambda: ResourceSampler(interval).start())


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def _mean_of(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _sum_of(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, timezone.utc)
