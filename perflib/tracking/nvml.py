"""A small, forgiving wrapper over NVML (``pynvml`` from nvidia-ml-py).

Every NVML call goes through :meth:`Nvml._call`, which turns "not supported", "GPU is lost" and
friends into ``None`` (logged once per kind), so one missing metric never kills a sample. Without
the NVML library or a driver, :meth:`Nvml.start` returns False and every reading is empty.
Metric names follow ``nvidia-smi --query-gpu`` with units in the names.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

BYTES_PER_MB = 1024 * 1024


@dataclass(frozen=True)
class NvmlReading:
    """One GPU at one instant; a field is None where the device does not report it."""

    index: int
    name: str | None
    gpu_util_pct: float | None
    vram_used_mb: float | None
    vram_total_mb: float | None
    power_w: float | None
    temperature_c: float | None
    sm_clock_mhz: float | None


class Nvml:
    """NVML access that never raises; pass `module` to use a fake in tests."""

    def __init__(self, module: Any = None):
        self.module = module
        self.available = False
        self._handles: dict[int, Any] = {}
        self._names: dict[int, str | None] = {}
        self._lost: set[int] = set()
        self._logged: set[str] = set()

    def start(self) -> bool:
        """Initialise NVML; False (and one info line) when there is no usable GPU."""
        try:
            if self.module is None:
                import pynvml

                self.module = pynvml
            self.module.nvmlInit()
            count = self.module.nvmlDeviceGetCount()
        except Exception as exc:  # library missing, driver not loaded, no permission...
            log.info("NVML unavailable (%s): GPU metrics will be empty, CPU/RAM still recorded",
                     _describe(exc))
            self.available = False
            return False
        for index in range(count):
            handle = self._call("handle", self.module.nvmlDeviceGetHandleByIndex, index)
            if handle is not None:
                self._handles[index] = handle
                name = self._call("name", self.module.nvmlDeviceGetName, handle)
                self._names[index] = name.decode() if isinstance(name, bytes) else name
        self.available = bool(self._handles)
        return self.available

    @property
    def device_indices(self) -> list[int]:
        return sorted(self._handles)

    def name(self, index: int) -> str | None:
        return self._names.get(index)

    def read(self, index: int) -> NvmlReading | None:
        """Read one GPU; None when it is unknown or has been lost."""
        handle = self._handles.get(index)
        if handle is None or index in self._lost:
            return None
        m = self.module
        utilization = self._call("utilization", m.nvmlDeviceGetUtilizationRates, handle,
                                 index=index)
        memory = self._call("memory", m.nvmlDeviceGetMemoryInfo, handle, index=index)
        power_mw = self._call("power", m.nvmlDeviceGetPowerUsage, handle, index=index)
        temperature = self._call("temperature", m.nvmlDeviceGetTemperature, handle,
                                 m.NVML_TEMPERATURE_GPU, index=index)
        sm_clock = self._call("sm_clock", m.nvmlDeviceGetClockInfo, handle, m.NVML_CLOCK_SM,
                              index=index)
        if index in self._lost:
            return None
        return NvmlReading(
            index=index,
            name=self._names.get(index),
            gpu_util_pct=float(utilization.gpu) if utilization is not None else None,
            vram_used_mb=memory.used / BYTES_PER_MB if memory is not None else None,
            vram_total_mb=memory.total / BYTES_PER_MB if memory is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            sm_clock_mhz=float(sm_clock) if sm_clock is not None else None,
        )

    def read_all(self) -> dict[int, NvmlReading]:
        readings = {i: self.read(i) for i in self.device_indices}
        return {i: r for i, r in readings.items() if r is not None}

    def shutdown(self) -> None:
        if self.available:
            self._call("shutdown", self.module.nvmlShutdown)
            self.available = False

    def _call(self, what: str, function, *args, index: int | None = None):
        try:
            return function(*args)
        except Exception as exc:
            lost_code = getattr(self.module, "NVML_ERROR_GPU_IS_LOST", None)
            if index is not None and getattr(exc, "value", None) == lost_code:
                self._lost.add(index)
                self._log_once(f"lost-{index}", "GPU %s is lost; no further readings", index)
            else:
                self._log_once(f"{what}-{index}", "NVML %s not available on GPU %s: %s",
                               what, index, _describe(exc))
            return None

    def _log_once(self, key: str, message: str, *args) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.info(message, *args)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
