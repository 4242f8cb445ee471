"""GPU use while a prompt runs, read through NVML when ``pynvml`` is importable (else nothing).

One GPU: the first one CUDA makes visible (``CUDA_VISIBLE_DEVICES``, which ComfyUI's
``--cuda-device`` sets). A reading NVML does not support is left out; a failed reading never
stops the prompt or the other readings.
"""
from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger("perflib_estimate")
INTERVAL_S = 0.5
MB = 1024 * 1024


class GpuMonitor:
    """Samples one GPU in a thread between :meth:`start` and :meth:`stop`."""

    def __init__(self, nvml, handle, name: str):
        self.nvml = nvml
        self.handle = handle
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._readings: dict[str, list[float]] = {}

    @classmethod
    def open(cls) -> GpuMonitor | None:
        """A monitor of the visible GPU, or None without pynvml, NVML or a GPU."""
        try:
            import pynvml as nvml
            nvml.nvmlInit()
            handle = nvml.nvmlDeviceGetHandleByIndex(_visible_index())
            name = nvml.nvmlDeviceGetName(handle)
            return cls(nvml, handle, name.decode() if isinstance(name, bytes) else str(name))
        except Exception as exc:  # no pynvml, no driver, no GPU
            logger.info("perflib: no GPU readings (%s)", exc)
            return None

    def start(self) -> None:
        self.stop()
        self._readings = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True,
                                        name="perflib-gpu")
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop sampling; the aggregates over the readings taken, as job record fields."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(2 * INTERVAL_S)
            self._thread = None
        self._sample()  # at least one reading, even for a prompt shorter than the interval
        return self._aggregates()

    def _sample_until_stopped(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(INTERVAL_S)

    def _sample(self) -> None:
        nvml, handle = self.nvml, self.handle
        readers = {
            "util": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "vram_used": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / MB,
            "vram_total": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total / MB,
            "power": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "temp": lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
        }
        for name, read in readers.items():
            try:
                self._readings.setdefault(name, []).append(float(read()))
            except Exception:  # not supported on this GPU, or the GPU was lost
                pass

    def _aggregates(self) -> dict[str, float]:
        r = self._readings
        fields = {"gpu_util_avg_pct": ("util", _mean), "gpu_util_max_pct": ("util", max),
                  "vram_peak_mb": ("vram_used", max), "vram_total_mb": ("vram_total", max),
                  "gpu_power_avg_w": ("power", _mean), "gpu_temp_max_c": ("temp", max)}
        return {field: round(how(r[name]), 3) for field, (name, how) in fields.items()
                if r.get(name)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _visible_index() -> int:
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(first) if first.isdigit() else 0
